"""Self-contained HTML views: text heat maps with inline styles only (no JS, no CDN).

>>> page = token_heatmap_html(["the", "<b>cat</b>"], [0.5, -1.0])
>>> "&lt;b&gt;cat&lt;/b&gt;" in page and "<b>cat" not in page and "<script" not in page
True

Every piece of text shown (tokens, labels, titles, tooltips) goes through
``html.escape``; colours come from one diverging scale whose ``vmin``/``vmax`` are
stated in a legend, so two heat maps drawn with the same scale can be compared.
The strings returned are :class:`HTML` (a ``str`` that Jupyter displays as HTML).
"""

from __future__ import annotations

import html as _html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import OptionError, ShapeMismatchError

__all__ = ["HTML", "diverging_colour", "token_heatmap_html"]

_NEGATIVE = (33, 102, 172)  # blue
_POSITIVE = (178, 24, 43)  # red
_VISIBLE = {"\n": "\u23ce", "\t": "\u21e5", "\r": "\u240d"}


class HTML(str):
    """A string of HTML that Jupyter renders (``_repr_html_``) and that prints as text."""

    def _repr_html_(self) -> str:
        return str(self)


def diverging_colour(value: float, vmin: float, vmax: float) -> tuple[int, int, int]:
    """The RGB colour of ``value`` on a white-centred blue-red scale from ``vmin`` to ``vmax``.

    >>> diverging_colour(0.0, -1, 1), diverging_colour(1.0, -1, 1), diverging_colour(-5, -1, 1)
    ((255, 255, 255), (178, 24, 43), (33, 102, 172))

    Zero is white when ``vmin < 0 < vmax``; otherwise the middle of the range is.
    Values outside the range take the colour of its end.
    """
    centre = 0.0 if vmin < 0 < vmax else (vmin + vmax) / 2
    if value >= centre:
        span, end = vmax - centre, _POSITIVE
    else:
        span, end = centre - vmin, _NEGATIVE
    a = 0.0 if span <= 0 or not math.isfinite(value) else min(abs(value - centre) / span, 1.0)
    return tuple(round(255 + (c - 255) * a) for c in end)  # type: ignore[return-value]


def _rows(tokens: Any, values: Any) -> tuple[list[list[str]], list[np.ndarray]]:
    if isinstance(tokens, str):
        raise OptionError(
            "tokens must be a list of strings (one per position), not one string; for "
            "characters use list(text)."
        )
    tokens = list(tokens)
    nested = bool(tokens) and not isinstance(tokens[0], str)
    rows_t = [[str(t) for t in row] for row in tokens] if nested else [[str(t) for t in tokens]]
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    if nested:
        rows_v = [np.asarray(v, dtype=float).reshape(-1) for v in values]
    else:
        rows_v = [np.asarray(values, dtype=float).reshape(-1)]
    if len(rows_v) != len(rows_t):
        raise ShapeMismatchError(
            f"{len(rows_t)} row(s) of tokens but {len(rows_v)} row(s) of values: give one row "
            "of values per sequence."
        )
    for i, (t, v) in enumerate(zip(rows_t, rows_v, strict=True)):
        if len(t) != len(v):
            raise ShapeMismatchError(
                f"row {i} has {len(t)} tokens but {len(v)} values: give one value per token."
            )
    return rows_t, rows_v


def _shown(token: str) -> str:
    return _html.escape("".join(_VISIBLE.get(c, c) for c in token)) or "&#8203;"


def token_heatmap_html(
    tokens: Sequence[str] | Sequence[Sequence[str]],
    values: Any,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    digits: int = 3,
) -> HTML:
    """A heat map of text: one row per sequence, each token coloured by its value.

    >>> page = token_heatmap_html([["a", "b"], ["c"]], [[1.0, -1.0], [0.0]], labels=["x", "y"])
    >>> page.count('class="hlviz-token"'), "vmin -1" in page and "vmax 1" in page
    (3, True)

    ``tokens``: a list of strings (one sequence) or a list of such lists; ``values``: the
    same shape (a ``(T,)``/``(N, T)`` array or tensor, or ragged lists). The scale runs
    from ``vmin`` to ``vmax`` (default: symmetric, ``+/- max |value|`` over every row, so
    rows share one scale) with white at 0; each token's tooltip (``title``) holds the
    token and its value. Newlines and tabs are shown as visible symbols.
    """
    rows_t, rows_v = _rows(tokens, values)
    if labels is not None and len(labels) != len(rows_t):
        raise ShapeMismatchError(f"{len(labels)} labels for {len(rows_t)} rows: give one per row.")
    finite = np.concatenate([v[np.isfinite(v)] for v in rows_v]) if rows_v else np.zeros(0)
    top = float(np.abs(finite).max()) if finite.size else 0.0
    top = top if top > 0 else 1.0
    vmin = -top if vmin is None else float(vmin)
    vmax = top if vmax is None else float(vmax)
    if not vmin < vmax:
        raise OptionError(f"vmin must be below vmax, got vmin={vmin} and vmax={vmax}.")
    fmt = f"{{:+.{digits}g}}"
    parts = [
        '<div class="hlviz-heatmap" style="font-family: monospace; line-height: 1.9;">',
    ]
    if title is not None:
        parts.append(f'<div style="font-weight: bold;">{_html.escape(str(title))}</div>')
    for i, (row_t, row_v) in enumerate(zip(rows_t, rows_v, strict=True)):
        parts.append('<div class="hlviz-row" style="white-space: pre-wrap;">')
        if labels is not None:
            parts.append(
                f'<span class="hlviz-label" style="color: #555; margin-right: 0.6em;">'
                f"{_html.escape(str(labels[i]))}</span>"
            )
        for token, value in zip(row_t, row_v, strict=True):
            r, g, b = diverging_colour(float(value), vmin, vmax)
            ink = "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#fff"
            tip = _html.escape(f"{token!r}: {fmt.format(value)}", quote=True)
            parts.append(
                f'<span class="hlviz-token" title="{tip}" style="background-color: '
                f'rgb({r}, {g}, {b}); color: {ink}; white-space: pre; padding: 0 1px;">'
                f"{_shown(token)}</span>"
            )
        parts.append("</div>")
    low, high = diverging_colour(vmin, vmin, vmax), diverging_colour(vmax, vmin, vmax)
    mid = diverging_colour((vmin + vmax) / 2 if not vmin < 0 < vmax else 0.0, vmin, vmax)
    parts.append(
        '<div class="hlviz-legend" style="font-size: 0.85em; color: #333;">'
        f"vmin {fmt.format(vmin).lstrip('+')} "
        f'<span style="display: inline-block; width: 8em; height: 0.8em; vertical-align: middle; '
        f'background: linear-gradient(to right, rgb{low}, rgb{mid}, rgb{high});"></span>'
        f" vmax {fmt.format(vmax).lstrip('+')}</div>"
    )
    parts.append("</div>")
    return HTML("".join(parts))
