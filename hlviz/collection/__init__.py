"""Activation collection: streamed to disk, resumable, with running statistics."""

from . import pipeline, stats, store
from .pipeline import DEFAULT_MAX_BYTES, Estimate, collect, estimate
from .stats import QUANTILES, LayerStats, RunningStats
from .store import ActivationStore, LayerArray

__all__ = [
    "DEFAULT_MAX_BYTES",
    "QUANTILES",
    "ActivationStore",
    "Estimate",
    "LayerArray",
    "LayerStats",
    "RunningStats",
    "collect",
    "estimate",
    "pipeline",
    "stats",
    "store",
]
