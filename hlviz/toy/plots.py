"""Figures of networks on the input plane: unit images, decision boundaries, linear regions.

>>> import hlviz, hlviz.toy.plots as pp
>>> data = hlviz.toy.make_toy("circles", n=100)
>>> fit = hlviz.toy.fit_mlp(data, [4], seed=0, steps=50)
>>> ax = pp.plot_decision(fit.model, data, resolution=40)
>>> ax.get_title().startswith("accuracy")
True

Every function draws and returns a matplotlib ``Figure`` (or ``Axes``) and never calls
``plt.show()``; grids of panels take ``fig=`` (an empty figure), single panels ``ax=``.
Points of class 0 are drawn as blue circles, class 1 as orange triangles (more classes
continue the colour cycle), over every map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import OptionError, OptionTypeError, UnitIndexError
from ..hooks.layers import check_module, resolve
from ..models.training import accuracy
from ..plotting.figures import subplot_grid
from .data import Extent, LinearRegions, PlaneMaps, ToyData, plane_activations

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot_data",
    "plot_decision",
    "plot_layer",
    "plot_layer_movement",
    "plot_regions",
    "plot_sweep",
    "plot_unit_maps",
]

_MARKERS = "o^sDv"


def _check_data(data: Any) -> ToyData:
    if not isinstance(data, ToyData):
        raise OptionTypeError(
            f"data must be a ToyData (from hlviz.toy.make_toy), got {type(data).__name__}."
        )
    return data


def _scatter(ax: Axes, X: np.ndarray, y: np.ndarray, size: float = 10, edge: float = 0.25):
    for label in np.unique(y):
        rows = y == label
        ax.scatter(
            X[rows, 0],
            X[rows, 1],
            s=size,
            marker=_MARKERS[int(label) % len(_MARKERS)],
            color=f"C{int(label)}",
            edgecolors="k",
            linewidths=edge,
            label=f"class {int(label)}",
        )


def _class_cmap():
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("hlviz_classes", ["C0", "white", "C1"])


def _frame(ax: Axes, extent: Extent) -> None:
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_data(data: ToyData, *, ax: Axes | None = None, title: str | None = None) -> Axes:
    """The points of a toy data set, coloured by class; returns the Axes.

    >>> ax = plot_data(hlviz.toy.make_toy("xor", n=40))
    >>> ax.get_title()
    'xor (40 points)'
    """
    import matplotlib.pyplot as plt

    data = _check_data(data)
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    _scatter(ax, data.X.numpy(), data.y.numpy())
    _frame(ax, data.extent())
    ax.set_title(title or f"{data.name} ({len(data)} points)")
    return ax


def plot_unit_maps(
    maps: PlaneMaps,
    layer: str,
    *,
    units: Sequence[int] | None = None,
    data: ToyData | None = None,
    ncols: int = 4,
    zero_line: bool = True,
    fig: Figure | None = None,
) -> Figure:
    """One heat map per unit of ``layer`` over the plane, with the data on top.

    >>> m = hlviz.toy.plane_activations(hlviz.models.MLP([3]), "layers.0.linear", (-1, 1, -1, 1),
    ...                                 resolution=10)
    >>> len(plot_unit_maps(m, "layers.0.linear").axes)     # three maps and a colour bar
    4

    Colours are centred on 0 (red positive, blue negative) with one scale for all
    panels, so units can be compared; ``zero_line`` draws the contour where the unit is
    0 (for a first-layer weighted sum, the line ``w . x + b = 0``). ``units`` picks
    units (default: all).
    """
    from matplotlib.colors import TwoSlopeNorm

    if not isinstance(maps, PlaneMaps):
        raise OptionTypeError(
            f"maps must be PlaneMaps (from hlviz.toy.plane_activations), got {type(maps).__name__}."
        )
    values = maps[layer]
    units = list(range(len(values))) if units is None else list(units)
    bad = [u for u in units if not isinstance(u, (int, np.integer)) or not 0 <= u < len(values)]
    if bad or not units:
        raise UnitIndexError(
            f"units {bad or units} are not units of {layer!r}, which has {len(values)} "
            f"(0 to {len(values) - 1})."
        )
    fig, axes = subplot_grid(len(units), ncols, fig, (2.3, 2.3))
    chosen = values[units]
    low, high = float(chosen.min()), float(chosen.max())
    bound = max(abs(low), abs(high), 1e-6)
    norm = TwoSlopeNorm(0.0, -bound, bound)
    image = None
    for ax, unit in zip(axes, units):
        image = ax.imshow(
            values[unit], origin="lower", extent=maps.extent, cmap="RdBu_r", norm=norm
        )
        if zero_line and values[unit].min() < 0 < values[unit].max():
            ax.contour(
                maps.grid.xs,
                maps.grid.ys,
                values[unit],
                levels=[0],
                colors="k",
                linewidths=1.0,
                linestyles="--",
            )
        if data is not None:
            _scatter(ax, _check_data(data).X.numpy(), data.y.numpy(), size=3, edge=0.0)
        _frame(ax, maps.extent)
        ax.set_title(f"{layer}[{unit}]", fontsize="small")
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="activation")
    return fig


def _probability(model: nn.Module, extent: Extent, resolution: int) -> tuple[Any, np.ndarray]:
    head = resolve(model, -1)[0]
    maps = plane_activations(model, head, extent, resolution=resolution)
    logits = torch.as_tensor(maps[head])
    if len(logits) == 1:  # one logit: a sigmoid read-out
        return maps.grid, torch.sigmoid(logits[0]).numpy()
    return maps.grid, torch.softmax(logits, 0)[1].numpy()


def plot_decision(
    model: nn.Module,
    data: ToyData,
    *,
    ax: Axes | None = None,
    resolution: int = 150,
    title: str | None = None,
) -> Axes:
    """The model's probability of class 1 over the plane, its decision boundary (black
    line at 0.5) and the data; the title gives the accuracy on ``data``. Returns the Axes.

    The model's last layer (:func:`hlviz.resolve` index ``-1``) must output the logits.
    """
    import matplotlib.pyplot as plt

    check_module(model)
    data = _check_data(data)
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3.2))
    extent = data.extent()
    grid, prob = _probability(model, extent, resolution)
    ax.imshow(prob, origin="lower", extent=extent, cmap=_class_cmap(), vmin=0, vmax=1, alpha=0.35)
    if prob.min() < 0.5 < prob.max():
        ax.contour(grid.xs, grid.ys, prob, levels=[0.5], colors="k", linewidths=1.2)
    _scatter(ax, data.X.numpy(), data.y.numpy(), size=7)
    _frame(ax, extent)
    acc = accuracy(model, data.X, data.y)
    ax.set_title(title or f"accuracy {acc:.3f}", fontsize="small")
    return ax


def plot_regions(
    regions: LinearRegions,
    *,
    ax: Axes | None = None,
    data: ToyData | None = None,
    title: str | None = None,
) -> Axes:
    """The linear regions found over a grid, each in its own colour; returns the Axes."""
    import matplotlib.pyplot as plt

    if not isinstance(regions, LinearRegions) or regions.extent is None:
        given = "regions along a segment" if isinstance(regions, LinearRegions) else regions
        raise OptionTypeError(
            "regions must be LinearRegions counted over a grid (hlviz.toy.linear_regions), "
            f"got {type(given).__name__ if not isinstance(given, str) else given}."
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3.2))
    colours = np.random.default_rng(0).permutation(regions.count)  # neighbours look different
    ax.imshow(
        colours[regions.labels],
        origin="lower",
        extent=regions.extent,
        cmap="tab20",
        interpolation="nearest",
        alpha=0.8,
    )
    if data is not None:
        _scatter(ax, _check_data(data).X.numpy(), data.y.numpy(), size=4)
    _frame(ax, regions.extent)
    ax.set_title(title or f"{regions.count} linear regions", fontsize="small")
    return ax


def _layer_points(model: nn.Module, data: ToyData, names: list[str]) -> list[np.ndarray]:
    from ..hooks.recording import activations

    with torch.no_grad():
        rec = activations(model, data.X, names)
    out = []
    for name in names:
        value = rec[name]
        if isinstance(value, list) or value.dim() != 2:
            raise OptionError(
                f"layer {name!r} did not give one (points, units) output; pick fully connected "
                "layers that run once per forward pass."
            )
        out.append(value.numpy())
    return out


def _draw_points(ax: Axes, value: np.ndarray, y: np.ndarray, name: str) -> None:
    from ..similarity.geometry import project

    d = value.shape[1]
    if name == "input":
        shown, label = value, "input"
    elif d == 2:
        shown, label = value, f"{name} (2-D)"
    elif d == 1:
        shown, label = np.stack([value[:, 0], np.zeros(len(value))], 1), f"{name} (1-D)"
    else:
        shown, label = project(value, "pca"), f"{name} (PCA of {d}-D)"
    _scatter(ax, shown, y, size=6)
    ax.set_title(label, fontsize="small")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_layer(model: nn.Module, data: ToyData, layer: Any, *, ax: Axes | None = None) -> Axes:
    """The data as one layer sees it (2-D directly, wider through PCA); returns the Axes.

    >>> ax = plot_layer(hlviz.models.MLP([3]), hlviz.toy.make_toy("xor", n=30), "layers.0.act")
    >>> ax.get_title()
    'layers.0.act (PCA of 3-D)'
    """
    import matplotlib.pyplot as plt

    check_module(model)
    data = _check_data(data)
    names = resolve(model, layer)
    if len(names) != 1:
        raise OptionError(f"layer must name one layer, got {layer!r} matching {names}.")
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    _draw_points(ax, _layer_points(model, data, names)[0], data.y.numpy(), names[0])
    return ax


def plot_layer_movement(
    model: nn.Module,
    data: ToyData,
    layers: Any = "layers.*.act",
    *,
    ncols: int = 4,
    fig: Figure | None = None,
) -> Figure:
    """The data as each layer sees it: the input, then every layer of ``layers``.

    >>> fig = plot_layer_movement(hlviz.models.MLP([2, 5]), hlviz.toy.make_toy("moons", n=50))
    >>> [ax.get_title() for ax in fig.axes]
    ['input', 'layers.0.act (2-D)', 'layers.1.act (PCA of 5-D)']

    Layers with two units are drawn as they are (axes: unit 0 and unit 1); wider ones
    through their first two principal components (:func:`hlviz.similarity.geometry.project`).
    """
    check_module(model)
    data = _check_data(data)
    names = resolve(model, layers)
    panels = [("input", data.X.numpy()), *zip(names, _layer_points(model, data, names))]
    fig, axes = subplot_grid(len(panels), ncols, fig, (2.6, 2.6))
    y = data.y.numpy()
    for ax, (name, value) in zip(axes, panels):
        _draw_points(ax, value, y, name)
    return fig


def plot_sweep(
    fits: Mapping[tuple[int, int], Any],
    data: ToyData,
    *,
    regions: Mapping[tuple[int, int], int] | None = None,
    resolution: int = 100,
    fig: Figure | None = None,
) -> Figure:
    """A grid of decision boundaries: one row per depth, one column per width.

    ``fits`` maps ``(depth, width)`` to a trained model or a
    :class:`~hlviz.models.TrainResult`; ``regions`` optionally maps the same keys to a
    count of linear regions, shown in each title next to the training accuracy.
    """
    if not isinstance(fits, Mapping) or not fits:
        raise OptionTypeError(
            "fits must be a non-empty mapping (depth, width) -> trained model or TrainResult, "
            f"got {type(fits).__name__}."
        )
    depths = sorted({k[0] for k in fits})
    widths = sorted({k[1] for k in fits})
    fig, axes = subplot_grid(len(depths) * len(widths), len(widths), fig, (2.2, 2.3))
    for i, depth in enumerate(depths):
        for j, width in enumerate(widths):
            ax = axes[i * len(widths) + j]
            if (depth, width) not in fits:
                ax.set_visible(False)
                continue
            fit = fits[(depth, width)]
            model = getattr(fit, "model", fit)
            plot_decision(model, data, ax=ax, resolution=resolution)
            text = ax.get_title().replace("accuracy ", "acc ")
            if regions is not None and (depth, width) in regions:
                text += f", {regions[(depth, width)]} regions"
            ax.set_title(text, fontsize="x-small")
            if j == 0:
                ax.set_ylabel(f"depth {depth}")
            if i == len(depths) - 1:
                ax.set_xlabel(f"width {width}")
    return fig
