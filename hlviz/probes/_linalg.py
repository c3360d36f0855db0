"""Cholesky factors of the symmetric positive definite matrices the probes solve with.

>>> import torch
>>> from hlviz.probes._linalg import cholesky
>>> A = torch.tensor([[4.0, 2.0], [2.0, 3.0]], dtype=torch.float64)
>>> L = cholesky(A, what="a test matrix", fix="none needed")
>>> torch.allclose(L @ L.T, A)
True

Every matrix the probes factor (a ridge system ``Z^T Z + alpha I``, the preconditioner
``S / 2 + (lam + s) I``) is symmetric positive definite by construction, so Cholesky is
the right factorisation: half the work of LU, no pivoting, and a definite answer when the
matrix is not positive definite. hlviz uses no LU at all (``torch.linalg.inv`` and
``torch.linalg.solve`` of batches can fail or hang inside MKL once a process has changed
its thread count, issue 16).
"""

from __future__ import annotations

import torch

from ..errors import OptionError

__all__ = ["cholesky"]


def cholesky(matrix: torch.Tensor, *, what: str, fix: str) -> torch.Tensor:
    """Lower Cholesky factor of ``matrix`` ``(..., d, d)``; an :class:`~hlviz.errors.OptionError`
    naming ``what`` the matrix is and the ``fix`` when it is not positive definite."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    if bool((info != 0).any()):
        bad = info.flatten()
        first = int(bad[bad != 0][0])
        batch = (
            "" if matrix.dim() == 2 else f" (matrix {int((bad != 0).nonzero()[0, 0])} of the batch)"
        )
        raise OptionError(
            f"{what}{batch} is not positive definite: its leading minor of order {first} "
            f"(of {matrix.shape[-1]}) is not positive. {fix}"
        )
    return factor
