"""Where units and positions lie: inferred from the tensor a layer returns, stated by the user
where it cannot be, and the same for reduce=, ablate, steer and the inferred layout.

The property test builds random composite blocks whose true layout is known (convolution
blocks returning ``(N, C, L)`` or transposed back to ``(N, L, C)``, linear blocks on
``(N, T, D)``) and checks ``reduce="mean"``, ``ablate(units=[k])`` and :func:`layout`
against it.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import hlviz
from hlviz.errors import LayerNotFoundError, OptionError, ShapeMismatchError
from hlviz.hooks.layout import declare_layout, explain, layout, layout_hints


class ConvBlock(nn.Module):
    """(N, C_in, L) -> conv stack -> (N, C, L), or transposed back to (N, L, C)."""

    def __init__(self, c_in: int, c: int, depth: int, transpose: bool, act: nn.Module):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(c_in, c, 3, padding=1)]
        for _ in range(depth - 1):
            layers += [nn.BatchNorm1d(c), act, nn.Conv1d(c, c, 1)]
        layers.append(nn.Dropout(0.1))
        self.seq = nn.Sequential(*layers)
        self.transpose = transpose

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, L, C_in)
        y = self.seq(x.transpose(1, 2))
        return y.transpose(1, 2) if self.transpose else y


class LinearBlock(nn.Module):
    def __init__(self, c_in: int, c: int, norm: bool):
        super().__init__()
        self.fc = nn.Linear(c_in, c)
        self.norm = nn.LayerNorm(c) if norm else nn.Identity()
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.fc(x)))


class Net(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block
        self.head = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x))


blocks = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["conv", "conv_t", "linear"]),
        "c": st.integers(2, 12),
        "length": st.integers(2, 12),
        "depth": st.integers(1, 3),
        "norm": st.booleans(),
        "act": st.sampled_from([nn.ReLU, nn.SiLU, nn.Tanh]),
    }
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=blocks, n=st.integers(1, 3), k=st.data())
def test_reduce_ablate_and_layout_agree_with_the_true_layout(spec, n, k) -> None:
    c, length, c_in = spec["c"], spec["length"], 5
    if spec["kind"] == "linear":
        block, units_axis = LinearBlock(c_in, c, spec["norm"]), 2
    else:
        transpose = spec["kind"] == "conv_t"
        block = ConvBlock(c_in, c, spec["depth"], transpose, spec["act"]())
        units_axis = 2 if transpose else 1
    model = Net(block).eval()
    x = torch.randn(n, length, c_in)
    full = hlviz.activations(model, x, "block")["block"]
    assert full.shape[units_axis] == c
    lay = layout(layout_hints(model, ["block"])["block"], full)
    if c != length:  # a square output is ambiguous; the layer's type decides it
        assert lay.units == units_axis, (spec, lay)
        mean = hlviz.activations(model, x, "block", reduce="mean")["block"]
        torch.testing.assert_close(mean, full.mean(3 - units_axis))
        unit = k.draw(st.integers(0, c - 1))
        with hlviz.edit(model, {"block": hlviz.ablate(units=[unit])}):
            with hlviz.record(model, "block") as rec:
                model(x)
        expected = full.clone()
        expected.select(units_axis, unit).zero_()
        torch.testing.assert_close(rec["block"], expected)


# ------------------------------------------------------------------ the reproductions
def test_repro_conv_block_layout() -> None:
    """A Conformer-style conv module returns (B, T, D) although its last leaf is a Conv1d."""
    torch.manual_seed(0)
    block = ConvBlock(16, 16, 3, transpose=True, act=nn.SiLU())
    model = Net(block).eval()
    x = torch.randn(2, 40, 16)
    mean = hlviz.activations(model, x, "block", reduce="mean")["block"]
    assert mean.shape == (2, 16)
    with hlviz.edit(model, {"block": hlviz.ablate(units=[0])}), hlviz.record(model, "block") as r:
        model(x)
    assert (r["block"][..., 0] == 0).all() and not (r["block"][:, 0, :] == 0).all()
    with hlviz.edit(model, {"block": hlviz.steer(torch.ones(16))}):
        model(x)


def test_repro_vit_embeddings_layout() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=3,
    )
    vit = transformers.ViTForImageClassification(cfg).eval()
    x = torch.randn(2, 3, 32, 32)
    xc = x.clone()
    xc[:, :, :8, :8] = 0
    mean = hlviz.activations(vit, x, "vit.embeddings", reduce="mean")["vit.embeddings"]
    full = hlviz.activations(vit, x, "vit.embeddings")["vit.embeddings"]
    torch.testing.assert_close(mean, full.mean(1))
    result = hlviz.activation_patching(
        vit, x[:1], xc[:1], ["vit.embeddings"], metric=lambda logits: logits[:, 0] - logits[:, 1]
    )
    assert result is not None
    store = hlviz.collect(vit, x, "vit.embeddings", tokens=True, progress=False)
    assert store["vit.embeddings"].shape == (2 * 17, 32)


def test_repro_hf_conv1d_activation_layout() -> None:
    """Wav2Vec2's conv layers end in transformers' GELUActivation: still (N, C, L)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=4,
        vocab_size=10,
    )
    model = transformers.Wav2Vec2Model(cfg).eval()
    wav = torch.randn(2, 800)
    names = ["feature_extractor.conv_layers.1.conv", "feature_extractor.conv_layers.1"]
    names.append("feature_extractor")
    full = hlviz.activations(model, wav, names)
    mean = hlviz.activations(model, wav, names, reduce="mean")
    for name in names:
        assert full[name].shape == (2, 16, 79)
        torch.testing.assert_close(mean[name], full[name].mean(2))
    with hlviz.edit(model, {"feature_extractor": hlviz.ablate(units=[0])}):
        with hlviz.record(model, "feature_extractor") as rec:
            model(wav)
    z = rec["feature_extractor"]
    assert (z[:, 0] == 0).all() and not (z[:, 1:, 0] == 0).all()


