"""probe_layers: planted signal wins, noise is at chance, groups never straddle, controls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hlviz
from hlviz.errors import HlvizWarning, OptionError, ShapeMismatchError
from hlviz.probes import probe_layers, split_indices


def _layers(n=400, d=12, k=3, planted="layer2", strength=3.0, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    acts = {f"layer{i}": rng.normal(size=(n, d)) for i in range(5)}
    acts[planted][:, :k] += strength * np.eye(k)[y]
    return acts, y


def test_a_planted_signal_makes_its_layer_win():
    acts, y = _layers(planted="layer3")
    report = probe_layers(acts, y, seeds=3)
    assert report.best_layer() == "layer3"
    table = report.table.set_index("layer")
    assert table.loc["layer3", "score"] > 0.8
    assert table.loc["layer3", "score"] > table.loc["layer3", "shuffled"] + 0.3
    assert list(report.table.columns[:3]) == ["layer", "score", "score_sd"]


def test_noise_scores_at_chance_and_selectivity_is_near_zero():
    rng = np.random.default_rng(1)
    n = 1200
    types = rng.integers(0, 100, n)  # 100 "words", each with one fixed label: a learnable task...
    y = types % 2
    acts = {"noise": rng.normal(size=(n, 10))}  # ...that pure noise cannot read
    report = probe_layers(acts, y, types=types, seeds=3)
    row = report.table.iloc[0]
    assert abs(row["score"] - 0.5) < 0.08
    assert abs(row["shuffled"] - 0.5) < 0.08
    assert abs(row["selectivity"]) < 0.1
    assert abs(row["majority"] - 0.5) < 0.08


def test_control_task_shows_what_memorising_types_buys():
    rng = np.random.default_rng(2)
    n, n_types = 800, 30
    types = rng.integers(0, n_types, n)
    identity = np.eye(n_types)[types]  # a layer that encodes the type itself (word identity)
    y = (types < 15).astype(int)
    with pytest.warns(HlvizWarning, match="identical"):  # one-hot rows repeat by design here
        report = probe_layers({"identity": identity}, y, types=types, seeds=2)
    row = report.table.iloc[0]
    assert row["score"] > 0.95 and row["control_task"] > 0.85  # it memorises types just as well
    assert row["selectivity"] < 0.15


def test_groups_never_straddle_a_split():
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 50, 500)
    y = rng.integers(0, 2, 500)
    for seed in range(10):
        train, test = split_indices(y, groups=groups, seed=seed)
        assert not set(groups[train]) & set(groups[test])
        assert len(train) + len(test) == 500


def test_baseline_and_duplicate_and_width_warnings():
    acts, y = _layers(n=200)
    random_init = {name: np.random.default_rng(9).normal(size=a.shape) for name, a in acts.items()}
    report = probe_layers(acts, y, baseline=random_init, seeds=1)
    assert report.table["baseline"].between(0.15, 0.6).all()
    dup = {"a": np.repeat(np.random.default_rng(0).normal(size=(50, 4)), 2, axis=0)}
    with pytest.warns(
        HlvizWarning, match="some rows of the activations are identical but no groups="
    ):
        probe_layers(dup, np.repeat(np.arange(50) % 2, 2), seeds=1)
    wide = {"wide": np.random.default_rng(0).normal(size=(60, 200))}
    with pytest.warns(HlvizWarning, match="has 200 features but only 45 training rows"):
        probe_layers(wide, np.arange(60) % 2, seeds=1)


def test_regression_targets_and_a_recording():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    x = torch.randn(300, 3)
    acts = hlviz.activations(model, x, ["0", "1", "2"])
    report = probe_layers(acts, x[:, 0], seeds=2)
    assert report.task == "regression"
    assert report.table.set_index("layer").loc["0", "score"] > 0.99  # linear in the input
    assert report.table["majority"].abs().max() < 0.1


def test_plot_and_summary():
    acts, y = _layers(n=200)
    report = probe_layers(acts, y, seeds=2)
    ax = report.plot()
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[:3] == ["probe", "majority", "shuffled"]
    assert report.summary().equals(report.table.round(3))


def test_errors():
    acts, y = _layers(n=100)
    with pytest.raises(
        ShapeMismatchError, match="layer 'layer0' in acts has 100 rows but y has 99"
    ):
        probe_layers(acts, y[:99])
    with pytest.raises(OptionError, match="acts must be a non-empty mapping"):
        probe_layers({}, y)
    with pytest.raises(OptionError, match=r"unknown controls \['random'\]"):
        probe_layers(acts, y, controls=("random",))
    with pytest.raises(ShapeMismatchError, match="types has 3 entries but y has 100"):
        probe_layers(acts, y, types=[1, 2, 3])
    with pytest.raises(ShapeMismatchError, match="groups has 2 entries but y has 100"):
        probe_layers(acts, y, groups=[0, 1])
    with pytest.raises(OptionError, match="holds 2 calls"):
        probe_layers({"x": [np.zeros((100, 2)), np.zeros((100, 2))]}, y)
    with pytest.raises(OptionError, match=r"the control task .* needs types=.*got types=None"):
        probe_layers(acts, y, controls=("control_task",))
    with pytest.raises(OptionError, match="and a regression target"):
        probe_layers(acts, y.astype(float) + 0.5, types=y, controls=("control_task",))
    assert "control_task" not in probe_layers(acts, y, seeds=1).table
    assert "control_task" in probe_layers(acts, y, seeds=1, types=y).table
    with pytest.raises(OptionError, match="seeds must be a positive int"):
        probe_layers(acts, y, seeds=0)


def _fuzz_data():
    gen = torch.Generator().manual_seed(5)
    y = torch.randint(0, 2, (80,), generator=gen)
    return {"a": torch.randn(80, 4, generator=gen) + y[:, None], "b": torch.randn(80, 3)}, y


def test_probe_layers_reads_half_precision_and_rejects_unusable_layers():
    """Fuzz cases (issue 16): bfloat16 is widened to float32; empty, missing, string and
    zero-width layers end in an HlvizError naming the layer, what it got and the fix."""
    from hlviz.errors import OptionTypeError

    acts, y = _fuzz_data()
    full = probe_layers(acts, y, seeds=1).table["score"]
    for half in (torch.bfloat16, torch.float16):
        low = probe_layers({k: v.to(half) for k, v in acts.items()}, y, seeds=1).table["score"]
        assert np.allclose(low, full, atol=0.05)
    with pytest.raises(ShapeMismatchError, match=r"y is empty \(no rows\).*one label per row"):
        probe_layers({k: v[:0] for k, v in acts.items()}, y[:0], seeds=1)
    with pytest.raises(OptionTypeError, match=r"layer 'a' in acts must be activations.*NoneType"):
        probe_layers({**acts, "a": None}, y, seeds=1)
    with pytest.raises(OptionTypeError, match=r"layer 'a' in acts .*got str 'not a tensor'"):
        probe_layers({**acts, "a": "not a tensor"}, y, seeds=1)
    with pytest.raises(ShapeMismatchError, match=r"layer 'a' in acts has no features.*\(80, 0\)"):
        probe_layers({**acts, "a": acts["a"][:, :0]}, y, seeds=1)
    with pytest.raises(OptionTypeError, match="acts must be a non-empty mapping.*got NoneType"):
        probe_layers(None, y)
    with pytest.raises(ShapeMismatchError, match="y must hold one target per row"):
        probe_layers(acts, "labels")
    with pytest.raises(OptionError, match=r"seeds must be a positive int, got -1"):
        probe_layers(acts, y, seeds=-1)


def test_probe_layers_checks_test_size_and_the_probe_name():
    from hlviz.errors import OptionTypeError

    acts, y = _fuzz_data()
    for bad in (0.0, 1.0, float("nan"), 1.5):
        with pytest.raises(
            OptionError, match=rf"test_size must lie in \(0, 1\), got {bad}.*e\.g\."
        ):
            probe_layers(acts, y, seeds=1, test_size=bad)
    with pytest.raises(OptionTypeError, match="test_size must be a number in"):
        probe_layers(acts, y, seeds=1, test_size="0.2")
    with pytest.raises(OptionError, match=r"probe='svm' is not one of 'linear', 'mlp'.*estimator"):
        probe_layers(acts, y, seeds=1, probe="svm")
    with pytest.raises(OptionError, match=r"probe='mpl' .*did you mean 'mlp'\?"):
        probe_layers(acts, y, seeds=1, probe="mpl")
    with pytest.raises(OptionTypeError, match="got the class LinearProbe"):
        probe_layers(acts, y, seeds=1, probe=hlviz.LinearProbe)
    with pytest.raises(OptionError, match="device='nowhere' is not a torch device"):
        probe_layers(acts, y, seeds=1, probe=hlviz.LinearProbe(device="nowhere"))
    named = probe_layers(acts, y, seeds=1, probe="linear").table
    assert named.equals(probe_layers(acts, y, seeds=1).table)
    mlp = probe_layers(acts, y, seeds=1, probe="mlp").table.set_index("layer")["score"]
    assert mlp["a"] > 0.6
