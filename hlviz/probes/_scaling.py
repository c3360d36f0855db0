"""One standardisation rule for every probe: per-feature mean and scale of training rows.

>>> import torch
>>> from hlviz.probes._scaling import standardizer
>>> X = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
>>> mean, scale = standardizer(X)
>>> mean.tolist(), scale.tolist()
([2.0, 5.0], [1.0, inf])

:class:`~hlviz.probes.LinearProbe`, :class:`~hlviz.probes.MLPProbe` and the batched sweep
(:mod:`hlviz.probes._batched`) all decide which features are constant with
:func:`scale_of`, so a column is dropped (scale ``inf``: its weight stays 0) by all of
them or by none.
"""

from __future__ import annotations

import torch

__all__ = ["scale_of", "standardize_rows", "standardizer"]

_ABS_TOL = 1e-8  # a spread below this is rounding noise...
_REL_TOL = 1e-7  # ...and so is one below this fraction of the feature's mean


def scale_of(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``std`` with ``inf`` where a feature is constant on the rows it was computed on.

    A feature constant up to rounding (spread below ``1e-8``, or below ``1e-7`` of its
    mean's size: float32 rows of a large constant) carries nothing; an infinite scale maps
    it to 0 on every row, instead of blowing rounding noise up to unit variance.
    """
    constant = (std < _ABS_TOL) | (std < _REL_TOL * mean.abs())
    return torch.where(constant, torch.full_like(std, float("inf")), std)


def standardizer(X: torch.Tensor, standardize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and scale of rows ``X`` ``(n, d)``, in float64 (float32 sums lose
    features whose spread is tiny next to their mean); constant features get scale inf."""
    if not standardize:
        zeros = torch.zeros(X.shape[1], dtype=torch.float64, device=X.device)
        return zeros, zeros + 1
    X64 = X.double()
    mean, std = X64.mean(0), X64.std(0, unbiased=False)
    return mean, scale_of(mean, std)


def standardize_rows(X: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``(X - mean) / scale`` computed in float64, returned as float32."""
    return ((X.double() - mean) / scale).float()