# ------------------------------------------------------------------ stating the layout
def test_declare_layout_overrides_the_inference_and_can_be_forgotten() -> None:
    model = nn.Sequential(nn.Conv1d(8, 8, 1), nn.ReLU())
    x = torch.randn(3, 8, 8)  # square: the conv type says (N, C, L)
    full = hlviz.activations(model, x, "1")["1"]
    before = hlviz.activations(model, x, "1", reduce="mean")["1"]
    torch.testing.assert_close(before, full.mean(2))
    declare_layout(model, {"1": "NTD"})
    after = hlviz.activations(model, x, "1", reduce="mean")["1"]
    torch.testing.assert_close(after, full.mean(1))
    declare_layout(model, {"1": None})
    torch.testing.assert_close(hlviz.activations(model, x, "1", reduce="mean")["1"], before)


def test_declare_layout_errors_name_the_fix() -> None:
    model = nn.Sequential(nn.Conv1d(8, 8, 1))
    with pytest.raises(LayerNotFoundError, match="no layer named 'nope'.*layer_names"):
        declare_layout(model, {"nope": "NCL"})
    with pytest.raises(OptionError, match="layout.*'NCHW'"):
        declare_layout(model, {"0": "NCHW"})


def test_errors_say_which_axes_were_taken_and_how_to_override() -> None:
    model = nn.Sequential(nn.Linear(4, 6))
    x = torch.randn(2, 5, 4)
    with pytest.raises(ShapeMismatchError, match=r"read as \(N, T, D\).*declare_layout"):
        with hlviz.edit(model, {"0": hlviz.steer(torch.ones(5))}):
            model(x)
    lay = layout(layout_hints(model, ["0"])["0"], torch.zeros(2, 5, 6))
    assert "axis 2 matches the layer's width 6" in explain(lay, "0")


def test_model_hidden_size_decides_when_the_leaves_do_not() -> None:
    class Config:
        hidden_size = 6

    class Wrapped(nn.Module):  # a block with no width-bearing leaf, in a model with a config
        def __init__(self):
            super().__init__()
            self.config = Config()
            self.scale = nn.Identity()

        def forward(self, x):
            return self.scale(x)

    model = Wrapped()
    hint = layout_hints(model, ["scale"])["scale"]
    assert layout(hint, torch.zeros(2, 6, 9)).kind == "channels_first"
    assert layout(hint, torch.zeros(2, 9, 6)).kind == "sequence"
