"""Where the units and positions of a layer's output lie, read from the tensor it returns.

>>> import torch, torch.nn as nn
>>> block = nn.Sequential(nn.Conv1d(4, 16, 3, padding=1), nn.ReLU())
>>> layout(block, torch.zeros(2, 16, 40)).kind      # (N, C=16, L=40): the conv's 16 channels
'channels_first'
>>> layout(block, torch.zeros(2, 40, 16)).kind      # transposed back by the block: (N, T, D=16)
'sequence'

A 3-D output ``(N, A, B)`` is ambiguous on its own. The layer says which axis holds its
units through its *width*: the number of units its last width-bearing leaf produces
(``out_channels`` of a convolution, ``out_features`` of a linear layer, the size of a
norm, ``config.hidden_size`` of a Hugging Face model). The axis whose size is that width is
the unit axis; only when both or neither match does the layer's type decide (convolutions,
norms and pools give ``(N, C, L)``, everything else ``(N, T, D)``, and RNN or attention
modules built with ``batch_first=False`` give ``(T, N, D)``). Where that is still wrong,
state the layout with :func:`declare_layout`; every verb (record, reduce, edit, collect,
activation patching, the inspector) then uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import choice
from ..errors import LayerNotFoundError, OptionError

__all__ = [
    "PACKED_LAYOUT",
    "REDUCERS",
    "Layout",
    "LayoutHint",
    "declare_layout",
    "explain",
    "layout",
    "layout_hint",
    "layout_hints",
    "reduce_positions",
]

_CHANNELS_FIRST = (
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.GroupNorm,
)
_DECLARED = {"NCL": "channels_first", "NTD": "sequence", "NLC": "sequence", "TND": "sequence_first"}
_ATTRIBUTE = "_hlviz_layout"


@dataclass(frozen=True)
class Layout:
    """Where units and positions lie in one activation tensor.

    ``batch`` is the batch axis, ``units`` the axis of channels/features, ``positions``
    the axes of space, time or tokens (empty for a flat ``(N, D)`` activation); ``how``
    says what decided it (for error messages).
    """

    batch: int
    units: int
    positions: tuple[int, ...]
    kind: str  # "flat", "channels_first", "sequence", "sequence_first"
    how: str = ""


@dataclass(frozen=True)
class LayoutHint:
    """What a layer's modules say about its 3-D outputs, computed once when hooks attach.

    ``channels_first``: the type of its last informative leaf gives ``(N, C, L)``;
    ``batch_first``: ``False`` inside RNN/attention modules that give ``(T, N, D)``;
    ``width``: units of its last width-bearing leaf; ``model_width``: the hidden size of
    the model (Hugging Face ``config``); ``declared``: a layout stated by the user.
    """

    channels_first: bool = False
    batch_first: bool = True
    width: int | None = None
    model_width: int | None = None
    declared: str | None = None


def _is_leaf(module: nn.Module) -> bool:
    return not any(True for _ in module.children())


def _informative(module: nn.Module) -> bool:
    """A leaf whose type says something about the layout: it has parameters or is a pool
    (element-wise activations, dropout and other parameter-free leaves keep the layout)."""
    return isinstance(module, _CHANNELS_FIRST) or any(
        True for _ in module.parameters(recurse=False)
    )


def _width(module: nn.Module) -> int | None:
    """The number of units a leaf produces, when its type or weights say so."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, (nn.Linear, nn.Bilinear)):
        return module.out_features
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
        return module.num_features
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return module.embedding_dim
    if isinstance(module, nn.RNNBase):
        size = module.proj_size or module.hidden_size
        return size * (2 if module.bidirectional else 1)
    if isinstance(module, nn.LayerNorm) and module.normalized_shape:
        return int(module.normalized_shape[-1])
    nf = getattr(module, "nf", None)  # transformers' GPT-2 Conv1D
    if isinstance(nf, int):
        return nf
    weight = getattr(module, "weight", None)  # RMSNorm-style modules: one scale per unit
    if isinstance(weight, torch.Tensor) and weight.dim() == 1:
        return int(weight.shape[0])
    return None


def _own_batch_first(module: nn.Module) -> bool | None:
    """``batch_first`` of an RNN, attention or transformer module; ``None`` for others."""
    if isinstance(module, nn.TransformerEncoder | nn.TransformerDecoder):
        module = module.layers[0] if len(module.layers) else module
    for candidate in (module, getattr(module, "self_attn", None)):
        value = getattr(candidate, "batch_first", None)
        if isinstance(value, bool):
            return value
    return None


