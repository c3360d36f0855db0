"""Checks shared by the probes: activations, labels, devices and the ``probe=`` argument.

>>> import numpy as np
>>> from hlviz.probes._checks import check_finite
>>> X = np.ones((4, 2)); X[1, 0] = np.nan; X[3, 1] = np.inf
>>> check_finite(X, "layer 'a'")
Traceback (most recent call last):
...
hlviz.errors.OptionError: layer 'a' has NaN or inf values in 2 of its 4 rows (first at row 1: 1 NaN, 1 inf in all); drop or impute those rows before probing, e.g. keep = np.isfinite(X).all(1); X, y = X[keep], y[keep].

Every probe reads activations through :func:`as_rows` (one row per example, at least one
feature, numbers only, half precision widened to float32) and class labels through
:func:`encode_labels` (any hashable labels, as in scikit-learn: ``classes_`` holds them).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from .._checks import instance
from ..errors import MemoryBudgetError, OptionError, OptionTypeError, ShapeMismatchError

__all__ = [
    "as_rows",
    "as_targets",
    "check_finite",
    "check_memory",
    "device_of",
    "encode_labels",
    "is_numeric",
]

_HALF = (torch.float16, torch.bfloat16)
_BIG_PARAMS = 2**31  # parameters past this are refused whatever the free memory


def check_finite(X: np.ndarray | torch.Tensor, what: str) -> None:
    """Raise an :class:`~hlviz.errors.OptionError` saying how many rows of ``X`` ``(n, ...)``
    hold NaN or inf (and where the first is), instead of a NaN score or a solver's error."""
    if isinstance(X, torch.Tensor):
        if not X.is_floating_point() or bool(torch.isfinite(X).all()):
            return
        X = X.detach().cpu().double().numpy()
    elif X.dtype.kind not in "fc" or bool(np.isfinite(X).all()):
        return
    rows = ~np.isfinite(X.reshape(len(X), -1)).all(1)
    nan, inf = int(np.isnan(X).sum()), int(np.isinf(X).sum())
    raise OptionError(
        f"{what} has NaN or inf values in {int(rows.sum())} of its {len(X)} rows (first at row "
        f"{int(rows.argmax())}: {nan} NaN, {inf} inf in all); drop or impute those rows before "
        "probing, e.g. keep = np.isfinite(X).all(1); X, y = X[keep], y[keep]."
    )


def as_rows(
    value: Any, what: str, *, n: int | None = None, vector_ok: bool = False
) -> np.ndarray | torch.Tensor:
    """``value`` as rows of features ``(n, d)`` with ``n >= 1`` and ``d >= 1``.

    A tensor stays a tensor (float16 and bfloat16 widened to float32), anything else becomes
    a NumPy array of numbers; extra axes are flattened. ``n``: the rows required (one per
    label); ``vector_ok``: a 1-D ``(n,)`` value is one feature (else it is refused).

    >>> import torch
    >>> as_rows(torch.zeros(3, 2, 2, dtype=torch.bfloat16), "X").dtype
    torch.float32
    >>> as_rows(torch.zeros(3, 0), "layer 'a'")
    Traceback (most recent call last):
    ...
    hlviz.errors.ShapeMismatchError: layer 'a' has no features (shape (3, 0)); a probe needs at least one feature per row: drop this layer or pick one that has units.
    """
    if isinstance(value, torch.Tensor):
        array: Any = value.detach()
        if array.dtype in _HALF:
            array = array.float()
        elif array.is_complex():
            raise OptionTypeError(
                f"{what} must hold real numbers, got a {array.dtype} tensor; pass X.real or "
                "X.abs() instead."
            )
    elif isinstance(value, (np.ndarray, list, tuple)) or hasattr(value, "__array__"):
        try:
            array = np.asarray(value)
        except ValueError as err:  # ragged nested lists
            raise ShapeMismatchError(
                f"{what} could not be read as an array ({err}); give an (n, d) array or tensor "
                "with the same number of features on every row."
            ) from None
        if array.dtype.kind not in "biuf":
            raise OptionTypeError(
                f"{what} must hold numbers (activations), got an array of dtype {array.dtype}; "
                "give an (n, d) float array or tensor, one row per example."
            )
        if array.dtype == np.float16:
            array = array.astype(np.float32)
    else:
        raise OptionTypeError(
            f"{what} must be activations, an (n, d) array or tensor with one row per example, "
            f"got {type(value).__name__}" + (f" {value!r}" if isinstance(value, str) else "") + "."
        )
    shape = tuple(array.shape)
    if len(shape) == 0 or (len(shape) == 1 and not vector_ok):
        raise ShapeMismatchError(
            f"{what} must have one row per example and at least one feature, got shape "
            f"{shape}; reshape a single feature with X.reshape(-1, 1)."
        )
    if n is not None and shape[0] != n:
        raise ShapeMismatchError(
            f"{what} has {shape[0]} rows but y has {n}; every layer needs one row of "
            "activations per label."
        )
    if shape[0] == 0:
        raise ShapeMismatchError(
            f"{what} has no rows (shape {shape}); a probe needs examples: record activations "
            "on at least a few inputs per class."
        )
    if math.prod(shape[1:]) == 0:
        raise ShapeMismatchError(
            f"{what} has no features (shape {shape}); a probe needs at least one feature per "
            "row: drop this layer or pick one that has units."
        )
    array = array.reshape(shape[0], -1)
    check_finite(array, what)
    return array


