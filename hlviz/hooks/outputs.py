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
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..errors import OutputSelectError
from .layout import (
    PACKED_LAYOUT,
    REDUCE_HINT,
    REDUCERS,
    Layout,
    LayoutHint,
    declare_layout,
    explain,
    layout,
    layout_hint,
    layout_hints,
    reduce_positions,
)

__all__ = [
    "PACKED_LAYOUT",
    "REDUCERS",
    "REDUCE_HINT",
    "Layout",
    "LayoutHint",
    "Picked",
    "Select",
    "declare_layout",
    "explain",
    "first_tensor",
    "layout",
    "layout_hint",
    "layout_hints",
    "logits_of",
    "pick",
    "put_back",
    "reduce_positions",
]

Select = int | str | tuple | Callable[[Any], torch.Tensor] | None
Path = tuple


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


def logits_of(output: Any) -> torch.Tensor:
    """The tensor a metric sees in a model's output: the one rule for patching, head
    ablation, the logit lens and attribution. A tensor is itself; a dict or ``ModelOutput``
    gives its ``"logits"`` entry (an object its ``.logits``); anything else its first tensor.

    >>> logits_of({"hidden": torch.zeros(1, 8), "logits": torch.ones(1, 3)}).shape
    torch.Size([1, 3])
    >>> logits_of((torch.zeros(2), torch.ones(3))).shape
    torch.Size([2])
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    return pick(output, None, "<model output>").tensor
