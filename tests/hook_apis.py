"""The one registry of every public hlviz API that registers hooks on a user's model.

Each :class:`HookAPI` names the public path (``api``), the small model it runs on (a key of
:data:`SUBJECTS`), how to run it normally (``run``), how to run it with a bad argument
(``bad``, which must raise ``bad_error``), and the forward calls from which a model that
raises mid-forward should raise (``raise_from``: 2 reaches inside Captum after hlviz's own
probe pass). ``tests/test_hygiene.py`` runs every entry through one matrix, and checks that
no public function that can reach a ``register_*hook`` call in ``hlviz/`` is missing here
(:data:`EXEMPT` lists the few that hook no model a user passes, with the reason).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import hlviz
from hlviz.errors import ConvergenceWarning, HlvizError

from .zoo import Blocks


@dataclass
class Subject:
    """A small model, an input it takes, and where the matrix hooks and breaks it."""

    model: nn.Module
    x: Any
    explode: str  # the module whose forward raises in the "raises" case
    user: str  # the module that carries the user's own forward hook
    data: Any = None  # ToyData for the plane APIs


def _cnn() -> Subject:
    torch.manual_seed(0)
    return Subject(Blocks().eval(), torch.rand(2, 1, 8, 8) + 0.1, "features.2", "features.0")


def _mlp() -> Subject:
    data = hlviz.toy.make_toy("moons", n=40)
    model = hlviz.models.MLP([4, 4]).eval()
    return Subject(model, data.X[:4], "layers.1.linear", "layers.0.linear", data)


def _gpt() -> Subject:
    torch.manual_seed(0)
    model = hlviz.models.CharGPT(11, d_model=16, n_heads=2, n_layers=2, context=16).eval()
    return Subject(model, torch.randint(0, 11, (2, 6)), "blocks.1", "blocks.0")


def _mha() -> Subject:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    return Subject(model, torch.randn(2, 3, 8), "layers.1", "layers.0")


def _lstm() -> Subject:
    torch.manual_seed(0)
    model = hlviz.models.CharLSTM(11, hidden_size=8, num_layers=1, embed_dim=4).eval()
    return Subject(model, torch.randint(0, 11, (2, 6)), "lstm", "embed")


class _Pooled(nn.Module):
    """(n, t, 4) -> (n, 2): a per-position projection, then a mean over positions."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.proj(x).mean(1))


def _seq() -> Subject:
    torch.manual_seed(0)
    return Subject(_Pooled().eval(), torch.randn(2, 5, 4), "head", "proj")


SUBJECTS: dict[str, Callable[[], Subject]] = {
    "cnn": _cnn,
    "mlp": _mlp,
    "gpt": _gpt,
    "mha": _mha,
    "lstm": _lstm,
    "seq": _seq,
}


@dataclass(frozen=True)
class HookAPI:
    id: str
    api: str  # public dotted path, resolved by the completeness test
    subject: str
    run: Callable[[Subject], Any]
    bad: Callable[[Subject], Any]
    bad_error: type[BaseException] = HlvizError
    raise_from: tuple[int, ...] = (1,)
    grads: bool = field(default=False)
    slow: bool = False  # over ~1 s per case: skipped by make test-fast


def _in_context(make: Callable[[Subject, Any], Any], grads: bool = False) -> Callable:
    def run(s: Subject, layers: Any = "features.*") -> None:
        with make(s, layers):
            out = s.model(s.x.clone().requires_grad_(grads))
            if grads:
                out.sum().backward()

    return run


def _record(s, layers):
    return hlviz.record(s.model, layers)


def _record_grads(s, layers):
    return hlviz.record(s.model, layers, grads=True)


def _record_stop(s, layers):
    return hlviz.record(s.model, layers, stop=True)


def _edit(s, layers):
    key = tuple(layers) if isinstance(layers, list) else layers
    return hlviz.edit(s.model, {key: hlviz.ablate(units=[0])})


