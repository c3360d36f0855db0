"""Pure views of one layer for one input: a frozen state in, a matplotlib Figure (or HTML) out.

>>> import torch
>>> from hlviz.widgets.views import LayerView, render_layer_view
>>> view = LayerView("conv", "feature_maps", torch.randn(6, 5, 5), unit=4)
>>> fig = render_layer_view(view)
>>> fig._suptitle.get_text()
'conv: channel 4 of 6, input 0'

The widgets of :mod:`hlviz.widgets.inspector` and :mod:`hlviz.widgets.explorers` only read their
controls, build one of these states and call a function here, so every view can be
tested (and used in a script) without a browser. The view follows the layer's output:

=================  =====================  =========================================
kind               ``acts`` (one input)   drawn
=================  =====================  =========================================
``feature_maps``   ``(C, H, W)``          the selected channel large, a grid of
                                          channels with it framed in red
``sequence``       ``(T, D)``             the unit over positions (token labels),
                                          the most active units as a heat map
``attention``      ``(H, T, T)``          the selected head large, every head small
``bars``           ``(D,)``               every unit (bars, or a histogram when
                                          wide), the unit across all inputs
=================  =====================  =========================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import OptionError, ShapeMismatchError, UnitIndexError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from ..plotting.html import HTML

__all__ = [
    "HIGHLIGHT",
    "KINDS",
    "LayerView",
    "TopExamples",
    "render_layer_view",
    "render_top_examples",
    "sequence_html",
    "view_kind",
]

KINDS = {"feature_maps": 3, "sequence": 2, "attention": 3, "bars": 1}
HIGHLIGHT = "#d62728"  # the selected channel, head or unit
_VISIBLE = {"\n": "\u23ce", "\t": "\u21e5", " ": "\u2423"}


def view_kind(shape: tuple[int, ...], *, attention: bool = False) -> str:
    """The view for a layer output of ``shape`` (batch first, as :func:`hlviz.record` gives it).

    >>> view_kind((8, 16, 14, 14)), view_kind((8, 40, 64)), view_kind((8, 10))
    ('feature_maps', 'sequence', 'bars')
    >>> view_kind((8, 4, 40, 40), attention=True)
    'attention'

    ``attention=True`` marks a ``(N, H, T, T)`` output as attention weights (the caller
    knows: rows that sum to 1, or a layer that returns its weights).
    """
    if len(shape) == 4:
        if attention and shape[-1] == shape[-2]:
            return "attention"
        return "feature_maps"
    if len(shape) == 3:
        return "sequence"
    if len(shape) == 2:
        return "bars"
    raise ShapeMismatchError(
        f"a layer output of shape {tuple(shape)} has no view: the inspector shows (N, D), "
        "(N, T, D), (N, C, H, W) and (N, H, T, T) outputs. Pick another layer, or record "
        "this one with reduce= to make it (N, D)."
    )


@dataclass(frozen=True, eq=False)
class LayerView:
    """What :func:`render_layer_view` draws: one layer's activation for one input.

    ``acts``: ``(C, H, W)``, ``(T, D)``, ``(H, T, T)`` or ``(D,)`` as ``kind`` says (see the
    module doc). ``unit``: the channel, unit or head to highlight. ``tokens``: one label
    per position (sequences, attention). ``image``: the input ``(C, H, W)`` shown next to
    feature maps. ``batch``: ``(N, D)``, the layer for every input (bars: the unit's
    spread). ``max_maps`` channels (a page holding ``unit``) and ``top_units`` rows are drawn.
    """

    layer: str
    kind: str
    acts: torch.Tensor
    unit: int = 0
    input_label: str = "input 0"
    tokens: tuple[str, ...] | None = None
    image: torch.Tensor | None = None
    batch: torch.Tensor | None = None
    max_maps: int = 32
    top_units: int = 8

    def units(self) -> int:
        """How many channels, units or heads the slider ranges over."""
        return int(self.acts.shape[-1] if self.kind in ("sequence", "bars") else self.acts.shape[0])


def _check(view: LayerView) -> np.ndarray:
    if not isinstance(view, LayerView):
        raise OptionError(f"view must be a LayerView, got {type(view).__name__}.")
    if view.kind not in KINDS:
        raise OptionError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {view.kind!r}.")
    acts = view.acts.detach().float().cpu().numpy()
    if acts.ndim != KINDS[view.kind]:
        raise ShapeMismatchError(
            f"a {view.kind!r} view takes acts with {KINDS[view.kind]} axes (one input), got "
            f"shape {acts.shape}; index the batch first, e.g. acts[0]."
        )
    n = view.units()
    unit = view.unit
    if isinstance(unit, bool) or not isinstance(unit, int) or not 0 <= unit < n:
        raise UnitIndexError(
            f"unit={unit!r} is out of range for layer {view.layer!r}: use 0..{n - 1}."
        )
    positions = acts.shape[-2 if view.kind == "sequence" else -1]
    if (
        view.tokens is not None
        and view.kind in ("sequence", "attention")
        and len(view.tokens) != positions
    ):
        raise ShapeMismatchError(
            f"{len(view.tokens)} tokens for {positions} positions: give one token per position."
        )
    return acts


def _new_figure(fig: Figure | None, size: tuple[float, float]) -> Figure:
    import matplotlib.pyplot as plt

    if fig is None:
        return plt.figure(figsize=size)
    fig.clear()
    fig.set_size_inches(*size)
    return fig


def _frame(ax: Any, on: bool) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if on:
        for spine in ax.spines.values():
            spine.set_edgecolor(HIGHLIGHT)
            spine.set_linewidth(3)


def _shown(token: str) -> str:
    return "".join(_VISIBLE.get(c, c) for c in token)


def _scale(values: np.ndarray) -> tuple[str, float, float]:
    finite = values[np.isfinite(values)]  # masked attention scores hold -inf
    if finite.size == 0:
        return "viridis", 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    if low < 0:
        bound = max(abs(low), abs(high)) or 1.0
        return "RdBu_r", -bound, bound
    return "viridis", 0.0, high if high > 0 else 1.0


def render_layer_view(view: LayerView, *, fig: Figure | None = None) -> Figure:
    """Draw ``view`` into ``fig`` (cleared and resized) or a new pyplot figure; return it.

    >>> v = LayerView("fc", "bars", torch.tensor([0.5, -1.0, 2.0]), unit=2, input_label="x")
    >>> render_layer_view(v)._suptitle.get_text()
    'fc: unit 2 of 3 = 2, x'

    The selected channel/unit/head is drawn in red (:data:`HIGHLIGHT`); its panel title
    says which it is, so a reader of a saved figure knows what was selected.
    """
    acts = _check(view)
    draw = {
        "feature_maps": _feature_maps,
        "sequence": _sequence,
        "attention": _attention,
        "bars": _bars,
    }[view.kind]
    created = fig is None
    try:
        fig = draw(view, acts, fig)
    except BaseException:
        if created and fig is not None:
            import matplotlib.pyplot as plt

            plt.close(fig)
        raise
    return fig


def _montage(
    ax: Any,
    maps: np.ndarray,
    labels: list[int],
    selected: int,
    ncols: int,
    imshow: dict[str, Any],
    prefix: str,
) -> Any:
    """Tiles ``maps`` ``(n, h, w)`` into one image on ``ax`` (one axes, not one per map:
    drawing stays fast for 64 channels), a label per tile, the ``selected`` tile framed."""
    from matplotlib.patches import Rectangle

    n, h, w = maps.shape
    nrows = -(-n // ncols)
    gv, gh = max(2, round(0.4 * h)), max(1, round(0.12 * w))  # room for the tile labels
    grid = np.full((nrows * (h + gv), ncols * (w + gh) - gh), np.nan)
    for k in range(n):
        r, c = divmod(k, ncols)
        top, left = r * (h + gv) + gv, c * (w + gh)
        grid[top : top + h, left : left + w] = maps[k]
    image = ax.imshow(grid, interpolation="nearest", **imshow)
    for k, label in enumerate(labels):
        r, c = divmod(k, ncols)
        top, left = r * (h + gv) + gv, c * (w + gh)
        on = label == selected
        ax.text(
            left - 0.5,
            top - 0.7,
            f"{prefix} {label}",
            fontsize=6.5,
            va="bottom",
            color=HIGHLIGHT if on else "black",
            fontweight="bold" if on else "normal",
        )
        if on:
            ax.add_patch(
                Rectangle(
                    (left - 0.5, top - 0.5),
                    w,
                    h,
                    fill=False,
                    edgecolor=HIGHLIGHT,
                    lw=2.5,
                    clip_on=False,
                    gid="hlviz-selected",
                )
            )
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return image


def _feature_maps(view: LayerView, acts: np.ndarray, fig: Figure | None) -> Figure:
    C, h, w = acts.shape
    page = max(1, int(view.max_maps))
    start = (view.unit // page) * page
    shown = list(range(start, min(C, start + page)))
    ncols = min(8, len(shown))
    nrows = -(-len(shown) // ncols)
    aspect = h / w
    fig = _new_figure(fig, (3.0 + 0.95 * ncols, max(3.0, (0.95 * nrows) * aspect + 0.9)))
    cmap, low, high = _scale(acts[shown])
    has_image = view.image is not None
    grid = fig.add_gridspec(2, 3, width_ratios=[2.2, 0.95 * ncols, 0.12], height_ratios=[1, 1])
    if has_image:
        image = view.image.detach().float().cpu()
        image = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0).clamp(0, 1)
        ax_in = fig.add_subplot(grid[0, 0])
        ax_in.imshow(image.numpy(), cmap="gray_r")
        ax_in.set_title(view.input_label, fontsize=8)
        _frame(ax_in, False)
    big = fig.add_subplot(grid[1, 0] if has_image else grid[:, 0])
    big.imshow(acts[view.unit], cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
    big.set_title(f"channel {view.unit}", fontsize=9, color=HIGHLIGHT)
    _frame(big, True)
    tiles = fig.add_subplot(grid[:, 1])
    mapped = _montage(
        tiles,
        acts[shown],
        shown,
        view.unit,
        ncols,
        {"cmap": cmap, "vmin": low, "vmax": high},
        "ch",
    )
    pages = f"channels {start}-{shown[-1]}" if len(shown) < C else f"all {C} channels"
    tiles.set_title(f"{pages}, one colour scale", fontsize=8)
    fig.colorbar(mapped, cax=fig.add_subplot(grid[:, 2]))
    fig.suptitle(f"{view.layer}: channel {view.unit} of {C}, {view.input_label}", fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.95, top=0.86, bottom=0.04, wspace=0.08, hspace=0.3)
    return fig


def _sequence(view: LayerView, acts: np.ndarray, fig: Figure | None) -> Figure:
    T, D = acts.shape
    tokens = [_shown(t) for t in view.tokens] if view.tokens is not None else None
    order = np.argsort(-np.abs(acts).max(axis=0), kind="stable")
    top = [int(u) for u in order[: view.top_units]]
    rows = [view.unit, *[u for u in top if u != view.unit][: view.top_units - 1]]
    width = min(16.0, max(6.0, 0.13 * T + 1.5))
    fig = _new_figure(fig, (width, 2.2 + 0.28 * len(rows)))
    ax_line, ax_map = fig.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [1.0, 0.25 * len(rows) + 0.3]}
    )
    x = np.arange(T)
    ax_line.plot(x, acts[:, view.unit], color=HIGHLIGHT, marker=".", lw=1)
    ax_line.axhline(0.0, color="0.6", lw=0.6)
    ax_line.set_ylabel(f"unit {view.unit}", color=HIGHLIGHT)
    ax_line.set_title(f"unit {view.unit} over {T} positions", fontsize=9)
    cmap, low, high = _scale(acts[:, rows])
    ax_map.imshow(
        acts[:, rows].T, aspect="auto", cmap=cmap, vmin=low, vmax=high, interpolation="nearest"
    )
    ax_map.set_yticks(range(len(rows)), [f"unit {u}" for u in rows], fontsize=7)
    ax_map.get_yticklabels()[0].set_color(HIGHLIGHT)
    ax_map.set_title(f"unit {view.unit} and the most active units (max |value|)", fontsize=8)
    if tokens is not None:
        step = max(1, -(-T // 120))
        ax_map.set_xticks(x[::step], tokens[::step], fontsize=7, family="monospace")
    else:
        ax_map.set_xlabel("position")
    fig.suptitle(f"{view.layer}: unit {view.unit} of {D}, {view.input_label}", fontsize=10)
    fig.subplots_adjust(left=0.09, right=0.99, top=0.85, bottom=0.16, hspace=0.5)
    return fig


def _attention(view: LayerView, acts: np.ndarray, fig: Figure | None) -> Figure:
    H, T, _ = acts.shape
    tokens = [_shown(t) for t in view.tokens] if view.tokens is not None else None
    ncols = min(4, H)
    nrows = -(-H // ncols)
    fig = _new_figure(fig, (5.0 + 1.3 * ncols, max(4.2, 1.3 * nrows + 0.8)))
    big, small = fig.subplots(1, 2, width_ratios=[4.0, 1.3 * ncols])
    top = max(float(np.nanmax(acts)), 1e-9)
    big.imshow(acts[view.unit], cmap="Blues", vmin=0.0, vmax=top, interpolation="nearest")
    big.set_title(f"head {view.unit}: row = query, column = key", fontsize=9, color=HIGHLIGHT)
    if tokens is not None and T <= 48:
        big.set_xticks(range(T), tokens, rotation=90, fontsize=7, family="monospace")
        big.set_yticks(range(T), tokens, fontsize=7, family="monospace")
    else:
        big.set_xlabel("key position")
        big.set_ylabel("query position")
    _montage(
        small,
        acts,
        list(range(H)),
        view.unit,
        ncols,
        {"cmap": "Blues", "vmin": 0.0, "vmax": top},
        "head",
    )
    small.set_title(f"all {H} heads", fontsize=8)
    fig.suptitle(f"{view.layer}: head {view.unit} of {H}, {view.input_label}", fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.88, bottom=0.12, wspace=0.15)
    return fig


def _bars(view: LayerView, acts: np.ndarray, fig: Figure | None) -> Figure:
    D = acts.shape[0]
    spread = view.batch is not None and len(view.batch) > 1
    fig = _new_figure(fig, (9.5 if spread else 6.0, 3.0))
    axes = fig.subplots(1, 2 if spread else 1, squeeze=False)[0]
    value = float(acts[view.unit])
    if D <= 128:
        colours = ["0.55"] * D
        colours[view.unit] = HIGHLIGHT
        axes[0].bar(np.arange(D), acts, color=colours, width=0.85)
        axes[0].set_xlabel("unit")
        axes[0].set_title(f"all {D} units for this input", fontsize=9)
    else:
        axes[0].hist(acts, bins=40, color="0.55")
        axes[0].axvline(value, color=HIGHLIGHT, lw=2, label=f"unit {view.unit}")
        axes[0].set_xlabel("activation")
        axes[0].set_title(f"histogram of the {D} units for this input", fontsize=9)
        axes[0].legend(fontsize=7, frameon=False)
    axes[0].axhline(0.0, color="0.3", lw=0.6)
    if spread:
        column = view.batch.detach().float().cpu().numpy()[:, view.unit]
        axes[1].hist(column, bins=min(30, max(5, len(column) // 2)), color="0.55")
        axes[1].axvline(value, color=HIGHLIGHT, lw=2, label=view.input_label)
        axes[1].set_xlabel(f"unit {view.unit}")
        axes[1].set_title(f"unit {view.unit} across {len(column)} inputs", fontsize=9)
        axes[1].legend(fontsize=7, frameon=False)
    fig.suptitle(
        f"{view.layer}: unit {view.unit} of {D} = {value:.3g}, {view.input_label}", fontsize=10
    )
    fig.subplots_adjust(left=0.08, right=0.98, top=0.8, bottom=0.17, wspace=0.25)
    return fig


def sequence_html(view: LayerView) -> HTML:
    """The selected unit of a ``sequence`` view as a text heat map (tokens coloured).

    >>> v = LayerView("lstm", "sequence", torch.tensor([[1.0], [-1.0]]), tokens=("a", "<"))
    >>> "&lt;" in sequence_html(v)
    True
    """
    from ..plotting.html import token_heatmap_html

    acts = _check(view)
    if view.kind != "sequence":
        raise OptionError(f"sequence_html takes a 'sequence' view, got {view.kind!r}.")
    tokens = view.tokens or tuple(str(t) for t in range(acts.shape[0]))
    return token_heatmap_html(
        list(tokens),
        acts[:, view.unit],
        title=f"{view.layer}, unit {view.unit}: {view.input_label}",
    )


@dataclass(frozen=True, eq=False)
class TopExamples:
    """The ``k`` data examples on which one unit is most active (best first).

    ``values (k,)``: the unit's maximum over positions on each; ``indices (k,)``: rows of
    the data; ``examples``: those inputs (images ``(k, C, H, W)``, ids ``(k, T)``) or
    ``None`` (an ActivationStore holds no inputs); ``positions (k,)``: where the maximum
    sits (sequences); ``traces (k, T)``: the unit over each sequence; ``tokens``: one
    label list per sequence.
    """

    layer: str
    unit: int
    values: torch.Tensor
    indices: torch.Tensor
    examples: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    traces: torch.Tensor | None = None
    tokens: tuple[tuple[str, ...], ...] | None = None

    def summary(self) -> pd.DataFrame:
        """A ``pandas.DataFrame``: rank, data index, value (and position for sequences)."""
        import pandas as pd

        table = pd.DataFrame(
            {
                "rank": np.arange(1, len(self.values) + 1),
                "index": self.indices.numpy(),
                "value": self.values.numpy(),
            }
        )
        if self.positions is not None:
            table["position"] = self.positions.numpy()
        return table


def render_top_examples(top: TopExamples, *, fig: Figure | None = None) -> Figure | HTML:
    """Images in a row (a Figure), sequences as a text heat map per example, else a table (HTML).

    >>> top = TopExamples("fc", 1, torch.tensor([2.0, 1.0]), torch.tensor([7, 3]))
    >>> "<td>7</td>" in render_top_examples(top)
    True
    """
    import html as _html

    from ..plotting.html import HTML, token_heatmap_html

    title = f"top-{len(top.values)} examples of {top.layer}, unit {top.unit}"
    ex = top.examples
    if ex is not None and ex.dim() == 4 and ex.is_floating_point():
        k = len(ex)
        fig = _new_figure(fig, (1.3 * k + 0.4, 1.9))
        axes = fig.subplots(1, k, squeeze=False)[0]
        for ax, image, index, value in zip(axes, ex, top.indices, top.values, strict=True):
            image = image.float()
            shown = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0).clamp(0, 1)
            ax.imshow(shown.numpy(), cmap="gray_r")
            ax.set_title(f"#{int(index)}\n{float(value):.3g}", fontsize=7)
            _frame(ax, False)
        fig.suptitle(title, fontsize=9)
        return fig
    if top.traces is not None and top.tokens is not None:
        labels = [
            f"#{int(i)} ({float(v):.3g})" for i, v in zip(top.indices, top.values, strict=True)
        ]
        return token_heatmap_html(
            [list(t) for t in top.tokens], top.traces.numpy(), labels=labels, title=title
        )
    rows = "".join(
        f"<tr><td>{r}</td><td>{int(i)}</td><td>{float(v):.4g}</td></tr>"
        for r, (i, v) in enumerate(zip(top.indices, top.values, strict=True), start=1)
    )
    return HTML(
        f"<div><b>{_html.escape(title)}</b><table class='hlviz-top'><tr><th>rank</th>"
        f"<th>index</th><th>value</th></tr>{rows}</table></div>"
    )
