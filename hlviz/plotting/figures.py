"""Figures of hidden layers: images, feature maps, per-layer embeddings, numbers by layer.

>>> import torch, hlviz.plotting as hp
>>> fig = hp.plot_feature_maps(torch.randn(2, 6, 8, 8), index=0)
>>> len([ax for ax in fig.axes if ax.get_visible()])   # six maps and a colour bar
7

Every function draws and returns a matplotlib ``Figure`` (or ``Axes``); none calls
``plt.show()``: a notebook ends the cell with ``plt.show()``, a script saves the figure.
Functions that make a grid of panels take ``fig=`` (an empty figure to draw into);
single-panel functions take ``ax=``. matplotlib is imported when a function is called,
so ``import hlviz`` stays light.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import OptionError, OptionTypeError, UnitIndexError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot_by_layer",
    "plot_cka",
    "plot_feature_maps",
    "plot_images",
    "plot_layer_embeddings",
]

_METHODS = ("pca", "tsne")


def _to_numpy(value: Any, what: str) -> np.ndarray:
    if isinstance(value, list) and value and all(isinstance(v, torch.Tensor) for v in value):
        raise OptionTypeError(
            f"{what} is a list of {len(value)} tensors: the layer ran several times in one "
            "forward pass. Pick one call, e.g. rec.calls(layer)[0]."
        )
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise OptionTypeError(
            f"{what} must be a tensor or an array, got {type(value).__name__}."
        ) from None


def subplot_grid(
    n: int, ncols: int, fig: Figure | None, panel: tuple[float, float]
) -> tuple[Figure, np.ndarray]:
    """``n`` panels in rows of ``ncols`` on ``fig`` (a new figure when ``None``; an empty
    one otherwise): ``(fig, axes)`` with the unused panels hidden.

    >>> fig, axes = subplot_grid(3, 2, None, (2.0, 2.0))
    >>> len(axes), len(fig.axes), sum(ax.get_visible() for ax in fig.axes)
    (3, 4, 3)
    """
    import matplotlib.pyplot as plt

    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise OptionError(f"ncols must be a positive int, got {ncols!r}.")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    if fig is None:
        fig = plt.figure(figsize=(panel[0] * ncols, panel[1] * nrows))
    elif fig.axes:
        raise OptionError(
            f"fig= must be an empty figure to draw into; the one given already has "
            f"{len(fig.axes)} axes. Pass plt.figure() or leave fig=None."
        )
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _check_count(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{name} must be a positive int, got {value!r}.")


def plot_images(
    images: torch.Tensor | np.ndarray,
    labels: Sequence[Any] | torch.Tensor | None = None,
    *,
    max_images: int = 32,
    ncols: int = 8,
    cmap: str = "gray_r",
    fig: Figure | None = None,
) -> Figure:
    """A grid of images with their labels as titles; returns the ``Figure``.

    Example::

        fig = plot_images(test.X[:16], test.y[:16])

    ``images`` is ``(N, H, W)``, ``(N, 1, H, W)`` (grey) or ``(N, 3, H, W)`` (colour);
    ``labels`` has one entry per image (class index or text). At most ``max_images``
    are shown.
    """
    _check_count(max_images, "max_images")
    array = _to_numpy(images, "images")
    if array.ndim == 4 and array.shape[1] in (1, 3):
        array = array[:, 0] if array.shape[1] == 1 else array.transpose(0, 2, 3, 1)
    elif array.ndim != 3:
        raise OptionError(
            f"images must have shape (N, H, W), (N, 1, H, W) or (N, 3, H, W); got {array.shape}."
        )
    if labels is not None:
        labels = labels.tolist() if isinstance(labels, (torch.Tensor, np.ndarray)) else list(labels)
        if len(labels) != len(array):
            raise OptionError(
                f"labels has {len(labels)} entries for {len(array)} images; give one per image."
            )
    n = min(len(array), max_images)
    if n == 0:
        raise OptionError("images is empty: there is nothing to plot.")
    fig, axes = subplot_grid(n, ncols, fig, (1.1, 1.25))
    for i, ax in enumerate(axes):
        ax.imshow(array[i], cmap=cmap)
        ax.set_xticks([])
        ax.set_yticks([])
        if labels is not None:
            ax.set_title(str(labels[i]), fontsize=9)
    return fig


def plot_feature_maps(
    acts: torch.Tensor | np.ndarray,
    index: int = 0,
    *,
    max_maps: int = 16,
    ncols: int = 8,
    cmap: str | None = None,
    title: str | None = None,
    fig: Figure | None = None,
) -> Figure:
    """The channels of one example's activation ``(N, C, H, W)`` as a grid of maps.

    Example::

        fig = plot_feature_maps(rec["features.conv1"], index=0, title="conv1")

    ``index`` picks the example (a ``(C, H, W)`` tensor is taken as it is). All maps
    share one colour scale, shown by a colour bar, so brightness compares across
    channels: a diverging map centred on 0 when there are negative values (e.g. a
    convolution before its ReLU), else ``viridis`` from 0. The first ``max_maps``
    channels are drawn, titled by channel number.
    """
    _check_count(max_maps, "max_maps")
    array = _to_numpy(acts, "acts")
    if array.ndim == 4:
        if (
            isinstance(index, bool)
            or not isinstance(index, int)
            or not -len(array) <= index < len(array)
        ):
            raise UnitIndexError(
                f"index={index!r} is out of range for a batch of {len(array)} examples "
                f"(acts has shape {array.shape}); use 0..{len(array) - 1}."
            )
        array = array[index]
    if array.ndim != 3:
        raise OptionError(
            f"acts must be a spatial activation (N, C, H, W) or (C, H, W), got shape {array.shape}. "
            "For a flat (N, D) layer use plot_by_layer or plot_layer_embeddings instead."
        )
    maps = array[:max_maps]
    low, high = float(maps.min()), float(maps.max())
    if cmap is None:
        cmap = "RdBu_r" if low < 0 else "viridis"
    if low < 0:
        bound = max(abs(low), abs(high)) or 1.0
        low, high = -bound, bound
    elif high <= low:
        high = low + 1.0
    fig, axes = subplot_grid(len(maps), ncols, fig, (1.1, 1.2))
    image = None
    for channel, ax in enumerate(axes):
        image = ax.imshow(maps[channel], cmap=cmap, vmin=low, vmax=high)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"ch {channel}", fontsize=8)
    fig.colorbar(image, ax=list(axes), shrink=0.8, pad=0.02)
    if title:
        fig.suptitle(title)
    return fig


def _project(X: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, str]:
    if X.shape[1] == 1:
        X = np.hstack([X, np.zeros_like(X)])
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed).fit(X)
        share = pca.explained_variance_ratio_.sum()
        return pca.transform(X), f"PC1+PC2: {share:.0%} of variance"
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (len(X) - 1) // 3)))
    return TSNE(2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(X), "t-SNE"


def plot_layer_embeddings(
    acts: Mapping[str, torch.Tensor | np.ndarray],
    labels: Sequence[Any] | torch.Tensor | np.ndarray,
    *,
    method: str = "pca",
    ncols: int = 4,
    seed: int = 0,
    fig: Figure | None = None,
) -> Figure:
    """One 2-D scatter per layer (PCA or t-SNE of its activations), coloured by label.

    Example::

        rec = hlviz.activations(model, test.X, ["features.relu1", "classifier.relu"])
        fig = plot_layer_embeddings(rec, test.y)

    ``acts`` maps a layer name to its activations ``(N, ...)`` (a
    :class:`~hlviz.Recording` works); each is flattened to ``(N, D)`` and projected to
    two dimensions (``method="pca"`` or ``"tsne"``, seeded by ``seed``). Each panel's
    title gives the layer, ``D`` and, for PCA, the share of variance the two axes keep.
    ``labels`` (N entries) colour the points; the legend is shared.
    """
    if method not in _METHODS:
        raise OptionError(
            f"method must be one of {', '.join(map(repr, _METHODS))}, got {method!r}."
        )
    if not isinstance(acts, Mapping) or len(acts) == 0:
        raise OptionError(
            "acts must be a non-empty mapping {layer name: activations}, such as a "
            f"hlviz.Recording; got {type(acts).__name__}"
            + (" with no entries." if isinstance(acts, Mapping) else ".")
        )
    labels = labels.tolist() if isinstance(labels, (torch.Tensor, np.ndarray)) else list(labels)
    flat = {}
    for name in acts:
        array = _to_numpy(acts[name], f"acts[{name!r}]")
        if array.ndim == 0 or len(array) != len(labels):
            raise OptionError(
                f"acts[{name!r}] has {len(array) if array.ndim else 0} rows (shape {array.shape}) "
                f"but labels has {len(labels)} entries; give one label per example."
            )
        flat[name] = array.reshape(len(array), -1)
    classes = sorted(set(labels), key=lambda c: (str(type(c)), c))
    import matplotlib as mpl

    colours = mpl.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    fig, axes = subplot_grid(len(flat), ncols, fig, (3.0, 3.0))
    label_array = np.asarray(labels, dtype=object)
    for ax, (name, X) in zip(axes, flat.items()):
        points, note = _project(X, method, seed)
        for k, cls in enumerate(classes):
            mask = label_array == cls
            ax.scatter(
                points[mask, 0],
                points[mask, 1],
                s=6,
                alpha=0.7,
                color=colours(k % colours.N),
                label=str(cls),
            )
        ax.set_title(f"{name} (D={X.shape[1]})\n{note}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        names,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        markerscale=2.5,
        frameon=False,
        title="label",
    )
    fig.tight_layout()
    return fig


def plot_by_layer(
    values: Mapping[str, float] | Any,
    *,
    kind: str = "line",
    ylabel: str | None = None,
    title: str | None = None,
    reference: Mapping[str, float] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Numbers per layer (probe accuracy, patching effect...) as lines or bars; returns the ``Axes``.

    Example::

        ax = plot_by_layer({"conv1": 0.91, "conv2": 0.95, "fc1": 0.98}, ylabel="accuracy")

    ``values`` is a mapping ``{layer: number}``, a ``pandas.Series`` indexed by layer,
    or a ``pandas.DataFrame`` indexed by layer with one column per series (each a line,
    or a group of bars). ``reference`` draws labelled horizontal lines, e.g.
    ``{"chance": 0.1}``. Layers keep the order given.
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    if kind not in ("line", "bar"):
        raise OptionError(f"kind must be 'line' or 'bar', got {kind!r}.")
    if isinstance(values, pd.DataFrame):
        frame = values
    elif isinstance(values, pd.Series):
        frame = values.to_frame(values.name or ylabel or "value")
    elif isinstance(values, Mapping):
        frame = pd.Series(dict(values), dtype=float).to_frame(ylabel or "value")
    else:
        raise OptionTypeError(
            f"values must be a dict {{layer: number}}, a pandas Series or DataFrame; got "
            f"{type(values).__name__}."
        )
    if frame.empty:
        raise OptionError("values is empty: give at least one layer and its number.")
    try:
        frame = frame.astype(float)
    except (TypeError, ValueError) as exc:
        raise OptionTypeError(
            f"values must be numbers ({exc}); got dtypes {dict(frame.dtypes)}."
        ) from None
    legend = len(frame.columns) > 1 or bool(reference)
    own_figure = ax is None
    if own_figure:  # wide enough for the tick labels, plus room for a legend on the right
        width = max(4.5, 0.9 * len(frame) + 1.5) + (2.0 if legend else 0.0)
        _, ax = plt.subplots(figsize=(width, 3.2))
    x = np.arange(len(frame))
    if kind == "line":
        for column in frame.columns:
            ax.plot(x, frame[column].to_numpy(), marker="o", label=str(column))
    else:
        width = 0.8 / len(frame.columns)
        for k, column in enumerate(frame.columns):
            ax.bar(
                x + (k - (len(frame.columns) - 1) / 2) * width,
                frame[column].to_numpy(),
                width=width,
                label=str(column),
            )
    for k, (name, level) in enumerate((reference or {}).items()):
        ax.axhline(level, color="0.4", linestyle=("--", ":", "-.")[k % 3], linewidth=1, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels([str(i) for i in frame.index], rotation=30, ha="right")
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend:  # outside the plot, so it never hides a point
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if own_figure:
        ax.figure.tight_layout()
    return ax


def plot_cka(
    matrix: Any,
    ax: Axes | None = None,
    annot: bool = True,
    title: str | None = None,
) -> Axes:
    """A layer x layer CKA table as a heat map on a fixed 0..1 colour scale; returns the ``Axes``.

    >>> import pandas as pd, hlviz.plotting as hp
    >>> table = pd.DataFrame([[1.0, 0.4], [0.4, 1.0]], index=["a", "b"], columns=["a", "b"])
    >>> hp.plot_cka(table, title="CKA").get_title()
    'CKA'

    ``matrix`` is a :class:`~hlviz.similarity.CKAReport` (what :func:`hlviz.similarity.cka_matrix`
    returns) or a ``pandas.DataFrame``: rows and columns are layers (in order), values are
    similarities in [0, 1].
    ``annot`` writes each value (2 decimals) in its cell. The colour scale is always
    0..1, so figures of different models compare at a glance.
    """
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    from ..errors import OptionError, OptionTypeError

    if not isinstance(matrix, pd.DataFrame):
        matrix = getattr(matrix, "matrix", matrix)  # a CKAReport holds its table
    if not isinstance(matrix, pd.DataFrame):
        raise OptionTypeError(
            f"matrix must be a CKAReport (from hlviz.similarity.cka_matrix) or a pandas "
            f"DataFrame of layers x layers, got {type(matrix).__name__}."
        )
    if matrix.empty:
        raise OptionError("matrix is empty: give at least one layer in its rows and columns.")
    try:
        values = matrix.astype(float)
    except (TypeError, ValueError):
        raise OptionTypeError(
            f"matrix must hold numbers; got dtypes {sorted(set(map(str, matrix.dtypes)))}."
        ) from None
    if ax is None:
        rows, cols = values.shape
        side = (max(3.5, 0.6 * cols + 2.0), max(3.0, 0.55 * rows + 1.2))
        _, ax = plt.subplots(figsize=side)
    sns.heatmap(
        values,
        ax=ax,
        vmin=0.0,
        vmax=1.0,
        cmap="magma",
        annot=annot,
        fmt=".2f",
        square=True,
        cbar_kws={"label": "CKA", "shrink": 0.8},
        annot_kws={"fontsize": 8},
    )
    ax.set_xticklabels(ax.get_xticklabels(), rotation=45, ha="right")
    ax.set_yticklabels(ax.get_yticklabels(), rotation=0)
    if title:
        ax.set_title(title)
    return ax