def _steer_ctx(s, layers):
    # a direction over the channels of a conv output (broadcast over positions)
    return hlviz.edit(s.model, {layers: hlviz.steer(torch.ones(8), scale=0.5)})


def _ablating_heads(s, layers):
    # channels (axis 1 of a 4-D output) play the heads
    return hlviz.transformer.ablating_heads(s.model, {layers: [0]}, n_heads=2)


def _attr(method: str, **options: Any) -> Callable[..., Any]:
    def run(s: Subject, **override: Any) -> Any:
        kwargs = {"target": 1, "method": method, **options, **override}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return hlviz.attribute(s.model, s.x, **kwargs)

    return run


ATTRIBUTION = {
    "saliency": {},
    "input_x_gradient": {},
    "integrated_gradients": {"n_steps": 4},
    "smoothgrad": {"nt_samples": 2},
    "occlusion": {"window": (1, 4, 4), "strides": (1, 4, 4)},
    "grad_cam": {"layer": "features.4"},
    "grad_cam_channel_dim": {"layer": "features.4", "channel_dim": 1},
    "layer_conductance": {"layer": "features.2", "n_steps": 4},
    "neuron_conductance": {"layer": "features.2", "neuron": (0, 1, 1), "n_steps": 4},
    "layer_integrated_gradients": {"layer": "features.4", "n_steps": 4},
}


def _bad_attr(run: Callable[..., Any], s: Subject, layered: bool) -> Any:
    """A target out of range, then (for methods that take a layer) an unknown layer."""
    if layered:
        with contextlib.suppress(HlvizError):
            run(s, target=7)
            raise AssertionError("target=7 of 3 classes did not raise")
        return run(s, layer="features.9")
    return run(s, target=7)


def _attribution_entries() -> list[HookAPI]:
    entries = []
    for name, options in ATTRIBUTION.items():
        method = "grad_cam" if name == "grad_cam_channel_dim" else name
        run = _attr(method, **options)
        entries.append(
            HookAPI(
                f"attribute[{name}]",
                "hlviz.attribute",
                "cnn",
                run,
                lambda s, run=run, layered="layer" in options: _bad_attr(run, s, layered),
                raise_from=(1, 2),
            )
        )
    return entries


def _tcav(s: Subject, target: int = 0) -> Any:
    torch.manual_seed(0)
    randoms = [torch.rand(6, 1, 8, 8) for _ in range(3)]
    return hlviz.tcav(
        s.model,
        torch.rand(4, 1, 8, 8),
        target=target,
        layers="features.4",
        concepts={"bright": torch.rand(6, 1, 8, 8) + 1},
        random_concepts=randoms,
    )


def _sanity(s: Subject, target: int = 0) -> Any:
    return hlviz.sanity_check(
        s.model,
        s.x,
        target=target,
        methods={"grad_cam": {"layer": "features.4"}},
        layers="classifier",
    )


def _patching(s: Subject, layers: str = "features.*") -> Any:
    return hlviz.activation_patching(
        s.model, s.x, torch.zeros_like(s.x), layers, metric=lambda out: out[:, 0], positions="all"
    )


def _choice(s: Subject, layer: str = "features.4") -> Any:
    return hlviz.widgets.record_layers(s.model, s.x, layer)[0]


def _plot(fn: Callable[[], Any]) -> Any:
    import matplotlib.pyplot as plt

    try:
        return fn()
    finally:
        plt.close("all")


