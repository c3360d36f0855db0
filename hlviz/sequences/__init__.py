"""Recurrent networks: hidden states, gates and their statistics over time.

Which earlier character matters to a prediction is an attribution over token ids:
``hlviz.attribute(model, ids, method="occlusion", baseline=<fill id>, ...)`` (occlusion
needs no gradients, so it takes the ids as they are).
"""

from . import replay, states
from .states import (
    GateSaturation,
    UnitCorrelation,
    gate_saturation,
    gru_layer_steps,
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
    "replay",
    "rnn_states",
    "state_features",
    "states",
    "unit_heatmap_html",
    "unit_label_correlation",
]
