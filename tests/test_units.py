"""hlviz.units and hlviz.units.featurevis: receptive fields against gradients, top-k patches against a
brute-force pass, unit statistics against hand computation, feature visualisation that raises
its objective and never leaves a hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import hlviz
from hlviz import units
from hlviz.errors import (
    LayerShapeError,
    OptionError,
    OptionTypeError,
    UnitIndexError,
)
from hlviz.testing import assert_no_hooks
from hlviz.units import featurevis as fv

from .zoo import Blocks


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 3, padding=1),
        nn.ReLU(),
    ).eval()


# ---------------------------------------------------------------- receptive fields

LAYER = st.tuples(
    st.sampled_from(["conv", "avg"]),
    st.integers(1, 4),  # kernel
    st.integers(1, 2),  # stride
    st.integers(0, 2),  # padding
)


@settings(max_examples=25, deadline=None)
@given(st.lists(LAYER, min_size=1, max_size=4))
def test_receptive_field_equals_the_gradient_support(stack):
    """A unit's receptive field bounds where d(unit)/d(input) is non-zero in an all-ones network
    (the central unit of a large input, so that padding of inner maps plays no part)."""
    modules = []
    for kind, k, s, p in stack:
        p = min(p, k // 2)  # PyTorch's pooling needs padding <= kernel / 2
        if kind == "conv":
            conv = nn.Conv2d(1, 1, k, stride=s, padding=p, bias=False)
            nn.init.ones_(conv.weight)
            modules.append(conv)
        else:
            modules.append(nn.AvgPool2d(k, stride=s, padding=p, count_include_pad=True))
    model = nn.Sequential(*modules)
    x = torch.ones(1, 1, 128, 128, requires_grad=True)
    out = model(x)
    i, j = out.shape[-2] // 2, out.shape[-1] // 2
    out[0, 0, i, j].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
    rf = units.receptive_field(model, str(len(modules) - 1))
    top, bottom, left, right = rf.window(i, j)
    assert (rows.min().item(), rows.max().item() + 1) == (max(top, 0), min(bottom, 128))
    assert (cols.min().item(), cols.max().item() + 1) == (max(left, 0), min(right, 128))
    listed = units.receptive_field([(k, s, min(p, k // 2)) for _, k, s, p in stack])
    assert listed == rf


def test_receptive_field_of_the_small_cnn():
    model = hlviz.models.SmallCNN()
    sizes = {
        "features.block1.conv": 3,
        "features.block1.pool": 4,
        "features.block2.conv": 8,
        "features.block2": 10,  # a block means its last layer (the pool)
        "features.block3.relu": 18,
        "features.block4.conv": 26,
        "features.block4.pool": 30,
    }
    got = {layer: units.receptive_field(model, layer).size[0] for layer in sizes}
    assert got == sizes
    rf = units.receptive_field(model, "features.block3.conv")
    assert rf.stride == (4, 4) and rf.offset == (-7, -7)
    assert rf.window(1, 2) == (-3, 15, 1, 19)


def test_receptive_field_errors():
    model = hlviz.models.SmallCNN()
    with pytest.raises(LayerShapeError, match=r"through 'head.pool' \(AdaptiveAvgPool2d\)"):
        units.receptive_field(model, "head.fc")
    with pytest.raises(OptionError, match="needs the layer whose units you ask about"):
        units.receptive_field(model)
    with pytest.raises(OptionError, match=r"selects 4 layers .*name one layer"):
        units.receptive_field(model, "features.*.conv")
    with pytest.raises(OptionError, match=r"\(kernel, stride, padding\) tuple, got 3"):
        units.receptive_field([3])
    with pytest.raises(OptionTypeError, match="got str"):
        units.receptive_field("features")


# ---------------------------------------------------------------- top-k patches


def test_top_patches_maximise_the_unit_against_brute_force():
    model = small_cnn()
    torch.manual_seed(3)
    X = torch.rand(70, 1, 12, 12)
    top = units.top_patches(model, X, "3", k=4, batch_size=16)  # streams over 5 batches
    act = model[:4](X)  # every activation at once
    peak, where = act.flatten(2).max(dim=2)  # (N, C)
    rf = units.receptive_field(model, "3")
    for c in range(act.shape[1]):
        best = torch.sort(peak[:, c], descending=True, stable=True)
        torch.testing.assert_close(top.values[c], best.values[:4])
        assert top.indices[c].tolist() == best.indices[:4].tolist()
        for r in range(4):
            n = int(top.indices[c, r])
            pos = int(where[n, c])
            assert top.positions[c, r].tolist() == [pos // act.shape[3], pos % act.shape[3]]
            t, b, left, right = rf.window(*top.positions[c, r].tolist())
            padded = torch.nn.functional.pad(X[n], (8, 8, 8, 8))
            expect = padded[:, t + 8 : b + 8, left + 8 : right + 8]
            torch.testing.assert_close(top.patches[c, r], expect)
    table = top.summary()
    assert list(table.columns) == ["channel", "rank", "index", "value", "row", "col"]
    assert len(table) == 5 * 4 and table["rank"].max() == 4


def test_top_patches_channels_loader_and_ties():
    model = small_cnn()
    X = torch.rand(30, 1, 12, 12)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, torch.zeros(30)), 7)
    a = units.top_patches(model, loader, "3", k=3, channels=[4, 1])
    b = units.top_patches(model, X, "3", k=3)
    assert a.channels == (4, 1)
    torch.testing.assert_close(a.values, b.values[[4, 1]])
    assert torch.equal(a.indices, b.indices[[4, 1]])
    zeros = units.top_patches(small_cnn(), torch.zeros(5, 1, 12, 12), "3", k=3)
    assert zeros.indices[0].tolist() == [0, 1, 2]  # ties keep the earlier input


def test_top_patches_plot():
    top = units.top_patches(small_cnn(), torch.rand(20, 1, 12, 12), "3", k=3)
    fig = top.plot(channels=[0, 2])
    assert len(fig.axes) == 6 and "top-3 patches of 3" in fig._suptitle.get_text()


def test_top_patches_errors_leave_no_hooks():
    model = small_cnn()
    X = torch.rand(8, 1, 12, 12)
    with pytest.raises(OptionError, match="k must be a positive int"):
        units.top_patches(model, X, "3", k=0)
    with pytest.raises(UnitIndexError, match=r"channel 9 is out of range for '3', which has 5"):
        units.top_patches(model, X, "3", channels=[9])
    with pytest.raises(OptionError, match="data is empty"):
        units.top_patches(model, X[:0], "3")
    with pytest.raises(OptionTypeError, match="data must be a tensor"):
        units.top_patches(model, 3, "3")
    with pytest.raises(OptionError, match="batch_size must be a positive int"):
        units.top_patches(model, X, "3", batch_size=0)
    flat = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    with pytest.raises(LayerShapeError, match=r"receptive field through '1' \(Flatten\)"):
        units.top_patches(flat, X, "1")
    with pytest.raises(LayerShapeError, match=r"needs a layer with a \(N, C, H, W\) output"):
        units.top_patches(nn.Sequential(nn.ReLU()), torch.rand(8, 5), "0")
    assert_no_hooks(model)
    assert_no_hooks(flat)


class ExplodingCNN(nn.Module):
    """Raises between two convolutions: hooks on ``conv2`` are attached when it fails."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3)
        self.conv2 = nn.Conv2d(2, 2, 3)

    def forward(self, x):
        self.conv1(x)
        raise RuntimeError("boom after conv1")


