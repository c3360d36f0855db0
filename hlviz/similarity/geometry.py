"""The geometry of a representation: dissimilarity matrices, RSA, and 2-D projections.

>>> import torch, hlviz.similarity.geometry as hg
>>> X = torch.randn(30, 5)
>>> round(hg.rsa(X, 2 * X + 1), 6)                 # the same geometry, rescaled and shifted
1.0

Activations are ``(n, d)`` (more dimensions are flattened); row ``i`` of each comes
from the same input ``i``. Reference: Kriegeskorte et al. 2008 (RSA).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import OptionError
from ._arrays import _as_matrix, _check_method, _check_n, _pair

__all__ = ["PROJECTIONS", "RDM_METRICS", "project", "rdm", "rsa"]

Array = torch.Tensor | np.ndarray
RDM_METRICS = ("correlation", "euclidean")
PROJECTIONS = ("pca", "tsne")


# ---------------------------------------------------------------- RSA
def rdm(X: Array, metric: str = "correlation") -> np.ndarray:
    """Representational dissimilarity matrix ``(n, n)`` of ``(n, d)`` activations.

    >>> X = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [3.0, 2.0, 1.0]])
    >>> hlviz.similarity.rdm(X).round(6).tolist()
    [[0.0, 0.0, 2.0], [0.0, 0.0, 2.0], [2.0, 2.0, 0.0]]

    ``metric="correlation"``: 1 - Pearson correlation between rows (0 = same pattern,
    2 = opposite); ``"euclidean"``: distance between rows. Returns float64 numpy.
    """
    _check_method(metric, RDM_METRICS, "metric")
    X = _as_matrix(X, "X")
    _check_n(X.shape[0], 2, "X")
    if metric == "euclidean":
        sq = X.square().sum(1)
        out = (sq[:, None] + sq[None, :] - 2 * X @ X.T).clamp_min_(0).sqrt_()
    else:
        centred = X - X.mean(1, keepdim=True)
        norms = centred.norm(dim=1)
        flat = (norms <= 1e-12 * X.abs().amax(1).clamp_min(1e-300)).nonzero().flatten()
        if len(flat):
            raise OptionError(
                f"rows {flat[:5].tolist()} of X are constant across features, so their "
                "correlation with other rows is undefined (also when d = 1). Use "
                "metric='euclidean' or drop those rows."
            )
        unit = centred / norms[:, None]
        out = (1 - unit @ unit.T).clamp_(0, 2)
    return out.fill_diagonal_(0).cpu().numpy()


def rsa(acts_a: Array, acts_b: Array, metric: str = "correlation") -> float:
    """Representational similarity analysis: Spearman correlation of two RDMs.

    >>> X = torch.randn(30, 10)
    >>> round(hlviz.similarity.rsa(X, 5 * X + 1), 6)
    1.0

    ``acts_a`` ``(n, d_a)`` and ``acts_b`` ``(n, d_b)`` hold the same ``n >= 3`` inputs.
    Their RDMs (:func:`rdm` with ``metric``) are compared by the Spearman rank
    correlation of their upper triangles, in [-1, 1]: only the order of dissimilarities
    matters, so any monotone change of one RDM leaves the value unchanged.
    """
    from scipy.stats import spearmanr

    _check_method(metric, RDM_METRICS, "metric")
    A, B = _pair(acts_a, acts_b, min_n=3)
    rows, cols = np.triu_indices(A.shape[0], k=1)
    upper_a, upper_b = rdm(A, metric)[rows, cols], rdm(B, metric)[rows, cols]
    for name, upper in (("acts_a", upper_a), ("acts_b", upper_b)):
        if np.ptp(upper) <= 1e-9 * max(np.abs(upper).max(), 1e-300):
            raise OptionError(
                f"all dissimilarities of {name} are equal, so their rank correlation is "
                "undefined. Check that the inputs differ in this layer."
            )
    return float(spearmanr(upper_a, upper_b).statistic)


# ---------------------------------------------------------------- projections
def project(X: Array, method: str = "pca", n_components: int = 2, seed: int = 0) -> np.ndarray:
    """Project ``(n, d)`` activations to ``(n, n_components)`` with PCA or t-SNE (numpy).

    >>> X = torch.randn(40, 6)
    >>> hlviz.similarity.project(X).shape
    (40, 2)

    ``method="pca"`` (scikit-learn ``PCA``, needs ``n_components <= min(n, d)``) or
    ``"tsne"`` (``TSNE`` with PCA initialisation, perplexity ``min(30, (n - 1) / 3)``,
    ``n_components <= 3``). Both are deterministic for a given ``seed``.
    """
    _check_method(method, PROJECTIONS, "method")
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise OptionError(f"n_components must be a positive int such as 2, got {n_components!r}.")
    X = _as_matrix(X, "X").cpu().numpy()
    n, d = X.shape
    if method == "pca":
        from sklearn.decomposition import PCA

        if n_components > min(n, d):
            raise OptionError(
                f"n_components={n_components} is more than min(n, d) = {min(n, d)} for X of "
                f"shape {X.shape}; use at most {min(n, d)}."
            )
        return PCA(n_components=n_components, random_state=seed).fit_transform(X)
    from sklearn.manifold import TSNE

    if n_components > 3:
        raise OptionError(
            f"n_components={n_components}: t-SNE here draws 1 to 3 dimensions; use "
            "method='pca' for more."
        )
    _check_n(n, 4, "X")
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
    tsne = TSNE(n_components, perplexity=perplexity, random_state=seed, init="pca")
    return tsne.fit_transform(X)
