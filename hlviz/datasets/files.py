"""Data files shipped in ``data/``: where they are, their sha256, and the check that refuses a
missing, damaged or stale file with the command that rebuilds it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import DataFileError

__all__ = ["data_dir", "sha256_of", "verified_data_file"]


def data_dir() -> Path:
    """The repository's ``data/`` folder, where the shipped subsets and checkpoints live.

    >>> hlviz.datasets.data_dir().name
    'data'
    """
    return Path(__file__).resolve().parents[2] / "data"


def sha256_of(path: str | Path) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks (the one hashing helper of hlviz).

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     file = pathlib.Path(tmp) / "x.bin"; _ = file.write_bytes(b"abc")
    ...     sha256_of(file)[:16]
    'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_data_file(name: str, rebuild: str) -> Path:
    """Path of ``data/<name>`` after checking it against its line in ``data/SHA256SUMS``.

    >>> hlviz.datasets.verified_data_file("fashion_mnist_subset.npz", "see data/PROVENANCE.md").name
    'fashion_mnist_subset.npz'

    Raises :class:`~hlviz.errors.DataFileError` when the file is missing, has no checksum
    line, or its sha256 differs (a damaged or stale file); the message quotes ``rebuild``,
    the command that writes the file again.
    """

    path = data_dir() / name
    if not path.is_file():
        raise DataFileError(
            f"data file {name!r} is missing from {path.parent}; rebuild it with `{rebuild}` "
            "(run from the repository root; see data/PROVENANCE.md)."
        )
    sums = path.parent / "SHA256SUMS"
    listed = {}
    if sums.is_file():
        for line in sums.read_text().splitlines():
            if line.strip():
                digest, _, listed_name = line.partition(" ")
                listed[listed_name.strip().lstrip("*")] = digest
    if name not in listed:
        raise DataFileError(
            f"data file {name!r} has no line in {sums}; rebuild it with `{rebuild}`, which "
            "also writes its checksum."
        )
    digest = sha256_of(path)
    if digest != listed[name]:
        raise DataFileError(
            f"data file {name!r} is damaged or stale: its sha256 is {digest[:12]}..., "
            f"data/SHA256SUMS expects {listed[name][:12]}...; rebuild it with `{rebuild}` "
            "(or restore it with `git checkout data/`)."
        )
    return path