def test_units_on_a_model_that_raises_and_with_a_user_hook():
    model = ExplodingCNN()
    with pytest.raises(RuntimeError, match="boom after conv1"):
        units.unit_stats(model, torch.rand(4, 1, 8, 8), "conv2")
    assert_no_hooks(model)
    with pytest.raises(RuntimeError, match="boom after conv1"):
        units.top_patches(model, torch.rand(4, 1, 8, 8), "conv2", k=2)
    assert_no_hooks(model)
    user = small_cnn()
    fired = []
    handle = user[3].register_forward_hook(lambda m, a, o: fired.append(1))
    units.top_patches(user, torch.rand(4, 1, 12, 12), "3", k=2)
    units.unit_stats(user, torch.rand(4, 1, 12, 12), "3")
    assert_no_hooks(user, ignore=[handle])
    user(torch.rand(1, 1, 12, 12))
    assert len(fired) == 3
    handle.remove()


# ---------------------------------------------------------------- unit statistics


def test_unit_stats_against_hand_computation():
    model = small_cnn()
    with torch.no_grad():
        model[3].bias[0] = -100.0  # channel 0 of layer 3 never fires after the ReLU
    X, y = torch.rand(40, 1, 12, 12), torch.arange(40) % 3
    stats = units.unit_stats(model, (X, y), "4", batch_size=9)
    act = model(X).detach().flatten(2)
    mean = act.mean(2).numpy()
    np.testing.assert_allclose(stats.table["mean"], mean.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.table["max"], act.amax((0, 2)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(stats.table["active"], (act.amax(2) > 0).float().mean(0).numpy())
    assert stats.table["dead"].tolist() == [True, False, False, False, False]
    per_class = np.stack([mean[y.numpy() == c].mean(0) for c in range(3)])
    top = per_class.max(0)
    rest = (per_class.sum(0) - top) / 2
    with np.errstate(invalid="ignore"):
        expect = (top - rest) / (top + rest)
    np.testing.assert_allclose(stats.table["selectivity"], expect, rtol=1e-5)
    assert np.isnan(stats.table["selectivity"][0])  # a dead unit has no selectivity
    assert stats.table["top_class"][1:].tolist() == per_class.argmax(0)[1:].tolist()
    summary = stats.summary()
    assert summary["dead"] == 1 and summary["dead_fraction"] == 0.2
    assert stats.plot().get_xlabel() == "selectivity"
    unlabelled = units.unit_stats(model, X, "4")
    assert "selectivity" not in unlabelled.table and unlabelled.plot().get_xlabel() == "mean"
    with pytest.raises(OptionError, match="data is empty"):
        units.unit_stats(model, X[:0], "4")


# ---------------------------------------------------------------- feature visualisation


def test_objectives_compose_and_match_hand_values():
    torch.manual_seed(0)
    acts = {"a": torch.randn(3, 4, 5, 5), "b": torch.randn(3, 2)}
    ch = fv.channel("a", 1)
    assert torch.isclose(ch(acts), acts["a"][:, 1].mean((1, 2)).sum())
    ne = fv.neuron("a", 2)
    assert torch.isclose(ne(acts), acts["a"][:, 2, 2, 2].sum())
    combo = ch + 2 * ne - fv.channel("b", 0) * 0.5
    expect = ch(acts) + 2 * ne(acts) - 0.5 * acts["b"][:, 0].sum()
    assert torch.isclose(combo(acts), expect) and combo.layers == ("a", "b")
    assert torch.isclose((-ch)(acts), -ch(acts))
    assert torch.isclose(
        (ch * ne)(acts), (acts["a"][:, 1].mean((1, 2)) * acts["a"][:, 2, 2, 2]).sum()
    )
    per_image = fv.channel("a", 1, batch=2) + fv.neuron("a", 0, batch=0)
    expect = acts["a"][2, 1].mean() + acts["a"][0, 0, 2, 2]
    assert torch.isclose(per_image(acts), expect) and per_image.name.endswith("batch=0)")
    with pytest.raises(UnitIndexError, match="batch=5 is out of range for a batch of 3 images"):
        fv.channel("a", 1, batch=5)(acts)
    vec = torch.tensor([1.0, 0.0, 0.0, 1.0])
    di = fv.direction("a", vec)
    hand = (acts["a"][:, 0] + acts["a"][:, 3]).mean((1, 2)).sum() / 2**0.5
    assert torch.isclose(di(acts), hand)
    dv = fv.diversity("a")(acts)
    flat = acts["a"].flatten(2)
    grams = torch.nn.functional.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1)
    sim = grams @ grams.T
    assert torch.isclose(dv, -(sim.sum() - sim.trace()) / 2)
    with pytest.raises(OptionTypeError, match="combines with another Objective or a number"):
        ch + "x"
    with pytest.raises(UnitIndexError, match=r"unit 7 is out of range for 'a'.*4 channels"):
        fv.channel("a", 7)(acts)
    with pytest.raises(OptionError, match="use channel"):
        fv.neuron("b", 0)(acts)
    with pytest.raises(UnitIndexError, match=r"position \(y=9, x=0\) is outside"):
        fv.neuron("a", 0, x=0, y=9)(acts)
    with pytest.raises(OptionError, match="direction has 3 entries but 'a' has 4 channels"):
        fv.direction("a", [1.0, 2.0, 3.0])(acts)
    with pytest.raises(OptionError, match="direction vector is all zeros"):
        fv.direction("a", [0.0, 0.0])
    with pytest.raises(OptionError, match="batch of at least 2"):
        fv.diversity("b")({"b": torch.randn(1, 2)})
    with pytest.raises(OptionTypeError, match="channel n must be an int"):
        fv.channel("a", 1.5)


def test_parameterisations_and_transforms():
    g = torch.Generator().manual_seed(0)
    for param in (fv.pixel_image((2, 1, 10, 12)), fv.fourier_image((2, 3, 10, 12))):
        image = param()
        assert image.shape == (2, param().shape[1], 10, 12)
        assert image.min() > 0 and image.max() < 1
    x = torch.rand(1, 1, 20, 20)
    assert fv.jitter(3)(x, g).shape[-2:] == (17, 17)
    assert fv.pad(2)(x, g).shape[-2:] == (24, 24)
    assert fv.scale([1.5])(x, g).shape[-2:] == (30, 30)
    torch.testing.assert_close(fv.rotate([0])(x, g), x, atol=1e-5, rtol=0)
    assert fv.rotate([90])(torch.ones(1, 1, 4, 4), g).shape == (1, 1, 4, 4)
    assert fv.compose(fv.pad(1), fv.jitter(2))(x, g).shape[-2:] == (20, 20)
    with pytest.raises(OptionError, match=r"shape must be \(batch, channels, height, width\)"):
        fv.fourier_image((28, 28))
    with pytest.raises(OptionError, match="decay_power must be >= 0"):
        fv.fourier_image((1, 1, 8, 8), decay_power=-1)
    with pytest.raises(OptionError, match="jitter needs d >= 1"):
        fv.jitter(0)
    with pytest.raises(OptionError, match="scale factors must be positive"):
        fv.scale([0])
    with pytest.raises(OptionError, match="rotate needs at least one angle"):
        fv.rotate([])
    with pytest.raises(OptionTypeError, match="compose takes transforms"):
        fv.compose(3)


@pytest.mark.parametrize("param", ["fourier", "pixel"])
def test_visualize_raises_the_objective_and_leaves_no_hooks(param):
    model = Blocks().train()
    fired = []
    handle = model.features[4].register_forward_hook(lambda m, a, o: fired.append(1))
    image = fv.pixel_image((1, 1, 16, 16)) if param == "pixel" else None
    objective = fv.channel("features.4", 3) + 0.1 * fv.neuron("features.2", 1)
    vis = fv.visualize(model, objective, param=image, shape=(1, 1, 16, 16), steps=30, lr=0.1)
    assert vis.final > vis.start and vis.history[-5:].mean() > vis.history[:5].mean()
    assert len(vis.history) == 30 and vis.images.shape == (1, 1, 16, 16)
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())  # the model's gradients untouched
    assert_no_hooks(model, ignore=[handle])
    assert vis.summary()["steps"] == 30 and vis.plot().get_title() == vis.objective
    before = len(fired)
    model(torch.rand(1, 1, 8, 8))
    assert len(fired) == before + 1
    handle.remove()


