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

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from .errors import OptionError

__all__ = ["ImageSplit", "load_digits"]

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
