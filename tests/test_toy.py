"""hlviz.toy, hlviz.models.mlp and hlviz.toy.plots: toy data, MLPs, fast training,
hidden units over the plane, linear regions (checked against networks whose regions are
known by construction), and the figures."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

import hlviz
import hlviz.toy.plots as pp
from hlviz import toy
from hlviz.errors import (
    EmptySelectionError,
    LayerNotFoundError,
    OptionError,
    OptionTypeError,
    ShapeMismatchError,
    UnitIndexError,
)
from hlviz.models import MLP, count_parameters, train_full_batch


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _set(linear: nn.Linear, weight, bias) -> nn.Linear:
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        linear.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return linear


# ---------------------------------------------------------------- the MLP builder
def test_mlp_names_its_layers_for_globs():
    model = MLP([5, 3], activation="tanh", seed=0)
    assert hlviz.resolve(model, "layers.*.act") == ["layers.0.act", "layers.1.act"]
    assert hlviz.resolve(model, "layers.*.linear") == ["layers.0.linear", "layers.1.linear"]
    rec = hlviz.activations(model, torch.randn(7, 2), ["layers.*.act", "head"])
    assert [tuple(rec[n].shape) for n in rec] == [(7, 5), (7, 3), (7, 2)]
    assert isinstance(model.layers[1].act, nn.Tanh)
    assert "widths=[5, 3], activation='tanh'" in repr(model)
    linear = MLP([], seed=0)
    assert len(linear.layers) == 0 and hlviz.resolve(linear, -1) == ["head"]


def test_mlp_seed_fixes_the_weights_without_touching_the_global_generator():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b = MLP([4], seed=7), MLP([4], seed=7)
    assert torch.equal(torch.rand(3), expected)  # the global stream went on untouched
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(MLP([4], seed=8).head.weight, a.head.weight)


def test_count_parameters():
    assert count_parameters(MLP([8, 4], seed=0)) == (2 * 8 + 8) + (8 * 4 + 4) + (4 * 2 + 2)
    assert count_parameters(MLP([], out_features=3, seed=0)) == 2 * 3 + 3


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"widths": "8"}, OptionTypeError, "widths must be a list of hidden-layer widths"),
        ({"widths": [8, 0]}, OptionError, r"widths\[1\] must be an int >= 1, got 0"),
        ({"widths": [8], "activation": "relux"}, OptionError, "activation='relux' is not known"),
        ({"widths": [8], "in_features": 0}, OptionError, "in_features must be an int >= 1"),
    ],
)
def test_mlp_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        MLP(**kwargs)


# ---------------------------------------------------------------- data sets
@pytest.mark.parametrize("name", toy.DATASETS)
def test_make_toy_is_balanced_standardised_and_seeded(name):
    data = toy.make_toy(name, n=200, seed=3)
    assert data.X.shape == (200, 2) and data.X.dtype == torch.float32
    assert data.y.dtype == torch.long and set(data.y.tolist()) == {0, 1}
    assert abs(data.y.float().mean().item() - 0.5) < 0.1
    assert data.X.mean(0).abs().max() < 1e-5 and abs(data.X.std(unbiased=False) - 1) < 1e-4
    again, other = toy.make_toy(name, n=200, seed=3), toy.make_toy(name, n=200, seed=4)
    assert torch.equal(data.X, again.X) and not torch.equal(data.X, other.X)
    x0, x1, y0, y1 = data.extent()
    assert math.isclose(x1 - x0, y1 - y0, rel_tol=1e-6)  # square
    assert x0 < data.X[:, 0].min() and data.X[:, 0].max() < x1
    assert y0 < data.X[:, 1].min() and data.X[:, 1].max() < y1


def test_xor_labels_follow_the_quadrants_without_noise():
    data = toy.make_toy("xor", n=300, noise=0.0)
    X = data.X  # centring moves the axes a little: check points away from them
    far = (X.abs() > 0.2).all(1)
    assert ((X[far, 0] > 0) != (X[far, 1] > 0)).long().eq(data.y[far]).float().mean() > 0.98


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "moon"}, "no toy data set 'moon'.*Did you mean 'moons'"),
        ({"name": "moons", "n": 2}, "n must be an int >= 4, got 2"),
        ({"name": "moons", "noise": -0.1}, r"noise must be a number >= 0.*got -0.1"),
    ],
)
def test_make_toy_rejects_bad_arguments(kwargs, match):
    with pytest.raises(OptionError, match=match):
        toy.make_toy(**kwargs)


# ---------------------------------------------------------------- training
# The accuracies notebook 02 prints in its "four data sets" cell (MLP [16, 16], ReLU,
# 300 full-batch Adam steps, seed 0, 400 points); a slower or broken trainer fails here.
NOTEBOOK_ACCURACY = {"moons": 0.99, "circles": 0.995, "spirals": 0.99, "xor": 0.92}


@pytest.mark.parametrize("name", toy.DATASETS)
def test_training_reaches_the_accuracy_the_notebook_states(name):
    fit = toy.fit_mlp(toy.make_toy(name, seed=0), [16, 16], activation="relu", seed=0)
    assert fit.accuracy >= NOTEBOOK_ACCURACY[name] - 0.005
    assert fit.losses[-1] < fit.losses[0] / 3
    assert len(fit.losses) == 300 and not fit.model.training


def test_training_is_deterministic_and_lbfgs_converges():
    data = toy.make_toy("circles", n=200, seed=1)
    a = toy.fit_mlp(data, [8], seed=2, steps=50)
    b = toy.fit_mlp(data, [8], seed=2, steps=50)
    assert np.array_equal(a.losses, b.losses) and a.accuracy == b.accuracy
    lbfgs = toy.fit_mlp(data, [8, 8], seed=0, steps=100, optimizer="lbfgs")
    assert lbfgs.accuracy == 1.0 and lbfgs.losses[-1] < 0.01
    summary = lbfgs.summary()
    assert summary["optimizer"] == "lbfgs" and summary["parameters"] == 24 + 72 + 18
    assert lbfgs.plot().get_yscale() == "log"


def test_training_leaves_the_thread_count_alone():
    data = toy.make_toy("spirals", n=200)
    before = torch.get_num_threads()
    seen = []
    model = MLP([8], seed=0)
    model.register_forward_pre_hook(lambda *args: seen.append(torch.get_num_threads()))
    train_full_batch(model, data.X, data.y, steps=5)
    assert set(seen) == {before} and torch.get_num_threads() == before


def test_weight_decay_shrinks_the_weights():
    data = toy.make_toy("moons", n=200)
    plain = train_full_batch(MLP([8], seed=0), data.X, data.y, steps=200)
    decayed = train_full_batch(MLP([8], seed=0), data.X, data.y, steps=200, weight_decay=0.1)
    norm = lambda m: sum(p.square().sum() for p in m.parameters()).item()  # noqa: E731
    assert norm(decayed.model) < norm(plain.model)


@pytest.mark.parametrize(
    ("X", "y", "kwargs", "error", "match"),
    [
        ([[0.0, 1.0]], [0], {}, OptionTypeError, "X and y must be tensors, got list and list"),
        (torch.zeros(4, 2), torch.zeros(3).long(), {}, OptionError, r"\(4, 2\) and \(3,\)"),
        (torch.zeros(4, 2), torch.zeros(4), {}, OptionTypeError, "int64 class indices"),
        (torch.zeros(4, 2), torch.zeros(4).long(), {"steps": 0}, OptionError, "steps must be"),
        (torch.zeros(4, 2), torch.zeros(4).long(), {"optimizer": "sgd"}, OptionError, "'sgd'"),
        (torch.zeros(4, 2), torch.zeros(4).long(), {"lr": -1.0}, OptionError, "lr must be > 0"),
    ],
)
def test_train_full_batch_rejects_bad_arguments(X, y, kwargs, error, match):
    with pytest.raises(error, match=match):
        train_full_batch(MLP([2], seed=0), X, y, **kwargs)


def test_fit_mlp_wants_toy_data():
    with pytest.raises(OptionTypeError, match="data must be a ToyData"):
        toy.fit_mlp((torch.zeros(4, 2), torch.zeros(4).long()), [4])


# ---------------------------------------------------------------- the plane
def test_plane_grid_is_row_major_in_y():
    grid = toy.plane_grid((0, 2, -1, 1), resolution=3)
    assert grid.xs.tolist() == [0, 1, 2] and grid.ys.tolist() == [-1, 0, 1]
    assert grid.points[1 * 3 + 2].tolist() == [2.0, 0.0]  # row i = ys[i], column j = xs[j]


def test_plane_activations_equal_a_hand_computed_forward():
    model = MLP([2], activation="relu", seed=0)
    W1, b1 = np.array([[1.0, -2.0], [0.5, 0.5]]), np.array([0.25, -1.0])
    W2, b2 = np.array([[2.0, -1.0], [-3.0, 1.0]]), np.array([0.0, 0.5])
    _set(model.layers[0].linear, W1, b1)
    _set(model.head, W2, b2)
    maps = toy.plane_activations(
        model, ["layers.0.linear", "layers.0.act", "head"], (-2, 2, -1, 3), resolution=9
    )
    xs, ys = np.linspace(-2, 2, 9), np.linspace(-1, 3, 9)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            pre = W1 @ np.array([x, y]) + b1
            post = np.maximum(pre, 0)
            logits = W2 @ post + b2
            np.testing.assert_allclose(maps["layers.0.linear"][:, i, j], pre, atol=1e-5)
            np.testing.assert_allclose(maps["layers.0.act"][:, i, j], post, atol=1e-5)
            np.testing.assert_allclose(maps["head"][:, i, j], logits, atol=1e-5)
    assert maps.summary() == {
        "layers.0.linear": (2, 9, 9),
        "layers.0.act": (2, 9, 9),
        "head": (2, 9, 9),
    }
    assert maps.extent == (-2.0, 2.0, -1.0, 3.0)


def test_plane_activations_accepts_toy_data_as_extent():
    data = toy.make_toy("moons", n=50)
    maps = toy.plane_activations(MLP([3], seed=0), "layers.*.act", data, resolution=4)
    assert maps.extent == data.extent() and maps["layers.0.act"].shape == (3, 4, 4)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"extent": (1, 0, 0, 1)}, OptionError, "is empty: it needs x_min < x_max"),
        ({"extent": (0, 1, 0)}, OptionError, r"extent must be \(x_min, x_max, y_min, y_max\)"),
        ({"extent": "square"}, OptionError, "extent must be"),
        ({"resolution": 1}, OptionError, "resolution must be an int >= 2, got 1"),
        ({"layers": "layers.9.act"}, LayerNotFoundError, "no layer 'layers.9.act'"),
    ],
)
def test_plane_activations_rejects_bad_arguments(kwargs, error, match):
    args = {"layers": "layers.0.act", "extent": (-1, 1, -1, 1), **kwargs}
    with pytest.raises(error, match=match):
        toy.plane_activations(MLP([3], seed=0), args.pop("layers"), args.pop("extent"), **args)


def test_plane_activations_wants_fully_connected_outputs():
    model = nn.Sequential(nn.Linear(2, 6), nn.Unflatten(1, (2, 3)))
    with pytest.raises(ShapeMismatchError, match=r"layer '1' gave 1 output\(s\) of shape"):
        toy.plane_activations(model, "1", (-1, 1, -1, 1), resolution=3)
    with pytest.raises(OptionError, match="no layer 'head' in these maps; they hold 0"):
        toy.plane_activations(model, "0", (-1, 1, -1, 1), resolution=3)["head"]


# ---------------------------------------------------------------- linear regions
def _lines(k: int) -> nn.Module:
    """k ReLU units whose zero lines are tangents of the unit circle at k evenly spaced
    directions in [0, pi): k lines in general position (no two parallel, no three through
    one point)."""
    angles = np.arange(k) * np.pi / k + 0.1  # directions in [0, pi): no two are parallel
    net = nn.Sequential(nn.Linear(2, k), nn.ReLU())
    _set(net[0], np.stack([np.cos(angles), np.sin(angles)], 1), -np.ones(k))
    return net


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_k_lines_in_general_position_make_1_plus_k_plus_k_choose_2_regions(k):
    net = _lines(k)
    # the farthest crossing of two tangents at angle difference d lies at 1 / cos(d / 2)
    far = max((1 / math.cos(d * np.pi / k / 2) for d in range(1, k)), default=1)
    half = 1.5 * far
    regions = toy.linear_regions(net, (-half, half, -half, half), resolution=601)
    assert regions.count == 1 + k + math.comb(k, 2)
    assert regions.units == k and regions.layers == ("1",)
    assert regions.labels.shape == (601, 601)


def test_parallel_lines_make_k_plus_1_regions_and_a_crossing_segment_k_plus_1_pieces():
    net = nn.Sequential(nn.Linear(2, 4), nn.ReLU())
    _set(net[0], [[1.0, 0.0]] * 4, [1.5, 0.5, -0.5, -1.5])  # x = -1.5, -0.5, 0.5, 1.5
    assert toy.linear_regions(net, (-2, 2, -2, 2), resolution=101).count == 5
    assert toy.regions_on_line(net, [-2, 0], [2, 1]).count == 5
    assert toy.regions_on_line(net, [-2, -1], [-2, 1]).count == 1  # along no crossing


def test_a_second_relu_layer_bends_its_line_as_constructed():
    # layer 1: relu(x), relu(y); layer 2: relu(relu(x) + relu(y) - 1). Quadrant x>0, y>0 is
    # cut by x + y = 1, x>0 > y by x = 1, y>0 > x by y = 1, and x, y < 0 stays whole: 7 regions.
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1), nn.ReLU())
    _set(net[0], np.eye(2), [0.0, 0.0])
    _set(net[2], [[1.0, 1.0]], [-1.0])
    regions = toy.linear_regions(net, (-3, 3, -3, 3), resolution=300)
    assert regions.count == 7 and regions.layers == ("1", "3") and regions.units == 3
    # along y = 0.5 the kinks are at x = 0 (relu(x)) and x = 0.5 (x + y = 1): 3 pieces
    assert toy.regions_on_line(net, [-3, 0.5], [3, 0.5], points=601).count == 3
    # along the first coordinate of layer 1 only: counts regions of its pre-activation signs
    assert toy.linear_regions(net, (-3, 3, -3, 3), resolution=50, layers="0").count == 4


def test_regions_on_a_1d_relu_network_with_known_breakpoints():
    net = nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 1))
    _set(net[0], [[1.0], [1.0], [-1.0]], [0.5, -0.25, 0.75])  # kinks at -0.5, 0.25, 0.75
    line = toy.regions_on_line(net, [-1.0], [1.0], points=401)
    assert line.count == 4 and line.labels.shape == (401,)
    assert line.labels[0] == 0 and line.labels[-1] == 3 and np.all(np.diff(line.labels) >= 0)
    assert line.summary() == {"regions": 4, "units": 3, "counted_on": "segment"}
    assert toy.regions_on_line(net, [0.0], [0.2]).count == 1


def test_a_trained_relu_network_has_more_regions_than_units():
    data = toy.make_toy("moons", n=200)
    fit = toy.fit_mlp(data, [8, 8], seed=0, steps=100)
    regions = toy.linear_regions(fit.model, data, resolution=100)
    assert 8 < regions.count <= 100 * 100 and regions.units == 16
    assert regions.summary()["counted_on"] == "grid"


def test_linear_regions_errors():
    with pytest.raises(EmptySelectionError, match="no ReLU-like module .*Tanh"):
        toy.linear_regions(MLP([4], activation="tanh", seed=0), (-1, 1, -1, 1))
    with pytest.raises(ShapeMismatchError, match="start and end must be finite points"):
        toy.regions_on_line(MLP([4], seed=0), [0.0, 0.0], [1.0])
    with pytest.raises(OptionError, match="points must be an int >= 2, got 1"):
        toy.regions_on_line(MLP([4], seed=0), [0.0, 0.0], [1.0, 1.0], points=1)
    with pytest.raises(OptionError, match="extent"):
        toy.linear_regions(MLP([4], seed=0), (0, 0, 0, 1))


# ---------------------------------------------------------------- hook hygiene
class _Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 3)
        self.act = nn.ReLU()

    def forward(self, x):
        self.act(self.a(x))
        raise RuntimeError("boom inside forward")


HOOKED = {
    "plane_activations": lambda m, layers: toy.plane_activations(
        m, layers, (-1, 1, -1, 1), resolution=5
    ),
    "linear_regions": lambda m, layers: toy.linear_regions(
        m, (-1, 1, -1, 1), resolution=5, layers=layers
    ),
    "regions_on_line": lambda m, layers: toy.regions_on_line(m, [0, 0], [1, 1], layers=layers),
    "plot_layer_movement": lambda m, layers: pp.plot_layer_movement(
        m, toy.make_toy("xor", n=20), layers
    ),
    "plot_decision": lambda m, layers: pp.plot_decision(m, toy.make_toy("xor", n=20), resolution=5),
}


@pytest.mark.parametrize("api", sorted(HOOKED))
@pytest.mark.parametrize("case", ["normal", "bad layer", "raises mid-forward"])
def test_hook_hygiene(api, case):
    model = _Exploding() if case == "raises mid-forward" else MLP([3], seed=0)
    fired = []
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))  # runs before a raise
    user = first.register_forward_hook(lambda *args: fired.append(1))
    layers = {"normal": "layers.0.act", "bad layer": "layers.7", "raises mid-forward": "act"}[case]
    if case == "normal":
        HOOKED[api](model, layers)
    elif case == "bad layer" and api != "plot_decision":
        with pytest.raises(LayerNotFoundError, match="no layer 'layers.7'"):
            HOOKED[api](model, layers)
    elif case == "raises mid-forward":
        with pytest.raises(RuntimeError, match="boom inside forward"):
            HOOKED[api](model, layers)
    hlviz.testing.assert_no_hooks(model, ignore=[user])
    before = len(fired)
    with pytest.raises(RuntimeError) if case == "raises mid-forward" else _nothing():
        model(torch.zeros(1, 2))
    assert len(fired) == before + 1, "the user's own hook no longer fires"
    user.remove()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------- figures
def test_plot_unit_maps_draws_one_panel_per_unit_with_the_zero_line():
    data = toy.make_toy("moons", n=60)
    maps = toy.plane_activations(MLP([5], seed=0), "layers.0.linear", data, resolution=30)
    fig = maps.plot("layers.0.linear", units=[0, 2, 4], data=data, ncols=3)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in panels] == [f"layers.0.linear[{u}]" for u in (0, 2, 4)]
    assert len(fig.axes) == 4
    with pytest.raises(UnitIndexError, match=r"units \[5\] are not units of 'layers.0.linear'"):
        pp.plot_unit_maps(maps, "layers.0.linear", units=[5])
    with pytest.raises(OptionTypeError, match="maps must be PlaneMaps"):
        pp.plot_unit_maps({"a": 1}, "a")


def test_plot_decision_regions_layer_movement_and_sweep():
    data = toy.make_toy("circles", n=80)
    fits = {(d, w): toy.fit_mlp(data, [w] * d, steps=30) for d in (1, 2) for w in (2, 4)}
    ax = pp.plot_decision(fits[(1, 2)].model, data, resolution=20)
    assert ax.get_title() == f"accuracy {fits[(1, 2)].accuracy:.3f}"
    regions = toy.linear_regions(fits[(2, 4)].model, data, resolution=40)
    assert regions.plot(data=data).get_title() == f"{regions.count} linear regions"
    line = toy.regions_on_line(fits[(2, 4)].model, [0, 0], [1, 1])
    with pytest.raises(OptionTypeError, match="counted over a grid.*regions along a segment"):
        pp.plot_regions(line)
    fig = pp.plot_layer_movement(fits[(2, 2)].model, data)
    assert [a.get_title() for a in fig.axes] == [
        "input",
        "layers.0.act (2-D)",
        "layers.1.act (2-D)",
    ]
    counts = {k: 3 for k in fits}
    sweep = pp.plot_sweep(fits, data, regions=counts, resolution=20)
    assert len(sweep.axes) == 4 and sweep.axes[0].get_ylabel() == "depth 1"
    assert sweep.axes[3].get_xlabel() == "width 4" and sweep.axes[3].get_title().endswith(
        "3 regions"
    )
    assert pp.plot_data(data).get_title() == "circles (80 points)"
    assert (
        pp.plot_layer(fits[(1, 4)].model, data, "layers.0.act").get_title().startswith("layers.0")
    )
    with pytest.raises(OptionTypeError, match="data must be a ToyData"):
        pp.plot_data(data.X)
    with pytest.raises(OptionError, match="layer must name one layer"):
        pp.plot_layer(fits[(2, 2)].model, data, "layers.*.act")
    with pytest.raises(OptionTypeError, match="fits must be a non-empty mapping"):
        pp.plot_sweep({}, data)
