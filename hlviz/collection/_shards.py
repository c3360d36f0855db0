"""Files of an :class:`~hlviz.ActivationStore`: atomic writes, the journal, checks, the writer.

>>> import tempfile, numpy as np
>>> from pathlib import Path
>>> path = Path(tempfile.mkdtemp()) / "a.npy"
>>> digest, size = write_array(path, [np.arange(3), np.arange(2)])
>>> digest == sha256_of(path), np.load(path).tolist()
(True, [0, 1, 2, 0, 1])
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets.files import sha256_of
from ..errors import OptionError, StoreCorruptError, StoreMismatchError
from .stats import RunningStats

__all__ = [
    "FORMAT",
    "KEY_BITS",
    "VERSION",
    "ShardWriter",
    "Verified",
    "check_files",
    "load_header",
    "load_stats",
    "read_journal",
    "shard_file",
]

FORMAT = "hlviz-activation-store"
VERSION = 1
KEY_BITS = 32  # a row key is batch << 32 | row within the batch


class _HashingWriter:
    """A file-like object that hashes what is written through it."""

    def __init__(self, fp):
        self.fp, self.hash, self.size = fp, hashlib.sha256(), 0

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        self.hash.update(data)
        self.size += len(data)
        return self.fp.write(data)


def _replace_atomically(path: Path, write) -> tuple[str, int]:
    """Write a file through ``write(fp)`` to a temporary name, fsync, and move it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fp:
            out = _HashingWriter(fp)
            write(out)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out.hash.hexdigest(), out.size


def write_array(path: Path, parts: list[np.ndarray]) -> tuple[str, int]:
    """Write the concatenation of ``parts`` (same dtype and row shape) as one ``.npy`` file,
    atomically and without building it in memory; return its sha256 and size."""
    first = parts[0]
    header = np.lib.format.header_data_from_array_1_0(first)
    header["shape"] = (sum(len(p) for p in parts), *first.shape[1:])
    header["fortran_order"] = False

    def write(fp) -> None:
        np.lib.format.write_array_header_1_0(fp, header)
        for part in parts:
            if part.size:
                fp.write(np.ascontiguousarray(part).data)

    return _replace_atomically(path, write)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically."""
    text = json.dumps(obj, indent=1, sort_keys=False).encode()
    _replace_atomically(path, lambda fp: fp.write(text))


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> tuple[str, int]:
    """Write ``arrays`` as an ``.npz`` file atomically; return its sha256 and size."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return _replace_atomically(path, lambda fp: fp.write(buf.getbuffer()))


def read_journal(path: Path) -> tuple[list[dict], int]:
    """The complete lines of a journal and the byte length they span (a torn last line,
    from a crash while it was written, is not counted)."""
    if not path.exists():
        return [], 0
    raw = path.read_bytes()
    entries, good = [], 0
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise StoreCorruptError(
                f"the journal {path} has a damaged line after {len(entries)} entries ({exc}); "
                "the store cannot tell which shards are complete. Collect again into a new "
                "directory."
            ) from None
        good += len(line)
    return entries, good


def shard_file(kind: str, name: str, rank: int, index: int) -> str:
    """Relative path of one shard file: ``layers/<name>/r000-000003.npy``."""
    return f"{kind}/{name}/r{rank:03d}-{index:06d}.npy"


def stats_file(rank: int, index: int) -> str:
    return f"stats/r{rank:03d}-{index:06d}.npz"


def load_header(path: Path) -> dict:
    manifest = path / "manifest.json"
    if not manifest.exists():
        what = "does not exist" if not path.exists() else "has no manifest.json"
        raise OptionError(
            f"{str(path)!r} is not an activation store: it {what}. Create one with "
            "hlviz.collect(model, data, layers, out=path)."
        )
    header = json.loads(manifest.read_text())
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise OptionError(
            f"{str(manifest)!r} is not a version-{VERSION} hlviz activation store manifest "
            f"(format {header.get('format')!r}, version {header.get('version')!r})."
        )
    return header


@dataclass(frozen=True)
class Verified:
    """What :meth:`ActivationStore.verify` checked: every file (path -> bytes) and shard count."""

    files: dict[str, int]
    shards: int

    @property
    def bytes(self) -> int:
        return sum(self.files.values())

    def summary(self) -> str:
        return f"{self.shards} shards, {len(self.files)} files, {self.bytes / 2**20:.1f} MiB: all sha256 match"


def load_stats(path: Path, entry: dict, layers: list[str]) -> dict[str, RunningStats]:
    """The statistics saved with one journal entry, one accumulator per layer."""
    rel = entry["stats"][0]
    with np.load(path / rel, allow_pickle=False) as data:
        return {
            name: RunningStats.from_state(
                {k.split(":", 1)[1]: data[k] for k in data.files if k.split(":", 1)[0] == str(i)}
            )
            for i, name in enumerate(layers)
        }


