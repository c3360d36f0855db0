"""ActivationStore: activations of a data set on disk, in verified, memory-mappable shards.

>>> import tempfile, torch, torch.nn as nn, hlviz
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU()).eval()
>>> tmp = tempfile.TemporaryDirectory()
>>> store = hlviz.collect(model, torch.randn(100, 4), "0", out=tmp.name, batch_size=32,
...                       shard_bytes=1024)   # a shard per batch, to show several
>>> store["0"].shape, store.verify().shards
((100, 8), 4)
>>> hlviz.ActivationStore(tmp.name)["0"][:2].shape   # opened again: lazy reads
(2, 8)
>>> tmp.cleanup()

Layout of a store directory (written by :func:`hlviz.collect`, one writer per process)::

    manifest.json                 model fingerprint, layers and columns (per-row shape,
                                  dtype), options, number of processes
    journal/rank-000.jsonl        one line per complete shard: its input batches, rows,
                                  and the sha256 and size of every file it wrote
    layers/<layer>/r000-000003.npy   shard 3 of process 0 for one layer (plain .npy)
    columns/<column>/r000-000003.npy extra columns (labels, sequence, position, token)
    stats/r000-000003.npz         streaming statistics after that shard (if asked for)

Every file is written to a temporary name and moved into place (``os.replace``); a shard
counts only once its journal line is written, so a crash leaves the store at its last
complete shard. Rows are read back in the order of the input batches, whichever process
wrote them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import positive_int
from ..errors import LayerNotFoundError, OptionError, StoreCorruptError
from ._shards import (
    KEY_BITS,
    Verified,
    check_files,
    load_header,
    load_stats,
    read_journal,
    shard_file,
)
from .stats import LayerStats, RunningStats

__all__ = ["ActivationStore", "LayerArray", "Verified"]


# ---------------------------------------------------------------- reading
@dataclass(frozen=True)
class _Piece:
    """The rows of one input batch inside one shard."""

    batch: int
    rows: int
    inputs: int
    shard: int  # index into the store's shard list
    start: int  # first row inside the shard


class LayerArray:
    """One layer (or column) of a store: a lazy ``(rows, *shape)`` array over its shards.

    Indexing (``arr[i]``, ``arr[a:b]``, ``arr[[3, 1]]``, a boolean mask, or a tuple whose
    first element picks rows) reads only the shards that hold the rows asked for and
    returns a ``numpy.ndarray``; ``np.asarray(arr)`` and :meth:`numpy` read everything.
    ``shards`` gives the memory-mapped pieces themselves.
    """

    def __init__(
        self, store: ActivationStore, name: str, kind: str, shape, dtype, add_inputs: bool
    ):
        self._store, self.name, self._kind = store, name, kind
        self.shape = (store.rows, *shape)
        self.dtype = np.dtype(dtype)
        self._add_inputs = add_inputs  # the sequence column: batch-local ids + the batch's offset
        runs = store._runs(split=add_inputs)
        self._run_start = np.array([r[0] for r in runs], dtype=np.int64)
        self._runs = runs

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def _source(self, shard: int, mode: str = "r") -> np.ndarray:
        return self._store._array(shard, self._kind, self.name, mode)

    @property
    def shards(self) -> list[np.ndarray]:
        """The pieces in row order (memory maps for an on-disk store; no copy)."""
        out = []
        for _, length, shard, offset, add in self._runs:
            part = self._source(shard)[offset : offset + length]
            out.append(part + add if add else part)
        return out

    def _rows(self, index: np.ndarray) -> np.ndarray:
        out = np.empty((len(index), *self.shape[1:]), dtype=self.dtype)
        if not len(index):
            return out
        run_of = np.searchsorted(self._run_start, index, side="right") - 1
        for run in np.unique(run_of):
            where = run_of == run
            start, _, shard, offset, add = self._runs[run]
            out[where] = self._source(shard)[index[where] - start + offset]
            if add:
                out[where] += add
        return out

    def _span(self, a: int, b: int) -> np.ndarray:
        out = np.empty((max(b - a, 0), *self.shape[1:]), dtype=self.dtype)
        first = max(int(np.searchsorted(self._run_start, a, side="right")) - 1, 0)
        for start, length, shard, offset, add in self._runs[first:]:
            if start >= b:
                break
            lo, hi = max(a, start), min(b, start + length)
            if lo < hi:
                out[lo - a : hi - a] = self._source(shard)[
                    lo - start + offset : hi - start + offset
                ]
                if add:
                    out[lo - a : hi - a] += add
        return out

    def __getitem__(self, key: Any) -> Any:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = (key[0] if key else slice(None)), key[1:]
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"row {key} is out of range for {self.name!r} with {n} rows.")
            out = self._span(i, i + 1)[0]
            return out[rest] if rest else out
        if isinstance(key, slice) and key.step in (None, 1):
            a, b, _ = key.indices(n)
            out = self._span(a, b)
        else:
            index = np.arange(n)[key]
            out = self._rows(np.asarray(index, dtype=np.int64).reshape(-1))
        return out[(slice(None), *rest)] if rest else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self._span(0, len(self))
        return out if dtype is None else out.astype(dtype, copy=False)

    def numpy(self) -> np.ndarray:
        """Every row, read into memory as one ``numpy.ndarray``."""
        return self._span(0, len(self))

    def torch(self):
        """A ``torch.Tensor``: a copy-on-write view of the file when the layer is one piece
        on disk (nothing is read until used), else a tensor over the rows read into memory."""
        import torch

        if len(self._runs) == 1 and not self._add_inputs:
            _, length, shard, offset, _ = self._runs[0]
            return torch.from_numpy(self._source(shard, "c")[offset : offset + length])
        return torch.from_numpy(self.numpy())

    def __repr__(self) -> str:
        return (
            f"LayerArray({self.name!r}, shape={self.shape}, dtype={self.dtype}, "
            f"pieces={len(self._runs)})"
        )


class ActivationStore(Mapping):
    """Activations of a data set: a read-only mapping layer name -> :class:`LayerArray`.

    ``ActivationStore(path)`` opens a store that :func:`hlviz.collect` wrote (the values are
    read lazily); ``collect(..., out=None)`` returns one held in memory, with the same API.
    Keys are the collected layers, so ``hlviz.probe_layers(store, y)`` and
    ``hlviz.similarity.cka_matrix(store)`` take a store as they take a dict of arrays.
    ``store.columns`` holds the extra per-row columns; ``store.stats`` the statistics.
    """

    def __init__(self, path: str | os.PathLike):
        self.path: Path | None = Path(path)
        self._header = load_header(self.path)
        self._memory: dict[tuple[str, str], np.ndarray] | None = None
        self._memory_stats: dict[str, RunningStats] | None = None
        self._journals: dict[int, list[dict]] = {}
        entries: list[tuple[int, dict]] = []
        complete = []
        for rank in range(self._header["world_size"]):
            lines, _ = read_journal(self.path / "journal" / f"rank-{rank:03d}.jsonl")
            self._journals[rank] = lines
            entries += [(rank, e) for e in lines if e["kind"] == "shard"]
            complete.append(any(e["kind"] == "complete" for e in lines))
        self.complete = all(complete)
        self._shards = [(rank, e) for rank, e in entries]
        pieces = [
            (b, rows, inputs, i)
            for i, (_, e) in enumerate(self._shards)
            for b, rows, inputs in e["batches"]
        ]
        self._build(pieces)
        self._maps: dict[tuple[int, str, str, str], np.ndarray] = {}

    @classmethod
    def _in_memory(
        cls,
        header: dict,
        arrays: dict[tuple[str, str], np.ndarray],
        batches: list[tuple[int, int, int]],
        stats: dict[str, RunningStats] | None,
    ) -> ActivationStore:
        store = cls.__new__(cls)
        store.path, store._header, store._memory = None, header, arrays
        store._memory_stats, store._journals, store.complete = stats, {}, True
        store._shards = [(0, {"batches": batches})]
        store._build([(b, rows, inputs, 0) for b, rows, inputs in batches])
        store._maps = {}
        return store

    def _build(self, pieces: list[tuple[int, int, int, int]]) -> None:
        """Order the pieces by input batch and place each shard's rows."""
        within: dict[int, int] = {}
        placed = []
        for b, rows, inputs, shard in pieces:
            start = within.get(shard, 0)
            within[shard] = start + rows
            placed.append(_Piece(b, rows, inputs, shard, start))
        placed.sort(key=lambda p: p.batch)
        batches = [p.batch for p in placed]
        if len(set(batches)) != len(batches):
            raise StoreCorruptError(
                f"the store at {self.path} holds some input batches twice (journals of "
                "different runs mixed in one directory?); collect again into a new directory."
            )
        self._pieces = placed
        self._batch_ids = np.array(batches, dtype=np.int64)
        self._row_offsets = np.cumsum([0] + [p.rows for p in placed], dtype=np.int64)
        self._input_offsets = np.cumsum([0] + [p.inputs for p in placed], dtype=np.int64)
        self.rows = int(self._row_offsets[-1])
        self._run_cache: dict[bool, list] = {}
        self.inputs = int(self._input_offsets[-1])

    def _runs(self, split: bool) -> list[tuple[int, int, int, int, int]]:
        """(global start, length, shard, offset in shard, value to add) per run of rows;
        consecutive pieces of one shard are merged unless ``split`` (computed once)."""
        if split not in self._run_cache:
            self._run_cache[split] = self._make_runs(split)
        return self._run_cache[split]

    def _make_runs(self, split: bool) -> list[tuple[int, int, int, int, int]]:
        runs: list[list[int]] = []
        for i, p in enumerate(self._pieces):
            start = int(self._row_offsets[i])
            add = int(self._input_offsets[i]) if split else 0
            last = runs[-1] if runs else None
            if (
                not split
                and last is not None
                and last[2] == p.shard
                and last[3] + last[1] == p.start
                and last[0] + last[1] == start
            ):
                last[1] += p.rows
            elif p.rows:
                runs.append([start, p.rows, p.shard, p.start, add])
        return [tuple(r) for r in runs]

    def _array(self, shard: int, kind: str, name: str, mode: str) -> np.ndarray:
        if self._memory is not None:
            return self._memory[(kind, name)]
        key = (shard, kind, name, mode)
        if key not in self._maps:
            rank, entry = self._shards[shard]
            rel = shard_file(kind, name, rank, entry["index"])
            path = self.path / rel
            if not path.exists():
                raise StoreCorruptError(
                    f"shard file {rel} (layer or column {name!r}, shard {entry['index']} of "
                    f"process {rank}) is missing from {self.path}; run store.verify() to list "
                    "every damaged file."
                )
            self._maps[key] = np.load(path, mmap_mode=mode, allow_pickle=False)
        return self._maps[key]

    # ---------------------------------------------------------------- mapping
    @property
    def layers(self) -> list[str]:
        """The collected layers, in the order they were given."""
        return [spec["name"] for spec in self._header["layers"]]

    def __getitem__(self, layer: str) -> LayerArray:
        for spec in self._header["layers"]:
            if spec["name"] == layer:
                return LayerArray(self, layer, "layers", spec["shape"], spec["dtype"], False)
        where = f" (a column: use store.columns[{layer!r}])" if layer in self.columns else ""
        raise LayerNotFoundError(
            f"no layer {layer!r} in this store{where}; it holds {self.layers}. Collect other "
            "layers into another store."
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self._header["layers"])

    @property
    def columns(self) -> dict[str, LayerArray]:
        """Extra per-row columns (labels, ``sequence``, ``position``, ``token``, ...)."""
        return {
            spec["name"]: LayerArray(
                self,
                spec["name"],
                "columns",
                spec["shape"],
                spec["dtype"],
                spec["name"] == "sequence",
            )
            for spec in self._header["columns"]
        }

    @property
    def model(self) -> str:
        """Class name of the model the activations came from."""
        return self._header["model"]["class"]

    @property
    def fingerprint(self) -> str:
        """sha256 of the model's parameters and buffers when the store was written."""
        return self._header["model"]["fingerprint"]

    @property
    def options(self) -> dict[str, Any]:
        """The collection options (reduce, tokens, dtype, statistics) stored in the manifest."""
        return dict(self._header["options"])

    @property
    def world_size(self) -> int:
        """How many processes wrote the store."""
        return int(self._header["world_size"])

    def batches(
        self, batch_size: int = 1024, *, layers: list[str] | None = None, columns: bool = True
    ) -> Iterator[dict[str, np.ndarray]]:
        """Rows in order, ``batch_size`` at a time: dicts name -> ``(b, ...)`` arrays with the
        chosen ``layers`` (all by default) and, with ``columns=True``, every column."""
        batch_size = positive_int("batch_size", batch_size)
        arrays = {name: self[name] for name in (self.layers if layers is None else layers)}
        if columns:
            arrays.update(self.columns)
        for start in range(0, self.rows, batch_size):
            yield {name: arr[start : start + batch_size] for name, arr in arrays.items()}

    def row_of(self, keys: Any) -> np.ndarray:
        """Row numbers of row keys (``batch << 32 | row in batch``), as statistics store them."""
        keys = np.asarray(keys, dtype=np.int64)
        batch, local = keys >> KEY_BITS, keys & ((1 << KEY_BITS) - 1)
        where = np.searchsorted(self._batch_ids, batch)
        return self._row_offsets[np.minimum(where, len(self._batch_ids) - 1)] + local

    @property
    def stats(self) -> dict[str, LayerStats]:
        """Per-unit statistics of every layer (collected with ``stats=``), merged over processes."""
        merged = self._running_stats()
        if merged is None:
            raise OptionError(
                "this store has no statistics: collect with stats=True (or a "
                "hlviz.collection.stats.RunningStats giving the options) to compute them while collecting."
            )
        return {name: acc.result(self.row_of) for name, acc in merged.items()}

    def _running_stats(self) -> dict[str, RunningStats] | None:
        if self._memory is not None:
            return self._memory_stats
        if not self._header["options"].get("stats"):
            return None
        merged: dict[str, RunningStats] | None = None
        for rank in sorted(self._journals):
            shards = [e for e in self._journals[rank] if e["kind"] == "shard"]
            if not shards:
                continue
            state = load_stats(self.path, shards[-1], self.layers)
            if merged is None:
                merged = state
            else:
                for name in merged:
                    merged[name].merge(state[name])
        if merged is None:
            raise OptionError("no shard has been written yet, so there are no statistics.")
        return merged

    # ---------------------------------------------------------------- checks
    def verify(self) -> Verified:
        """Check every shard file against the manifest (exists, size, sha256).

        Returns :class:`Verified`; raises :class:`~hlviz.errors.StoreCorruptError` naming every
        missing or damaged file, the shard it belongs to and the rows it holds.
        """
        if self._memory is not None:
            return Verified({}, 0)
        return check_files(self.path, [(rank, e) for rank, e in self._shards], full=True)

    def summary(self):
        """A ``pandas.DataFrame``: one row per layer and column (rows, shape, dtype, MB)."""
        import pandas as pd

        rows = []
        for kind, arrays in (("layer", {n: self[n] for n in self}), ("column", self.columns)):
            for name, arr in arrays.items():
                rows.append(
                    {
                        "name": name,
                        "kind": kind,
                        "rows": arr.shape[0],
                        "shape": arr.shape[1:],
                        "dtype": str(arr.dtype),
                        "MB": round(arr.nbytes / 2**20, 3),
                    }
                )
        return pd.DataFrame(rows, columns=["name", "kind", "rows", "shape", "dtype", "MB"])

    def __repr__(self) -> str:
        where = "in memory" if self.path is None else str(self.path)
        state = "" if self.complete else ", incomplete"
        return (
            f"ActivationStore({where}; {self.model}; {self.rows} rows of {len(self)} layers; "
            f"{len(self._shards)} shards{state})"
        )
