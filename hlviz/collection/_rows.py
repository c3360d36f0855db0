"""How :func:`hlviz.collect` turns one batch into rows: split, record, convert.

>>> import torch
>>> inputs, cols = _split((torch.zeros(3, 2), torch.tensor([1, 0, 1])), {"label": 1})
>>> tuple(inputs.shape), cols["label"].tolist()
((3, 2), [1, 0, 1])

A batch (as :class:`hlviz._batches.Source` yields it) is split into the model's inputs and
the user's columns (:func:`_split`), run under a recording (:class:`Collector`), and returned
as ``{(kind, name): (rows, ...)}`` numpy arrays. With ``tokens=True`` a
:class:`TokenRecording` keeps one row per real token.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .._checks import boolean
from ..errors import OptionError, OptionTypeError, ShapeMismatchError
from ..hooks.checks import once
from ..hooks.layers import LayerSpec, check_module, unwrap
from ..hooks.outputs import PACKED_LAYOUT, LayoutHint, first_tensor, layout, layout_hints
from ..hooks.recording import Recording, attention_mask, record
from ..runtime import run_model

__all__ = [
    "Collector",
    "TokenRecording",
    "batch_digest",
    "check_rows",
    "distributed",
    "model_fingerprint",
    "schema_of",
]

_FULL_HASH = 2**22  # tensors with more elements are fingerprinted on a strided sample
TOKEN_COLUMNS = ("sequence", "position", "token")


# ---------------------------------------------------------------- fingerprints
def _hash_tensor(digest, tensor: torch.Tensor) -> None:
    flat = tensor.detach().reshape(-1)
    if flat.numel() > _FULL_HASH:
        flat = flat[:: flat.numel() // 2**20 + 1]
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)};".encode())
    digest.update(flat.contiguous().cpu().view(torch.uint8).numpy())


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of a model's class and of the names, shapes, dtypes and values of its
    parameters and buffers (tensors over 4M elements on a strided sample of ~1M).

    >>> a = nn.Linear(2, 2); model_fingerprint(a) == model_fingerprint(a)
    True
    """
    check_module(model)
    inner = unwrap(model)
    digest = hashlib.sha256(type(inner).__qualname__.encode())
    for kind, items in (("param", inner.named_parameters()), ("buffer", inner.named_buffers())):
        for name, tensor in items:
            digest.update(f"{kind}:{name}:".encode())
            _hash_tensor(digest, tensor)
    return digest.hexdigest()


def batch_digest(value: Any, digest=None) -> str:
    digest = digest or hashlib.sha256()
    if isinstance(value, torch.Tensor):
        _hash_tensor(digest, value)
    elif isinstance(value, np.ndarray):
        _hash_tensor(digest, torch.as_tensor(value))
    elif isinstance(value, Mapping):
        for key in value:
            digest.update(f"[{key}]".encode())
            batch_digest(value[key], digest)
    elif isinstance(value, (list, tuple)):
        for item in value:
            batch_digest(item, digest)
    else:
        digest.update(repr(value).encode() if isinstance(value, (int, float, str)) else b"?")
    return digest.hexdigest()


def distributed() -> tuple[int, int]:
    """(rank, world size) under an initialised ``torch.distributed``, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _split(batch: Any, columns: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The model's inputs and the raw column values of one batch."""
    if not columns:
        return batch, {}
    values, used = {}, set()
    for name, how in columns.items():
        if callable(how):
            values[name] = how(batch)
        elif (
            isinstance(how, int)
            and isinstance(batch, (tuple, list))
            and -len(batch) <= how < len(batch)
        ):
            values[name], _ = batch[how], used.add(how % len(batch))
        elif isinstance(how, str) and isinstance(batch, Mapping) and how in batch:
            values[name], _ = batch[how], used.add(how)
        else:
            kind = type(batch).__name__
            keys = f" with keys {list(batch)}" if isinstance(batch, Mapping) else ""
            if isinstance(batch, (tuple, list)):
                keys = f" of {len(batch)} items"
            raise OptionError(
                f"columns[{name!r}]={how!r} cannot be read from a batch of type {kind}{keys}: "
                "give an index into tuple batches (columns={'label': 1} for (x, y)), a key "
                "of dict batches, or a callable batch -> (n,) values."
            )
    if isinstance(batch, Mapping):
        return {k: v for k, v in batch.items() if k not in used}, values
    if isinstance(batch, (tuple, list)):
        rest = [v for i, v in enumerate(batch) if i not in used]
        return (rest[0] if len(rest) == 1 else tuple(rest)), values
    return batch, values


