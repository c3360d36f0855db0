"""Shared input checks for the similarity modules: activations as float64 ``(n, d)`` tensors.

>>> from hlviz.similarity._arrays import _as_matrix
>>> tuple(_as_matrix(torch.zeros(3, 2, 2) + torch.arange(4.0).view(1, 2, 2), "X").shape)
(3, 4)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import OptionError, OptionTypeError, ShapeMismatchError


# ---------------------------------------------------------------- input checks
def _as_matrix(value: Any, what: str, device: torch.device | None = None) -> torch.Tensor:
    """``value`` as a float64 ``(n, d)`` tensor (flattened), checked for size and finiteness."""
    if isinstance(value, list) and value and all(isinstance(v, torch.Tensor) for v in value):
        raise OptionTypeError(
            f"{what} is a list of {len(value)} tensors: the layer ran several times in one "
            "forward pass. Pick one call, e.g. rec.calls(layer)[0], or stack them yourself."
        )
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
    else:
        try:
            tensor = torch.from_numpy(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError):
            raise OptionTypeError(
                f"{what} must be a tensor or an array of numbers, got {type(value).__name__}."
            ) from None
    if tensor.ndim < 2:
        raise OptionError(
            f"{what} must have shape (n, d) or (n, ...): one row per input; got shape "
            f"{tuple(tensor.shape)}. A single feature per input is x.reshape(-1, 1)."
        )
    if tensor.shape[0] == 0 or tensor[0].numel() == 0:
        raise OptionError(
            f"{what} is empty (shape {tuple(tensor.shape)}): there is nothing to compare."
        )
    tensor = tensor.reshape(tensor.shape[0], -1).to(device=device, dtype=torch.float64)
    bad = (~torch.isfinite(tensor)).any(1)
    if bad.any():
        rows = bad.nonzero().flatten().tolist()
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        raise OptionError(
            f"{what} has NaN or inf in {len(rows)} of {tensor.shape[0]} rows (rows {shown}): "
            "similarity is undefined. Find where they come from (e.g. "
            "torch.isfinite(x).all(1)) and drop those rows from every layer."
        )
    return tensor


def _pair(X: Any, Y: Any, min_n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    X = _as_matrix(X, "X")
    Y = _as_matrix(Y, "Y", device=X.device)
    if X.shape[0] != Y.shape[0]:
        raise ShapeMismatchError(
            f"X has {X.shape[0]} rows and Y has {Y.shape[0]}: rows must be the same inputs in the "
            "same order. Record both layers on the same batch."
        )
    _check_n(X.shape[0], min_n, "X and Y")
    return X, Y


def _check_n(n: int, min_n: int, what: str) -> None:
    if n < min_n:
        raise OptionError(
            f"{what} have {n} rows; this measure needs at least {min_n} inputs. Use more inputs."
        )


def _centre(X: torch.Tensor, what: str) -> torch.Tensor:
    """Columns centred; refuses a constant representation (zero variance: CKA undefined)."""
    centred = X - X.mean(dim=0, keepdim=True)
    if centred.norm() <= 1e-10 * max(X.norm().item(), 1e-300):
        raise OptionError(
            f"{what} is constant across inputs (zero variance after centring), so its "
            "similarity to anything is undefined. Check the layer (dead ReLUs? a constant "
            "input?) or leave it out."
        )
    return centred


def _centre_gram(K: torch.Tensor, what: str) -> torch.Tensor:
    centred = K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()
    if centred.norm() <= 1e-10 * max(K.norm().item(), 1e-300):
        raise OptionError(
            f"{what} gives a constant kernel matrix (zero variance after centring): CKA is "
            "undefined. Check the layer for constant activations or leave it out."
        )
    return centred


def _check_method(value: str, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise OptionError(
            f"{name}={value!r} is not known; use one of {', '.join(map(repr, allowed))}."
        )
