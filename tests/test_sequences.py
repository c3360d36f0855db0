"""hlviz.sequences: replayed LSTM/GRU states, gate saturation, unit-label correlation, heat maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import hlviz
from hlviz.errors import LayerNotFoundError, OptionError, OptionTypeError, ShapeMismatchError
from hlviz.models.rnn import CharLSTM, RNNStates
from hlviz.sequences import (
    gate_saturation,
    rnn_states,
    state_features,
    unit_heatmap_html,
    unit_label_correlation,
)
from hlviz.sequences.replay import replay_tolerance
from hlviz.testing import assert_no_hooks


class Tagger(nn.Module):
    """Embedding -> recurrent layer -> head, as users write them (time-major or not)."""

    def __init__(self, rnn: nn.Module, fail: bool = False, hx: bool = False):
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size, 3)
        self.fail, self.hx = fail, hx

    def forward(self, ids):
        x = self.embed(ids)
        if not self.rnn.batch_first:
            x = x.transpose(0, 1)
        if self.hx:
            shape = (self.rnn.num_layers, ids.shape[0], self.rnn.hidden_size)
            out = self.rnn(x, torch.ones(shape) if isinstance(self.rnn, nn.GRU) else None)[0]
        else:
            out = self.rnn(x)[0]
        if self.fail:
            raise RuntimeError("boom")
        return self.head(out)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_replayed_states_equal_the_module(kind, batch_first):
    torch.manual_seed(0)
    cls = nn.LSTM if kind == "lstm" else nn.GRU
    rnn = cls(4, 5, num_layers=2, batch_first=batch_first).double()
    x = torch.randn(3, 6, 4, dtype=torch.double)
    x_in = x if batch_first else x.transpose(0, 1)
    out, final = rnn(x_in)
    states = rnn_states(rnn, x_in)
    assert states.kind == kind and tuple(states["h"].shape) == (2, 3, 6, 5)
    top = states["h"][-1] if batch_first else states["h"][-1].transpose(0, 1)
    assert torch.allclose(top, out, atol=1e-12)
    h_n = final[0] if kind == "lstm" else final
    assert torch.allclose(states["h"][:, :, -1], h_n, atol=1e-12)
    if kind == "lstm":
        assert torch.allclose(states["c"][:, :, -1], final[1], atol=1e-12)
    else:
        assert states.gates == ("r", "z", "n")


def test_replay_inside_a_model_finds_the_rnn_and_leaves_no_hooks():
    torch.manual_seed(0)
    model = Tagger(nn.GRU(4, 5, batch_first=False))
    mine = model.rnn.register_forward_hook(lambda m, a, o: None)
    states = rnn_states(model, torch.randint(0, 7, (2, 8)))
    assert tuple(states["h"].shape) == (1, 2, 8, 5)
    named = rnn_states(model, torch.randint(0, 7, (2, 8)), layer="rnn")
    assert named.kind == "gru"
    assert_no_hooks(model, ignore=[mine])
    assert len(model.rnn._forward_hooks) == 1  # the user's own hook survives


def test_replay_cleans_up_when_the_model_raises_and_on_bad_arguments():
    model = Tagger(nn.LSTM(4, 5, batch_first=True), fail=True)
    with pytest.raises(RuntimeError, match="boom"):
        rnn_states(model, torch.randint(0, 7, (2, 8)))
    assert_no_hooks(model)
    model.fail = False
    with pytest.raises(LayerNotFoundError, match="no layer 'rn' in Tagger"):
        rnn_states(model, torch.randint(0, 7, (2, 8)), layer="rn")
    with pytest.raises(OptionError, match="layer 'head' is a Linear, not an nn.LSTM or nn.GRU"):
        rnn_states(model, torch.randint(0, 7, (2, 8)), layer="head")
    with pytest.raises(OptionError, match=r"layer=\[.*\] matches 2 modules"):
        rnn_states(model, torch.randint(0, 7, (2, 8)), layer=["rnn", "head"])
    assert_no_hooks(model)


def test_replay_refuses_what_it_cannot_reproduce():
    model = Tagger(nn.GRU(4, 5, batch_first=True), hx=True)
    with pytest.raises(OptionError, match="does not reproduce its output: it was probably called"):
        rnn_states(model, torch.randint(0, 7, (2, 8)))
    ok = rnn_states(model, torch.randint(0, 7, (2, 8)), hx=torch.ones(1, 2, 5))
    assert ok.kind == "gru"
    assert_no_hooks(model)
    with pytest.raises(OptionError, match="bidirectional=True and proj_size=0 is not supported"):
        rnn_states(nn.LSTM(2, 3, bidirectional=True), torch.randn(4, 1, 2))
    with pytest.raises(ShapeMismatchError, match=r"hx must be a pair \(h_0, c_0\) of tensors of"):
        rnn_states(nn.LSTM(2, 3), torch.randn(4, 1, 2), hx=(torch.zeros(2, 1, 3),) * 2)
    with pytest.raises(ShapeMismatchError, match=r"input must be a \(N, T, D\) or \(T, N, D\)"):
        rnn_states(nn.LSTM(2, 3), torch.randn(4, 2))
    two = nn.Sequential(nn.LSTM(2, 3), nn.GRU(3, 3))
    with pytest.raises(LayerNotFoundError, match="has 2 nn.LSTM/nn.GRU modules \\(0, 1\\)"):
        rnn_states(two, torch.randn(4, 1, 2))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_replay_of_a_half_precision_module_matches_it_within_its_rounding(kind, dtype):
    """fuzz rnn_states[f16|bf16, ...]: a float16/bfloat16 module (which runs on the CPU) is
    replayed from its own weights in float32 and compared with a tolerance of its dtype."""
    torch.manual_seed(0)
    rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(4, 5, num_layers=2, batch_first=True).to(dtype)
    x = torch.randn(2, 30, 4).to(dtype)
    states = rnn_states(rnn, x)
    own = rnn(x)[0].float()
    assert states["h"].dtype == torch.float32
    err = (states["h"][-1] - own).abs().max().item()
    assert 0 < err <= replay_tolerance(rnn) and replay_tolerance(rnn) <= 0.04
    tagger = Tagger(rnn)
    tagger.embed.to(dtype)
    tagger.head.to(dtype)
    inside = rnn_states(tagger, torch.randint(0, 7, (2, 8)))
    assert inside["h"].dtype == torch.float32 and torch.isfinite(inside["h"]).all()
    assert_no_hooks(tagger)


@pytest.mark.parametrize(
    ("model_dtype", "x_dtype"),
    [
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float16),
        (torch.float32, torch.bfloat16),
        (torch.float32, torch.int64),
    ],
)
def test_replay_refuses_an_input_of_another_dtype_than_the_weights(model_dtype, x_dtype):
    """fuzz rnn_states[f16|bf16, ok], [eval, f16|bf16|int]: was 'expected m1 and m2 to have
    the same dtype'; the module itself refuses these, so rnn_states says how to match them."""
    rnn = nn.LSTM(3, 5, num_layers=2, batch_first=True).to(model_dtype)
    x = (torch.randn(2, 4, 3) * 3).to(x_dtype)
    with pytest.raises(ValueError, match="does not match weight dtype"):
        rnn(x)
    with pytest.raises(
        OptionTypeError,
        match=rf"input to LSTM is {x_dtype} but its weights are {model_dtype} .*x\.to\({model_dtype}\)",
    ):
        rnn_states(rnn, x)
    assert_no_hooks(rnn)