def _numpy(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bfloat16:
            raise OptionError(
                f"{what} is bfloat16, which numpy and .npy files cannot hold; pass "
                "dtype=torch.float32 (or torch.float16) to convert it while collecting."
            )
        return value.detach().cpu().numpy()
    return np.asarray(value)


# ---------------------------------------------------------------- hooks
class TokenRecording(Recording):
    """A Recording that keeps one row per real token: ``(N, T, D)`` -> ``(tokens, D)``.

    The attention mask of the batch being run is set in ``mask`` before each forward; the
    selection happens inside the hook, so padding is never copied.
    """

    def __init__(self, model: nn.Module, layers: LayerSpec, *, dtype: torch.dtype | None):
        super().__init__(model, layers, dtype=dtype)
        self._token_hints = layout_hints(unwrap(model), self._names)
        self.mask: torch.Tensor | None = None  # the batch's attention mask, if it has one
        self.seen: torch.Tensor | None = None  # else the (N, T) tokens the layers gave

    def _process(self, tensor, hint, layer, lengths=None):
        t = tensor.detach()
        lay = (
            PACKED_LAYOUT
            if lengths is not None
            else layout(self._token_hints.get(layer, LayoutHint()), t)
        )
        if t.dim() != 3 or lay.kind not in ("sequence", "sequence_first"):
            raise OptionError(
                f"tokens=True keeps one row per real token, but layer {layer!r} gives shape "
                f"{tuple(t.shape)} ({lay.kind}), not (batch, tokens, units). Collect that layer "
                "without tokens=True (e.g. with reduce='mean'), in a separate store."
            )
        if lay.kind == "sequence_first":
            t = t.transpose(0, 1)
        mask = self.mask
        if lengths is not None or mask is None:
            # a packed sequence's real steps; with no attention mask, every position is a token
            mask = (
                torch.arange(t.shape[1])[None, :] < lengths[:, None].cpu()
                if lengths is not None
                else torch.ones(t.shape[:2], dtype=torch.bool)
            )
            if self.seen is not None and self.seen.shape != mask.shape:
                raise ShapeMismatchError(
                    f"layer {layer!r} gives {tuple(t.shape[:2])} (batch, tokens) but another "
                    f"layer gives {tuple(self.seen.shape)}: with tokens=True every layer must "
                    "have the same tokens. Collect them in separate stores."
                )
            self.seen = mask
        if tuple(t.shape[:2]) != tuple(mask.shape):
            raise ShapeMismatchError(
                f"layer {layer!r} gives {tuple(t.shape[:2])} (batch, tokens) but the batch's "
                f"attention mask is {tuple(mask.shape)}: the layer's tokens do not line up "
                "with the input's. Collect it without tokens=True."
            )
        out = t[mask.to(t.device)]
        return out.to(device=self._to, dtype=self._dtype or out.dtype)


def _token_mask(inputs: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The ``(N, T)`` mask of real tokens of a batch (``None`` when it has no attention
    mask: then every position of a layer is a token) and its token ids when it has them."""
    if isinstance(inputs, Mapping) and "attention_mask" in inputs:
        return inputs["attention_mask"].bool().cpu(), inputs.get("input_ids")
    first = first_tensor(inputs)
    ids = first if first is not None and first.ndim == 2 and not first.is_floating_point() else None
    return None, ids


def _takes(model: nn.Module, keyword: str) -> bool:
    """Whether ``model.forward`` accepts ``keyword`` (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(unwrap(model).forward).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == keyword or p.kind is p.VAR_KEYWORD for p in params)


class Collector:
    """Runs the model on one batch under a recording and returns its rows as numpy arrays."""

    def __init__(self, model, layers, *, reduce, tokens, dtype, columns):
        boolean("tokens", tokens)
        if tokens and reduce is not None:
            raise OptionError(
                f"tokens=True keeps one row per token, which reduce={reduce!r} would pool "
                "away; use one or the other."
            )
        if dtype is torch.bfloat16:
            raise OptionError(
                "dtype=torch.bfloat16 cannot be stored (numpy has no bfloat16); use "
                "torch.float16 to halve the size, or torch.float32."
            )
        if columns is not None and not isinstance(columns, Mapping):
            raise OptionTypeError(
                f"columns must be a dict name -> index, key or callable, got "
                f"{type(columns).__name__} (e.g. columns={{'label': 1}} for (x, y) batches)."
            )
        for name in columns or {}:
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
                raise OptionError(
                    f"column name {name!r} must be a non-empty string of letters, digits, "
                    "'_', '.' or '-' (it names files in the store)."
                )
            if tokens and name in TOKEN_COLUMNS:
                raise OptionError(
                    f"column {name!r} is made by tokens=True itself (sequence, position, "
                    "token); give your column another name."
                )
        self.model, self.tokens, self.columns = model, tokens, dict(columns or {})
        if tokens:
            self.rec = TokenRecording(model, layers, dtype=dtype)
        else:
            self.rec = record(model, layers, reduce=reduce, dtype=dtype)
        self.layers = self.rec.layers

    def run(self, batch: Any) -> tuple[dict[tuple[str, str], np.ndarray], int, int]:
        """``{(kind, name): (rows, ...)}`` for one batch, its row count and input count."""
        inputs, raw = _split(batch, self.columns)
        first = first_tensor(inputs)
        if first is None:
            raise OptionTypeError(
                f"a batch of data holds no tensor (got {type(inputs).__name__}); batches are "
                "tensors, tuples of tensors (model(*batch)) or dicts (model(**batch))."
            )
        n = first.shape[0] if first.ndim else 1
        mask = None
        self.rec.padding = attention_mask(inputs)  # reduce= pools only the real tokens
        if self.tokens:
            mask, ids = _token_mask(inputs)
            self.rec.mask, self.rec.seen = mask, None
            if mask is not None and not _takes(self.model, "attention_mask"):
                inputs = {k: v for k, v in inputs.items() if k != "attention_mask"}
        try:
            with torch.no_grad():
                run_model(self.model, inputs)
        except TypeError as exc:
            if isinstance(inputs, tuple) and len(inputs) > 1 and not self.columns:
                raise OptionError(
                    f"the model was called as model(*batch) on a batch of {len(inputs)} items "
                    f"and raised TypeError: {exc}. If batches are (inputs, labels), say which "
                    "items are columns: collect(..., columns={'label': 1})."
                ) from exc
            raise
        if self.tokens:
            mask = self.rec.seen if self.rec.seen is not None else self.rec.mask
            if mask is None:
                raise OptionError(
                    "tokens=True found no (batch, tokens, units) layer output in this batch; "
                    "collect the layers without tokens=True."
                )
            n = mask.shape[0]
            if ids is not None and tuple(ids.shape) != tuple(mask.shape):
                ids = None  # the inputs are not one id per token of the layers
        # one row per real token, else one per input: the first layer's first axis (after
        # reduce=, which puts the batch first even for sequence-first layers)
        rows = int(mask.sum()) if mask is not None else None
        first_layer, out = None, {}
        for name in self.layers:
            if name not in self.rec:
                raise OptionError(
                    f"layer {name!r} did not run on this batch, so it has no rows; collect "
                    "layers that run on every input (see hlviz.list_layers(model, example))."
                )
            value = once(name, self.rec[name], "collect keeps one activation per row")
            array = _numpy(value, f"layer {name!r}")
            if rows is None:
                rows, n, first_layer = len(array), len(array), name
            if array.shape[:1] != (rows,):
                what = (
                    f"{rows} real tokens" if mask is not None else f"{rows} rows ({first_layer!r})"
                )
                raise ShapeMismatchError(
                    f"layer {name!r} gives shape {array.shape} where the batch has {what}: "
                    "the first axis of every layer must be the batch. For a sequence-first "
                    "layer (tokens, batch, units) use reduce= or tokens=True."
                )
            out[("layers", name)] = array
        for name, value in raw.items():
            out[("columns", name)] = self._column(name, _numpy(value, f"column {name!r}"), n, mask)
        if mask is not None:
            where = mask.nonzero()
            out[("columns", "sequence")] = where[:, 0].numpy()
            out[("columns", "position")] = where[:, 1].numpy()
            if ids is not None:
                out[("columns", "token")] = _numpy(ids, "token ids")[mask.numpy()]
        return out, rows, n

    @staticmethod
    def _column(name: str, value: np.ndarray, n: int, mask: torch.Tensor | None) -> np.ndarray:
        if mask is not None and value.ndim >= 2 and value.shape[:2] == tuple(mask.shape):
            return value[mask.numpy()]  # one value per token
        if value.ndim == 0 or value.shape[0] != n:
            raise ShapeMismatchError(
                f"column {name!r} has shape {value.shape} but the batch has {n} inputs: give "
                "one value per input"
                + (" or per token (batch, tokens)." if mask is not None else ".")
            )
        if mask is not None:  # one value per input, repeated for each of its tokens
            return np.repeat(value, mask.sum(1).numpy(), axis=0)
        return value


def schema_of(arrays: dict[tuple[str, str], np.ndarray], kind: str) -> list[dict]:
    return [
        {"name": name, "shape": list(a.shape[1:]), "dtype": str(a.dtype)}
        for (k, name), a in arrays.items()
        if k == kind
    ]


def check_rows(arrays, schema: dict, batch: int) -> None:
    for (kind, name), array in arrays.items():
        shape, dtype = schema[(kind, name)]
        if list(array.shape[1:]) != shape or str(array.dtype) != dtype:
            raise ShapeMismatchError(
                f"{kind[:-1]} {name!r} gives rows of shape {tuple(array.shape[1:])} ({array.dtype}) "
                f"in batch {batch} but {tuple(shape)} ({dtype}) in the first batch: every row "
                "of a layer must have one shape (sequences padded per batch?). Use reduce= "
                "(e.g. 'mean' or 'last'), tokens=True for one row per token, or pad every batch "
                "to the same length."
            )
