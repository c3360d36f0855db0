"""What one channel of a conv layer responds to: top-k dataset patches, receptive fields, unit stats.

>>> import torch.nn as nn
>>> stack = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3))
>>> receptive_field(stack, "3")
ReceptiveField(size=(8, 8), stride=(2, 2), offset=(-1, -1))
>>> top = top_patches(stack, torch.rand(20, 1, 12, 12), "3", k=3)
>>> tuple(top.patches.shape)    # (channels, k, input channels, 8, 8)
(4, 3, 1, 8, 8)

Activations stream through :func:`hlviz.activations` (hooks removed after every batch),
so a data set of any size is scanned with memory for one batch plus the ``k`` best
patches per channel. Feature visualisation lives in :mod:`hlviz.units.featurevis`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .._batches import labelled_batches
from ..errors import LayerShapeError, OptionError, OptionTypeError, UnitIndexError
from ..hooks.layers import check_module, resolve, unwrap
from ..hooks.recording import activations

__all__ = [
    "ReceptiveField",
    "TopPatches",
    "UnitStats",
    "receptive_field",
    "top_patches",
    "unit_stats",
]

# modules that act on each position alone: they leave the receptive field as it is
_POINTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.BatchNorm2d,
    nn.GroupNorm,
    nn.InstanceNorm2d,
)


@dataclass(frozen=True)
class ReceptiveField:
    """Where one unit of a conv stack looks in the input, per axis ``(rows, cols)``.

    >>> rf = ReceptiveField(size=(8, 8), stride=(2, 2), offset=(-1, -1))
    >>> rf.window(3, 0)   # input rows [5, 13) and cols [-1, 7) of unit (3, 0)
    (5, 13, -1, 7)

    The unit at output position ``(i, j)`` sees input rows ``offset[0] + i * stride[0]``
    up to (not including) that plus ``size[0]``, and likewise for columns. Windows may
    reach past the image (negative or too large indices): that is the zero padding.
    """

    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int]

    def window(self, i: int, j: int) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)`` input indices (bottom/right exclusive) of unit ``(i, j)``."""
        top = self.offset[0] + i * self.stride[0]
        left = self.offset[1] + j * self.stride[1]
        return top, top + self.size[0], left, left + self.size[1]