def test_replay_refuses_nan_in_the_input_or_in_hx_naming_the_sequences():
    """fuzz rnn_states[eval, nan, *] and [eval, ok, hx nan]: was 'atol must be greater than
    or equal to zero, but got -nan'."""
    rnn = nn.LSTM(3, 5, num_layers=2, batch_first=True)
    x = torch.randn(4, 6, 3)
    x[1, 2, 0] = float("nan")
    x[3, 0, 1] = float("inf")
    with pytest.raises(
        OptionError, match=r"input of LSTM holds NaN or inf in 2 of 4 sequences \(sequences 1, 3"
    ):
        rnn_states(rnn, x)
    h0 = torch.zeros(2, 4, 5)
    h0[0, 2] = float("nan")
    with pytest.raises(
        OptionError,
        match=r"hx's h_0 of LSTM holds NaN or inf in 1 of 4 sequences \(sequences 2;.*hx=None",
    ):
        rnn_states(rnn, x.nan_to_num(posinf=0.0), hx=(h0, torch.zeros(2, 4, 5)))
    with pytest.raises(OptionTypeError, match="hx's h_0 is torch.int64, not a floating-point"):
        rnn_states(nn.GRU(3, 5), torch.randn(6, 4, 3), hx=torch.zeros(1, 4, 5, dtype=torch.long))
    model = Tagger(nn.GRU(4, 5, batch_first=False))
    model.embed.weight.data[3, 0] = float("nan")
    with pytest.raises(OptionError, match="input of GRU holds NaN or inf in 1 of 2 sequences"):
        rnn_states(model, torch.tensor([[0, 1, 2], [3, 4, 5]]))
    assert_no_hooks(model)


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(2, 2, batch_first=True)

    def forward(self, x):
        return self.rnn(self.rnn(x)[0])[0]


