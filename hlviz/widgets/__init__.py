"""Widgets: the layer inspector, explorers and the plane explorer, with static fallbacks."""

from . import base, data, explorers, inspector, plane, views
from .base import StaticFallback, error_output, figure_output, html_output, static_mode
from .data import InputSet, LayerChoice, record_layers
from .explorers import (
    AttributionExplorer,
    CKAExplorer,
    CKAState,
    ProbeExplorer,
    ProbeState,
    probe_table_html,
    render_cka_view,
    render_probe,
)
from .inspector import AttributionSource, LayerInspector, inspect, plain_target
from .plane import PlaneExplorer, PlaneState, render_plane
from .top import top_examples, unit_scores
from .views import (
    HIGHLIGHT,
    KINDS,
    LayerView,
    TopExamples,
    render_layer_view,
    render_top_examples,
    sequence_html,
    view_kind,
)

__all__ = [
    "HIGHLIGHT",
    "KINDS",
    "AttributionExplorer",
    "AttributionSource",
    "CKAExplorer",
    "CKAState",
    "InputSet",
    "LayerChoice",
    "LayerInspector",
    "LayerView",
    "PlaneExplorer",
    "PlaneState",
    "ProbeExplorer",
    "ProbeState",
    "StaticFallback",
    "TopExamples",
    "base",
    "data",
    "error_output",
    "explorers",
    "figure_output",
    "html_output",
    "inspect",
    "inspector",
    "plain_target",
    "plane",
    "probe_table_html",
    "record_layers",
    "render_cka_view",
    "render_layer_view",
    "render_plane",
    "render_probe",
    "render_top_examples",
    "sequence_html",
    "static_mode",
    "top_examples",
    "unit_scores",
    "view_kind",
    "views",
]