def test_visualize_runs_a_half_precision_model_in_its_dtype():
    torch.manual_seed(0)
    model = Blocks().to(torch.bfloat16).eval()
    vis = fv.visualize(model, fv.channel("features.4", 1), shape=(1, 1, 8, 8), steps=2)
    assert vis.images.dtype == torch.float32 and np.isfinite(vis.final)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert_no_hooks(model)


def test_unit_stats_and_top_patches_reject_bad_threshold_and_empty_channels():
    torch.manual_seed(0)
    model, x = Blocks().eval(), torch.rand(4, 1, 8, 8)
    with pytest.raises(OptionTypeError, match="threshold must be a number.*got str '0'"):
        hlviz.unit_stats(model, x, "features.1", threshold="0")
    with pytest.raises(OptionError, match="threshold is NaN"):
        hlviz.unit_stats(model, x, "features.1", threshold=float("nan"))
    with pytest.raises(OptionError, match=r"channels= is empty for 'features.1'.*\(0..3\)"):
        hlviz.top_patches(model, x, "features.1", k=2, channels=[])
    assert_no_hooks(model)


def test_visualize_is_reproducible_and_batches_with_diversity():
    model = Blocks().eval()
    obj = fv.channel("features.4", 2) + 0.5 * fv.diversity("features.4")
    a = fv.visualize(model, obj, shape=(3, 1, 16, 16), steps=10)
    b = fv.visualize(model, obj, shape=(3, 1, 16, 16), steps=10)
    assert torch.equal(a.images, b.images) and a.images.shape[0] == 3


