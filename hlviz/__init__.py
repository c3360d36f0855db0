"""hlviz: what do the hidden layers of a neural network learn?

>>> import torch, torch.nn as nn, hlviz
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> with hlviz.record(model, "0") as rec:
...     _ = model(torch.randn(2, 4))
>>> tuple(rec["0"].shape)
(2, 8)
"""

from . import attention, datasets, errors, heads, models, patching, plotting, stats, testing, toy
from .collect import collect, estimate
from .edits import ablate, edit, patch, steer
from .errors import HlvizError, HlvizWarning, LayerNotFoundError
from .heads import HeadAblation, ablate_heads
from .hooks import Recording, activations, record
from .layers import layer_names, list_layers, resolve, resolve_modules, unwrap
from .lens import LogitLens, logit_lens
from .patching import PatchingResult, activation_patching
from .runtime import default_device, model_device, run_model, seed_everything
from .store import ActivationStore

__version__ = "0.1.0"

# imported on first use: they load scikit-learn or scipy
_LAZY_MODULES = (
    "attribution",
    "attribution_plots",
    "concepts",
    "featurevis",
    "geometry",
    "html",
    "mdl",
    "probes",
    "sanity",
    "sequences",
    "similarity",
    "units",
)


# public names imported on first use (they load captum): name -> module
_LAZY_ATTRS = {
    "Attribution": "attribution",
    "AttributionExplorer": "explorers",
    "CKAExplorer": "explorers",
    "LayerInspector": "inspector",
    "LinearProbe": "probes",
    "MLPProbe": "probes",
    "ProbeExplorer": "explorers",
    "attribute": "attribution",
    "cka_matrix": "similarity",
    "inspect": "inspector",
    "probe_layers": "probes",
    "sanity_check": "sanity",
    "tcav": "concepts",
}


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY_ATTRS:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY_ATTRS[name]}", __name__), name)
    raise AttributeError(f"module 'hlviz' has no attribute {name!r}")


__all__ = [
    "ActivationStore",
    "Attribution",
    "AttributionExplorer",
    "CKAExplorer",
    "HeadAblation",
    "HlvizError",
    "HlvizWarning",
    "LayerInspector",
    "LayerNotFoundError",
    "LinearProbe",
    "LogitLens",
    "MLPProbe",
    "PatchingResult",
    "ProbeExplorer",
    "Recording",
    "__version__",
    "ablate",
    "ablate_heads",
    "activation_patching",
    "activations",
    "attention",
    "attribute",
    "cka_matrix",
    "collect",
    "datasets",
    "default_device",
    "edit",
    "errors",
    "estimate",
    "heads",
    "inspect",
    "layer_names",
    "list_layers",
    "logit_lens",
    "model_device",
    "models",
    "patch",
    "patching",
    "plotting",
    "probe_layers",
    "record",
    "resolve",
    "resolve_modules",
    "run_model",
    "sanity_check",
    "seed_everything",
    "stats",
    "steer",
    "tcav",
    "testing",
    "toy",
    "unwrap",
]
