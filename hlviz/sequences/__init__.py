"""Recurrent networks: hidden states, gates and their statistics over time."""

from . import states
from .states import (
    GateSaturation,
    UnitCorrelation,
    gate_saturation,
    gru_layer_steps,
    occlusion_over_time,
    rnn_states,
    state_features,
    unit_heatmap_html,
    unit_label_correlation,
)

__all__ = [
    "GateSaturation",
    "UnitCorrelation",
    "gate_saturation",
    "gru_layer_steps",
    "occlusion_over_time",
    "rnn_states",
    "state_features",
    "states",
    "unit_heatmap_html",
    "unit_label_correlation",
]
