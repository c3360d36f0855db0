"""The one place where ``data`` becomes batches, for every hlviz function that takes data.

>>> import torch
>>> [tuple(b.shape) for b in batches(torch.zeros(5, 2), 2)]
[(2, 2), (2, 2), (1, 2)]
>>> [(tuple(x.shape), y.tolist()) for x, y in batches((torch.zeros(3, 2), torch.arange(3)), 2)]
[((2, 2), [0, 1]), ((1, 2), [2])]

``data`` may be

- a tensor or numpy array ``(N, ...)``: cut into slices of ``batch_size`` rows;
- an ``(X, y, ...)`` tuple of tensors with one row per input each, or an object with ``.X``
  and ``.y`` (an :class:`~hlviz.datasets.ImageSplit`): cut together, each batch an
  ``(x, y, ...)`` tuple;
- any iterable of batches (a ``DataLoader``, a list, a generator), each batch a tensor, a
  tuple *or list* of tensors (``DataLoader(TensorDataset(x, y))`` yields ``[x, y]`` lists:
  they become tuples, so the model is called as ``model(*batch)``) or a dict of tensors
  (``model(**batch)``).

Anything else raises an :class:`~hlviz.errors.OptionTypeError` that names what it got.
:class:`Source` adds what :func:`hlviz.collect` needs (the batch count, the share of each
process under ``torch.distributed``); :func:`labelled_batches` is the ``(inputs, labels)``
view used by the unit and widget functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ._checks import positive_int
from .errors import OptionError, OptionTypeError
from .hooks.outputs import first_tensor

__all__ = ["Source", "as_batch", "batches", "labelled_batches"]

DEFAULT_BATCH_SIZE = 64
_KINDS = (
    "a tensor (N, ...), an (X, y) tuple of tensors, an ImageSplit, or an iterable of batches "
    "(a DataLoader, a list) each a tensor, a tuple/list of tensors or a dict of tensors"
)


def _describe(value: Any) -> str:
    """A short description of a value for error messages: type, and what it holds."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, Mapping):
        return f"a {type(value).__name__} with keys {list(value)[:5]}"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(type(v).__name__ for v in value[:4])
        return f"a {type(value).__name__} of {len(value)} items ({inner}{', ...' if len(value) > 4 else ''})"
    return f"a {type(value).__name__}"


def as_batch(batch: Any, index: int | None = None) -> Any:
    """One batch as models are called on it: a tensor, a tuple (``model(*batch)``) or a dict
    (``model(**batch)``); lists become tuples and numpy arrays tensors.

    >>> as_batch([torch.ones(2), torch.zeros(2)])[1].tolist()
    [0.0, 0.0]
    >>> as_batch("text")
    Traceback (most recent call last):
    ...
    hlviz.errors.OptionTypeError: a batch of data holds no tensor: got a str. Each batch must be a tensor, a tuple/list of tensors (model(*batch)) or a dict of tensors (model(**batch)).
    """
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(batch)
    elif isinstance(batch, list):
        batch = tuple(batch)
    if first_tensor(batch) is None:
        which = "a batch" if index is None else f"batch {index}"
        raise OptionTypeError(
            f"{which} of data holds no tensor: got {_describe(batch)}. Each batch must be a "
            "tensor, a tuple/list of tensors (model(*batch)) or a dict of tensors "
            "(model(**batch))."
        )
    return batch


def _columns(data: Any) -> tuple[torch.Tensor | None, ...] | None:
    """``data`` as aligned columns ``(X, y, ...)`` to cut together, or None for an iterable."""
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return (torch.as_tensor(data),)
    if isinstance(getattr(data, "X", None), torch.Tensor) and hasattr(data, "y"):
        data = (data.X, data.y)  # an ImageSplit
    if (
        isinstance(data, tuple)
        and data
        and isinstance(data[0], (torch.Tensor, np.ndarray))
        and all(isinstance(v, (torch.Tensor, np.ndarray)) or v is None for v in data[1:])
    ):
        cols = tuple(None if v is None else torch.as_tensor(v) for v in data)
        if cols[0].ndim == 0:
            raise OptionError("data is a 0-d tensor; give a tensor with one row per input.")
        lengths = {len(c) for c in cols if c is not None}
        if len(lengths) > 1:
            shapes = [None if c is None else tuple(c.shape) for c in cols]
            raise OptionError(
                f"data is a tuple of tensors of different lengths {shapes}: an (X, y) tuple "
                "needs one row per input in each. To give batches instead, pass a list."
            )
        return cols
    return None


