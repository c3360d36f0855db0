"""Activation collection: streamed to disk, resumable, with running statistics."""

from . import pipeline, stats, store
from .pipeline import DEFAULT_MAX_BYTES, Estimate, collect, estimate
from .stats import QUANTILES, RunningStats, UnitStats
from .store import ActivationStore, LayerArray

__all__ = [
    "DEFAULT_MAX_BYTES",
    "QUANTILES",
    "ActivationStore",
    "Estimate",
    "LayerArray",
    "RunningStats",
    "UnitStats",
    "collect",
    "estimate",
    "pipeline",
    "stats",
    "store",
]
