"""Small data sets that ship with the software hlviz depends on, as ready-to-use tensors.

>>> import hlviz
>>> train = hlviz.datasets.load_digits("train")
>>> tuple(train.X.shape), train.X.dtype, train.y.dtype
((1347, 1, 8, 8), torch.float32, torch.int64)
>>> X, y = hlviz.datasets.load_digits("test")   # a split unpacks into (X, y)
>>> len(X), len(y)
(450, 450)

scikit-learn is imported when a loader is called, not when this module is imported.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..errors import DataFileError, OptionError
from .files import verified_data_file

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SUBSET",
    "ImageSplit",
    "fashion_mnist",
    "fashion_mnist_folder",
    "load_digits",
    "read_fashion_mnist",
]

_SPLITS = ("train", "test", "all")


@dataclass(frozen=True, eq=False)  # tensors do not compare to one bool
class ImageSplit:
    """One split of a labelled image data set.

    ``X`` is a float32 tensor ``(N, C, H, W)`` scaled to ``[0, 1]``, ``y`` an int64 tensor
    ``(N,)`` of class indices, ``classes`` the class names (``classes[y[i]]``), ``split``
    the name of the split. Unpacks as ``X, y = split``; ``len(split)`` is ``N``.
    """

    X: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]
    split: str
    name: str = field(default="")

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.X, self.y))

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __repr__(self) -> str:
        counts = torch.bincount(self.y, minlength=len(self.classes)).tolist()
        return (
            f"ImageSplit({self.name or 'data'} {self.split!r}: X {tuple(self.X.shape)} "
            f"{str(self.X.dtype).replace('torch.', '')}, y {tuple(self.y.shape)}, "
            f"{len(self.classes)} classes, per class {counts})"
        )


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # pixel values are 0..16
    return images, bunch.target.astype(np.int64)


def load_digits(split: str = "train", *, test_size: float = 0.25, seed: int = 0) -> ImageSplit:
    """scikit-learn's 1797 handwritten digits (8x8 pixels, 10 classes) as an :class:`ImageSplit`.

    >>> hlviz.datasets.load_digits("all").X.shape
    torch.Size([1797, 1, 8, 8])

    ``split`` is ``"train"``, ``"test"`` or ``"all"``. The train/test split is stratified
    by class and fixed by ``seed`` (``sklearn.model_selection.train_test_split``), so the
    same arguments always give the same images in the same order. ``X`` has shape
    ``(N, 1, 8, 8)`` with values in ``[0, 1]``; ``y`` holds the digit (0-9).
    The data ship inside scikit-learn: nothing is downloaded.
    """
    if split not in _SPLITS:
        raise OptionError(
            f"split must be one of {', '.join(map(repr, _SPLITS))}, got {split!r}. "
            "Use load_digits('train') and load_digits('test') for a held-out evaluation."
        )
    if (
        isinstance(test_size, bool)
        or not isinstance(test_size, (int, float))
        or not 0 < test_size < 1
    ):
        raise OptionError(
            f"test_size must be a fraction between 0 and 1 (exclusive), got {test_size!r}; "
            "e.g. test_size=0.25 keeps a quarter of the images for testing."
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise OptionError(f"seed must be a non-negative int, got {seed!r}.")
    images, target = _digits_arrays()
    index = np.arange(len(target))
    if split != "all":
        from sklearn.model_selection import train_test_split

        train_idx, test_idx = train_test_split(
            index, test_size=test_size, random_state=seed, stratify=target
        )
        index = train_idx if split == "train" else test_idx
    X = torch.from_numpy(images[index].copy()).unsqueeze(1)
    y = torch.from_numpy(target[index].copy())
    return ImageSplit(
        X=X, y=y, classes=tuple(str(d) for d in range(10)), split=split, name="digits"
    )


# --- Fashion-MNIST: the shipped subset in data/, or the full set where it is installed ---

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_SUBSET = "fashion_mnist_subset.npz"
FASHION_MNIST_ENV = "HLVIZ_FASHION_MNIST"
FASHION_MNIST_DEBIAN = "/usr/share/datasets/fashion-mnist"
_FASHION_REBUILD = "python scripts/build_fashion_mnist.py"
_IDX = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def fashion_mnist_folder(path: str | os.PathLike | None = None) -> Path | None:
    """The folder holding the full Fashion-MNIST idx files, or ``None`` when there is none.

    >>> folder = hlviz.datasets.fashion_mnist_folder()   # Debian folder, if installed
    >>> folder is None or (folder / "t10k-labels-idx1-ubyte.gz").exists()
    True

    Looks at ``path``, then the ``HLVIZ_FASHION_MNIST`` environment variable, then the
    folder of the Debian package ``dataset-fashion-mnist``. A folder counts when it has
    the four files (``train-images-idx3-ubyte[.gz]`` ...). An explicit ``path`` that
    does not hold them raises :class:`~hlviz.errors.DataFileError`.
    """
    candidates = [path] if path is not None else []
    candidates += [os.environ.get(FASHION_MNIST_ENV) or None, FASHION_MNIST_DEBIAN]
    for candidate in candidates:
        if candidate is None:
            continue
        folder = Path(candidate)
        if all(_idx_file(folder, stem) is not None for pair in _IDX.values() for stem in pair):
            return folder
        if candidate is path:
            raise DataFileError(
                f"{folder} does not hold the Fashion-MNIST idx files "
                "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...); "
                "give the folder that has them, or install them with "
                "`apt-get install dataset-fashion-mnist`."
            )
    return None


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_idx(path: Path, kind: int) -> np.ndarray:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x800 + kind:
        raise DataFileError(
            f"{path} is not an idx{kind} file of unsigned bytes (magic {magic:#x}, expected "
            f"{0x800 + kind:#x}); reinstall the full set (apt-get install dataset-fashion-mnist)."
        )
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(kind)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * kind)
    if data.size != int(np.prod(dims)):
        raise DataFileError(
            f"{path} is truncated: {data.size} bytes of data for shape {tuple(dims)}; "
            "reinstall the full set (apt-get install dataset-fashion-mnist)."
        )
    return data.reshape(dims)


def read_fashion_mnist(folder: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The full Fashion-MNIST ``split`` from a folder of idx files: ``(images, labels)``.

    >>> folder = hlviz.datasets.fashion_mnist_folder()
    >>> if folder is not None:
    ...     images, labels = hlviz.datasets.read_fashion_mnist(folder, "test")
    ...     assert images.shape == (10000, 28, 28) and labels.shape == (10000,)

    ``images`` is uint8 ``(N, 28, 28)`` (60,000 train, 10,000 test), ``labels`` uint8 ``(N,)``.
    """
    if split not in _IDX:
        raise OptionError(f"split must be 'train' or 'test', got {split!r}.")
    folder = Path(folder)
    found = [_idx_file(folder, stem) for stem in _IDX[split]]
    if None in found:
        raise DataFileError(
            f"{folder} has no {_IDX[split][found.index(None)]}[.gz]; point to the folder of the "
            "full Fashion-MNIST (apt-get install dataset-fashion-mnist puts it in "
            f"{FASHION_MNIST_DEBIAN})."
        )
    images, labels = _read_idx(found[0], 3), _read_idx(found[1], 1)
    if len(images) != len(labels):
        raise DataFileError(
            f"{folder}: {len(images)} images but {len(labels)} labels in the {split!r} split; "
            "the files come from different releases: reinstall them."
        )
    return images, labels


