"""Two-dimensional toy problems: data sets, fast training, hidden units over the plane, linear regions.

>>> import hlviz
>>> data = hlviz.toy.make_toy("moons", n=200, seed=0)
>>> fit = hlviz.toy.fit_mlp(data, [8, 8], seed=0)
>>> fit.accuracy > 0.95
True
>>> maps = hlviz.toy.plane_activations(fit.model, "layers.0.act", data.extent(), resolution=50)
>>> maps["layers.0.act"].shape          # (units, resolution, resolution): unit images
(8, 50, 50)

With two input dimensions every hidden unit is an image over the input plane, and a
ReLU network cuts the plane into linear regions (one per activation pattern).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import EmptySelectionError, OptionError, OptionTypeError, ShapeMismatchError
from ..hooks.layers import LayerSpec, check_module, resolve
from ..hooks.recording import activations
from ..models.mlp import MLP, TrainResult, train_full_batch

__all__ = [
    "DATASETS",
    "Extent",
    "LinearRegions",
    "PlaneGrid",
    "PlaneMaps",
    "ToyData",
    "fit_mlp",
    "linear_regions",
    "make_toy",
    "plane_activations",
    "plane_grid",
    "regions_on_line",
]

DATASETS = ("moons", "circles", "spirals", "xor")
Extent = tuple[float, float, float, float]  # (x_min, x_max, y_min, y_max), as in imshow
_NOISE = {"moons": 0.15, "circles": 0.1, "spirals": 0.2, "xor": 0.1}


# ---------------------------------------------------------------- data sets
@dataclass(frozen=True)
class ToyData:
    """Points of the plane with class labels: ``X`` ``(n, 2)`` float32, ``y`` ``(n,)`` int64."""

    name: str
    X: torch.Tensor
    y: torch.Tensor

    def extent(self, margin: float = 0.15) -> Extent:
        """A square around the points (centred on their bounding box), widened by ``margin``
        (a fraction of its side) on every side: ``(x_min, x_max, y_min, y_max)``."""
        lo, hi = self.X.min(0).values, self.X.max(0).values
        centre, half = (lo + hi) / 2, float((hi - lo).max()) * (0.5 + margin)
        x, y = float(centre[0]), float(centre[1])
        return (x - half, x + half, y - half, y + half)

    def __len__(self) -> int:
        return len(self.y)


def _check_positive(value: Any, name: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(f"{name} must be an int >= {minimum}, got {value!r}.")


def make_toy(name: str, n: int = 400, *, noise: float | None = None, seed: int = 0) -> ToyData:
    """A 2-class toy data set of ``n`` points: ``"moons"``, ``"circles"``, ``"spirals"``, ``"xor"``.

    >>> data = make_toy("spirals", n=100, seed=0)
    >>> tuple(data.X.shape), data.y.bincount().tolist()
    ((100, 2), [50, 50])

    ``moons`` and ``circles`` come from scikit-learn (``make_moons``,
    ``make_circles(factor=0.5)``); ``spirals`` are two interleaved arms of 1.5 turns;
    ``xor`` has the label of ``sign(x1) != sign(x2)`` for points in the square. Gaussian
    ``noise`` (default 0.15, 0.1, 0.2, 0.1 in the units of each set) is added, then the
    points are centred and scaled by one factor (the shape is kept) so that their
    standard deviation is 1. The same ``seed`` gives the same points.
    """
    if name not in DATASETS:
        close = difflib.get_close_matches(str(name), DATASETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise OptionError(f"no toy data set {name!r}; choose one of {', '.join(DATASETS)}.{hint}")
    _check_positive(n, "n", 4)
    noise = _NOISE[name] if noise is None else noise
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise OptionError(f"noise must be a number >= 0 (a standard deviation), got {noise!r}.")
    rng = np.random.default_rng(seed)
    if name in ("moons", "circles"):
        from sklearn.datasets import make_circles, make_moons

        state = int(rng.integers(2**31))
        if name == "moons":
            X, y = make_moons(n, noise=noise, random_state=state)
        else:
            X, y = make_circles(n, noise=noise, factor=0.5, random_state=state)
    elif name == "spirals":
        y = np.arange(n) % 2
        t = np.sqrt(rng.uniform(0.05, 1.0, n))  # more points on the outer turns
        angle = 3 * np.pi * t + np.pi * y
        X = np.stack([t * np.cos(angle), t * np.sin(angle)], 1) * 2
        X = X + noise * rng.normal(size=X.shape) * t[:, None]
    else:
        X = rng.uniform(-1, 1, (n, 2))
        y = (np.sign(X[:, 0]) != np.sign(X[:, 1])).astype(np.int64)
        X = X + noise * rng.normal(size=X.shape)
    X = X - X.mean(0)
    X = X / X.std()
    return ToyData(name, torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y).long())


def fit_mlp(
    data: ToyData,
    widths: Sequence[int],
    *,
    activation: str = "relu",
    seed: int = 0,
    steps: int = 300,
    lr: float | None = None,
    optimizer: str = "adam",
) -> TrainResult:
    """Build an :class:`~hlviz.models.MLP` (initial weights seeded by ``seed``) and train it
    full-batch on ``data`` (:func:`~hlviz.models.train_full_batch`): about a second on a CPU.

    >>> fit = fit_mlp(make_toy("xor", n=200), [8], seed=0)
    >>> fit.accuracy > 0.9, fit.model.widths
    (True, (8,))
    """
    if not isinstance(data, ToyData):
        raise OptionTypeError(
            f"data must be a ToyData (from hlviz.toy.make_toy), got {type(data).__name__}."
        )
    model = MLP(widths, activation=activation, out_features=int(data.y.max()) + 1, seed=seed)
    return train_full_batch(model, data.X, data.y, steps=steps, lr=lr, optimizer=optimizer)


# ---------------------------------------------------------------- the plane
@dataclass(frozen=True)
class PlaneGrid:
    """A regular grid over a rectangle: ``xs`` ``(res,)``, ``ys`` ``(res,)`` and ``points``
    ``(res * res, 2)`` (row-major: point ``i * res + j`` is ``(xs[j], ys[i])``)."""

    extent: Extent
    xs: np.ndarray
    ys: np.ndarray
    points: torch.Tensor = field(repr=False)

    @property
    def resolution(self) -> int:
        return len(self.xs)


def _check_extent(extent: Any) -> Extent:
    if isinstance(extent, ToyData):
        return extent.extent()
    try:
        values = tuple(float(v) for v in extent)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4 or not all(map(math.isfinite, values)):
        raise OptionError(
            f"extent must be (x_min, x_max, y_min, y_max) or a ToyData, got {extent!r}."
        )
    if values[0] >= values[1] or values[2] >= values[3]:
        raise OptionError(f"extent {values} is empty: it needs x_min < x_max and y_min < y_max.")
    return values  # type: ignore[return-value]


def plane_grid(extent: Extent | ToyData, resolution: int = 100) -> PlaneGrid:
    """The grid of ``resolution x resolution`` points covering ``extent``.

    >>> grid = plane_grid((-1, 1, 0, 2), resolution=3)
    >>> grid.points.tolist()[:4]
    [[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [-1.0, 1.0]]
    """
    extent = _check_extent(extent)
    _check_positive(resolution, "resolution", 2)
    xs = np.linspace(extent[0], extent[1], resolution)
    ys = np.linspace(extent[2], extent[3], resolution)
    gx, gy = np.meshgrid(xs, ys)
    points = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)
    return PlaneGrid(extent, xs, ys, points)


@dataclass(frozen=True)
class PlaneMaps:
    """Hidden units over the plane: ``maps[layer]`` is ``(units, res, res)`` (numpy; row ``i``
    is ``y = ys[i]``, as ``imshow(..., origin="lower", extent=extent)`` draws it)."""

    maps: dict[str, np.ndarray]
    grid: PlaneGrid

    def __getitem__(self, layer: str) -> np.ndarray:
        if layer not in self.maps:
            raise OptionError(
                f"no layer {layer!r} in these maps; they hold {', '.join(self.maps)}."
            )
        return self.maps[layer]

    @property
    def extent(self) -> Extent:
        return self.grid.extent

    def summary(self) -> dict[str, tuple[int, ...]]:
        """Layer -> shape ``(units, res, res)``."""
        return {name: tuple(value.shape) for name, value in self.maps.items()}

    def plot(self, layer: str, **options: Any):
        """:func:`hlviz.toy.plots.plot_unit_maps` of one layer; returns the Figure."""
        from .plots import plot_unit_maps

        return plot_unit_maps(self, layer, **options)


def _eval_points(model: nn.Module, points: torch.Tensor, names: list[str]) -> dict[str, Any]:
    with torch.no_grad():
        rec = activations(model, points, names)
    return {name: rec.calls(name) for name in names}


def plane_activations(
    model: nn.Module,
    layers: LayerSpec,
    extent: Extent | ToyData,
    *,
    resolution: int = 100,
) -> PlaneMaps:
    """Every unit of ``layers`` evaluated at every point of a grid over the input plane.

    >>> maps = plane_activations(MLP([3], seed=0), ["layers.0.linear", "head"], (-1, 1, -1, 1),
    ...                          resolution=20)
    >>> maps.summary()
    {'layers.0.linear': (3, 20, 20), 'head': (2, 20, 20)}

    ``model`` takes ``(n, 2)`` points; ``layers`` is any layer spec of
    :func:`hlviz.resolve` (``"layers.*.act"``: every hidden layer after its activation;
    ``"layers.0.linear"``: the weighted sums of the first layer). The grid is
    :func:`plane_grid` of ``extent`` (or of a ``ToyData``'s bounding box); the model runs
    once on all ``resolution**2`` points through :func:`hlviz.record`, without gradients
    and in the mode it is in (call ``model.eval()`` first for a model with dropout or
    batch norm). Each layer's output must be ``(points, units)``.
    """
    check_module(model)
    grid = plane_grid(extent, resolution)
    names = resolve(model, layers)
    maps = {}
    for name, calls in _eval_points(model, grid.points, names).items():
        if len(calls) != 1 or calls[0].dim() != 2:
            raise ShapeMismatchError(
                f"layer {name!r} gave {len(calls)} output(s) of shape "
                f"{tuple(calls[0].shape)} for {len(grid.points)} points; plane maps need one "
                "(points, units) output per layer (a fully connected layer)."
            )
        value = calls[0].float().numpy()
        maps[name] = value.T.reshape(-1, resolution, resolution)
    return PlaneMaps(maps, grid)


# ---------------------------------------------------------------- linear regions
_PIECEWISE_LINEAR = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ReLU6, nn.Hardtanh)


@dataclass(frozen=True)
class LinearRegions:
    """Activation patterns of a ReLU network over a grid or along a segment.

    ``labels``: region id of every point (``(res, res)`` over a grid, ``(points,)`` along
    a segment); ``count``: the number of regions found (over a grid, the distinct
    patterns; along a segment, the pieces the segment is cut into); ``layers``: the
    layers whose signs make the pattern; ``units``: the number of units in the pattern.
    """

    count: int
    labels: np.ndarray
    layers: tuple[str, ...]
    units: int
    extent: Extent | None = None
    segment: tuple[tuple[float, float], tuple[float, float]] | None = None

    def summary(self) -> dict[str, Any]:
        """Count, units and where the regions were counted."""
        where = "grid" if self.extent is not None else "segment"
        return {"regions": self.count, "units": self.units, "counted_on": where}

    def plot(self, ax: Any = None, **options: Any):
        """:func:`hlviz.toy.plots.plot_regions` (grids only); returns the Axes."""
        from .plots import plot_regions

        return plot_regions(self, ax=ax, **options)


def _pattern_layers(model: nn.Module, layers: LayerSpec | None) -> list[str]:
    if layers is not None:
        return resolve(model, layers)
    names = [name for name, m in model.named_modules() if isinstance(m, _PIECEWISE_LINEAR)]
    if not names:
        kinds = sorted({type(m).__name__ for m in model.modules() if not list(m.children())})
        raise EmptySelectionError(
            f"{type(model).__name__} has no ReLU-like module (its leaf modules: "
            f"{', '.join(kinds)}); linear regions belong to piecewise-linear networks. "
            "Build it with activation='relu', or pass layers= naming the pre-activations "
            "whose signs should define the pattern."
        )
    return names


def _patterns(model: nn.Module, points: torch.Tensor, names: list[str]) -> np.ndarray:
    """One row of bits per point: the sign (> 0) of every unit of every pattern layer."""
    parts = []
    for name, calls in _eval_points(model, points, names).items():
        for value in calls:
            if value.dim() < 1 or value.shape[0] != len(points):
                raise ShapeMismatchError(
                    f"layer {name!r} gave shape {tuple(value.shape)} for {len(points)} points; "
                    "pattern layers need one row per point."
                )
            parts.append(value.reshape(len(points), -1) > 0)
    bits = torch.cat(parts, 1).numpy()
    return bits


def _label(bits: np.ndarray) -> np.ndarray:
    packed = np.packbits(bits, axis=1)
    return np.unique(packed, axis=0, return_inverse=True)[1].ravel()


def linear_regions(
    model: nn.Module,
    extent: Extent | ToyData,
    *,
    resolution: int = 200,
    layers: LayerSpec | None = None,
) -> LinearRegions:
    """Count the linear regions of a ReLU network over a grid of the input plane.

    >>> lines = nn.Sequential(nn.Linear(2, 2), nn.ReLU())     # two lines cross: 4 regions
    >>> with torch.no_grad():
    ...     _ = lines[0].weight.copy_(torch.eye(2)), lines[0].bias.zero_()
    >>> linear_regions(lines, (-1, 1, -1, 1), resolution=21).count
    4

    A region is a set of inputs with the same activation pattern (which units are
    positive); within it the network is one affine map. ``layers`` defaults to every
    ReLU-like module (its output is positive exactly where its input is); pass
    pre-activation layers to count other sign patterns. The count is of the patterns
    seen at the grid points, a lower bound that reaches the true count when every
    region contains a grid point (raise ``resolution`` to find thin regions).
    """
    check_module(model)
    grid = plane_grid(extent, resolution)
    names = _pattern_layers(model, layers)
    bits = _patterns(model, grid.points, names)
    labels = _label(bits).reshape(resolution, resolution)
    count = int(labels.max()) + 1
    return LinearRegions(count, labels, tuple(names), bits.shape[1], extent=grid.extent)


def regions_on_line(
    model: nn.Module,
    start: Sequence[float],
    end: Sequence[float],
    *,
    points: int = 1001,
    layers: LayerSpec | None = None,
) -> LinearRegions:
    """Count the linear pieces of a ReLU network along the segment from ``start`` to ``end``.

    >>> net = nn.Sequential(nn.Linear(1, 3), nn.ReLU())     # kinks at x = -0.5, 0, 0.5
    >>> with torch.no_grad():
    ...     _ = net[0].weight.fill_(1.0), net[0].bias.copy_(torch.tensor([0.5, 0.0, -0.5]))
    >>> regions_on_line(net, [-1.0], [1.0], points=101).count
    4

    ``start`` and ``end`` are input points (any dimension, 2 for the plane); the model
    runs on ``points`` evenly spaced points between them, and the count is the number
    of pieces between changes of the activation pattern (a region of a ReLU network is
    convex, so a segment crosses it at most once).
    """
    check_module(model)
    _check_positive(points, "points", 2)
    a = torch.as_tensor(start, dtype=torch.float32).reshape(-1)
    b = torch.as_tensor(end, dtype=torch.float32).reshape(-1)
    if a.shape != b.shape or not torch.isfinite(torch.cat([a, b])).all():
        raise ShapeMismatchError(
            f"start and end must be finite points of the same dimension, got {list(start)} "
            f"and {list(end)}."
        )
    t = torch.linspace(0, 1, points)[:, None]
    names = _pattern_layers(model, layers)
    bits = _patterns(model, (1 - t) * a + t * b, names)
    changes = np.concatenate([[0], np.any(bits[1:] != bits[:-1], axis=1).cumsum()])
    segment = (tuple(a.tolist()), tuple(b.tolist()))
    return LinearRegions(
        int(changes[-1]) + 1, changes, tuple(names), bits.shape[1], segment=segment
    )