def test_replay_refuses_a_module_that_runs_twice():
    model = Twice()
    with pytest.warns(UserWarning), pytest.raises(OptionError, match="ran 2 times in one forward"):
        rnn_states(model, torch.randn(1, 3, 2))
    assert_no_hooks(model)


def test_charlstm_goes_through_its_unrolled_path():
    torch.manual_seed(0)
    model = CharLSTM(vocab_size=9, hidden_size=4)
    ids = torch.randint(0, 9, (2, 5))
    states = rnn_states(model, ids)
    assert not states["h"].requires_grad
    assert torch.allclose(states["h"][-1], model.lstm(model.embed(ids))[0], atol=1e-6)
    assert_no_hooks(model)


def hand_states() -> RNNStates:
    # one layer, one sequence, 4 steps, 2 units; unit 0's input gate: 0.05, 0.5, 0.95, 0.99
    i = torch.tensor([[0.05, 0.5], [0.5, 0.5], [0.95, 0.5], [0.99, 0.09]]).view(1, 1, 4, 2)
    half = torch.full_like(i, 0.5)
    return RNNStates(
        {"h": half, "c": half, "i": i, "f": half, "g": half * 0, "o": 1 - i}, kind="lstm"
    )


def test_gate_saturation_on_a_hand_made_case():
    sat = gate_saturation(hand_states())
    t = sat.table.set_index(["gate", "unit"])
    assert t.loc[("i", 0), "left"] == 0.25 and t.loc[("i", 0), "right"] == 0.5
    assert t.loc[("i", 1), "left"] == 0.25 and t.loc[("i", 1), "right"] == 0.0
    assert t.loc[("o", 0), "left"] == 0.5 and t.loc[("o", 0), "right"] == 0.25  # 1 - i
    assert t.loc[("f", 0), "left"] == 0.0 and list(sat.table["gate"].unique()) == ["f", "i", "o"]
    summary = sat.summary().set_index("gate")
    assert summary.loc["i", "right"] == 0.25 and summary.loc["o", "often_right"] == 0.0
    fig = sat.plot()
    assert len(fig.axes) == 3 and fig.axes[0].get_title() == "gate f"
    assert [len(ax.collections) for ax in fig.axes] == [1, 1, 1]  # one layer, a scatter each
    assert sat.to_frame().equals(sat.table)
    with pytest.raises(OptionError, match=r"fig= must be an empty figure"):
        sat.plot(fig=fig)
    strict = gate_saturation(hand_states(), low=0.06, high=0.98, gates=["i"])
    assert strict.table["left"].tolist() == [0.25, 0.0] and strict.table["right"].tolist() == [
        0.25,
        0.0,
    ]
    with pytest.raises(OptionError, match="need 0 <= low < high <= 1, got low=0.9 and high=0.1"):
        gate_saturation(hand_states(), low=0.9, high=0.1)
    with pytest.raises(OptionError, match="no state 'q' in these LSTM states"):
        gate_saturation(hand_states(), gates=["q"])


