"""Build data/fashion_mnist_subset.npz: a deterministic, class-stratified Fashion-MNIST subset.

    python scripts/build_fashion_mnist.py                      # Debian package or $HLVIZ_FASHION_MNIST
    python scripts/build_fashion_mnist.py --source DIR         # a folder with the four idx(.gz) files
    python scripts/build_fashion_mnist.py --download           # the official address (needs internet)

Reads the full Fashion-MNIST (Zalando Research, MIT licence; 60,000 train + 10,000 test
28x28 grey images), keeps ``--train-per-class`` and ``--test-per-class`` images of each of
the 10 classes (chosen by a permutation seeded with ``--seed``, kept in their original
order), and writes them as uint8 arrays ``train_images (N, 28, 28)``, ``train_labels (N,)``,
``test_images``, ``test_labels`` to one compressed ``.npz`` (no pickle). The same source
and arguments always give the same bytes. The file's sha256 replaces its line in
``data/SHA256SUMS``; ``data/PROVENANCE.md`` documents the file.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hlviz.datasets import (  # noqa: E402
    FASHION_MNIST_SUBSET,
    fashion_mnist_folder,
    read_fashion_mnist,
)

URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def download(folder: Path) -> Path:
    """Fetch the four official files into ``folder`` (only with --download)."""
    for name in FILES:
        with urllib.request.urlopen(URL + name, timeout=60) as response:
            (folder / name).write_bytes(response.read())
    return folder


def stratified(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of ``per_class`` examples of every class, chosen by a seeded permutation, sorted."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    chosen = []
    for c in np.unique(labels):
        members = order[labels[order] == c]
        if len(members) < per_class:
            raise SystemExit(f"class {c} has {len(members)} examples, fewer than {per_class}")
        chosen.append(members[:per_class])
    return np.sort(np.concatenate(chosen))


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A compressed .npz whose bytes depend only on the arrays (fixed zip timestamps)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue(), compresslevel=9)
    path.write_bytes(buffer.getvalue())


def update_sums(data: Path, name: str) -> str:
    """Replace (or add) the sha256 line of ``name`` in ``data/SHA256SUMS``; return the digest."""
    digest = hashlib.sha256((data / name).read_bytes()).hexdigest()
    sums = data / "SHA256SUMS"
    lines = sums.read_text().splitlines() if sums.exists() else []
    lines = [line for line in lines if line.split(maxsplit=1)[-1].lstrip("*") != name]
    lines.append(f"{digest}  {name}")
    sums.write_text("\n".join(sorted(lines, key=lambda s: s.split(maxsplit=1)[-1])) + "\n")
    return digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, help="folder with the four idx(.gz) files")
    parser.add_argument("--download", action="store_true", help=f"fetch from {URL}")
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "data")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = download(Path(tmp)) if args.download else fashion_mnist_folder(args.source)
        if folder is None:
            print(
                "no Fashion-MNIST found: `apt-get install dataset-fashion-mnist`, set "
                "HLVIZ_FASHION_MNIST, pass --source DIR, or --download when online",
                file=sys.stderr,
            )
            return 2
        arrays = {}
        for split, per_class in (("train", args.train_per_class), ("test", args.test_per_class)):
            images, labels = read_fashion_mnist(folder, split)
            keep = stratified(labels, per_class, args.seed)
            arrays[f"{split}_images"] = images[keep]
            arrays[f"{split}_labels"] = labels[keep]
            arrays[f"{split}_index"] = keep.astype(np.int32)  # position in the full split
    args.out.mkdir(parents=True, exist_ok=True)
    write_npz(args.out / FASHION_MNIST_SUBSET, arrays)
    digest = update_sums(args.out, FASHION_MNIST_SUBSET)
    size = (args.out / FASHION_MNIST_SUBSET).stat().st_size
    print(f"wrote {args.out / FASHION_MNIST_SUBSET} ({size / 1e6:.2f} MB) from {folder}")
    print(f"sha256 {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