def check_files(path: Path, shards: list[tuple[int, dict]], *, full: bool) -> Verified:
    """Check the files of journal entries: existence and size, and sha256 when ``full``."""
    problems, files = [], {}
    last = {rank: entry["index"] for rank, entry in shards}  # only the latest stats are kept
    for rank, entry in shards:
        listed = dict(entry["files"])
        if entry.get("stats") and entry["index"] == last[rank]:
            listed[entry["stats"][0]] = entry["stats"][1:]
        for rel, (digest, size) in listed.items():
            file = path / rel
            where = f"shard {entry['index']} of process {rank}"
            if not file.exists():
                problems.append(f"  {rel} ({where}): missing")
            elif file.stat().st_size != size:
                problems.append(
                    f"  {rel} ({where}): {file.stat().st_size} bytes, the manifest says {size}"
                )
            elif full and sha256_of(file) != digest:
                problems.append(f"  {rel} ({where}): sha256 differs from the manifest (damaged)")
            else:
                files[rel] = size
    if problems:
        raise StoreCorruptError(
            f"{len(problems)} shard file(s) of the store at {path} are damaged or missing:\n"
            + "\n".join(problems)
            + "\nTheir rows cannot be trusted. Collect again into a new directory (out=...), "
            "or restore the files from a copy."
        )
    return Verified(files, len(shards))


# ---------------------------------------------------------------- writing
def _describe_options(options: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items())


