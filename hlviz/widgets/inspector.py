"""``hlviz.inspect``: a widget to walk through a model's layers, units and inputs.

>>> import torch.nn as nn, hlviz
>>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))
>>> inspector = hlviz.inspect(model, torch.randn(5, 1, 4, 4))
>>> inspector.controls["layer"].options[:2], inspector.view.kind
(('0', '1'), 'feature_maps')
>>> inspector.controls["unit"].value = 2
>>> inspector.view.unit, inspector.figure._suptitle.get_text()
(2, '0: channel 2 of 4, input 0')

Every layer's activation is recorded once, when the inspector is built (one forward pass
through :func:`hlviz.record`; no hook stays on the model), so moving a control only
redraws. The drawing is done by the pure functions of :mod:`hlviz.widgets.views`.
"""

from __future__ import annotations

import html
import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

from ..errors import HlvizWarning, OptionError
from ..hooks.layers import check_module, unwrap
from .base import StaticFallback
from .data import (
    MAX_DEFAULT_LAYERS,
    InputSet,
    LayerChoice,
    attention_note,
    attribution_methods,
    embedding_layer,
    predicted_target,
    record_layers,
    resolve_decode,
    take,
)
from .top import top_examples
from .views import LayerView, render_layer_view, render_top_examples, sequence_html

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..attribution.core import Attribution

__all__ = ["AttributionSource", "LayerInspector", "inspect", "plain_target"]

TABS = ("activations", "attribution", "top examples")
_UNIT_NAMES = {"feature_maps": "channel", "sequence": "unit", "attention": "head", "bars": "unit"}
PREDICTED = "predicted"


def plain_target(target: Any) -> Any:
    """``target`` with numpy integer scalars (dataset labels such as ``np.int64(2)``) turned
    into Python ints, also inside tuples and lists, as :func:`hlviz.attribute` expects.

    >>> import numpy as np
    >>> plain_target(np.int64(2)), plain_target((np.int32(6), 1)), plain_target([np.uint8(3)])
    (2, (6, 1), [3])
    >>> plain_target(np.array(4)), plain_target("predicted")
    (4, 'predicted')
    """
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        return int(target)
    if isinstance(target, (tuple, list)):
        items = [plain_target(t) for t in target]
        return tuple(items) if isinstance(target, tuple) else items
    shape = getattr(target, "shape", None)
    dtype = getattr(target, "dtype", None)
    if shape == () and getattr(dtype, "kind", None) in ("i", "u"):  # a 0-d numpy array
        return int(target)
    return target


