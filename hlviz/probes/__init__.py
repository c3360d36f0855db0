"""Probing classifiers with controls: ``probe_layers``, linear and MLP probes, MDL."""

from . import layers, linear, mdl, mlp
from .layers import CONTROLS, ProbeReport, probe_layers, split_indices
from .linear import LinearProbe
from .mdl import (
    DEFAULT_FRACTIONS,
    PROB_FLOOR,
    MDLReport,
    MDLResult,
    mdl_layers,
    online_codelength,
)
from .mlp import MLPProbe

__all__ = [
    "CONTROLS",
    "DEFAULT_FRACTIONS",
    "PROB_FLOOR",
    "LinearProbe",
    "MDLReport",
    "MDLResult",
    "MLPProbe",
    "ProbeReport",
    "layers",
    "linear",
    "mdl",
    "mdl_layers",
    "mlp",
    "online_codelength",
    "probe_layers",
    "split_indices",
]
