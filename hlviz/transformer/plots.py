"""Figures of transformer analyses: attention patterns, the logit lens, patching and head effects.

>>> import numpy as np
>>> ax = plot_attention_pattern(np.eye(3), tokens=["a", "b", "c"], title="one head")
>>> ax.get_title(), [t.get_text() for t in ax.get_xticklabels()]
('one head', ['a', 'b', 'c'])

Pure drawing: every function takes arrays and labels, draws one heat map and returns its
``Axes`` (never ``plt.show()``). The result objects (:class:`~hlviz.transformer.attention.AttentionMaps`,
:class:`~hlviz.transformer.lens.LogitLens`, :class:`~hlviz.transformer.patching.PatchingResult`,
:class:`~hlviz.transformer.patching.HeadAblation`) call these from their ``plot()``. matplotlib is
imported when a function is called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._checks import ndim
from ..errors import OptionError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_attention_pattern", "plot_grid"]


def _labels(labels: Sequence[Any] | None, size: int, what: str) -> list[str] | None:
    if labels is None:
        return None
    labels = [str(x) for x in labels]
    if len(labels) != size:
        raise OptionError(f"{what} has {len(labels)} labels for {size} positions; give {size}.")
    return labels


def plot_grid(
    values: np.ndarray,
    *,
    rows: Sequence[Any],
    columns: Sequence[Any] | None = None,
    xlabel: str = "position",
    ylabel: str = "layer",
    title: str | None = None,
    colorbar: str = "",
    diverging: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
    annotations: np.ndarray | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Heat map of a ``(rows, columns)`` array with labelled rows and columns; returns the ``Axes``.

    ``diverging=True`` uses a red-blue colormap centred at 0 (``+/- max |value|``, or
    ``vmax``). ``annotations`` (strings, same shape) are written in the cells. NaN cells
    are left blank.
    """
    import matplotlib.pyplot as plt

    values = np.asarray(values, dtype=float)
    ndim("values", values, 2, "(rows x columns)")
    row_labels = _labels(rows, values.shape[0], "rows")
    col_labels = _labels(columns, values.shape[1], "columns")
    if ax is None:
        width = min(16.0, max(4.0, 0.45 * values.shape[1] + 2.5))
        height = min(12.0, max(2.5, 0.4 * values.shape[0] + 1.2))
        _, ax = plt.subplots(figsize=(width, height))
    if diverging:
        finite = np.abs(values[np.isfinite(values)])
        limit = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
        limit = limit or 1.0
        image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    else:
        image = ax.imshow(values, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    ax.figure.colorbar(image, ax=ax, label=colorbar)
    ax.set_yticks(np.arange(values.shape[0]))
    ax.set_yticklabels(row_labels)
    ax.set_xticks(np.arange(values.shape[1]))
    if col_labels is not None:
        ax.set_xticklabels(col_labels, rotation=90 if max(map(len, col_labels)) > 2 else 0)
    if annotations is not None:
        for (i, j), text in np.ndenumerate(np.asarray(annotations, dtype=object)):
            ax.text(j, i, str(text), ha="center", va="center", fontsize=7, color="white")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return ax


def plot_attention_pattern(
    pattern: np.ndarray,
    *,
    tokens: Sequence[str] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
) -> Axes:
    """One head's ``(T, S)`` attention pattern: queries down, keys across, weights in [0, 1]."""
    import matplotlib.pyplot as plt

    pattern = np.asarray(pattern, dtype=float)
    ndim("pattern", pattern, 2, "(queries, keys)")
    keys = _labels(tokens, pattern.shape[1], "tokens")
    queries = _labels(tokens, pattern.shape[0], "tokens")
    if ax is None:
        side = min(10.0, max(3.0, 0.35 * pattern.shape[1] + 1.5))
        _, ax = plt.subplots(figsize=(side + 1.0, side))
    image = ax.imshow(pattern, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.figure.colorbar(image, ax=ax, label="attention")
    if keys is not None:
        ax.set_xticks(np.arange(len(keys)))
        ax.set_xticklabels(keys, rotation=90)
        ax.set_yticks(np.arange(len(queries)))
        ax.set_yticklabels(queries)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if title:
        ax.set_title(title)
    return ax