class AttributionSource:
    """Attributions of one example at a time, computed with :func:`hlviz.attribute` and cached
    per (method, example, target, layer). Token ids go through ``layer_integrated_gradients``
    on the model's first ``nn.Embedding`` (tokens from ``decode``)."""

    def __init__(
        self,
        model: nn.Module,
        inputs: InputSet,
        *,
        decode: Any = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.model, self.inputs, self.decode = model, inputs, decode
        self.options = dict(options or {})
        self.methods = attribution_methods(inputs.main)
        self._cache: dict[tuple, tuple[Attribution, list[str]]] = {}

    def target_for(self, index: int, target: Any) -> Any:
        """``target`` as given, or the model's prediction for example ``index``."""
        if isinstance(target, str) and target == PREDICTED:
            return predicted_target(
                self.model, take(self.inputs.inputs, index), self.options.get("output")
            )
        return plain_target(target)

    def get(
        self, method: str, index: int, target: Any, layer: str | None = None
    ) -> tuple[Attribution, list[str]]:
        """``(attribution, warnings)`` of example ``index`` for ``method`` and ``target``."""
        from ..attribution.core import attribute

        if method not in self.methods:
            raise OptionError(
                f"method {method!r} does not fit these inputs; choose one of "
                f"{', '.join(self.methods)}."
            )
        key = (method, index, repr(target), layer)
        if key not in self._cache:
            options = dict(self.options)
            if method == "grad_cam":
                if layer is None:
                    raise OptionError(
                        "grad_cam needs a spatial layer: choose a (N, C, H, W) layer in the "
                        "layer dropdown."
                    )
                options["layer"] = layer
            if method == "layer_integrated_gradients":
                options.setdefault("layer", embedding_layer(self.model))
                options.setdefault("n_steps", 32)
                if hasattr(self.decode, "convert_ids_to_tokens"):
                    options.setdefault("tokenizer", self.decode)
                elif self.inputs.tokens is not None:
                    options.setdefault("tokens", [self.inputs.tokens[index]])
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                attr = attribute(
                    self.model,
                    take(self.inputs.inputs, index),
                    target=self.target_for(index, target),
                    method=method,
                    **options,
                )
            self._cache[key] = (attr, [str(w.message) for w in caught])
        return self._cache[key]

    def render(
        self, method: str, index: int, target: Any, layer: str | None, fig: Figure
    ) -> list[Any]:
        """The attribution drawn: an overlay (images) or a token heat map, and a summary."""
        from ..attribution.plots import plot_attribution_images, plot_over_time
        from ..plotting.html import HTML

        attr, caught = self.get(method, index, target, layer)
        fig.clear()
        note = "".join(f"<div style='color:#a60'>warning: {html.escape(w)}</div>" for w in caught)
        summary = HTML(
            f"<pre style='font-size:0.85em'>{html.escape(attr.describe(), quote=False)}</pre>{note}"
        )
        if attr.inputs.dim() == 4 and attr.values.dim() == 4 and attr.inputs.is_floating_point():
            fig.set_size_inches(4.6, 2.3)
            return [plot_attribution_images(attr, fig=fig), summary]
        if attr.tokens is not None or not attr.inputs.is_floating_point():
            return [attr.to_html(), summary]
        fig.set_size_inches(max(4.0, min(14.0, 0.25 * attr.per_position().shape[1])), 2.8)
        plot_over_time(attr, ax=fig.subplots())
        fig.tight_layout()
        return [fig, summary]


class LayerInspector(StaticFallback):
    """Layer, unit and input controls over a model's recorded activations; tabs for the
    activations, attributions and (given data) the top-k data examples of the unit.

    Build it with :func:`inspect`. ``controls`` holds the widgets by name (``layer``,
    ``unit``, ``input``, ``method``, ``target``): set their ``.value`` to drive it from code.
    ``outputs`` holds one Output widget per tab, ``tabs`` the Tab widget; ``layers`` the
    :class:`~hlviz.widgets.data.LayerChoice` entries (with their recorded activations),
    ``view`` the :class:`~hlviz.widgets.views.LayerView` now drawn and ``figure`` the one
    reused figure of the activations tab. An error raised while drawing is shown in the
    tab it happened in; the next change redraws normally.
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: Any,
        layers: Any = None,
        data: Any = None,
        *,
        labels: Sequence[Any] | None = None,
        decode: Any = None,
        classes: Sequence[str] | None = None,
        target: Any = None,
        max_layers: int = MAX_DEFAULT_LAYERS,
        top_k: int = 8,
        attribute_options: Mapping[str, Any] | None = None,
    ) -> None:
        import ipywidgets as widgets

        check_module(model)
        self.model = unwrap(model)
        self.decode = resolve_decode(decode)
        self.inputs = InputSet.build(inputs, labels, self.decode)
        self.layers: dict[str, LayerChoice] = {
            c.label: c for c in record_layers(self.model, inputs, layers, max_layers=max_layers)
        }
        self.data, self.top_k, self._top_cache = data, top_k, {}
        self.attributions = AttributionSource(
            self.model, self.inputs, decode=self.decode, options=attribute_options
        )
        target = None if target is None else plain_target(target)
        first = next(iter(self.layers.values()))
        style = {"description_width": "60px"}
        targets = [(PREDICTED, PREDICTED)]
        if target is not None:
            targets.insert(0, (f"given: {target!r}", target))
        if classes is not None:
            targets += [(f"{i}: {name}", i) for i, name in enumerate(classes)]
        self.controls = {
            "layer": widgets.Dropdown(
                options=list(self.layers), value=first.label, description="layer", style=style
            ),
            "unit": widgets.IntSlider(
                value=0,
                min=0,
                max=self._units(first) - 1,
                description=_UNIT_NAMES[first.kind],
                continuous_update=False,
                style=style,
            ),
            "input": widgets.Dropdown(
                options=[(label, i) for i, label in enumerate(self.inputs.labels)],
                value=0,
                description="input",
                style=style,
            ),
            "method": widgets.Dropdown(
                options=list(self.attributions.methods),
                value=self.attributions.methods[0],
                description="method",
                style=style,
            ),
            "target": widgets.Dropdown(
                options=targets, value=targets[0][1], description="target", style=style
            ),
        }
        self.outputs = {name: widgets.Output() for name in TABS}
        pages = [
            self.outputs["activations"],
            widgets.VBox(
                [
                    widgets.HBox([self.controls["method"], self.controls["target"]]),
                    self.outputs["attribution"],
                ]
            ),
        ]
        if data is not None:
            pages.append(self.outputs["top examples"])
        self.tabs = widgets.Tab(children=pages, titles=list(TABS[: len(pages)]))
        # one line of text naming the view on screen (readable without the image; the
        # browser test reads it): "layer: channel c of C, input"
        self.caption = widgets.HTML()
        # why a view is missing from the layer list (sdpa attention), with the fix
        self.note = None if layers is not None else attention_note(self.model, self.layers.values())
        rows = [
            widgets.HBox([self.controls["layer"], self.controls["unit"], self.controls["input"]]),
            self.caption,
            self.tabs,
        ]
        if self.note is not None:  # stacklevel: the user's call of hlviz.inspect
            warnings.warn(self.note, HlvizWarning, stacklevel=3)
            rows.insert(
                1,
                widgets.HTML(
                    f"<div class='hlviz-note' style='color:#a60'>{html.escape(self.note)}</div>"
                ),
            )
        self.ui = widgets.VBox(rows)
        for name, widget in (
            ("inspector", self.ui),
            ("caption", self.caption),
            *((f"control-{k}", c) for k, c in self.controls.items()),
        ):
            widget.add_class(f"hlviz-{name}")
        self._syncing = False
        self.view: LayerView | None = None
        self.controls["layer"].observe(self._layer_changed, names="value")
        for name in ("unit", "input", "method", "target"):
            self.controls[name].observe(self._changed, names="value")
        self.tabs.observe(self._changed, names="selected_index")
        self.redraw()

    @property
    def figure(self) -> Figure:
        """The reused figure of the activations tab."""
        return self._figure("activations")

    @property
    def tab(self) -> str:
        """The name of the tab on screen."""
        return TABS[self.tabs.selected_index or 0]

    @staticmethod
    def _units(choice: LayerChoice) -> int:
        return int(
            choice.acts.shape[-1] if choice.kind in ("sequence", "bars") else choice.acts.shape[1]
        )

    def _layer_changed(self, change: dict) -> None:
        if self._guard(self.outputs[self.tab], lambda: self._sync_unit(change["new"])):
            self.redraw()

    def _sync_unit(self, label: str) -> None:
        """Fit the unit slider to layer ``label`` (clamped value, range, description)."""
        choice = self.layers[label]
        slider = self.controls["unit"]
        self._syncing = True  # one redraw for a layer change, not one per slider trait
        try:
            slider.value = min(slider.value, self._units(choice) - 1)
            slider.max = self._units(choice) - 1
            slider.description = _UNIT_NAMES[choice.kind]
        finally:
            self._syncing = False

    def _changed(self, change: dict) -> None:
        if not self._syncing:
            self.redraw()

    def layer_view(self) -> LayerView:
        """The :class:`LayerView` the controls select now (pure data; no drawing)."""
        choice = self.layers[self.controls["layer"].value]
        index = self.controls["input"].value
        acts = choice.acts[index]
        tokens = None
        if self.inputs.tokens is not None and choice.kind in ("sequence", "attention"):
            row = self.inputs.tokens[index]
            tokens = (
                row if len(row) == acts.shape[-2 if choice.kind == "sequence" else -1] else None
            )
        image = None
        main = self.inputs.main
        if choice.kind == "feature_maps" and main.is_floating_point() and main.dim() == 4:
            image = main[index]
        return LayerView(
            layer=choice.label,
            kind=choice.kind,
            acts=acts,
            unit=self.controls["unit"].value,
            input_label=self.inputs.labels[index],
            tokens=tokens,
            image=image,
            batch=choice.acts if choice.kind == "bars" else None,
        )

    def redraw(self) -> None:
        """Draw the tab on screen from the controls (an error is shown in the tab)."""
        tab = self.tab
        output = self.outputs[tab]
        if self._guard(output, self._update_caption):
            self._show(output, getattr(self, f"_render_{tab.replace(' ', '_')}"))

    def _update_caption(self) -> None:
        choice = self.layers[self.controls["layer"].value]
        unit, index = self.controls["unit"].value, self.controls["input"].value
        title = (
            f"{choice.label}: {_UNIT_NAMES[choice.kind]} {unit} of {self._units(choice)}, "
            f"{self.inputs.labels[index]} ({self.tab})"
        )
        self.caption.value = f"<span class='hlviz-view-title'>{html.escape(title)}</span>"

    def _render_activations(self) -> list[Any]:
        self.view = self.layer_view()
        fig = render_layer_view(self.view, fig=self.figure)
        if self.view.kind == "sequence" and self.view.tokens is not None:
            return [fig, sequence_html(self.view)]
        return [fig]

    def _render_attribution(self) -> list[Any]:
        choice = self.layers[self.controls["layer"].value]
        return self.attributions.render(
            self.controls["method"].value,
            self.controls["input"].value,
            self.controls["target"].value,
            choice.name if choice.kind == "feature_maps" else None,
            self._figure("attribution"),
        )

    def _render_top_examples(self) -> list[Any]:
        choice = self.layers[self.controls["layer"].value]
        top = top_examples(
            self.model,
            self.data,
            choice,
            self.controls["unit"].value,
            k=self.top_k,
            decode=self.decode,
            cache=self._top_cache,
            like=self.inputs.inputs,
        )
        self.top = top
        return [render_top_examples(top, fig=self._figure("top examples"))]

    def _visible_outputs(self) -> list[Any]:
        return [self.outputs[self.tab]]


def inspect(
    model: nn.Module,
    inputs: Any,
    layers: Any = None,
    data: Any = None,
    *,
    labels: Sequence[Any] | None = None,
    decode: Any = None,
    classes: Sequence[str] | None = None,
    target: Any = None,
    max_layers: int = MAX_DEFAULT_LAYERS,
    top_k: int = 8,
    attribute_options: Mapping[str, Any] | None = None,
) -> LayerInspector:
    """An interactive view of ``model``'s layers on ``inputs``: the :class:`LayerInspector`.

    >>> import hlviz
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> ins = hlviz.inspect(model, torch.randn(6, 4), data=torch.randn(40, 4))
    >>> ins.view.kind, ins.controls["unit"].max, [ins.tabs.get_title(i) for i in range(3)]
    ('bars', 7, ['activations', 'attribution', 'top examples'])

    ``inputs``: a batch ``(N, ...)``: images, token ids ``(N, T)``, vectors, or a tuple
    or mapping of arguments (a tokenizer's output). ``layers``: ``None`` (the leaves, or
    every block of a model with more than ``max_layers`` leaves, plus every attention
    pattern; a Hugging Face model with sdpa or flash attention forms no patterns, which a
    note and an :class:`~hlviz.errors.HlvizWarning` say, with the fix),
    a layer spec, or ``{name: select}``. The view follows the layer's output: a grid of
    feature maps ``(N, C, H, W)``, a unit over the sequence ``(N, T, D)``, attention heads
    ``(N, H, T, T)``, bars ``(N, D)``. ``data`` (a tensor, ``(X, y)``, DataLoader, batches
    in the form of ``inputs`` (dicts, tuples of arguments; labels after them are ignored) or
    :class:`~hlviz.ActivationStore`) adds the "top examples" tab: the ``top_k`` examples
    where the selected unit peaks. ``labels`` names the inputs; ``decode`` turns a row of
    token ids into tokens (a callable, a tokenizer, or a CodeCorpus). The attribution tab
    attributes the predicted class (or ``target``, numpy integers such as a dataset's labels
    included; ``classes`` adds one choice per class)
    with :func:`hlviz.attribute`, passing ``attribute_options`` along (e.g. ``output=``).
    """
    return LayerInspector(
        model,
        inputs,
        layers,
        data,
        labels=labels,
        decode=decode,
        classes=classes,
        target=target,
        max_layers=max_layers,
        top_k=top_k,
        attribute_options=attribute_options,
    )
