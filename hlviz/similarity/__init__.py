"""Representational similarity: CKA between layers, RSA and projections."""

from . import cka, geometry, report
from .cka import (
    RBF_MAX_N,
    cka_matrix,
    hsic_unbiased,
    linear_cka,
    linear_cka_gram,
    minibatch_cka,
    rbf_cka,
)
from .geometry import PROJECTIONS, RDM_METRICS, project, rdm, rsa
from .report import CKAReport

__all__ = [
    "PROJECTIONS",
    "RBF_MAX_N",
    "RDM_METRICS",
    "CKAReport",
    "cka",
    "cka_matrix",
    "geometry",
    "hsic_unbiased",
    "linear_cka",
    "linear_cka_gram",
    "minibatch_cka",
    "project",
    "rbf_cka",
    "rdm",
    "report",
    "rsa",
]