def _is_presharded(loader: DataLoader) -> bool:
    """Whether each process's loader already yields only its share: a ``DistributedSampler``,
    or a loader prepared by accelerate (``DataLoaderShard``, ``DataLoaderDispatcher``, their
    sharded samplers and datasets)."""
    from torch.utils.data.distributed import DistributedSampler

    batch_sampler = getattr(loader, "batch_sampler", None)
    parts = (
        loader,
        loader.dataset,
        getattr(loader, "sampler", None),
        batch_sampler,
        getattr(batch_sampler, "sampler", None),
    )
    return any(
        isinstance(p, DistributedSampler)
        or any(word in type(p).__name__ for word in ("Shard", "Dispatcher"))
        for p in parts
        if p is not None
    )


class Source:
    """The batches of ``data`` this process reads, each with its global batch number.

    ``batch_size`` cuts tensors and ``(X, y)`` tuples (default 64); for an iterable of
    batches it must be None unless ``loose=True`` (then it is ignored).

    >>> [(g, tuple(b.shape)) for g, b in Source(torch.zeros(5, 2), 2, rank=1, world=2)]
    [(1, (2, 2))]
    """

    def __init__(
        self,
        data: Any,
        batch_size: int | None = None,
        rank: int = 0,
        world: int = 1,
        *,
        loose: bool = False,
    ):
        self.data, self.rank, self.world = data, rank, world
        self.presharded, self.total, self.inputs = False, None, None
        batch_size = positive_int("batch_size", batch_size, none=True)
        self.columns = _columns(data)
        if self.columns is not None:
            self.batch_size = batch_size or DEFAULT_BATCH_SIZE
            self.inputs = len(self.columns[0])
            self.total = math.ceil(self.inputs / self.batch_size)
            return
        if batch_size is not None and not loose:
            what = (
                "a DataLoader, which makes its own batches"
                if isinstance(data, DataLoader)
                else "an iterable of batches"
            )
            raise OptionError(
                f"batch_size={batch_size} applies only when data is a tensor, but data is "
                f"{what}; set the batch size there and leave collect's batch_size=None."
            )
        if isinstance(data, (str, bytes, Mapping)) or not isinstance(data, Iterable):
            hint = " (one batch? wrap it in a list: [batch])" if isinstance(data, Mapping) else ""
            raise OptionTypeError(f"data must be {_KINDS}; got {_describe(data)}{hint}.")
        if isinstance(data, DataLoader):
            self.presharded = world > 1 and _is_presharded(data)
            dataset = data.dataset
            self.inputs = len(dataset) if isinstance(dataset, Sized) else None
        if isinstance(data, Sized):
            try:
                self.total = len(data)
            except TypeError:  # a DataLoader over an IterableDataset
                self.total = None

    def mine(self) -> int | None:
        """How many batches this process will see (None when unknown)."""
        if self.total is None or self.presharded:
            return self.total
        return max(0, (self.total - self.rank + self.world - 1) // self.world)

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        if self.columns is not None:
            size, cols = self.batch_size, self.columns
            for g in range(self.rank, self.total, self.world):
                part = tuple(None if c is None else c[g * size : (g + 1) * size] for c in cols)
                yield g, part[0] if len(part) == 1 else part
            return
        for i, batch in enumerate(self.data):
            if self.presharded:
                yield i * self.world + self.rank, as_batch(batch, i)
            elif i % self.world == self.rank:
                yield i, as_batch(batch, i)


def batches(data: Any, batch_size: int | None = None) -> Iterator[Any]:
    """The batches of ``data`` (see the module docstring for what it may be), in order.

    ``batch_size`` cuts tensors and ``(X, y)`` tuples (default 64) and is ignored for an
    iterable of batches, which come as they are (lists as tuples).

    >>> [tuple(b) for b in batches([[torch.ones(1), torch.zeros(1)]])][0][1].tolist()
    [0.0]
    """
    for _, batch in Source(data, batch_size, loose=True):
        yield batch


def labelled_batches(
    data: Any, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(inputs, labels or None)`` per batch of ``data``: the first tensor of each batch and
    its second item when there is one.

    >>> [(tuple(x.shape), y) for x, y in labelled_batches(torch.zeros(3, 2), 2)]
    [((2, 2), None), ((1, 2), None)]
    """
    batch_size = positive_int("batch_size", batch_size)
    for batch in batches(data, batch_size):
        if isinstance(batch, torch.Tensor):
            yield batch, None
        elif isinstance(batch, tuple) and isinstance(batch[0], torch.Tensor):
            yield batch[0], batch[1] if len(batch) > 1 else None
        else:
            raise OptionTypeError(
                f"each batch must be a tensor or an (inputs, labels) pair, got {_describe(batch)}."
            )
