"""Hooks that never leak: recording, editing and resolving layers of any ``nn.Module``."""

from . import checks, context, editing, layers, outputs, recording
from .context import HookContext
from .editing import EditFn, Editing, ablate, edit, patch, steer
from .layers import LayerSpec, layer_names, list_layers, resolve, resolve_modules, unwrap
from .outputs import (
    Layout,
    LayoutHint,
    Picked,
    Select,
    declare_layout,
    first_tensor,
    layout,
    layout_hint,
    layout_hints,
    logits_of,
    pick,
    put_back,
    reduce_positions,
)
from .recording import Recording, activations, record

__all__ = [
    "EditFn",
    "Editing",
    "HookContext",
    "LayerSpec",
    "Layout",
    "LayoutHint",
    "Picked",
    "Recording",
    "Select",
    "ablate",
    "activations",
    "checks",
    "context",
    "declare_layout",
    "edit",
    "editing",
    "first_tensor",
    "layer_names",
    "layers",
    "layout",
    "layout_hint",
    "layout_hints",
    "list_layers",
    "logits_of",
    "outputs",
    "patch",
    "pick",
    "put_back",
    "record",
    "recording",
    "reduce_positions",
    "resolve",
    "resolve_modules",
    "steer",
    "unwrap",
]
