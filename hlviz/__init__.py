"""hlviz: what do the hidden layers of a neural network learn?

>>> import torch, torch.nn as nn, hlviz
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> with hlviz.record(model, "0") as rec:
...     _ = model(torch.randn(2, 4))
>>> tuple(rec["0"].shape)
(2, 8)

The package is a house of subpackages, one per topic (``hlviz.hooks``, ``hlviz.collection``,
``hlviz.probes``, ``hlviz.similarity``, ``hlviz.attribution``, ``hlviz.units``,
``hlviz.sequences``, ``hlviz.transformer``, ``hlviz.toy``, ``hlviz.plotting``,
``hlviz.widgets``, ``hlviz.datasets``, ``hlviz.models``).

What the top level exports (``__all__``), by one rule: the *verbs* (the functions a user
calls on a model or on activations), the *result types* those verbs return, the probe and
widget classes a user builds, the base error and warning, and the subpackages themselves.
Everything else is reached through its subpackage, with one alias kept at the top:
``hlviz.attention`` is :mod:`hlviz.transformer.attention` (``hlviz.attention.capture`` is how
users capture every head's pattern). ``import hlviz`` loads only torch and
numpy; the names that need Captum, scikit-learn, pandas, matplotlib or ipywidgets load
on first use, and ``dir(hlviz)`` lists every public name either way.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import errors, hooks, runtime, testing
from .collection.pipeline import Estimate, collect, estimate
from .collection.store import ActivationStore
from .errors import HlvizError, HlvizWarning, LayerNotFoundError
from .hooks.editing import ablate, edit, patch, steer
from .hooks.layers import layer_names, list_layers, resolve, resolve_modules, unwrap
from .hooks.layout import declare_layout
from .hooks.recording import Recording, activations, record
from .runtime import default_device, model_device, run_model, seed_everything

__version__ = "0.1.0"

# subpackages imported on first use (some load scikit-learn, Captum, pandas or matplotlib)
_LAZY_SUBPACKAGES = (
    "attribution",
    "collection",
    "datasets",
    "models",
    "plotting",
    "probes",
    "sequences",
    "similarity",
    "toy",
    "transformer",
    "units",
    "widgets",
)

# public names imported on first use: name -> module that defines it
_LAZY_ATTRS = {
    # attribution
    "Attribution": "attribution.core",
    "attribute": "attribution.core",
    "SanityReport": "attribution.sanity",
    "sanity_check": "attribution.sanity",
    "TCAVReport": "attribution.concepts",
    "tcav": "attribution.concepts",
    # probes
    "LinearProbe": "probes.linear",
    "MLPProbe": "probes.mlp",
    "ProbeReport": "probes.layers",
    "probe_layers": "probes.layers",
    "MDLReport": "probes.mdl",
    "MDLResult": "probes.mdl",
    "mdl_layers": "probes.mdl",
    # similarity
    "CKAReport": "similarity.report",
    "cka_matrix": "similarity.cka",
    # units
    "TopPatches": "units.patches",
    "top_patches": "units.patches",
    "unit_stats": "units.patches",
    # sequences
    "RNNStates": "models.rnn",
    "rnn_states": "sequences.states",
    "GateSaturation": "sequences.states",
    "UnitCorrelation": "sequences.states",
    # transformer
    "AttentionMaps": "transformer.attention",
    "HeadAblation": "transformer.heads",
    "ablate_heads": "transformer.heads",
    "LogitLens": "transformer.lens",
    "logit_lens": "transformer.lens",
    "PatchingResult": "transformer.patching",
    "activation_patching": "transformer.patching",
    # widgets
    "LayerInspector": "widgets.inspector",
    "inspect": "widgets.inspector",
    "AttributionExplorer": "widgets.explorers",
    "CKAExplorer": "widgets.explorers",
    "ProbeExplorer": "widgets.explorers",
    "PlaneExplorer": "widgets.plane",
}


# modules reachable from the top under a short name: name -> module
_LAZY_ALIASES = {"attention": "transformer.attention"}


def __getattr__(name: str) -> Any:
    if name in _LAZY_ALIASES:
        return importlib.import_module(f".{_LAZY_ALIASES[name]}", __name__)
    if name in _LAZY_SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY_ATTRS:
        return getattr(importlib.import_module(f".{_LAZY_ATTRS[name]}", __name__), name)
    raise AttributeError(f"module 'hlviz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "ActivationStore",
    "AttentionMaps",
    "Attribution",
    "AttributionExplorer",
    "CKAExplorer",
    "CKAReport",
    "Estimate",
    "GateSaturation",
    "HeadAblation",
    "HlvizError",
    "HlvizWarning",
    "LayerInspector",
    "LayerNotFoundError",
    "LinearProbe",
    "LogitLens",
    "MDLReport",
    "MDLResult",
    "MLPProbe",
    "PatchingResult",
    "PlaneExplorer",
    "ProbeExplorer",
    "ProbeReport",
    "RNNStates",
    "Recording",
    "SanityReport",
    "TCAVReport",
    "TopPatches",
    "UnitCorrelation",
    "__version__",
    "ablate",
    "ablate_heads",
    "activation_patching",
    "activations",
    "attention",
    "attribute",
    "attribution",
    "cka_matrix",
    "collect",
    "collection",
    "datasets",
    "declare_layout",
    "default_device",
    "edit",
    "errors",
    "estimate",
    "hooks",
    "inspect",
    "layer_names",
    "list_layers",
    "logit_lens",
    "mdl_layers",
    "model_device",
    "models",
    "patch",
    "plotting",
    "probe_layers",
    "probes",
    "record",
    "resolve",
    "resolve_modules",
    "rnn_states",
    "run_model",
    "runtime",
    "sanity_check",
    "seed_everything",
    "sequences",
    "similarity",
    "steer",
    "tcav",
    "testing",
    "top_patches",
    "toy",
    "transformer",
    "unit_stats",
    "units",
    "unwrap",
    "widgets",
]
