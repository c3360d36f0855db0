"""Figures of attributions: image overlays on one shared scale, attribution over time.

>>> import torch, hlviz
>>> from hlviz.attribution import Attribution
>>> a = Attribution(torch.randn(2, 1, 8, 8), "saliency", 0, None, None, None, torch.rand(2, 1, 8, 8))
>>> fig = plot_attribution_images(a)
>>> len(fig.axes)   # 2 examples x (input + map) and a colour bar
5

Methods differ in magnitude, and a figure that rescales each map on its own hides it:
here every map shares one symmetric colour scale (``+/- max |value|`` over all methods
and examples) unless ``per_image=True`` is asked for. :func:`plot_attribution_images`
draws several panels and returns the ``Figure`` (pass ``fig=`` to draw into one);
:func:`plot_over_time` draws on one ``Axes`` (``ax=``) and returns it. Neither calls
``plt.show()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import OptionError, OptionTypeError, ShapeMismatchError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .core import Attribution

__all__ = ["plot_attribution_images", "plot_over_time"]


def _named(attributions: Any) -> dict[str, Attribution]:
    from .core import Attribution

    if isinstance(attributions, Attribution):
        return {attributions.method: attributions}
    if isinstance(attributions, Mapping):
        items = dict(attributions)
    elif isinstance(attributions, Sequence) and not isinstance(attributions, str):
        items = {}
        for a in attributions:
            key = a.method if a.method not in items else f"{a.method} ({len(items)})"
            items[key] = a
    else:
        raise OptionTypeError(
            f"attributions must be an Attribution, a list of them or a dict name -> Attribution, "
            f"got {type(attributions).__name__}."
        )
    if not items or not all(isinstance(a, Attribution) for a in items.values()):
        raise OptionTypeError("give at least one Attribution (from hlviz.attribute).")
    return items


def _maps(a: Attribution) -> np.ndarray:
    v = a.values.detach().float()
    if v.dim() != 4:
        raise ShapeMismatchError(
            f"{a.method} values have shape {tuple(v.shape)}, not images (N, C, H, W): use "
            "plot_over_time for sequences."
        )
    return v.sum(1).numpy()  # channels summed: (N, H, W)


def plot_attribution_images(
    attributions: Attribution | Sequence[Attribution] | Mapping[str, Attribution],
    images: Any = None,
    *,
    per_image: bool = False,
    max_examples: int = 6,
    cmap: str = "RdBu_r",
    alpha: float = 0.7,
    fig: Figure | None = None,
) -> Figure:
    """Rows of examples; columns: the input, then one overlay per method, one colour bar.

    ``images`` ``(N, C, H, W)`` default to the first attribution's inputs (shown in grey,
    channels averaged, under the map). Maps (channels summed) share one symmetric scale
    across methods and examples; ``per_image=True`` scales each panel by its own
    ``max |value|`` instead (the colour bar then reads -1..1 and panels are not comparable).
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    named = _named(attributions)
    maps = {k: _maps(a) for k, a in named.items()}
    imgs = next(iter(named.values())).inputs if images is None else images
    imgs = torch.as_tensor(imgs).detach().float().cpu()
    if imgs.dim() != 4:
        raise ShapeMismatchError(f"images must be (N, C, H, W), got {tuple(imgs.shape)}.")
    shapes = {m.shape for m in maps.values()}
    if len(shapes) != 1 or next(iter(shapes))[1:] != tuple(imgs.shape[2:]):
        raise ShapeMismatchError(
            f"maps {sorted(shapes)} and images {tuple(imgs.shape)} differ in size: give "
            "Grad-CAM with upsample=True (the default) so maps match the input."
        )
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise OptionError(f"max_examples must be a positive int, got {max_examples!r}.")
    n = min(len(imgs), next(iter(shapes))[0], max_examples)
    top = max(float(np.abs(m[:n]).max()) for m in maps.values()) or 1.0
    cols = 1 + len(maps)
    if fig is None:
        fig = plt.figure(figsize=(2.0 * cols + 0.6, 2.0 * n))
    axes = fig.subplots(n, cols, squeeze=False)
    norm = Normalize(-1.0, 1.0) if per_image else Normalize(-top, top)
    for i in range(n):
        grey = imgs[i].mean(0).numpy()
        axes[i, 0].imshow(grey, cmap="gray")
        if i == 0:
            axes[i, 0].set_title("input", fontsize=9)
        for j, (name, m) in enumerate(maps.items(), start=1):
            panel = m[i] / (float(np.abs(m[i]).max()) or 1.0) if per_image else m[i]
            axes[i, j].imshow(grey, cmap="gray")
            image = axes[i, j].imshow(panel, cmap=cmap, norm=norm, alpha=alpha)
            if i == 0:
                axes[i, j].set_title(name, fontsize=9)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
    bar.set_label("per-image scale (not comparable)" if per_image else "attribution (shared scale)")
    return fig


def plot_over_time(
    attribution: Attribution,
    *,
    examples: Sequence[int] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Attribution along positions (time steps, tokens): one line per example; returns the Axes.

    >>> from hlviz.attribution import Attribution
    >>> a = Attribution(torch.randn(2, 6), "occlusion", 0, None, None, None, torch.zeros(2, 6))
    >>> plot_over_time(a).get_xlabel()
    'position'

    Values come from :meth:`Attribution.per_position`: ``(N, T)`` as they are, ``(N, T, F)``
    summed over features, Grad-CAM's ``(N, 1, T)`` map; images are refused (use
    :func:`plot_attribution_images`). With tokens (one example
    drawn) the x axis is labelled with them. ``examples`` picks rows (default: up to 4).
    """
    import matplotlib.pyplot as plt

    v = attribution.per_position().detach().float()
    rows = list(range(min(4, len(v)))) if examples is None else list(examples)
    if not rows or not all(isinstance(r, int) and 0 <= r < len(v) for r in rows):
        raise OptionError(f"examples must be indices below {len(v)}, got {examples!r}.")
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.25 * v.shape[1]), 2.8))
    for r in rows:
        ax.plot(range(v.shape[1]), v[r].numpy(), marker=".", label=f"example {r}")
    ax.axhline(0.0, color="grey", lw=0.6)
    if attribution.tokens is not None and len(rows) == 1:
        ax.set_xticks(range(v.shape[1]))
        ax.set_xticklabels(attribution.tokens[rows[0]], rotation=90, fontsize=8)
    else:
        ax.set_xlabel("position")
        ax.legend(fontsize=8)
    ax.set_ylabel("attribution")
    ax.set_title(f"{attribution.method}, target {attribution.target!r}", fontsize=9)
    return ax