class ShardWriter:
    """Writes one process's shards of a store, and resumes after its last complete shard.

    ``header`` holds ``model`` (class and fingerprint), ``layer_names``, ``options`` and
    ``world_size``; an existing store must agree with it or the run is refused.
    """

    def __init__(self, path: Path, rank: int, header: dict, *, resume: bool, shard_bytes: int):
        self.path, self.rank, self.header = Path(path), rank, header
        self.shard_bytes = shard_bytes
        self.journal = self.path / "journal" / f"rank-{rank:03d}.jsonl"
        self.existing = load_header(self.path) if (self.path / "manifest.json").exists() else None
        ours = {"manifest.json", "journal", "layers", "columns", "stats"}
        foreign = sorted(p.name for p in self.path.glob("*") if p.name not in ours)
        if self.existing is None and foreign:
            raise OptionError(
                f"out={str(self.path)!r} holds files that are not part of an activation store "
                f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); give an "
                "empty or new directory."
            )
        if self.existing is not None:
            if not resume:
                raise StoreMismatchError(
                    f"out={str(self.path)!r} already holds an activation store and resume=False: "
                    "hlviz does not overwrite it. Pass resume=True to continue it, or another "
                    "(new) directory, or delete this one first."
                )
            self._compare(self.existing)
        entries, good = read_journal(self.journal)
        if self.journal.exists() and self.journal.stat().st_size != good:
            os.truncate(self.journal, good)  # a line torn by a crash: the shard never counted
        self.shards = [e for e in entries if e["kind"] == "shard"]
        self.start = next((e for e in entries if e["kind"] == "start"), None)
        self.complete = any(e["kind"] == "complete" for e in entries)
        check_files(self.path, [(rank, e) for e in self.shards], full=False)
        self.next_batch = self.shards[-1]["next"] if self.shards else 0
        self._clean_orphans()
        self._buffer: dict[tuple[str, str], list[np.ndarray]] = {}
        self._batches: list[list[int]] = []
        self._buffered = 0

    # ------------------------------------------------------------ checks
    def _compare(self, old: dict) -> None:
        new = self.header
        where = f"out={str(self.path)!r}"
        (om, nm) = old["model"], new["model"]
        if om["fingerprint"] != nm["fingerprint"]:
            why = (
                "its weights differ (the model changed since the store was started: trained "
                "further, another checkpoint or seed?)"
                if om["class"] == nm["class"]
                else "it is another model"
            )
            raise StoreMismatchError(
                f"{where} holds activations of {om['class']} with fingerprint "
                f"{om['fingerprint'][:16]}, but this model is {nm['class']} with fingerprint "
                f"{nm['fingerprint'][:16]}: {why}. Appending would mix two models' activations "
                "in one store; collect into a new directory, or use the model the store was "
                "started with."
            )
        old_layers = [s["name"] for s in old["layers"]]
        if old_layers != new["layer_names"]:
            raise StoreMismatchError(
                f"{where} holds layers {old_layers}, but this run asks for "
                f"{new['layer_names']}: every shard of a store has the same layers. Collect "
                "these layers into a new directory, or ask for the store's layers."
            )
        if old["options"] != new["options"]:
            diff = {k: v for k, v in new["options"].items() if old["options"].get(k) != v}
            was = {k: old["options"].get(k) for k in diff}
            raise StoreMismatchError(
                f"{where} was collected with {_describe_options(was)}, but this run asks for "
                f"{_describe_options(diff)}: the rows would not be comparable. Use the same "
                "options to resume, or a new directory."
            )
        if old["world_size"] != new["world_size"]:
            raise StoreMismatchError(
                f"{where} was written by {old['world_size']} process(es) but this run has "
                f"{new['world_size']}: each process resumes its own shards, so resume with the "
                f"same number (torchrun --nproc_per_node={old['world_size']})."
            )

    def check_schema(self, layers: list[dict], columns: list[dict]) -> None:
        """Compare per-row shapes and dtypes with the store's; write the manifest if new."""
        if self.existing is not None:
            for kind, old, new in (
                ("layer", self.existing["layers"], layers),
                ("column", self.existing["columns"], columns),
            ):
                if old != new:
                    o = {s["name"]: (tuple(s["shape"]), s["dtype"]) for s in old}
                    n = {s["name"]: (tuple(s["shape"]), s["dtype"]) for s in new}
                    diff = sorted(set(o.items()) ^ set(n.items()))
                    raise StoreMismatchError(
                        f"out={str(self.path)!r} stores {kind}s as {o}, but this run gives "
                        f"{n} (differing: {diff}): rows of another shape or dtype cannot be "
                        "appended. Use the same data and options, or a new directory."
                    )
            return
        header = {
            "format": FORMAT,
            "version": VERSION,
            "model": self.header["model"],
            "layers": layers,
            "columns": columns,
            "options": self.header["options"],
            "world_size": self.header["world_size"],
        }
        write_json(self.path / "manifest.json", header)
        self.existing = header

    def check_data(self, digest: str) -> None:
        """The first batch of this process must be the one the store was started with."""
        if self.start is None:
            self.start = {"kind": "start", "rank": self.rank, "first_batch_sha256": digest}
            self._append(self.start)
        elif self.start["first_batch_sha256"] != digest:
            raise StoreMismatchError(
                f"out={str(self.path)!r} was started on other data: its first batch had sha256 "
                f"{self.start['first_batch_sha256'][:16]}, this data's first batch has "
                f"{digest[:16]}. Resuming needs the same batches in the same order (no "
                "shuffling: DataLoader(..., shuffle=False) or a seeded generator); for new "
                "data use a new directory."
            )

    # ------------------------------------------------------------ shards
    def add(self, batch: int, arrays: dict[tuple[str, str], np.ndarray], rows: int, inputs: int):
        """Buffer one input batch's rows; returns True when the buffer should be flushed."""
        for key, array in arrays.items():
            self._buffer.setdefault(key, []).append(array)
            self._buffered += array.nbytes
        self._batches.append([batch, rows, inputs])
        return self._buffered >= self.shard_bytes

    def flush(self, next_batch: int, stats: dict[str, RunningStats] | None) -> None:
        """Write the buffered batches as one shard, then commit it with a journal line."""
        if not self._batches:
            return
        index = len(self.shards)
        files = {}
        for (kind, name), parts in self._buffer.items():
            rel = shard_file(kind, name, self.rank, index)
            files[rel] = list(write_array(self.path / rel, parts))
        entry = {
            "kind": "shard",
            "index": index,
            "rows": sum(b[1] for b in self._batches),
            "batches": self._batches,
            "next": next_batch,
            "files": files,
            "stats": None,
        }
        if stats is not None:
            rel = stats_file(self.rank, index)
            arrays = {
                f"{i}:{k}": v
                for i, acc in enumerate(stats.values())
                for k, v in acc.state().items()
            }
            entry["stats"] = [rel, *write_npz(self.path / rel, arrays)]
        self._append(entry)
        if self.shards and self.shards[-1].get("stats"):
            (self.path / self.shards[-1]["stats"][0]).unlink(missing_ok=True)
        self.shards.append(entry)
        self.next_batch = next_batch
        self._buffer, self._batches, self._buffered = {}, [], 0

    def finish(self, next_batch: int, stats: dict[str, RunningStats] | None) -> None:
        """Write what is buffered and mark this process's part complete."""
        self.flush(next_batch, stats)
        self._append({"kind": "complete", "next": next_batch})
        self.complete = True

    def stats(self, layers: list[str]) -> dict[str, RunningStats] | None:
        """The statistics saved with the last complete shard (to resume from)."""
        if not self.shards or not self.shards[-1].get("stats"):
            return None
        return load_stats(self.path, self.shards[-1], layers)

    def _append(self, entry: dict) -> None:
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal, "ab") as fp:
            fp.write(json.dumps(entry).encode() + b"\n")
            fp.flush()
            os.fsync(fp.fileno())

    def _clean_orphans(self) -> None:
        """Remove this process's files of shards that never committed, and dead temp files."""
        first_free = len(self.shards)
        for pattern in (f"*/*/r{self.rank:03d}-*.npy", f"stats/r{self.rank:03d}-*.npz"):
            for file in self.path.glob(pattern):
                index = int(file.stem.rsplit("-", 1)[1])
                kept = self.shards[-1].get("stats") if self.shards else None
                stale = file.suffix == ".npz" and (
                    kept is None or file.relative_to(self.path).as_posix() != kept[0]
                )
                if index >= first_free or stale:
                    file.unlink(missing_ok=True)
        for tmp in self.path.glob("**/.*.tmp-*"):
            pid = tmp.name.rsplit("-", 1)[1]
            if not pid.isdigit():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                tmp.unlink(missing_ok=True)
            except PermissionError:
                pass