def _model_width(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for key in ("hidden_size", "d_model", "n_embd"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def _leaf_facts(leaves: list[nn.Module]) -> tuple[bool, int | None] | None:
    """(channels-first type, width) from a list of leaves in order; None when none informs."""
    informative = [m for m in leaves if _informative(m)]
    if not informative:
        return None
    widths = [w for w in map(_width, leaves) if w is not None]
    return isinstance(informative[-1], _CHANNELS_FIRST), (widths[-1] if widths else None)


def layout_hints(model: nn.Module, names: list[str]) -> dict[str, LayoutHint]:
    """The :class:`LayoutHint` of each named layer, in one pass over the model.

    A layer made only of parameter-free leaves (``ReLU``, ``Dropout``, transformers'
    ``GELUActivation``) keeps the layout of what came before it, so its hint comes from the
    nearest preceding informative leaf. ``batch_first`` comes from the layer itself, else
    from the nearest enclosing RNN, attention or transformer module.
    """
    wanted = set(names)
    own: dict[str, bool | None] = {}
    hints: dict[str, LayoutHint] = {}
    previous: list[nn.Module] = []
    model_width = _model_width(model)
    for name, module in model.named_modules():
        own[name] = _own_batch_first(module)
        if name in wanted:
            leaves = [m for m in module.modules() if _is_leaf(m)]
            facts = _leaf_facts(leaves) or _leaf_facts(previous) or (False, None)
            batch_first = own[name]
            scope = name
            while batch_first is None and scope:
                scope = scope.rpartition(".")[0]
                batch_first = own.get(scope)
            hints[name] = LayoutHint(
                channels_first=facts[0] or isinstance(module, _CHANNELS_FIRST),
                batch_first=batch_first is not False,
                width=facts[1],
                model_width=model_width,
                declared=getattr(module, _ATTRIBUTE, None),
            )
        if _is_leaf(module) and _informative(module):
            previous.append(module)
    return hints


def layout_hint(module: nn.Module | None) -> LayoutHint:
    """The :class:`LayoutHint` of a module on its own (no enclosing modules considered)."""
    if module is None:
        return LayoutHint()
    facts = _leaf_facts([m for m in module.modules() if _is_leaf(m)]) or (False, None)
    return LayoutHint(
        channels_first=facts[0] or isinstance(module, _CHANNELS_FIRST),
        batch_first=_own_batch_first(module) is not False,
        width=facts[1],
        model_width=_model_width(module),
        declared=getattr(module, _ATTRIBUTE, None),
    )


def _three_d(kind: str, how: str) -> Layout:
    if kind == "channels_first":
        return Layout(0, 1, (2,), kind, how)
    if kind == "sequence_first":
        return Layout(1, 2, (0,), kind, how)
    return Layout(0, 2, (1,), "sequence", how)


def layout(hint: LayoutHint | nn.Module | None, tensor: torch.Tensor) -> Layout:
    """The axes of ``tensor``, an output of a layer with this hint (or this module).

    ``(N, D)`` for 2-D and ``(N, C, *space)`` for 4-D and 5-D tensors. A 3-D tensor
    follows a declared layout, else the axis that matches the layer's width (then the
    model's hidden size), else the layer's type: ``(N, C, L)`` after convolutions, norms
    and pools, ``(T, N, D)`` inside ``batch_first=False`` RNN/attention modules, and
    ``(N, T, D)`` otherwise.
    """
    if not isinstance(hint, LayoutHint):
        hint = layout_hint(hint)
    nd = tensor.dim()
    if nd <= 1:
        return Layout(0, 0, (), "flat", "one axis")
    if nd == 2:
        return Layout(0, 1, (), "flat", "two axes")
    if nd >= 4:
        return Layout(0, 1, tuple(range(2, nd)), "channels_first", f"{nd} axes")
    if hint.declared is not None:
        return _three_d(_DECLARED[hint.declared], f"declared {hint.declared!r}")
    if not hint.batch_first:
        return _three_d("sequence_first", "batch_first=False")
    a, b = tensor.shape[1], tensor.shape[2]
    for width, source in ((hint.width, "the layer's width"), (hint.model_width, "hidden size")):
        if width is not None and (a == width) != (b == width):
            kind = "channels_first" if a == width else "sequence"
            return _three_d(kind, f"axis {1 if a == width else 2} matches {source} {width}")
    if hint.channels_first:
        return _three_d("channels_first", "a convolution/norm/pool layer")
    return _three_d("sequence", "the default for 3-D outputs")


_NAMES = {"channels_first": "(N, C, L)", "sequence": "(N, T, D)", "sequence_first": "(T, N, D)"}


def explain(lay: Layout, layer: str) -> str:
    """How ``layer``'s output was read, and how to state it otherwise (for error messages).

    >>> explain(layout(None, torch.zeros(2, 5, 8)), "blocks.0")[:60]
    "layer 'blocks.0' was read as (N, T, D) (units on axis 2, pos"
    """
    name = _NAMES.get(lay.kind, lay.kind)
    text = (
        f"layer {layer!r} was read as {name} (units on axis {lay.units}, positions on axes "
        f"{list(lay.positions)}; {lay.how or 'default'})"
    )
    if lay.kind in _NAMES:
        text += (
            f"; if that is wrong, state it: hlviz.hooks.declare_layout(model, {{{layer!r}: "
            "'NCL' | 'NTD' | 'TND'})"
        )
    return text


def declare_layout(model: nn.Module, layouts: Mapping[str, str | None]) -> nn.Module:
    """State the layout of 3-D outputs that cannot be inferred; returns ``model``.

    >>> import torch.nn as nn
    >>> model = nn.Sequential(nn.Conv1d(8, 8, 1))
    >>> _ = declare_layout(model, {"0": "NTD"})   # the (N, 8, 8) output is (N, T, D)
    >>> layout(layout_hints(model, ["0"])["0"], torch.zeros(2, 8, 8)).kind
    'sequence'

    ``"NCL"`` is ``(batch, units, positions)``, ``"NTD"`` (or ``"NLC"``) is
    ``(batch, positions, units)``, ``"TND"`` is ``(positions, batch, units)``; ``None``
    forgets a declaration. The layout is stored on the module, so every verb uses it.
    """
    modules = dict(model.named_modules())
    for name, value in layouts.items():
        if name not in modules:
            raise LayerNotFoundError(
                f"declare_layout: no layer named {name!r} in {type(model).__name__}; give exact "
                "names from hlviz.layer_names(model)."
            )
        if value is None:
            modules[name].__dict__.pop(_ATTRIBUTE, None)
            continue
        choice("layout", value, tuple(_DECLARED), hint="N is the batch, C/D the units.")
        modules[name].__dict__[_ATTRIBUTE] = value
    return model


PACKED_LAYOUT = Layout(0, 2, (1,), "sequence", "a PackedSequence")  # padded batch-first


REDUCERS = ("mean", "max", "sum", "first", "last", "flatten")
REDUCE_HINT = "Or give None (keep everything) or a callable tensor -> tensor."


def _real_mask(tensor: torch.Tensor, lay: Layout, lengths, mask) -> torch.Tensor | None:
    """The ``(N, T)`` mask of real positions of a sequence, when lengths or a mask apply."""
    if lay.kind not in ("sequence", "sequence_first") or tensor.dim() != 3:
        return None
    n, t = tensor.shape[lay.batch], tensor.shape[lay.positions[0]]
    if lengths is not None:
        lengths = lengths.to(tensor.device)
        return torch.arange(t, device=tensor.device)[None, :] < lengths[:, None]
    if mask is not None and tuple(mask.shape) == (n, t):
        return mask.to(tensor.device).bool()
    return None


def reduce_positions(
    tensor: torch.Tensor,
    how: str,
    lay: Layout,
    layer: str,
    lengths: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce the position axes of ``tensor``: the result is ``(N, units)``.

    ``how`` is one of ``"mean"``, ``"max"``, ``"sum"``, ``"first"``, ``"last"`` (first or
    last position, for sequences) or ``"flatten"`` (``(N, -1)``, keeps everything).
    A flat ``(N, D)`` tensor is returned unchanged by all but ``"flatten"``.
    ``lengths`` (padded sequences) or ``mask`` (an ``(N, T)`` attention mask) keeps
    padding out of mean, max, sum, first and last.
    """
    real = _real_mask(tensor, lay, lengths, mask) if how != "flatten" else None
    if real is not None:
        seq = tensor.transpose(0, 1) if lay.kind == "sequence_first" else tensor  # (N, T, D)
        keep = real.unsqueeze(-1)
        if how in ("mean", "sum"):
            total = (seq * keep).sum(1)
            return total / real.sum(1, keepdim=True).clamp(min=1) if how == "mean" else total
        if how == "max":
            return seq.masked_fill(~keep, float("-inf")).amax(1)
        if how in ("first", "last"):
            steps = torch.arange(seq.shape[1], device=seq.device).expand_as(real)
            marked = torch.where(real, steps, -1 if how == "last" else seq.shape[1])
            at = marked.amax(1) if how == "last" else marked.amin(1)
            return seq[torch.arange(seq.shape[0], device=seq.device), at.clamp(0, seq.shape[1] - 1)]
    if how == "flatten":
        moved = tensor.movedim(lay.batch, 0) if lay.batch else tensor
        return moved.reshape(moved.shape[0], -1)
    if not lay.positions:
        return tensor
    if how in ("mean", "max", "sum"):
        if how == "max":
            out = tensor
            for d in sorted(lay.positions, reverse=True):
                out = out.amax(dim=d)
        else:
            out = getattr(tensor, how)(dim=lay.positions)
        return out  # batch and units keep their order, and batch always comes first
    if how in ("first", "last"):
        if len(lay.positions) != 1:
            raise OptionError(
                f"reduce={how!r} takes the {how} position of a sequence, but layer {layer!r} has "
                f"{len(lay.positions)} position axes ({tuple(tensor.shape)}, {lay.kind}). "
                "Use 'mean' or 'max' for images, or a callable."
            )
        return tensor.select(lay.positions[0], 0 if how == "first" else -1)
    choice("reduce", how, REDUCERS, hint=REDUCE_HINT)
    raise AssertionError(f"reducer {how!r} is listed but not implemented")  # pragma: no cover
