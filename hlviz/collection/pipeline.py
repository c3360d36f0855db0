"""Collect hidden activations over a whole data set: in memory, or streamed to disk.

>>> import torch, torch.nn as nn, hlviz
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
>>> store = hlviz.collect(model, torch.randn(100, 4), ["0", "2"], batch_size=32, stats=True)
>>> store["0"].shape, store.stats["2"].count
((100, 8), 100)
>>> hlviz.estimate(model, torch.randn(10, 4), "0", n=1000).bytes   # float32: 8 units x 4 bytes
{'0': 32000}

:func:`collect` drives :func:`hlviz.record` over every batch of ``data``: hooks are attached
once, removed in ``finally``, and ``reduce=`` is applied inside them. With ``out=`` the rows
are written in shards to an :class:`~hlviz.ActivationStore` (bounded memory, resumable,
verified); without it they are kept in memory, up to ``max_bytes``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._batches import Source
from .._checks import boolean, instance, non_negative_int, positive_int
from ..errors import MemoryBudgetError, OptionError, OptionTypeError
from ..hooks.checks import warn_if_training
from ..hooks.layers import LayerSpec, check_module, unwrap
from ..runtime import progress_enabled
from ._rows import (
    Collector,
    batch_digest,
    check_rows,
    distributed,
    model_fingerprint,
    schema_of,
)
from ._shards import KEY_BITS, ShardWriter
from .stats import RunningStats
from .store import ActivationStore

__all__ = ["DEFAULT_MAX_BYTES", "Estimate", "collect", "estimate", "model_fingerprint"]

DEFAULT_MAX_BYTES = 2 * 2**30  # what collect keeps in memory when out=None
DEFAULT_SHARD_BYTES = 16 * 2**20  # rows buffered before a shard is written


def _fmt(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover


@dataclass(frozen=True)
class Estimate:
    """Bytes that collecting ``n`` inputs takes, per layer (``bytes``) and per input."""

    n: int
    per_input: dict[str, float]

    @property
    def bytes(self) -> dict[str, int]:
        """Bytes of each layer for ``n`` inputs."""
        return {name: round(b * self.n) for name, b in self.per_input.items()}

    @property
    def total(self) -> int:
        return sum(self.bytes.values())

    def summary(self):
        """A ``pandas.DataFrame``: layer, bytes per input, MiB for ``n`` inputs."""
        import pandas as pd

        return pd.DataFrame(
            [
                {"layer": k, "bytes per input": round(v, 1), "MiB": round(self.bytes[k] / 2**20, 3)}
                for k, v in self.per_input.items()
            ]
        )

    def describe(self) -> str:
        top = sorted(self.bytes.items(), key=lambda kv: -kv[1])[:3]
        parts = ", ".join(f"{k}: {_fmt(v)}" for k, v in top)
        more = f", and {len(self.bytes) - 3} more" if len(self.bytes) > 3 else ""
        return f"about {_fmt(self.total)} ({parts}{more})"


def estimate(
    model: nn.Module,
    example: Any,
    layers: LayerSpec,
    n: int,
    *,
    reduce: str | Callable | None = None,
    tokens: bool = False,
    dtype: torch.dtype | None = None,
) -> Estimate:
    """Bytes that :func:`collect` would keep for ``n`` inputs like those of ``example``.

    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()).eval()
    >>> est = hlviz.estimate(model, torch.randn(2, 1, 8, 8), "1", n=1000)
    >>> est.bytes, est.describe()          # 4 channels x 6 x 6 float32 per input
    ({'1': 576000}, 'about 562.5 KiB (1: 562.5 KiB)')

    ``example`` is one batch (as ``data`` yields them); the model runs on it once with the
    same options, and the bytes per input of each layer are scaled to ``n`` inputs (with
    ``tokens=True``, by the example's number of real tokens per input).
    """
    n = non_negative_int("n", n, hint="It is the number of inputs to estimate for.")
    collector = Collector(model, layers, reduce=reduce, tokens=tokens, dtype=dtype, columns=None)
    with collector.rec:
        arrays, _, inputs = collector.run(example)
    per_input = {
        name: arrays[("layers", name)].nbytes / max(inputs, 1) for name in collector.layers
    }
    return Estimate(n, per_input)


class _Memory:
    """Rows kept in memory, refused once they would pass ``max_bytes``."""

    def __init__(self, max_bytes: int, inputs: int | None, layers: list[str]):
        self.max_bytes, self.inputs, self.layers = max_bytes, inputs, layers
        self.parts: dict[tuple[str, str], list[np.ndarray]] = {}
        self.batches: list[tuple[int, int, int]] = []
        self.size = 0
        self.seen = 0
        self.per_input: dict[str, float] = {name: 0.0 for name in layers}

    def _refuse(self, per_input: dict[str, float], n: int, when: str) -> None:
        guess = Estimate(n, per_input)
        raise MemoryBudgetError(
            f"collecting {len(per_input)} layer(s) of {n} inputs in memory needs "
            f"{guess.describe()}, more than max_bytes={_fmt(self.max_bytes)} ({when}). Stream "
            "to disk instead with out='some/dir' (memory stays flat and the run can resume), "
            "keep less per input with reduce='mean' or dtype=torch.float16, or raise max_bytes."
        )

    def add(self, batch: int, arrays: dict, rows: int, inputs: int) -> None:
        nbytes = sum(a.nbytes for a in arrays.values())
        self.seen += inputs
        if not self.batches and inputs:
            per_input = {name: arrays[("layers", name)].nbytes / inputs for name in self.layers}
            if self.inputs is not None and nbytes / inputs * self.inputs > self.max_bytes:
                self._refuse(per_input, self.inputs, "estimated from the first batch")
            self.per_input = per_input
        if self.size + nbytes > self.max_bytes:
            self._refuse(self.per_input, self.seen, f"reached after {self.seen} inputs")
        self.size += nbytes
        for key, array in arrays.items():
            self.parts.setdefault(key, []).append(array)
        self.batches.append((batch, rows, inputs))

    def store(self, header: dict, stats: dict | None) -> ActivationStore:
        arrays = {key: np.concatenate(parts) for key, parts in self.parts.items()}
        return ActivationStore._in_memory(header, arrays, self.batches, stats)


def _check_options(out, resume, max_bytes, shard_bytes, stats) -> RunningStats | None:
    if out is not None:
        instance("out", out, (str, Path), "a directory path (str or Path) or None")
    boolean("resume", resume)
    for name, value in (("max_bytes", max_bytes), ("shard_bytes", shard_bytes)):
        positive_int(name, value, hint="It is a number of bytes.")
    if stats is None or stats is False:
        return None
    if stats is True:
        return RunningStats()
    if isinstance(stats, RunningStats):
        return stats
    raise OptionTypeError(
        f"stats must be True, False/None or a hlviz.collection.stats.RunningStats giving the options "
        f"(top_k=, sample=, levels=), got {type(stats).__name__}."
    )


def collect(
    model: nn.Module,
    data: Any,
    layers: LayerSpec,
    *,
    reduce: str | Callable | None = None,
    out: str | Path | None = None,
    resume: bool = True,
    batch_size: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: bool = True,
    tokens: bool = False,
    columns: Mapping[str, Any] | None = None,
    stats: bool | RunningStats | None = None,
    dtype: torch.dtype | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> ActivationStore:
    """Run ``model`` over ``data`` and keep the activations of ``layers`` for every input.

    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU()).eval()
    >>> store = hlviz.collect(model, torch.randn(100, 4), "1", batch_size=25)
    >>> store["1"].shape, store.rows, store.complete
    ((100, 8), 100, True)

    On disk, e.g. ``hlviz.collect(model, loader, "encoder.layer.*", reduce="mean",
    out="runs/acts")``: ``store["encoder.layer.3"]`` is then ``(inputs, 384)``, read lazily.

    Args:
        data: a tensor (split into ``batch_size`` rows, default 64), a ``DataLoader`` or any
            iterable of batches: tensors (``model(x)``), tuples (``model(*batch)``) or dicts
            (``model(**batch)``, e.g. a tokenizer's output).
        reduce: as in :func:`hlviz.record` (``"mean"``, ``"max"``, ``"last"``, ..., a
            callable), applied inside the hooks; ``None`` keeps whole activations.
        out: a directory: rows are streamed to an :class:`~hlviz.ActivationStore` there in
            shards of about ``shard_bytes``. ``None`` keeps everything in memory, refused
            (:class:`~hlviz.errors.MemoryBudgetError`) past ``max_bytes``.
        resume: continue a store in ``out`` after its last complete shard (it must have been
            started by the same model, layers, options and data, else
            :class:`~hlviz.errors.StoreMismatchError`); ``False`` refuses an existing store.
        tokens: one row per real token of a sequence model's ``(batch, tokens, units)``
            outputs, padding excluded through the batch's ``attention_mask``; adds columns
            ``sequence`` (input number), ``position`` and ``token`` (ids, when given).
        columns: extra per-row columns taken from each batch: ``{"label": 1}`` takes item 1
            of ``(x, y)`` batches (and gives the model only ``x``), ``{"label": "labels"}`` a
            key of dict batches, or a callable ``batch -> (n,) values``.
        stats: ``True`` or a :class:`~hlviz.collection.stats.RunningStats` (its options) to compute
            per-unit mean, variance, min/max, quantiles and top-k rows while collecting
            (``store.stats``).
        dtype: store activations in this dtype (``torch.float16`` halves the size).

    Under ``torch.distributed`` (``torchrun``, ``accelerate launch``) each process collects
    every ``world_size``-th batch (or all of its own batches when its ``DataLoader`` has a
    ``DistributedSampler``) into its own shards of ``out``; every process then returns the
    whole store, rows in batch order. Resuming assumes ``data`` yields the same batches in
    the same order; the first batch is checked.
    """
    check_module(model)
    template = _check_options(out, resume, max_bytes, shard_bytes, stats)
    rank, world = distributed()
    if world > 1 and out is None:
        raise OptionError(
            f"{world} processes are collecting (torch.distributed is initialised), which needs "
            "out='some/dir' on a file system they share: each writes its own shards there."
        )
    collector = Collector(model, layers, reduce=reduce, tokens=tokens, dtype=dtype, columns=columns)
    source = Source(data, batch_size, rank, world)
    warn_if_training(model, "the collected activations")
    options = {
        "reduce": reduce
        if not callable(reduce)
        else f"callable:{getattr(reduce, '__qualname__', '?')}",
        "tokens": tokens,
        "dtype": None if dtype is None else str(dtype).replace("torch.", ""),
        "stats": None if template is None else template.options(),
        "columns": sorted(columns or {}),
    }
    header = json.loads(
        json.dumps(
            {
                "model": {
                    "class": type(unwrap(model)).__name__,
                    "fingerprint": model_fingerprint(model),
                },
                "layer_names": collector.layers,
                "options": options,
                "world_size": world,
            }
        )
    )
    writer = None
    if out is not None:
        writer = ShardWriter(Path(out), rank, header, resume=resume, shard_bytes=shard_bytes)
        _barrier(world)  # every process has read the store's state before any writes to it
        if writer.complete:
            for _, batch in source:  # a finished store: only check that the data are the same
                writer.check_data(batch_digest(batch))
                break
            _barrier(world)
            return ActivationStore(out)
    acc = writer.stats(collector.layers) if writer is not None and template else None
    if template is not None and acc is None:
        acc = {name: RunningStats(**template.options()) for name in collector.layers}
    memory = _Memory(max_bytes, source.inputs, collector.layers) if writer is None else None
    start = writer.next_batch if writer is not None else 0
    next_batch, schema, first = start, None, True
    bar = _progress(progress and rank == 0, source.mine())
    try:
        with collector.rec:
            for g, batch in source:
                if first:
                    first = False
                    if writer is not None:
                        writer.check_data(batch_digest(batch))
                if g < start:
                    bar.update(1)
                    continue
                arrays, rows, inputs = collector.run(batch)
                if schema is None:
                    schema = {k: (list(a.shape[1:]), str(a.dtype)) for k, a in arrays.items()}
                    if writer is not None:
                        writer.check_schema(
                            schema_of(arrays, "layers"), schema_of(arrays, "columns")
                        )
                check_rows(arrays, schema, g)
                if acc is not None:
                    keys = (np.int64(g) << KEY_BITS) + np.arange(rows, dtype=np.int64)
                    for name in collector.layers:
                        acc[name].update(arrays[("layers", name)].reshape(rows, -1), keys)
                next_batch = g + 1
                if writer is None:
                    memory.add(g, arrays, rows, inputs)
                elif writer.add(g, arrays, rows, inputs):
                    writer.flush(next_batch, acc)
                bar.update(1)
    finally:
        bar.close()
    if writer is None:
        if schema is None:
            raise OptionError("data gave no batches: there is nothing to collect.")
        return memory.store(
            {
                **{k: v for k, v in header.items() if k != "layer_names"},
                "layers": _schema_from(schema, "layers"),
                "columns": _schema_from(schema, "columns"),
            },
            acc,
        )
    if schema is None and world == 1 and not writer.shards:
        raise OptionError("data gave no batches: there is nothing to collect.")
    writer.finish(next_batch, acc)
    _barrier(world)
    return ActivationStore(out)


def _schema_from(schema: dict, kind: str) -> list[dict]:
    return [
        {"name": name, "shape": shape, "dtype": dtype}
        for (k, name), (shape, dtype) in schema.items()
        if k == kind
    ]


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(show: bool, total: int | None):
    if not (show and progress_enabled()):
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="batch", desc="collect")