REGISTRY: list[HookAPI] = [
    # hooks: contexts
    HookAPI(
        "record",
        "hlviz.record",
        "cnn",
        _in_context(_record),
        lambda s: _in_context(_record)(s, "features.9"),
    ),
    HookAPI(
        "record_grads",
        "hlviz.record",
        "cnn",
        _in_context(_record_grads, grads=True),
        lambda s: _in_context(_record_grads, grads=True)(s, "nothing.*"),
        grads=True,
    ),
    HookAPI(
        "record_stop",
        "hlviz.record",
        "cnn",
        _in_context(_record_stop),
        lambda s: _in_context(_record_stop)(s, "nothing.*"),
    ),
    HookAPI(
        "edit",
        "hlviz.edit",
        "cnn",
        _in_context(_edit),
        lambda s: _in_context(_edit)(s, "features.9"),
    ),
    HookAPI(
        "steer",
        "hlviz.steer",
        "cnn",
        lambda s: _in_context(_steer_ctx)(s, "features.4"),
        lambda s: _in_context(_steer_ctx)(s, "features.9"),
    ),
    HookAPI(
        "ablating_heads",
        "hlviz.transformer.ablating_heads",
        "cnn",
        _in_context(_ablating_heads),
        lambda s: hlviz.transformer.ablating_heads(
            s.model, {"features.0": [0]}, n_heads=2, value="median"
        ),
    ),
    HookAPI(
        "ablating_heads[linear input]",
        "hlviz.transformer.ablating_heads",
        "cnn",
        lambda s: _in_context(_ablating_heads)(s, "classifier"),  # the input splits into 2 heads
        lambda s: _in_context(_ablating_heads)(s, "classifier.9"),
    ),
    # hooks: one-shot verbs
    HookAPI(
        "activations",
        "hlviz.activations",
        "cnn",
        lambda s: hlviz.activations(s.model, s.x, "features.*"),
        lambda s: hlviz.activations(s.model, s.x, "features.99"),
    ),
    HookAPI(
        "list_layers",
        "hlviz.list_layers",
        "cnn",
        lambda s: hlviz.list_layers(s.model, s.x),
        lambda s: hlviz.list_layers(s.model, torch.zeros(1, 5, 8, 8)),
        bad_error=RuntimeError,  # a wrong input raises inside the model's forward
    ),
    HookAPI(
        "collect",
        "hlviz.collect",
        "cnn",
        lambda s: hlviz.collect(s.model, s.x, "features.*", progress=False),
        lambda s: hlviz.collect(s.model, s.x, "features.99", progress=False),
    ),
    HookAPI(
        "estimate",
        "hlviz.estimate",
        "cnn",
        lambda s: hlviz.estimate(s.model, s.x, "features.*", n=10),
        lambda s: hlviz.estimate(s.model, s.x, "features.99", n=10),
    ),
    # attribution
    *_attribution_entries(),
    HookAPI(
        "attribute[grad_cam channel last]",
        "hlviz.attribute",
        "seq",
        lambda s: hlviz.attribute(
            s.model, s.x, target=0, method="grad_cam", layer="proj", channel_dim=-1
        ),
        lambda s: hlviz.attribute(
            s.model, s.x, target=0, method="grad_cam", layer="nope", channel_dim=-1
        ),
        raise_from=(1, 2),
    ),
    HookAPI(
        "sanity_check",
        "hlviz.sanity_check",
        "cnn",
        _sanity,
        lambda s: _sanity(s, target=9),
        slow=True,
    ),
    HookAPI("tcav", "hlviz.tcav", "cnn", _tcav, lambda s: _tcav(s, target=9), slow=True),
    # transformer
    HookAPI(
        "activation_patching",
        "hlviz.activation_patching",
        "cnn",
        _patching,
        lambda s: _patching(s, "features.99"),
    ),
    HookAPI(
        "ablate_heads",
        "hlviz.ablate_heads",
        "cnn",
        lambda s: hlviz.ablate_heads(s.model, s.x, "features.*", metric=lambda out: out[:, 0]),
        lambda s: hlviz.ablate_heads(s.model, s.x, "features.99", metric=lambda out: out[:, 0]),
    ),
    HookAPI(
        "capture[gpt]",
        "hlviz.transformer.capture",
        "gpt",
        lambda s: hlviz.transformer.capture(s.model, s.x),
        lambda s: hlviz.transformer.capture(s.model, s.x, layers="nope.*"),
    ),
    HookAPI(
        "capture[mha]",
        "hlviz.transformer.capture",
        "mha",
        lambda s: hlviz.transformer.capture(s.model, s.x),
        lambda s: hlviz.transformer.capture(s.model, s.x, layers="nope.*"),
    ),
    HookAPI(
        "logit_lens",
        "hlviz.logit_lens",
        "gpt",
        lambda s: hlviz.logit_lens(s.model, s.x),
        lambda s: hlviz.logit_lens(s.model, s.x, layers="nope.*"),
    ),
    # sequences
    HookAPI(
        "rnn_states",
        "hlviz.rnn_states",
        "lstm",
        lambda s: hlviz.rnn_states(s.model, s.x, "lstm"),  # recorded, not replayed
        lambda s: hlviz.rnn_states(s.model, s.x, "nope"),
    ),
    # units
    HookAPI(
        "top_patches",
        "hlviz.top_patches",
        "cnn",
        lambda s: hlviz.top_patches(s.model, s.x, "features.4", k=2),
        lambda s: hlviz.top_patches(s.model, s.x, "features.9", k=2),
    ),
    HookAPI(
        "unit_stats",
        "hlviz.unit_stats",
        "cnn",
        lambda s: hlviz.unit_stats(s.model, s.x, "features.4"),
        lambda s: hlviz.unit_stats(s.model, s.x, "features.9"),
    ),
    HookAPI(
        "visualize",
        "hlviz.units.visualize",
        "cnn",
        lambda s: hlviz.units.visualize(
            s.model, hlviz.units.channel("features.4", 0), shape=(1, 1, 8, 8), steps=2
        ),
        lambda s: hlviz.units.visualize(
            s.model, hlviz.units.channel("features.9", 0), shape=(1, 1, 8, 8), steps=2
        ),
    ),
    # toy
    HookAPI(
        "linear_regions",
        "hlviz.toy.linear_regions",
        "mlp",
        lambda s: hlviz.toy.linear_regions(s.model, s.data, resolution=10),
        lambda s: hlviz.toy.linear_regions(s.model, s.data, resolution=10, layers="nope"),
    ),
    HookAPI(
        "plane_activations",
        "hlviz.toy.plane_activations",
        "mlp",
        lambda s: hlviz.toy.plane_activations(s.model, "layers.0.act", s.data, resolution=10),
        lambda s: hlviz.toy.plane_activations(s.model, "nope", s.data, resolution=10),
    ),
    HookAPI(
        "regions_on_line",
        "hlviz.toy.regions_on_line",
        "mlp",
        lambda s: hlviz.toy.regions_on_line(s.model, (0, 0), (1, 1), points=11),
        lambda s: hlviz.toy.regions_on_line(s.model, (0, 0), (1, 1), points=11, layers="nope"),
    ),
    HookAPI(
        "plot_decision",
        "hlviz.toy.plot_decision",
        "mlp",
        lambda s: _plot(lambda: hlviz.toy.plot_decision(s.model, s.data, resolution=10)),
        lambda s: _plot(lambda: hlviz.toy.plot_decision(s.model, s.data, resolution=0)),
    ),
    HookAPI(
        "plot_layer",
        "hlviz.toy.plot_layer",
        "mlp",
        lambda s: _plot(lambda: hlviz.toy.plot_layer(s.model, s.data, "layers.0.act")),
        lambda s: _plot(lambda: hlviz.toy.plot_layer(s.model, s.data, "nope")),
    ),
    HookAPI(
        "plot_layer_movement",
        "hlviz.toy.plot_layer_movement",
        "mlp",
        lambda s: _plot(lambda: hlviz.toy.plot_layer_movement(s.model, s.data)),
        lambda s: _plot(lambda: hlviz.toy.plot_layer_movement(s.model, s.data, "nope.*")),
    ),
    HookAPI(
        "plot_sweep",
        "hlviz.toy.plot_sweep",
        "mlp",
        lambda s: _plot(lambda: hlviz.toy.plot_sweep({(2, 4): s.model}, s.data, resolution=10)),
        lambda s: _plot(lambda: hlviz.toy.plot_sweep({(2, 4): s.model}, s.data, resolution=0)),
    ),
    # widgets
    HookAPI(
        "record_layers",
        "hlviz.widgets.record_layers",
        "cnn",
        lambda s: hlviz.widgets.record_layers(s.model, s.x),
        lambda s: hlviz.widgets.record_layers(s.model, s.x, "features.9"),
    ),
    HookAPI(
        "top_examples",
        "hlviz.widgets.top_examples",
        "cnn",
        lambda s: hlviz.widgets.top_examples(s.model, s.x, _choice(s), 0, k=2),
        lambda s: hlviz.widgets.top_examples(s.model, s.x, _choice(s), 99, k=2),
    ),
    HookAPI(
        "inspect",
        "hlviz.inspect",
        "cnn",
        lambda s: _plot(lambda: _tabs(hlviz.inspect(s.model, s.x))),
        lambda s: hlviz.inspect(s.model, s.x, layers="features.9"),
        slow=True,
    ),
    HookAPI(
        "LayerInspector",
        "hlviz.LayerInspector",
        "cnn",
        lambda s: _plot(lambda: _tabs(hlviz.LayerInspector(s.model, s.x, data=s.x))),
        lambda s: hlviz.LayerInspector(s.model, s.x, layers="features.9"),
        slow=True,
    ),
    HookAPI(
        "AttributionExplorer",
        "hlviz.AttributionExplorer",
        "cnn",
        lambda s: _plot(
            lambda: _methods(hlviz.AttributionExplorer(s.model, s.x, layer="features.4"))
        ),
        lambda s: hlviz.AttributionExplorer(s.model, s.x, methods=["nope"]),
        slow=True,
    ),
]