def test_unit_label_correlation_known_values():
    rng = np.random.default_rng(0)
    depth = rng.integers(0, 4, 200).astype(float)
    acts = {
        "a": np.stack([depth * 2 + 1, -depth, rng.normal(size=200), np.ones(200)], axis=1),
        "b": torch.tensor(np.stack([rng.normal(size=200), depth**2], axis=1)),
    }
    corr = unit_label_correlation(acts, {"depth": depth, "noise": rng.normal(size=200)})
    assert set(corr.table.columns) == {"layer", "unit", "label", "r"} and len(corr.table) == 12
    t = corr.table.set_index(["layer", "unit", "label"])["r"]
    assert t[("a", 0, "depth")] == pytest.approx(1) and t[("a", 1, "depth")] == pytest.approx(-1)
    assert t[("a", 3, "depth")] == 0.0  # a constant unit
    assert np.corrcoef(depth, depth**2)[0, 1] == pytest.approx(t[("b", 1, "depth")])
    top = corr.top("depth", 2)
    assert top[["layer", "unit"]].values.tolist() == [["a", 0], ["a", 1]]
    assert corr.best("depth", layer="b")[:2] == ("b", 1)
    summary = corr.summary()
    assert len(summary) == 4 and set(summary["label"]) == {"depth", "noise"}
    ax = corr.plot()
    assert ax.get_xticklabels()[0].get_text() == "depth"
    grid = corr.table.assign(a=corr.table["r"].abs()).pivot_table(
        index="layer", columns="label", values="a", aggfunc="max", sort=False
    )
    assert [t.get_text() for t in ax.texts] == [f"{v:.2f}" for v in grid.to_numpy().ravel()]
    assert corr.to_frame().equals(corr.table)
    with pytest.raises(OptionError, match="no label 'x'; choose from 'depth', 'noise'"):
        corr.top("x")
    with pytest.raises(OptionError, match="no layer 'c'; choose from 'a', 'b'"):
        corr.top("depth", layer="c")
    with pytest.raises(
        ShapeMismatchError, match="label 'depth' has 3 values but layer 'a' has 200"
    ):
        unit_label_correlation(acts, {"depth": [1, 2, 3]})
    with pytest.raises(ShapeMismatchError, match=r"layer 'x' has shape \(2, 3, 4\)"):
        unit_label_correlation({"x": np.zeros((2, 3, 4))}, {"d": [0, 1]})
    with pytest.raises(OptionError, match="acts must be a non-empty mapping"):
        unit_label_correlation({}, {"d": [0]})
    with pytest.raises(OptionError, match="labels is empty"):
        unit_label_correlation(acts, {})


def test_correlation_and_features_from_rnn_states():
    states = hand_states()
    feats = state_features(states, names=("h",))
    assert list(feats) == ["h.0"] and feats["h.0"].shape == (4, 2)
    corr = unit_label_correlation(states, {"step": [0, 1, 2, 3]})
    assert set(corr.table["layer"]) == {"h.0", "c.0"}


def test_unit_heatmap_html_escapes_and_splits_lines():
    text = 'if x < 1:\n    s = "<b>"\n'
    values = np.linspace(-1, 1, len(text))
    page = unit_heatmap_html(text, values, title="cell <7>", line_numbers=True)
    assert page.count('class="hlviz-row"') == 2 and page.count('class="hlviz-token"') == len(text)
    assert "<b>" not in page  # every character is escaped in its own span
    assert "&lt;" in page and "cell &lt;7&gt;" in page and "<script" not in page
    assert page == unit_heatmap_html(
        text, torch.tensor(values), title="cell <7>", line_numbers=True
    )
    assert unit_heatmap_html("ab", [1.0, 2.0]).count('class="hlviz-row"') == 1
    with pytest.raises(ShapeMismatchError, match="3 characters but 2 values"):
        unit_heatmap_html("abc", [1.0, 2.0])
    with pytest.raises(OptionError, match="text must be a str, got list"):
        unit_heatmap_html(["a"], [1.0])


def test_sequences_is_reachable_from_hlviz():
    assert hlviz.sequences.rnn_states is rnn_states


class LastCharEcho(nn.Module):
    """Predicts the last character it read, confidently: only the last position matters."""

    def forward(self, ids):
        return 10.0 * nn.functional.one_hot(ids, 4).float()


def test_occlusion_over_time_is_attribute_on_character_ids():
    """What ``occlusion_over_time`` did, now ``hlviz.attribute(..., method="occlusion")``: entry
    ``[n, t]`` is log p(target) at the last step minus its value with character t filled."""
    ids = torch.tensor([[1, 2, 3], [3, 3, 2]])
    scorer = nn.Sequential(LastCharEcho(), nn.LogSoftmax(dim=-1))
    effect = hlviz.attribute(scorer, ids, target=[3, 2], method="occlusion", baseline=0,
                             special_ids=[], output=lambda out: out[:, -1]).values  # fmt: skip
    logp = torch.log_softmax(torch.tensor([10.0, 0, 0, 0]), 0)  # confident in the read char
    drop = float(logp[0] - logp[1])  # log p(read char) - log p(another char)
    assert effect.shape == (2, 3)
    assert np.allclose(effect[:, :2], 0) and np.allclose(effect[:, 2], drop)
    model = CharLSTM(vocab_size=5, hidden_size=3)
    mine = model.register_forward_hook(lambda m, a, o: None)
    out = hlviz.attribute(model, torch.randint(1, 5, (2, 4)), target=[0, 1], method="occlusion",
                          baseline=0, special_ids=[], output=lambda out: out[:, -1])  # fmt: skip
    assert out.values.shape == (2, 4)
    assert_no_hooks(model, ignore=[mine])
    assert not hasattr(hlviz.sequences, "occlusion_over_time")