def test_visualize_errors_leave_no_hooks_and_restore_the_mode():
    model = Blocks().train()
    with pytest.raises(UnitIndexError, match=r"unit 99 is out of range for 'features.4'"):
        fv.visualize(model, fv.channel("features.4", 99), shape=(1, 1, 8, 8), steps=2)
    assert model.training
    assert_no_hooks(model)
    with pytest.raises(
        OptionTypeError, match="objective must be an hlviz.units.featurevis.Objective"
    ):
        fv.visualize(model, "features.4")
    with pytest.raises(OptionError, match="steps must be a positive int"):
        fv.visualize(model, fv.channel("features.4", 0), steps=0)
    with pytest.raises(hlviz.LayerNotFoundError, match="no layer 'feature.4'"):
        fv.visualize(model, fv.channel("feature.4", 0), steps=1)
    with pytest.raises(OptionTypeError, match="transforms must be 'standard', None or a callable"):
        fv.visualize(model, fv.channel("features.4", 0), steps=1, transforms="jitter")
    with pytest.raises(OptionError, match="lr must be a positive finite number"):
        fv.visualize(model, fv.channel("features.4", 0), steps=1, lr=float("nan"))
    with pytest.raises(OptionError, match=r"pixel values, more than the 67,108,864"):
        fv.visualize(model, fv.channel("features.4", 0), steps=1, shape=(1, 1, 10**6, 10**6))
    with pytest.raises(
        OptionError, match="visualize needs a model with weights, but .* is on the meta device"
    ):
        fv.visualize(Blocks().to("meta"), fv.channel("features.4", 0), steps=1)
    assert model.training
    exploding = ExplodingCNN()
    with pytest.raises(RuntimeError, match="boom after conv1"):
        fv.visualize(exploding, fv.channel("conv2", 0), shape=(1, 1, 8, 8), steps=2)
    assert_no_hooks(model)
    assert_no_hooks(exploding)
