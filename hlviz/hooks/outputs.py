"""One place that understands what a module returns, and where its units and positions lie.

Module outputs come as a Tensor, a tuple (``nn.LSTM`` returns ``(out, (h, c))``), a
dict or Hugging Face ``ModelOutput``, or a ``PackedSequence``. :func:`pick` takes the
tensor a hook works on out of any of these; :func:`put_back` rebuilds the output with
an edited tensor in its place. :func:`layout` says which axes of an activation hold
the units (channels, features) and which hold positions (space, time, tokens).

>>> import torch
>>> out = (torch.zeros(2, 5, 8), (torch.ones(1, 2, 8), torch.ones(1, 2, 8)))
>>> pick(out, None, "lstm").path, pick(out, (1, 0), "lstm").tensor.shape
((0,), torch.Size([1, 2, 8]))
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .._checks import choice
from ..errors import OptionError, OutputSelectError

__all__ = [
    "Layout",
    "LayoutHint",
    "Picked",
    "Select",
    "first_tensor",
    "layout",
    "layout_hint",
    "layout_hints",
    "pick",
    "put_back",
    "reduce_positions",
]

Select = int | str | tuple | Callable[[Any], torch.Tensor] | None
Path = tuple

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
# element-wise modules keep the layout of whatever came before them
_ELEMENTWISE = (
    nn.ReLU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.LeakyReLU,
    nn.ELU,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.Hardtanh,
    nn.Softplus,
    nn.Mish,
    nn.PReLU,
    nn.ReLU6,
    nn.SELU,
    nn.CELU,
    nn.GLU,
)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)}"
    if isinstance(value, PackedSequence):
        return "PackedSequence"
    if isinstance(value, Mapping):
        return (
            type(value).__name__
            + "{"
            + ", ".join(f"{k!r}: {_describe(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, (tuple, list)):
        inner = ", ".join(_describe(v) for v in value)
        return (
            f"({inner},)"
            if isinstance(value, tuple) and len(value) == 1
            else (f"({inner})" if isinstance(value, tuple) else f"[{inner}]")
        )
    return type(value).__name__


def _first_tensor_path(value: Any, path: Path = ()) -> Path | None:
    if isinstance(value, (torch.Tensor, PackedSequence)):
        return path
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, (tuple, list)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _first_tensor_path(item, (*path, key))
        if found is not None:
            return found
    return None


def first_tensor(value: Any, default: Any = None) -> Any:
    """The first tensor in ``value``, depth-first through tuples, lists and dicts (a module's
    output, a batch of data); ``default`` when it holds none. A ``PackedSequence`` becomes its
    padded, batch-first tensor.

    >>> first_tensor((None, {"h": torch.ones(2), "c": torch.zeros(3)})).tolist()
    [1.0, 1.0]
    >>> first_tensor(["no", "tensor"]) is None
    True
    """
    path = _first_tensor_path(value)
    if path is None:
        return default
    for key in path:
        value = value[key]
    if isinstance(value, PackedSequence):
        value = pad_packed_sequence(value, batch_first=True)[0]
    return value


def _normalise(value: Any, path: Path) -> tuple[Any, Path]:
    """Follow ``path`` into ``value``; an int step into a ``ModelOutput`` becomes its field name."""
    steps = []
    for key in path:
        if isinstance(value, (torch.Tensor, PackedSequence)):
            raise TypeError(
                "a tensor is not indexed by select=; it indexes tuples, lists and dicts"
            )
        if isinstance(key, int) and isinstance(value, Mapping) and hasattr(value, "to_tuple"):
            key = list(value.keys())[key]
        value = value[key]
        steps.append(key)
    return value, tuple(steps)


@dataclass(frozen=True)
class Picked:
    """What :func:`pick` found: the tensor to work on, where it was, and packing details.

    For a ``PackedSequence``, ``tensor`` is the padded batch-first ``(N, T, D)`` tensor,
    ``packed`` the original and ``lengths`` the true length of each sequence.
    """

    tensor: torch.Tensor
    path: Path | None
    packed: PackedSequence | None = None
    lengths: torch.Tensor | None = None


def pick(output: Any, select: Select, layer: str) -> Picked:
    """The tensor that ``select`` names in a module's ``output``, and its path.

    ``select=None`` takes the output itself when it is a tensor, else the first tensor
    found depth-first (``out`` of an LSTM's ``(out, (h, c))``, ``last_hidden_state`` of
    a ``ModelOutput``). An int or str indexes the output, a tuple is a path of indices
    (``(1, 0)`` is an LSTM's ``h_n``), a callable receives the raw output. A
    ``PackedSequence`` becomes its padded, batch-first tensor. The path is ``None``
    for a callable (an edit then cannot put the tensor back).
    """
    if callable(select) and not isinstance(select, (str, tuple)):
        value, path = select(output), None
    elif select is None:
        path = (
            () if isinstance(output, (torch.Tensor, PackedSequence)) else _first_tensor_path(output)
        )
        if path is None:
            raise OutputSelectError(
                f"layer {layer!r} returned {_describe(output)}, which holds no tensor. "
                "Pass select= a callable that turns this output into a tensor, "
                "e.g. select=lambda out: out.hidden."
            )
        value, path = _normalise(output, path)
    else:
        try:
            value, path = _normalise(output, select if isinstance(select, tuple) else (select,))
        except (KeyError, IndexError, TypeError) as exc:
            raise OutputSelectError(
                f"select={select!r} does not index the output of layer {layer!r}, which is "
                f"{_describe(output)} ({type(exc).__name__}: {exc}). Use an index, a key, "
                "a tuple path such as (1, 0), or a callable."
            ) from None
    if isinstance(value, PackedSequence):
        padded, lengths = pad_packed_sequence(value, batch_first=True)
        return Picked(padded, path, value, lengths)
    if not isinstance(value, torch.Tensor):
        raise OutputSelectError(
            f"select={select!r} picked {_describe(value)} from the output of layer {layer!r} "
            f"({_describe(output)}), not a tensor. Choose a path that ends at a tensor."
        )
    return Picked(value, path)


def put_back(output: Any, path: Path | None, tensor: torch.Tensor, layer: str) -> Any:
    """Rebuild ``output`` with ``tensor`` at ``path`` (the inverse of :func:`pick`)."""
    if path is None:
        raise OutputSelectError(
            f"an edit of layer {layer!r} cannot put a tensor back through a callable select=; "
            "give select as an index, key or tuple path instead."
        )
    if not path:
        if isinstance(output, PackedSequence):
            lengths = pad_packed_sequence(output, batch_first=True)[1]  # in the original order
            return pack_padded_sequence(tensor, lengths, batch_first=True, enforce_sorted=False)
        return tensor
    key, rest = path[0], path[1:]
    child = put_back(output[key], rest, tensor, layer)
    if isinstance(output, Mapping):
        if hasattr(output, "to_tuple"):  # a transformers ModelOutput keeps its class and fields
            new = copy.copy(output)
            new[key] = child
            return new
        merged = {**output, key: child}
        try:
            return type(output)(merged)
        except TypeError:
            return merged
    items = list(output)
    items[key] = child
    if isinstance(output, tuple) and hasattr(output, "_fields"):  # namedtuple
        return type(output)(*items)
    return type(output)(items)


@dataclass(frozen=True)
class Layout:
    """Where units and positions lie in one activation tensor.

    ``batch`` is the batch axis, ``units`` the axis of channels/features, ``positions``
    the axes of space, time or tokens (empty for a flat ``(N, D)`` activation).
    """

    batch: int
    units: int
    positions: tuple[int, ...]
    kind: str  # "flat", "channels_first", "sequence", "sequence_first"


def _last_informative_leaf(module: nn.Module) -> nn.Module | None:
    """The last leaf of ``module`` that is not element-wise (``None`` when all leaves are)."""
    leaves = [m for m in module.modules() if not any(True for _ in m.children())]
    for leaf in reversed(leaves):
        if not isinstance(leaf, _ELEMENTWISE):
            return leaf
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


@dataclass(frozen=True)
class LayoutHint:
    """What a layer's type says about its 3-D outputs: ``(N, C, L)`` or a sequence, and
    whether sequences are batch-first. Computed once per layer when hooks attach."""

    channels_first: bool = False
    batch_first: bool = True


def layout_hints(model: nn.Module, names: list[str]) -> dict[str, LayoutHint]:
    """The :class:`LayoutHint` of each named layer, in one pass over the model.

    An element-wise layer (``ReLU``, ``Dropout``, or a block of them) keeps the layout of
    what came before it, so its hint comes from the nearest preceding leaf that is not
    element-wise. ``batch_first`` comes from the layer itself, else from the nearest
    enclosing RNN, attention or transformer module (``batch_first=False`` means ``(T, N, D)``).
    """
    wanted = set(names)
    own: dict[str, bool | None] = {}
    hints: dict[str, LayoutHint] = {}
    previous: nn.Module | None = None
    for name, module in model.named_modules():
        own[name] = _own_batch_first(module)
        if name in wanted:
            source, leaf = module, _last_informative_leaf(module)
            if leaf is None and previous is not None:  # element-wise: inherit from before
                source, leaf = previous, previous
            batch_first = own[name]
            scope = name
            while batch_first is None and scope:
                scope = scope.rpartition(".")[0]
                batch_first = own.get(scope)
            hints[name] = LayoutHint(
                channels_first=isinstance(leaf, _CHANNELS_FIRST)
                or isinstance(source, _CHANNELS_FIRST),
                batch_first=batch_first is not False,
            )
        if not any(True for _ in module.children()) and not isinstance(module, _ELEMENTWISE):
            previous = module
    return hints


def layout_hint(module: nn.Module | None) -> LayoutHint:
    """The :class:`LayoutHint` of a module on its own (no enclosing modules considered)."""
    if module is None:
        return LayoutHint()
    leaf = _last_informative_leaf(module)
    return LayoutHint(
        channels_first=isinstance(leaf, _CHANNELS_FIRST) or isinstance(module, _CHANNELS_FIRST),
        batch_first=_own_batch_first(module) is not False,
    )


def layout(hint: LayoutHint | nn.Module | None, tensor: torch.Tensor) -> Layout:
    """The axes of ``tensor``, an output of a layer with this hint (or this module).

    ``(N, C, *space)`` for 4-D and 5-D tensors and for 3-D outputs of convolutions,
    norms and pools (also after them, through element-wise layers); ``(T, N, D)`` inside
    RNNs, ``nn.MultiheadAttention`` and transformer layers built with ``batch_first=False``;
    ``(N, T, D)`` for every other 3-D tensor; ``(N, D)`` for 2-D.
    """
    if not isinstance(hint, LayoutHint):
        hint = layout_hint(hint)
    nd = tensor.dim()
    if nd <= 1:
        return Layout(0, 0, (), "flat")
    if nd == 2:
        return Layout(0, 1, (), "flat")
    if nd >= 4:
        return Layout(0, 1, tuple(range(2, nd)), "channels_first")
    if hint.channels_first:
        return Layout(0, 1, (2,), "channels_first")
    if not hint.batch_first:
        return Layout(1, 2, (0,), "sequence_first")
    return Layout(0, 2, (1,), "sequence")


PACKED_LAYOUT = Layout(0, 2, (1,), "sequence")  # pick() pads packed sequences batch-first


REDUCERS = ("mean", "max", "sum", "first", "last", "flatten")
REDUCE_HINT = "Or give None (keep everything) or a callable tensor -> tensor."


def reduce_positions(
    tensor: torch.Tensor, how: str, lay: Layout, layer: str, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """Reduce the position axes of ``tensor``: the result is ``(N, units)``.

    ``how`` is one of ``"mean"``, ``"max"``, ``"sum"``, ``"first"``, ``"last"`` (first or
    last position, for sequences) or ``"flatten"`` (``(N, -1)``, keeps everything).
    A flat ``(N, D)`` tensor is returned unchanged by all but ``"flatten"``.
    ``lengths`` (padded ``(N, T, D)`` sequences) keeps padding out of mean, max and last.
    """
    if lengths is not None and how in ("mean", "max", "last"):
        lengths = lengths.to(tensor.device)
        steps = torch.arange(tensor.shape[1], device=tensor.device)
        real = (steps[None, :] < lengths[:, None]).unsqueeze(-1)  # (N, T, 1)
        if how == "mean":
            return (tensor * real).sum(1) / lengths[:, None].to(tensor.dtype)
        if how == "max":
            return tensor.masked_fill(~real, float("-inf")).amax(1)
        return tensor[torch.arange(tensor.shape[0], device=tensor.device), lengths - 1]
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