def _pair(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (value, value)


def _geometry(name: str, module: nn.Module) -> tuple[tuple, tuple, tuple, tuple] | None:
    """(kernel, stride, padding, dilation) of a module that moves in space, None if pointwise."""
    if isinstance(module, nn.Conv2d):
        kernel, stride, dilation = module.kernel_size, module.stride, module.dilation
        padding = module.padding
        if isinstance(padding, str):  # 'valid' or 'same' (stride 1)
            padding = tuple(
                0 if padding == "valid" else d * (k - 1) // 2 for k, d in zip(kernel, dilation)
            )
        return _pair(kernel), _pair(stride), _pair(padding), _pair(dilation)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        dilation = getattr(module, "dilation", 1)
        stride = module.stride if module.stride is not None else module.kernel_size
        return _pair(module.kernel_size), _pair(stride), _pair(module.padding), _pair(dilation)
    if isinstance(module, _POINTWISE) or len(module._modules) > 0:
        return None
    raise LayerShapeError(
        f"cannot compute a receptive field through {name!r} ({type(module).__name__}): only "
        "Conv2d, MaxPool2d, AvgPool2d and pointwise layers (activations, BatchNorm, Dropout) "
        "have one; ask for a layer before it, or pass the stack as a list of "
        "(kernel, stride, padding) tuples."
    )


def receptive_field(
    model: nn.Module | Sequence[tuple[int, int, int]], layer: str | None = None
) -> ReceptiveField:
    """The exact receptive field of one unit of ``layer`` (a conv stack), from kernel/stride/padding.

    >>> receptive_field([(3, 1, 1), (2, 2, 0), (3, 1, 1)])
    ReceptiveField(size=(8, 8), stride=(2, 2), offset=(-3, -3))

    ``model`` is a module whose layers up to ``layer`` run in definition order (a
    ``Sequential`` stack, or blocks of one), or a list of ``(kernel, stride, padding)``
    tuples (ints or pairs). Per axis, each layer with kernel ``k``, dilation ``d``,
    stride ``s`` and padding ``p`` sends ``size += (d*(k-1)) * jump``,
    ``offset -= p * jump``, ``jump *= s``.
    """
    if isinstance(model, nn.Module):
        check_module(model)
        if layer is None:
            raise OptionError(
                "receptive_field(model, layer) needs the layer whose units you ask about, "
                "e.g. receptive_field(model, 'features.block2.conv'); got layer=None."
            )
        target = _one_layer(model, layer)
        leaves = [(n, m) for n, m in unwrap(model).named_modules() if n and not m._modules]
        under = [i for i, (n, _) in enumerate(leaves) if n == target or n.startswith(target + ".")]
        end = under[-1] if under else len(leaves) - 1
        steps = [g for n, m in leaves[: end + 1] if (g := _geometry(n, m)) is not None]
    else:
        if isinstance(model, (str, bytes)) or not isinstance(model, Sequence):
            raise OptionTypeError(
                f"receptive_field takes a module or a list of (kernel, stride, padding) tuples, "
                f"got {type(model).__name__}."
            )
        steps = []
        for step in model:
            if not isinstance(step, (tuple, list)) or len(step) != 3:
                raise OptionError(
                    f"each layer of the stack is a (kernel, stride, padding) tuple, got {step!r}."
                )
            kernel, stride, padding = (_pair(v) for v in step)
            steps.append((kernel, stride, padding, (1, 1)))
    size, jump, offset = [1, 1], [1, 1], [0, 0]
    for kernel, stride, padding, dilation in steps:
        for a in (0, 1):
            size[a] += dilation[a] * (kernel[a] - 1) * jump[a]
            offset[a] -= padding[a] * jump[a]
            jump[a] *= stride[a]
    return ReceptiveField(size=tuple(size), stride=tuple(jump), offset=tuple(offset))


def _one_layer(model: nn.Module, layer: Any) -> str:
    names = resolve(unwrap(model), layer)
    if len(names) != 1:
        raise OptionError(
            f"{layer!r} selects {len(names)} layers ({', '.join(names[:4])}...); name one layer, "
            "e.g. 'features.block2.conv'."
        )
    return names[0]


def _channels(channels: Any, n: int, layer: str) -> list[int]:
    if channels is None:
        return list(range(n))
    chosen = [channels] if isinstance(channels, int) else list(channels)
    if not chosen:
        raise OptionError(
            f"channels= is empty for {layer!r}; give one or more channel indices "
            f"(0..{n - 1}), or None for every channel."
        )
    for c in chosen:
        if isinstance(c, bool) or not isinstance(c, int) or not -n <= c < n:
            raise UnitIndexError(
                f"channel {c!r} is out of range for {layer!r}, which has {n} channels (0..{n - 1})."
            )
    return [c % n for c in chosen]


def _crop(images: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, size, fill: float):
    """Windows ``images[n, :, top:top+size, left:left+size]`` (outside the image: ``fill``)."""
    pad_t = max(0, -int(tops.min())) if len(tops) else 0
    pad_l = max(0, -int(lefts.min())) if len(lefts) else 0
    pad_b = max(0, int(tops.max()) + size[0] - images.shape[-2]) if len(tops) else 0
    pad_r = max(0, int(lefts.max()) + size[1] - images.shape[-1]) if len(lefts) else 0
    padded = torch.nn.functional.pad(images, (pad_l, pad_r, pad_t, pad_b), value=fill)
    rows = (tops + pad_t)[:, None] + torch.arange(size[0])[None]
    cols = (lefts + pad_l)[:, None] + torch.arange(size[1])[None]
    n = torch.arange(len(images))[:, None, None]
    return padded.permute(0, 2, 3, 1)[n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


@dataclass(frozen=True, eq=False)
class TopPatches:
    """The ``k`` inputs that excite each channel most, cropped to the receptive field.

    ``values (C, k)``: the channel's maximum over space on each of its top inputs, best
    first; ``indices (C, k)``: positions of those inputs in the data; ``positions (C, k, 2)``:
    the ``(row, col)`` of the maximum in the feature map; ``patches (C, k, C_in, h, w)``:
    the input windows the maxima see (``fill`` outside the image); ``channels`` the
    channel numbers of the rows.
    """

    layer: str
    channels: tuple[int, ...]
    values: torch.Tensor
    indices: torch.Tensor
    positions: torch.Tensor
    patches: torch.Tensor
    receptive_field: ReceptiveField

    def summary(self):
        """A ``pandas.DataFrame``: one row per (channel, rank) with index, value, row, col."""
        import pandas as pd

        C, k = self.values.shape
        return pd.DataFrame(
            {
                "channel": np.repeat(self.channels, k),
                "rank": np.tile(np.arange(1, k + 1), C),
                "index": self.indices.reshape(-1).numpy(),
                "value": self.values.reshape(-1).numpy(),
                "row": self.positions[..., 0].reshape(-1).numpy(),
                "col": self.positions[..., 1].reshape(-1).numpy(),
            }
        )

    def plot(self, channels: Sequence[int] | None = None, *, cmap: str = "gray_r", fig=None):
        """Grid of patches, one row per channel (best on the left); returns the ``Figure``."""
        import matplotlib.pyplot as plt

        rows = (
            list(range(len(self.channels)))
            if channels is None
            else [self.channels.index(c) for c in _channels(channels, 10**9, self.layer)]
        )
        k = self.values.shape[1]
        if fig is None:
            fig = plt.figure(figsize=(0.75 * k + 0.8, 0.8 * len(rows) + 0.3))
        axes = fig.subplots(len(rows), k, squeeze=False)
        for r, row in enumerate(rows):
            for i in range(k):
                ax = axes[r, i]
                patch = self.patches[row, i].float()
                image = patch[0] if patch.shape[0] == 1 else patch.permute(1, 2, 0)
                ax.imshow(image.numpy(), cmap=cmap, vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
            axes[r, 0].set_ylabel(f"ch {self.channels[row]}", rotation=0, ha="right", va="center")
        fig.suptitle(
            f"top-{k} patches of {self.layer} (receptive field {self.receptive_field.size[0]}px)"
        )
        return fig


def top_patches(
    model: nn.Module,
    data: Any,
    layer: str,
    *,
    k: int = 9,
    channels: int | Sequence[int] | None = None,
    batch_size: int = 256,
    fill: float = 0.0,
) -> TopPatches:
    """Stream ``data`` through ``model`` and keep, per channel of ``layer``, the top-``k`` patches.

    >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    >>> top_patches(model, torch.rand(10, 1, 6, 6), "0", k=2).values.shape
    torch.Size([2, 2])

    A channel's score on an input is its maximum over space; the patch is the input
    window (:func:`receptive_field`) of the unit where that maximum sits. Ties keep the
    earlier input. ``data``: a tensor ``(N, C, H, W)``, an ImageSplit, an ``(X, y)`` pair or
    an iterable of batches (a DataLoader). Memory: one batch plus ``C * k`` patches.
    """
    check_module(model)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise OptionError(f"k must be a positive int (patches per channel), got {k!r}.")
    rf = receptive_field(model, layer)
    best = None
    seen = 0
    for x, _ in labelled_batches(data, batch_size):
        acts = activations(model, x, layer, stop=True)
        act = next(iter(acts.values()))
        if act.dim() != 4:
            raise LayerShapeError(
                f"top_patches needs a layer with a (N, C, H, W) output; {layer!r} gives "
                f"{tuple(act.shape)}. Pick a conv layer, e.g. one of hlviz.layer_names(model)."
            )
        if best is None:
            chosen = _channels(channels, act.shape[1], layer)
        act = act[:, chosen].float()
        n, C, H, W = act.shape
        flat = act.reshape(n, C, H * W)
        score, where = flat.max(dim=2)  # (n, C)
        keep = min(k, n)
        value, order = torch.sort(score.T, dim=1, descending=True, stable=True)
        value, order = value[:, :keep], order[:, :keep]  # (C, keep)
        pos = where.T.gather(1, order)
        rows, cols = pos // W, pos % W
        tops = rf.offset[0] + rows * rf.stride[0]
        lefts = rf.offset[1] + cols * rf.stride[1]
        crops = _crop(
            x.detach().cpu().float()[order.reshape(-1)],
            tops.reshape(-1),
            lefts.reshape(-1),
            rf.size,
            fill,
        )
        batch = {
            "values": value,
            "indices": order + seen,
            "positions": torch.stack([rows, cols], dim=-1),
            "patches": crops.reshape(C, keep, *crops.shape[1:]),
        }
        if best is not None:  # earlier inputs first, so a stable sort keeps them on ties
            batch = {key: torch.cat([best[key], batch[key]], dim=1) for key in batch}
        _, top = torch.sort(batch["values"], dim=1, descending=True, stable=True)
        top = top[:, :k]
        best = {
            key: value.gather(
                1, top.view(C, -1, *([1] * (value.dim() - 2))).expand(-1, -1, *value.shape[2:])
            )
            for key, value in batch.items()
        }
        seen += n
    if best is None:
        raise OptionError("data is empty: give at least one input to rank.")
    return TopPatches(
        layer=_one_layer(model, layer), channels=tuple(chosen), receptive_field=rf, **best
    )


@dataclass(frozen=True)
class UnitStats:
    """Per-channel statistics of a layer over a data set; ``table`` is a ``pandas.DataFrame``.

    Columns: ``channel``; ``mean`` (activation averaged over space and inputs); ``max``;
    ``active`` (fraction of inputs where the channel's maximum is above ``threshold``);
    ``dead`` (never active); with labels, ``top_class`` (class of highest mean response)
    and ``selectivity`` = (mean on the top class - mean on the others) / (their sum), the
    class-selectivity index of Morcos et al. (2018): 0 = no preference, 1 = one class only.
    """

    layer: str
    table: Any

    def summary(self) -> dict[str, Any]:
        """Counts of dead units and the average selectivity, as a dict."""
        t = self.table
        out = {"layer": self.layer, "units": len(t), "dead": int(t["dead"].sum())}
        out["dead_fraction"] = round(out["dead"] / len(t), 3)
        if "selectivity" in t:
            out["mean_selectivity"] = round(float(t["selectivity"].mean()), 3)
        return out

    def plot(self, ax=None):
        """Histogram of class selectivity (or of mean activation without labels)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4, 2.6))
        column = "selectivity" if "selectivity" in self.table else "mean"
        ax.hist(self.table[column].dropna(), bins=20, color="tab:blue")
        ax.set_xlabel(column)
        ax.set_ylabel("channels")
        ax.set_title(self.layer)
        return ax


def unit_stats(
    model: nn.Module,
    data: Any,
    layer: str,
    *,
    batch_size: int = 256,
    threshold: float = 0.0,
) -> UnitStats:
    """Dead-unit and class-selectivity statistics for every channel of ``layer``.

    >>> model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU())
    >>> stats = unit_stats(model, (torch.rand(8, 1, 5, 5), torch.arange(8) % 2), "1")
    >>> list(stats.table.columns)
    ['channel', 'mean', 'max', 'active', 'dead', 'top_class', 'selectivity']

    Labels come with the data (an ImageSplit, an ``(X, y)`` pair or ``(x, y)`` batches);
    without them the table has no ``top_class``/``selectivity``. Streams in batches.
    Outputs ``(N, C)`` and ``(N, C, ...)`` both work (space is averaged for the mean).
    """
    import pandas as pd

    check_module(model)
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise OptionTypeError(
            f"threshold must be a number (a unit counts as active above it), got "
            f"{type(threshold).__name__} {threshold!r}; the default is 0.0."
        )
    if math.isnan(threshold):
        raise OptionError("threshold is NaN; give a number (a unit counts as active above it).")
    sums = maxima = active = class_sums = class_counts = None
    n_total = 0
    labelled = True
    for x, y in labelled_batches(data, batch_size):
        acts = activations(model, x, layer, stop=True)
        act = next(iter(acts.values())).float()
        act = act.reshape(act.shape[0], act.shape[1], -1)
        mean, peak = act.mean(dim=2), act.amax(dim=2)  # (n, C)
        if sums is None:
            sums = torch.zeros(act.shape[1], dtype=torch.float64)
            maxima = torch.full((act.shape[1],), -float("inf"))
            active = torch.zeros(act.shape[1], dtype=torch.float64)
        sums += mean.sum(0).double()
        maxima = torch.maximum(maxima, peak.amax(0))
        active += (peak > threshold).sum(0).double()
        n_total += len(mean)
        labelled = labelled and y is not None
        if labelled:
            y = torch.as_tensor(y).long()
            n_classes = int(y.max()) + 1
            if class_sums is None:
                class_sums = torch.zeros(0, act.shape[1], dtype=torch.float64)
                class_counts = torch.zeros(0, dtype=torch.float64)
            if n_classes > len(class_counts):
                grow = n_classes - len(class_counts)
                class_sums = torch.cat(
                    [class_sums, torch.zeros(grow, act.shape[1], dtype=torch.float64)]
                )
                class_counts = torch.cat([class_counts, torch.zeros(grow, dtype=torch.float64)])
            class_sums.index_add_(0, y, mean.double())
            class_counts += torch.bincount(y, minlength=len(class_counts)).double()
    if sums is None:
        raise OptionError("data is empty: give at least one input.")
    table = {
        "channel": np.arange(len(sums)),
        "mean": (sums / n_total).numpy(),
        "max": maxima.numpy(),
        "active": (active / n_total).numpy(),
        "dead": (active == 0).numpy(),
    }
    if labelled:
        present = class_counts > 0
        means = class_sums[present] / class_counts[present, None]  # (classes, C)
        top = means.argmax(0)
        top_mean = means.max(0).values
        rest = (means.sum(0) - top_mean) / max(int(present.sum()) - 1, 1)
        denom = top_mean + rest
        selectivity = torch.where(denom > 0, (top_mean - rest) / denom.clamp_min(1e-12), torch.nan)
        table["top_class"] = torch.nonzero(present).flatten()[top].numpy()
        table["selectivity"] = selectivity.numpy()
    return UnitStats(layer=_one_layer(model, layer), table=pd.DataFrame(table))