def is_numeric(y: np.ndarray | torch.Tensor) -> bool:
    """Whether targets ``y`` are numbers (else labels such as strings or other objects)."""
    return isinstance(y, torch.Tensor) or y.dtype.kind in "biuf"


def as_targets(y: Any, device: torch.device | None = None) -> np.ndarray | torch.Tensor:
    """Targets ``y`` ``(n, ...)``: numbers as a tensor (on ``device``), other labels (strings,
    any hashable) as a NumPy array.

    >>> as_targets(["NOUN", "VERB"]).tolist()
    ['NOUN', 'VERB']
    """
    if isinstance(y, torch.Tensor):
        out = y.detach()
        out = out.float() if out.dtype in _HALF else out
    else:
        if isinstance(y, (str, bytes)):
            raise ShapeMismatchError(
                f"y must hold one target per row, got the single {type(y).__name__} {y!r}; give "
                "a sequence of labels, e.g. y = ['NOUN', 'VERB', ...]."
            )
        try:
            arr = np.asarray(y)
        except ValueError as err:
            raise ShapeMismatchError(f"y could not be read as an array ({err}).") from None
        if arr.ndim == 0:
            raise ShapeMismatchError(
                f"y must hold one target per row, got the scalar {y!r}; give a sequence."
            )
        if arr.dtype.kind not in "biuf":
            return arr
        out = torch.as_tensor(arr.astype(np.float32) if arr.dtype == np.float16 else arr)
    if out.dim() == 0:
        raise ShapeMismatchError(
            f"y must hold one target per row, got the scalar {out.item()!r}; give a sequence."
        )
    return out.to(device) if device is not None else out


def encode_labels(y: np.ndarray | torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """Distinct classes of labels ``y`` ``(n,)`` (a NumPy array, sorted where the labels
    compare, else in order of first appearance) and each row's index into them.

    >>> classes, codes = encode_labels(np.array(["VERB", "NOUN", "VERB"]))
    >>> classes.tolist(), codes.tolist()
    (['NOUN', 'VERB'], [1, 0, 1])
    """
    if isinstance(y, torch.Tensor):
        classes, codes = torch.unique(y, return_inverse=True)
        return classes.cpu().numpy(), codes
    try:
        classes, codes = np.unique(y, return_inverse=True)
    except TypeError:  # labels that do not compare (mixed types): first appearance
        index: dict[Any, int] = {}
        codes = np.array([index.setdefault(label, len(index)) for label in y.tolist()])
        classes = np.empty(len(index), dtype=object)
        classes[:] = list(index)
    return classes, torch.as_tensor(codes.reshape(-1).astype(np.int64))


def device_of(device: Any) -> torch.device | None:
    """The ``device=`` of a probe as a :class:`torch.device` that can hold data, or None.

    >>> device_of("cpu")
    device(type='cpu')
    >>> device_of("nowhere")
    Traceback (most recent call last):
    ...
    hlviz.errors.OptionError: device='nowhere' is not a torch device; use None (the device of X), 'cpu' or 'cuda'.
    """
    if device is None:
        return None
    instance("device", device, (str, torch.device), "None, a device name (str) or a torch.device")
    try:
        out = torch.device(device)
    except RuntimeError:
        raise OptionError(
            f"device={device!r} is not a torch device; use None (the device of X), 'cpu' or 'cuda'."
        ) from None
    if out.type == "meta":
        raise OptionError(
            f"device={device!r} holds no data, so a probe cannot be fit there; use None (the "
            "device of X), 'cpu' or 'cuda'."
        )
    if out.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(
            f"device={device!r} but CUDA is not available here; use device='cpu' or None."
        )
    return out


def _available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return None


def check_memory(params: int, copies: int, device: torch.device, what: str, fix: str) -> None:
    """Refuse to allocate ``params`` float32 parameters (``copies`` times: gradients,
    optimiser history) past ``2**31`` parameters or the free memory of ``device``."""
    need = params * 4 * copies
    free = _available_bytes(device)
    if params > _BIG_PARAMS or (free is not None and need > free):
        room = f"{free / 2**30:.1f} GiB free on {device}" if free is not None else "the limit"
        raise MemoryBudgetError(
            f"{what} has {params:,} parameters, about {need / 2**30:.1f} GiB to fit, past "
            f"{room} (or 2**31 parameters); {fix}"
        )