def fashion_mnist(
    split: str = "train", *, full: bool = False, path: str | os.PathLike | None = None
) -> ImageSplit:
    """Fashion-MNIST (Zalando, MIT licence) as an :class:`ImageSplit` of 28x28 grey images.

    >>> test = hlviz.datasets.fashion_mnist("test")
    >>> tuple(test.X.shape), test.classes[9]
    ((2000, 1, 28, 28), 'Ankle boot')

    By default the class-stratified subset shipped in ``data/`` (10,000 train and 2,000
    test images, 10 classes in equal numbers; built by ``scripts/build_fashion_mnist.py``),
    checked against its sha256. ``full=True`` (or a ``path``) reads the full 60,000 + 10,000
    images from ``path``, the ``HLVIZ_FASHION_MNIST`` environment variable or the Debian
    package's folder. ``X`` is float32 ``(N, 1, 28, 28)`` in ``[0, 1]``, ``y`` int64 ``(N,)``.
    """
    if split not in _IDX:
        raise OptionError(
            f"split must be 'train' or 'test', got {split!r}; "
            "use fashion_mnist('train') and fashion_mnist('test')."
        )
    if full or path is not None:
        folder = fashion_mnist_folder(path)
        if folder is None:
            raise DataFileError(
                "the full Fashion-MNIST was asked for but none was found: install it with "
                "`apt-get install dataset-fashion-mnist`, or set HLVIZ_FASHION_MNIST (or path=) "
                "to a folder with the idx files; without full=True the shipped subset is used."
            )
        images, labels = read_fashion_mnist(folder, split)
        name = "fashion-mnist"
    else:
        file = verified_data_file(FASHION_MNIST_SUBSET, _FASHION_REBUILD)
        with np.load(file, allow_pickle=False) as arrays:
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        name = "fashion-mnist subset"
    X = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return ImageSplit(X=X, y=y, classes=FASHION_MNIST_CLASSES, split=split, name=name)
