"""Sanity checks (cascading randomisation) and TCAV concepts with the significance test."""

from __future__ import annotations

import random
import tempfile
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import hlviz
from hlviz.attribution import sanity
from hlviz.errors import (
    ConvergenceWarning,
    OptionError,
    OptionTypeError,
    ShapeMismatchError,
    TargetError,
)

METHODS = ["saliency", "input_x_gradient", "integrated_gradients"]


def deep_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3)
    ).eval()


class DeadBranch(nn.Module):
    """``aux`` has weights but never touches the output: randomising it changes nothing."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(6, 3)
        self.aux = nn.Linear(6, 6)

    def forward(self, x):
        return self.body(x)


def _check(model, inputs, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return hlviz.sanity_check(model, inputs, **{"target": 0, **kwargs})


def test_cascading_randomisation_changes_maps_of_a_real_model():
    model = deep_mlp()
    report = _check(model, torch.randn(8, 16), methods=METHODS)
    table = report.table
    assert list(table.columns) == [
        "method", "step", "randomised", "spearman", "spearman_abs", "top10_overlap",
    ]  # fmt: skip
    assert len(table) == 3 * (1 + 3)  # trained + three Linear layers, per method
    steps = table[table.method == "saliency"]
    assert steps.randomised.tolist() == ["", "4", "2", "0"]  # output side first
    assert (table[table.step == 0].spearman_abs == 1.0).all()
    assert (table[table.step == 3].spearman_abs < 0.5).all() and report.flagged == ()
    assert "saliency: spearman_abs" in report.describe() and "FLAGGED" not in report.describe()
    summary = report.summary()
    assert list(summary.columns) == [
        "method", "spearman", "spearman_abs", "top10_overlap", "flagged",
    ]  # fmt: skip
    assert summary.method.tolist() == METHODS and not summary.flagged.any()
    assert summary.spearman_abs.tolist() == table[table.step == 3].spearman_abs.tolist()
    assert report.to_frame().equals(table)
    ax = report.plot()
    assert ax.get_ylabel() == "Spearman |map| vs trained" and len(ax.get_lines()) >= 3


def test_a_method_whose_maps_do_not_change_is_flagged():
    report = _check(DeadBranch().eval(), torch.randn(4, 6), methods=["saliency"], layers="aux")
    assert report.flagged == ("saliency",)
    assert report.table.spearman_abs.tolist() == [1.0, 1.0]
    assert "saliency: spearman_abs 1.000 with all layers random -> FLAGGED" in report.describe()
    assert report.summary().flagged.tolist() == [True]


def test_parameters_buffers_and_random_state_are_restored():
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).eval()
    model[1].running_mean.fill_(0.3)
    params = [p for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inputs = torch.randn(3, 5)
    torch.manual_seed(42)
    expected = torch.rand(3)
    torch.manual_seed(42)
    _check(model, inputs, methods=METHODS)
    assert torch.equal(torch.rand(3), expected), "the global random state moved"
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_sanity_check_leaves_the_random_state_alone_and_repeats_for_a_seed():
    model = deep_mlp()
    inputs = torch.randn(4, 16)
    state = torch.random.get_rng_state()
    first = _check(model, inputs, methods=["saliency", "smoothgrad"], seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.rand(10)  # the caller's generator moves; the report does not depend on it
    again = _check(model, inputs, methods=["saliency", "smoothgrad"], seed=5)
    assert first.table.equals(again.table)
    other = _check(model, inputs, methods=["saliency", "smoothgrad"], seed=6)
    assert not first.table.equals(other.table)


def test_parameters_are_restored_when_a_step_raises(monkeypatch):
    model = deep_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    real, calls = sanity._randomise, []

    def flaky(module, seed):
        real(module, seed)
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("failed mid-cascade")

    monkeypatch.setattr(sanity, "_randomise", flaky)
    with pytest.raises(RuntimeError, match="failed mid-cascade"):
        _check(model, torch.randn(4, 16), methods=["saliency"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    hlviz.testing.assert_no_hooks(model)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": "saliency"}, r"methods must be a non-empty list of method names"),
        ({"methods": []}, r"methods must be a non-empty list"),
        ({"threshold": 2.0}, r"threshold must lie in \[0, 1\]"),
        ({"layers": nn.ReLU}, r"has no module of type ReLU"),
    ],
)
def test_sanity_check_errors(kwargs, message):
    with pytest.raises(hlviz.HlvizError, match=message):
        _check(deep_mlp(), torch.randn(2, 16), **kwargs)
    with pytest.raises(OptionError, match=r"no layer with parameters to randomise"):
        _check(nn.Sequential(nn.Tanh()), torch.randn(2, 3), methods=["saliency"])


def test_sanity_check_refuses_an_empty_batch_and_an_input_without_a_batch_axis():
    """fuzz sanity_check[eval, empty|drop_dim, *]: were 'cannot reshape tensor of 0 elements'
    and 'mat1 and mat2 shapes' (on a 1-D input the model itself takes)."""
    model = deep_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ShapeMismatchError, match=r"inputs hold 0 examples \(the attributed "
                       r"input has shape \(0, 16\)\).*Pass at least one example"):  # fmt: skip
        _check(model, torch.randn(0, 16), methods=["saliency"])
    model(torch.randn(16))  # the model takes one unbatched example
    with pytest.raises(ShapeMismatchError, match=r"runs on the whole input \(16,\) \(giving "
                       r"\(3,\), not 16 rows\).*x\.unsqueeze\(0\) \(shape \(1, 16\)\)"):  # fmt: skip
        _check(model, torch.randn(16), methods=["saliency"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    hlviz.testing.assert_no_hooks(model)


# --- TCAV -------------------------------------------------------------------------------------


def concept_model() -> nn.Module:
    """Layer '0' copies x into 6 units; class 1 reads unit 0 only."""
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(6, 5))
        model[0].bias.zero_()
        model[2].weight.zero_()
        model[2].weight[1, 0] = 1.0
        model[2].bias.zero_()
    return model


def concept_data():
    torch.manual_seed(1)
    inputs = torch.randn(10, 5).abs()
    concept = torch.randn(30, 5)
    concept[:, 0] += 4
    randoms = [torch.randn(30, 5) for _ in range(6)]
    return inputs, concept, randoms


def test_tcav_finds_the_concept_the_model_uses_and_tests_it_against_random():
    model = concept_model()
    inputs, concept, randoms = concept_data()
    report = hlviz.tcav(model, inputs, target=1, layers="0", concepts={"x0": concept},
                        random_concepts=randoms)  # fmt: skip
    row = report.table.iloc[0]
    assert (row.concept, row.layer) == ("x0", "0")
    assert row.tcav_score == 1.0 and row.tcav_std == 0.0
    assert row.random_score < 0.8 and row.p_value < 0.05 and bool(row.significant)
    assert "x0 @ 0: TCAV 1.00 +/- 0.00" in report.describe() and "significant)" in report.describe()
    assert report.summary().loc[0, "tcav_score"] == 1.0 and report.to_frame().equals(report.table)
    assert report.plot().get_ylabel() == "TCAV score"
    hlviz.testing.assert_no_hooks(model)


def test_tcav_leaves_every_random_state_alone():
    model = concept_model()
    inputs, concept, randoms = concept_data()
    states = torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    report = hlviz.tcav(model, inputs, target=1, layers="0", concepts={"x0": concept},
                        random_concepts=randoms, seed=4)  # fmt: skip
    assert torch.equal(torch.random.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]
    again = hlviz.tcav(model, inputs, target=1, layers="0", concepts={"x0": concept},
                       random_concepts=randoms, seed=4)  # fmt: skip
    assert report.table.equals(again.table)


def test_tcav_scores_equal_captum_called_directly():
    from captum.concept import TCAV, Concept

    model = concept_model()
    inputs, concept, randoms = concept_data()
    ours = hlviz.tcav(model, inputs, target=1, layers="0", concepts={"x0": concept},
                      random_concepts=randoms, seed=3)  # fmt: skip
    made = [Concept(0, "x0", [concept])] + [
        Concept(1 + i, f"random_{i}", [r]) for i, r in enumerate(randoms)
    ]
    sets = [[made[0], r] for r in made[2:]] + [[made[1], r] for r in made[2:]]
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = TCAV(model, ["0"], save_path=tmp).interpret(inputs, sets, target=1)
    assert set(theirs) == set(ours.scores)
    for key, layers in theirs.items():
        for kind in ("sign_count", "magnitude"):
            torch.testing.assert_close(
                ours.scores[key]["model.0"][kind], layers["0"][kind], atol=1e-6, rtol=1e-6
            )


def test_tcav_errors():
    model = concept_model()
    inputs, concept, randoms = concept_data()
    call = dict(target=1, layers="0", concepts={"x0": concept}, random_concepts=randoms)
    with pytest.raises(OptionError, match=r"random_concepts must be a list of at least 3 tensors"):
        hlviz.tcav(model, inputs, **{**call, "random_concepts": randoms[:2]})
    with pytest.raises(OptionTypeError, match=r"concepts must be a non-empty dict"):
        hlviz.tcav(model, inputs, **{**call, "concepts": {}})
    with pytest.raises(OptionError, match=r"concept 'x0' has 1 example\(s\); give at least 2"):
        hlviz.tcav(model, inputs, **{**call, "concepts": {"x0": concept[:1]}})
    with pytest.raises(OptionTypeError, match=r"concept 'x0': data must be a tensor"):
        hlviz.tcav(model, inputs, **{**call, "concepts": {"x0": "stripes"}})
    with pytest.raises(OptionError, match=r"alpha must lie in \(0, 1\)"):
        hlviz.tcav(model, inputs, **call, alpha=1.5)
    with pytest.raises(TargetError, match=r"target 2 is out of range"):
        hlviz.tcav(model, inputs, **{**call, "target": 2})
    with pytest.raises(hlviz.LayerNotFoundError, match=r"no layer '7'"):
        hlviz.tcav(model, inputs, **{**call, "layers": "7"})
