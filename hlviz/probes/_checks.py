"""Checks shared by the probes: activations must be finite.

>>> import numpy as np
>>> from hlviz.probes._checks import check_finite
>>> X = np.ones((4, 2)); X[1, 0] = np.nan; X[3, 1] = np.inf
>>> check_finite(X, "layer 'a'")
Traceback (most recent call last):
...
hlviz.errors.OptionError: layer 'a' has NaN or inf values in 2 of its 4 rows (first at row 1: 1 NaN, 1 inf in all); drop or impute those rows before probing, e.g. keep = np.isfinite(X).all(1); X, y = X[keep], y[keep].
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import OptionError

__all__ = ["check_finite"]


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
