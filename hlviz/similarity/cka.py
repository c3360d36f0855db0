"""Representational similarity: CKA (linear, RBF, minibatch/unbiased), RSA, projections.

>>> import torch, hlviz.similarity as hs
>>> X = torch.randn(100, 8)
>>> Q, _ = torch.linalg.qr(torch.randn(8, 8))     # a rotation of the feature space
>>> round(hs.linear_cka(X, 3 * X @ Q), 6)          # CKA ignores rotation and scale
1.0

Activations are ``(n, d)``: row ``i`` of every layer comes from the same input ``i``;
anything with more dimensions (``(n, C, H, W)``, ``(n, T, D)``) is flattened to
``(n, -1)``. Tensors (CPU or GPU) and numpy arrays are accepted; sums are taken in
float64 on the tensor's device. References: Kornblith et al. 2019 (CKA), Song et al.
2012 (unbiased HSIC), Nguyen, Raghu & Kornblith 2021 (minibatch CKA), Kriegeskorte et
al. 2008 (RSA).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from ..errors import OptionError, OptionTypeError, ShapeMismatchError
from ._arrays import _as_matrix, _centre, _centre_gram, _check_method, _check_n, _pair
from .geometry import project, rdm, rsa  # re-exported: similarity is where users look for RSA
from .report import CKAReport

__all__ = [
    "RBF_MAX_N",
    "CKAReport",
    "cka_matrix",
    "hsic_unbiased",
    "linear_cka",
    "linear_cka_gram",
    "minibatch_cka",
    "project",
    "rbf_cka",
    "rdm",
    "rsa",
]

Array = torch.Tensor | np.ndarray
RBF_MAX_N = 10_000  # an (n, n) float64 Gram matrix of 10,000 rows is 800 MB
CKA_METHODS = ("linear", "rbf", "minibatch")
_BLOCK = 1 << 24  # elements of one (d_y, chunk) product block in linear CKA: 128 MB of float64


# ---------------------------------------------------------------- linear CKA
def _cross_sq_norm(Xc: torch.Tensor, Yc: torch.Tensor) -> torch.Tensor:
    """``||Yc^T Xc||_F^2`` in column blocks of ``Xc``: memory O(d_y * block), never (n, n)."""
    step = max(1, _BLOCK // Yc.shape[1])
    total = Xc.new_zeros(())
    for start in range(0, Xc.shape[1], step):
        total += (Yc.T @ Xc[:, start : start + step]).square().sum()
    return total


def _linear_state(X: torch.Tensor, what: str) -> tuple[torch.Tensor, float]:
    centred = _centre(X, what)
    return centred, math.sqrt(_cross_sq_norm(centred, centred).item())


def _linear_from_states(a: tuple[torch.Tensor, float], b: tuple[torch.Tensor, float]) -> float:
    return _cross_sq_norm(a[0], b[0].to(a[0].device)).item() / (a[1] * b[1])


def linear_cka(X: Array, Y: Array) -> float:
    """Linear CKA of two representations of the same ``n`` inputs, in feature space.

    >>> X = torch.randn(200, 16)
    >>> round(hlviz.similarity.linear_cka(X, X), 6)
    1.0

    ``X`` is ``(n, d_x)`` and ``Y`` is ``(n, d_y)`` (more dimensions are flattened).
    With columns centred, CKA = ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` (Kornblith
    et al. 2019), a number in [0, 1], invariant to rotations and isotropic scaling.
    Memory is O(n d + d^2): no (n, n) matrix is built, so n can be large; when d is
    much larger than n, :func:`linear_cka_gram` is faster.
    """
    X, Y = _pair(X, Y)
    return _linear_from_states(_linear_state(X, "X"), _linear_state(Y, "Y"))


def linear_cka_gram(X: Array, Y: Array) -> float:
    """Linear CKA through the ``(n, n)`` Gram matrices: for small ``n`` and for checking.

    >>> X = torch.randn(50, 4)
    >>> Y = X + 0.5 * torch.randn(50, 4)
    >>> abs(hlviz.similarity.linear_cka_gram(X, Y) - hlviz.similarity.linear_cka(X, Y)) < 1e-9
    True

    ``X`` ``(n, d_x)``, ``Y`` ``(n, d_y)``. CKA = ``<K_c, L_c> / (||K_c|| ||L_c||)`` with
    ``K = X X^T`` and ``L = Y Y^T`` centred; equal to :func:`linear_cka`.
    """
    X, Y = _pair(X, Y)
    Xc, Yc = _centre(X, "X"), _centre(Y, "Y")
    K, L = Xc @ Xc.T, Yc @ Yc.T  # Gram matrices of centred features are centred
    return ((K * L).sum() / (K.norm() * L.norm())).item()


# ---------------------------------------------------------------- RBF CKA
def _rbf_gram(X: torch.Tensor, sigma: float, what: str) -> torch.Tensor:
    """Centred, unit-norm RBF Gram matrix ``(n, n)``; bandwidth ``sigma`` x median distance."""
    n = X.shape[0]
    if n > RBF_MAX_N:
        raise OptionError(
            f"{what} has {n} rows; RBF CKA builds (n, n) matrices and is limited to "
            f"{RBF_MAX_N} rows. Subsample the inputs, or use linear_cka or minibatch_cka, "
            "which scale to any n."
        )
    X = _centre(X, what)
    sq = X.square().sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * X @ X.T).clamp_min_(0)
    d2.fill_diagonal_(0)
    rows, cols = torch.triu_indices(n, n, offset=1, device=X.device)
    median = d2[rows, cols].median().sqrt().item()
    if median <= 0:
        raise OptionError(
            f"{what}: the median distance between inputs is 0 (more than half the pairs of "
            "rows are identical), so the RBF bandwidth is 0. Remove duplicate inputs or use "
            "linear_cka."
        )
    K = _centre_gram(torch.exp(-d2 / (2 * (sigma * median) ** 2)), what)
    return K / K.norm()


def _rbf_state(X: torch.Tensor, what: str) -> torch.Tensor:
    return _rbf_gram(X, 1.0, what)


def _gram_pair(K: torch.Tensor, L: torch.Tensor) -> float:
    return (K * L.to(K.device)).sum().item()


def rbf_cka(X: Array, Y: Array, sigma: float | None = None) -> float:
    """CKA with Gaussian (RBF) kernels; bandwidth = ``sigma`` x median pairwise distance.

    >>> X = torch.randn(100, 5)
    >>> round(hlviz.similarity.rbf_cka(X, X), 6)
    1.0

    ``X`` ``(n, d_x)``, ``Y`` ``(n, d_y)``, ``n <= RBF_MAX_N`` (10,000): the Gram
    matrices are ``(n, n)``. ``sigma`` (default 1.0, as in Kornblith et al. 2019) scales
    each representation's median distance between distinct inputs; small ``sigma``
    weights local neighbourhoods, large ``sigma`` approaches linear CKA.
    """
    if sigma is None:
        sigma = 1.0
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise OptionTypeError(f"sigma must be a positive number such as 1.0, got {sigma!r}.")
    if not (math.isfinite(sigma) and sigma > 0):
        raise OptionError(f"sigma must be a positive finite number such as 1.0, got {sigma!r}.")
    X, Y = _pair(X, Y)
    return (_rbf_gram(X, sigma, "X") * _rbf_gram(Y, sigma, "Y")).sum().item()


# ---------------------------------------------------------------- unbiased / minibatch CKA
def hsic_unbiased(K: Array, L: Array) -> float:
    """Unbiased HSIC estimator (Song et al. 2012) of two ``(n, n)`` kernel matrices.

    >>> X = torch.randn(64, 6)
    >>> K = X @ X.T
    >>> hlviz.similarity.hsic_unbiased(K, K) > 0
    True

    ``K`` and ``L`` are square Gram matrices of the same ``n >= 4`` inputs (their
    diagonals are ignored). Unlike the biased estimator it has no O(1/n) offset, so
    averaging it over minibatches estimates the full-data value (see
    :func:`minibatch_cka`). Computed in O(n^2).
    """
    K = _as_matrix(K, "K")
    L = _as_matrix(L, "L", device=K.device)
    for name, M in (("K", K), ("L", L)):
        if M.shape[0] != M.shape[1]:
            raise ShapeMismatchError(
                f"{name} must be a square (n, n) kernel matrix, got shape {tuple(M.shape)}. "
                "Build it from (n, d) activations, e.g. X @ X.T."
            )
    if K.shape != L.shape:
        raise ShapeMismatchError(
            f"K is {tuple(K.shape)} and L is {tuple(L.shape)}: both must be kernel matrices of "
            "the same n inputs."
        )
    n = K.shape[0]
    _check_n(n, 4, "K and L")
    return _hsic1(K, L)


def _hsic1(K: torch.Tensor, L: torch.Tensor) -> float:
    n = K.shape[0]
    K = K.clone().fill_diagonal_(0)
    L = L.clone().fill_diagonal_(0)
    trace = (K * L.T).sum()
    sums = K.sum() * L.sum() / ((n - 1) * (n - 2))
    cross = 2.0 / (n - 2) * (K.sum(0) @ L.sum(1))
    return ((trace + sums - cross) / (n * (n - 3))).item()


def _batches(X: torch.Tensor, Y: torch.Tensor, batch_size: int, seed: int):
    order = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(seed))
    for start in range(0, X.shape[0], batch_size):
        index = order[start : start + batch_size]
        if len(index) >= 4:  # a remainder of under 4 rows cannot enter the unbiased HSIC
            yield X[index.to(X.device)], Y[index.to(Y.device)]


def _check_batch_size(batch_size: Any, default: int = 256) -> int:
    if batch_size is None:
        return default
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise OptionTypeError(f"batch_size must be an int such as 256, got {batch_size!r}.")
    if batch_size < 4:
        raise OptionError(
            f"batch_size={batch_size}: the unbiased HSIC needs at least 4 inputs per batch; "
            "use a few hundred (e.g. 256)."
        )
    return batch_size


def minibatch_cka(
    X: Array | Iterable[tuple[Array, Array]],
    Y: Array | None = None,
    *,
    batch_size: int | None = None,
    seed: int = 0,
) -> float:
    """Linear CKA from unbiased HSIC averaged over minibatches (Nguyen et al. 2021).

    >>> X = torch.randn(1000, 8)
    >>> pairs = ((X[i : i + 100], 2 * X[i : i + 100]) for i in range(0, 1000, 100))
    >>> round(hlviz.similarity.minibatch_cka(pairs), 6)     # stream (X_batch, Y_batch) pairs
    1.0
    >>> Y = X + torch.randn(1000, 8)
    >>> 0.3 < hlviz.similarity.minibatch_cka(X, Y, batch_size=128, seed=0) < 0.7
    True

    Two forms: ``minibatch_cka(pairs)`` takes any iterable of ``(X_batch, Y_batch)``
    pairs, each ``(b, d_x)`` and ``(b, d_y)`` with ``b >= 4`` (e.g. a loop over a data
    loader); ``minibatch_cka(X, Y, batch_size=256, seed=0)`` shuffles the rows of ``(n,
    d)`` arrays with ``seed`` and splits them (a last batch of under 4 rows is left out).
    CKA = ``mean HSIC1(K, L) / sqrt(mean HSIC1(K, K) * mean HSIC1(L, L))`` with linear
    kernels: it converges to the full-data unbiased CKA as batches accumulate and needs
    memory for one batch only.
    """
    if Y is None:
        if batch_size is not None:
            raise OptionError(
                "batch_size= is for the minibatch_cka(X, Y, batch_size=...) form; with an "
                "iterable of (X_batch, Y_batch) pairs the batches are already made."
            )
        if isinstance(X, (torch.Tensor, np.ndarray)):
            raise OptionTypeError(
                "minibatch_cka got one array and no Y: call minibatch_cka(X, Y, batch_size=256) "
                "or pass an iterable of (X_batch, Y_batch) pairs."
            )
        pairs = X
    else:
        pairs = _batches(*_pair(X, Y, min_n=4), _check_batch_size(batch_size), seed)
    totals = np.zeros(3)
    count = 0
    for k, item in enumerate(pairs):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise OptionTypeError(
                f"batch {k} is a {type(item).__name__}, not an (X_batch, Y_batch) pair. "
                "Pass an iterable of pairs, e.g. zip(x_batches, y_batches)."
            )
        xb = _centre(_as_matrix(item[0], f"X batch {k}"), f"X batch {k}")
        yb = _as_matrix(item[1], f"Y batch {k}", device=xb.device)
        if xb.shape[0] != yb.shape[0]:
            raise ShapeMismatchError(
                f"batch {k}: X_batch has {xb.shape[0]} rows and Y_batch has {yb.shape[0]}; "
                "each pair must hold the same inputs."
            )
        _check_n(xb.shape[0], 4, f"batch {k}'s X_batch and Y_batch")
        yb = _centre(yb, f"Y batch {k}")
        K, L = xb @ xb.T, yb @ yb.T
        totals += (_hsic1(K, L), _hsic1(K, K), _hsic1(L, L))
        count += 1
    if count == 0:
        raise OptionError("minibatch_cka got no batches: the iterable of pairs was empty.")
    return _minibatch_ratio(totals[0], totals[1], totals[2])


def _minibatch_ratio(xy: float, xx: float, yy: float) -> float:
    if xx <= 0 or yy <= 0:
        raise OptionError(
            "the unbiased self-similarity HSIC(K, K) came out <= 0 (values "
            f"{xx:.3g}, {yy:.3g}): the batches are too small or a representation is almost "
            "constant. Use larger batches or more of them."
        )
    return float(xy / math.sqrt(xx * yy))


# ---------------------------------------------------------------- layer x layer
def _layer_matrices(acts: Any, what: str, n: int | None) -> dict[str, torch.Tensor]:
    if not isinstance(acts, Mapping) or len(acts) == 0:
        raise OptionTypeError(
            f"{what} must be a non-empty mapping {{layer name: (n, ...) activations}}, such as "
            f"a hlviz.Recording; got {type(acts).__name__}"
            + (" with no entries." if isinstance(acts, Mapping) else ".")
        )
    out: dict[str, torch.Tensor] = {}
    first = None
    for name in acts:
        X = _as_matrix(acts[name], f"{what}[{name!r}]")
        if n is None:
            n, first = X.shape[0], name
        elif X.shape[0] != n:
            where = f"layer {first!r}" if first is not None else "the layers of acts"
            raise ShapeMismatchError(
                f"{what}[{name!r}] has {X.shape[0]} rows but {where} has {n}: every layer "
                "must hold the same inputs in the same order. Record all layers on one batch."
            )
        out[str(name)] = X
    return out


def cka_matrix(
    acts: Mapping[str, Array],
    other: Mapping[str, Array] | None = None,
    *,
    method: str = "linear",
    batch_size: int | None = None,
    seed: int = 0,
) -> CKAReport:
    """CKA between every pair of layers: a :class:`CKAReport` (the table is ``.matrix``).

    >>> acts = {"a": torch.randn(60, 5), "b": torch.randn(60, 3, 2)}
    >>> report = hlviz.similarity.cka_matrix(acts)
    >>> report.matrix.shape, float(report.matrix.loc["a", "a"])
    ((2, 2), 1.0)
    >>> list(report.summary().columns)
    ['layer', 'best_match', 'cka', 'same_layer']

    ``acts`` maps layer names to ``(n, ...)`` activations of the same ``n`` inputs (a
    :class:`~hlviz.Recording` works). Without ``other`` the table is symmetric with a
    unit diagonal; with ``other`` (a second mapping on the same inputs: another model,
    another seed) rows are ``acts``' layers and columns ``other``'s. ``method``:
    ``"linear"`` (:func:`linear_cka`; each layer is centred once, memory about one
    float64 copy of every layer), ``"rbf"`` (:func:`rbf_cka`, sigma 1, n <= 10,000, one
    ``(n, n)`` matrix per layer) or ``"minibatch"`` (:func:`minibatch_cka`
    with ``batch_size`` rows per batch, default 256, shuffled by ``seed``; the same
    batches for every layer). :meth:`CKAReport.plot` draws the heat map,
    :meth:`CKAReport.summary` gives each layer's best match. A layer holding NaN or inf
    raises, naming the layer and how many rows hold them.
    """
    import pandas as pd

    _check_method(method, CKA_METHODS, "method")
    if batch_size is not None and method != "minibatch":
        raise OptionError(
            f"batch_size={batch_size!r} is only used by method='minibatch'; "
            f"drop it or set method='minibatch' (method={method!r} was given)."
        )
    rows = _layer_matrices(acts, "acts", None)
    n = next(iter(rows.values())).shape[0]
    if other is None:
        cols = rows
    else:
        device = next(iter(rows.values())).device
        cols = {name: X.to(device) for name, X in _layer_matrices(other, "other", n).items()}
    symmetric = other is None
    row_names, col_names = list(rows), list(cols)
    if method == "minibatch":
        values = _minibatch_matrix(rows, cols, _check_batch_size(batch_size), seed, symmetric)
    else:
        _check_n(n, 2, "the layers")
        state, pair = (
            (_linear_state, _linear_from_states) if method == "linear" else (_rbf_state, _gram_pair)
        )
        # each layer's state replaces its float64 copy at once, so peak memory holds one copy
        row_states = {name: state(rows.pop(name), f"acts[{name!r}]") for name in list(rows)}
        col_states = (
            row_states
            if symmetric
            else {name: state(cols.pop(name), f"other[{name!r}]") for name in list(cols)}
        )
        values = np.zeros((len(row_names), len(col_names)))
        for i, a in enumerate(row_states.values()):
            for j, b in enumerate(col_states.values()):
                if symmetric and j < i:
                    values[i, j] = values[j, i]
                else:
                    values[i, j] = 1.0 if symmetric and i == j else pair(a, b)
    matrix = pd.DataFrame(values, index=row_names, columns=col_names)
    return CKAReport(matrix, method=method, n=n)


def _minibatch_matrix(
    rows: dict[str, torch.Tensor],
    cols: dict[str, torch.Tensor],
    batch_size: int,
    seed: int,
    symmetric: bool,
) -> np.ndarray:
    names = list(rows) + ([] if symmetric else list(cols))
    layers = list(rows.values()) + ([] if symmetric else list(cols.values()))
    _check_n(layers[0].shape[0], 4, "the layers")
    order = torch.randperm(layers[0].shape[0], generator=torch.Generator().manual_seed(seed))
    totals = np.zeros((len(layers), len(layers)))
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size].to(layers[0].device)
        if len(index) < 4:
            continue
        grams = []
        for name, X in zip(names, layers):
            xb = _centre(X[index], f"layer {name!r} on batch {start // batch_size}")
            grams.append(xb @ xb.T)
        for i in range(len(grams)):
            for j in range(i, len(grams)):
                totals[i, j] += _hsic1(grams[i], grams[j])
    r = len(rows)
    pick = range(r) if symmetric else range(r, len(layers))
    values = np.zeros((r, len(pick)))
    for i in range(r):
        for col, j in enumerate(pick):
            a, b = min(i, j), max(i, j)
            values[i, col] = _minibatch_ratio(totals[a, b], totals[i, i], totals[j, j])
    if symmetric:
        np.fill_diagonal(values, 1.0)
    return values
