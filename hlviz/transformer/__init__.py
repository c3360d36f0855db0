"""Transformers: attention capture, heads, logit lens and activation patching."""

from . import attention, heads, lens, patching, patterns, plots
from .attention import AttentionMaps, capture
from .heads import HeadAblation, ablate_heads, ablating_heads
from .lens import LogitLens, logit_lens, model_logits
from .patching import PatchingResult, activation_patching
from .patterns import (
    head_scores,
    induction,
    matching_bracket,
    previous_token,
    same_word,
    to_token,
)
from .plots import plot_attention_pattern, plot_grid

__all__ = [
    "AttentionMaps",
    "HeadAblation",
    "LogitLens",
    "PatchingResult",
    "ablate_heads",
    "ablating_heads",
    "activation_patching",
    "attention",
    "capture",
    "head_scores",
    "heads",
    "induction",
    "lens",
    "logit_lens",
    "matching_bracket",
    "model_logits",
    "patching",
    "patterns",
    "plot_attention_pattern",
    "plot_grid",
    "plots",
    "previous_token",
    "same_word",
    "to_token",
]