def _tabs(inspector: Any) -> Any:
    """Show every tab, so the attribution and top-examples views run their hooks too."""
    for index in range(len(inspector.tabs.children)):
        inspector.tabs.selected_index = index
        inspector.controls["unit"].value = 1
    assert inspector.last_error is None, inspector.last_error
    return inspector


def _methods(explorer: Any) -> Any:
    for method in explorer.controls["method"].options:
        explorer.controls["method"].value = method
    assert explorer.last_error is None, explorer.last_error
    return explorer


#: public functions that reach a register_*hook call but hook no model a user passes in
EXEMPT = {
    "hlviz.Recording": "the class behind hlviz.record (the record entries)",
    "hlviz.hooks.Editing": "the class behind hlviz.edit (the edit entries)",
    "hlviz.attribution.probe": "the probe pass inside hlviz.attribute (every attribute entry)",
    "hlviz.widgets.AttributionSource": "the attribution tab of LayerInspector (the inspect entries)",
    "hlviz.widgets.render_plane": "trains and hooks its own MLP, never a user's model",
    "hlviz.PlaneExplorer": "trains and hooks its own MLP (through render_plane)",
}

BY_ID = {entry.id: entry for entry in REGISTRY}
assert len(BY_ID) == len(REGISTRY), "registry ids must be unique"


@contextlib.contextmanager
def exploding(subject: Subject, start: int):
    """Make ``subject.explode``'s forward raise from its ``start``-th call on; yields the list
    of calls that raised."""
    module = subject.model.get_submodule(subject.explode)
    original, raised, calls = module.forward, [], [0]

    def forward(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] >= start:
            raised.append(calls[0])
            raise RuntimeError("boom inside forward")
        return original(*args, **kwargs)

    module.forward = forward
    try:
        yield raised
    finally:
        del module.forward
