"""What the inspector widgets compute: which layers to offer, their activations (recorded
once), attributions and top-k data examples (cached), and the inputs' labels and tokens.

>>> import torch.nn as nn
>>> from hlviz.widgets.data import record_layers
>>> model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
>>> layers = record_layers(model, torch.randn(4, 1, 4, 4))
>>> [(c.label, c.kind) for c in layers]
[('0', 'feature_maps'), ('1', 'feature_maps'), ('2', 'bars'), ('3', 'bars')]

Every forward pass goes through :func:`hlviz.record` (hooks removed on exit, also when
the model raises), so building and driving a widget leaves no hook behind.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import HlvizWarning, LayerShapeError, OptionError, OptionTypeError
from ..hooks.layers import layer_names, resolve, unwrap
from ..hooks.outputs import first_tensor, layout_hints
from ..hooks.recording import record
from ..runtime import run_model
from .views import view_kind

__all__ = [
    "InputSet",
    "LayerChoice",
    "attention_note",
    "record_layers",
]

MAX_DEFAULT_LAYERS = 24
_SKIP = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


@dataclass(frozen=True, eq=False)
class LayerChoice:
    """One entry of the layer dropdown: its ``label``, the module ``name``, the ``select``
    that picks the tensor from the module's output, the view ``kind`` and the recorded
    activation ``acts`` (batch first, CPU)."""

    label: str
    name: str
    select: Any
    kind: str
    acts: torch.Tensor


def _empty() -> torch.Tensor:
    return torch.zeros(0)


def _first_tensor(output: Any) -> torch.Tensor:
    """What a view shows of a layer's output: its first tensor (empty when it has none)."""
    return first_tensor(output, _empty())


def _attention_weights(output: Any) -> torch.Tensor:
    """The attention weights a module returns beside its output (Hugging Face layers return
    ``(context, weights)``): a later ``(N, H, T, T)`` item of a tuple, else an empty tensor."""
    if isinstance(output, (tuple, list)):
        for item in list(output)[1:]:
            if (
                isinstance(item, torch.Tensor)
                and item.dim() == 4
                and item.shape[-1] == item.shape[-2]
            ):
                return item
    return _empty()


def _is_attention(tensor: torch.Tensor) -> bool:
    """Rows of probabilities: ``(N, H, T, T)``, non-negative, every row summing to 1."""
    if tensor.dim() != 4 or tensor.shape[-1] != tensor.shape[-2] or not tensor.is_floating_point():
        return False
    t = tensor.float()
    return bool((t >= 0).all() and torch.allclose(t.sum(-1), torch.ones(()), atol=1e-3))


def _batch_first(tensor: torch.Tensor, hint: Any, n: int) -> torch.Tensor | None:
    """The activation with batch first and units where the views expect them, or None."""
    from ..hooks.outputs import layout

    if tensor.dim() == 3:
        lay = layout(hint, tensor)
        if lay.kind == "sequence_first":
            tensor = tensor.transpose(0, 1)
        elif lay.kind == "channels_first":  # (N, C, L): units to the last axis
            tensor = tensor.transpose(1, 2)
    if tensor.dim() < 2 or tensor.dim() > 4 or tensor.shape[0] != n:
        return None
    return tensor


def record_layers(
    model: nn.Module,
    inputs: Any,
    layers: Any = None,
    *,
    max_layers: int = MAX_DEFAULT_LAYERS,
) -> list[LayerChoice]:
    """Run ``model`` once on ``inputs`` and return the layers an inspector offers, recorded.

    ``layers``: ``None`` (a default set, see below), any layer spec of :func:`hlviz.resolve`,
    or a mapping ``{name: select}`` (``select`` as in :func:`hlviz.record`, e.g. ``1`` for
    the weights a Hugging Face attention module returns). The default set: every leaf
    module except dropout when there are at most ``max_layers``, else the blocks of every
    ``nn.ModuleList``/top-level child; plus every module that returns attention weights.
    Layers whose output has no view (not 2- to 4-D, or not batch first) are left out of
    the default set; named explicitly, they raise :class:`~hlviz.errors.LayerShapeError`.
    """
    model = unwrap(model)
    n = _batch_size(inputs)
    explicit = layers is not None
    if isinstance(layers, Mapping):
        wanted = {name: select for spec, select in layers.items() for name in resolve(model, spec)}
    elif explicit:
        wanted = dict.fromkeys(resolve(model, layers))
    else:
        wanted = dict.fromkeys(layer_names(model))
    groups: dict[Any, list[str]] = {}
    for name, select in wanted.items():
        groups.setdefault(_first_tensor if select is None else select, []).append(name)
    if not explicit:
        groups[_attention_weights] = list(wanted)
    recs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HlvizWarning)  # modules run twice: left out below
        with torch.no_grad(), ExitStack() as stack:
            for select, names in groups.items():
                recs[select] = stack.enter_context(record(model, names, select=select))
            run_model(model, inputs)
    hints = layout_hints(model, list(wanted))
    found: list[LayerChoice] = []
    for name in wanted if explicit else layer_names(model):
        for select, rec in recs.items():
            if name not in rec:
                continue
            value = rec[name]
            attention = select is _attention_weights
            if isinstance(value, list) or value.numel() == 0:
                continue
            acts = _batch_first(value, hints[name], n)
            if acts is None:
                if explicit:
                    raise LayerShapeError(
                        f"layer {name!r} gives {tuple(value.shape)} for {n} inputs; the inspector "
                        "shows batch-first (N, D), (N, T, D), (N, C, H, W) and (N, H, T, T) "
                        "outputs. Record it with select= or pick another layer."
                    )
                continue
            attention = attention or _is_attention(acts)
            label = f"{name} (attention)" if select is _attention_weights else name
            kind = view_kind(tuple(acts.shape), attention=attention)
            found.append(LayerChoice(label, name, select, kind, acts))
    if not explicit:
        found = _default_set(model, found, max_layers)
    if not found:
        raise LayerShapeError(
            f"no layer of {type(model).__name__} gives an output the inspector can show for "
            f"{n} inputs; name layers with layers=[...] (see hlviz.list_layers(model))."
        )
    return found


def _default_set(model: nn.Module, found: list[LayerChoice], max_layers: int) -> list[LayerChoice]:
    modules = dict(model.named_modules())
    attention = [c for c in found if c.kind == "attention"]
    names = {c.label for c in attention}  # keep the deepest module that returns weights
    attention = [
        c for c in attention if not any(o != c.label and o.startswith(c.name + ".") for o in names)
    ]
    leaves = [
        c
        for c in found
        if c.kind != "attention"
        and not any(True for _ in modules[c.name].children())
        and not isinstance(modules[c.name], _SKIP)
    ]
    if len(leaves) + len(attention) > max_layers:
        blocks = set()
        for name, module in modules.items():
            if isinstance(module, nn.ModuleList):
                blocks.update(f"{name}.{child}" for child, _ in module.named_children())
        top = {name for name in modules if name and "." not in name}
        leaves = [
            c
            for c in found
            if c.kind != "attention"
            and (
                c.name in blocks
                or (
                    c.name in top
                    and not any(isinstance(m, nn.ModuleList) for m in modules[c.name].modules())
                )
            )
            and not isinstance(modules[c.name], _SKIP)
        ]
    chosen = {id(c) for c in leaves + attention}
    # max_layers only chooses between the leaves and the blocks: every block is offered
    return [c for c in found if id(c) in chosen]


_FUSED = ("sdpa", "flash_attention_2", "flex_attention")


def attention_note(model: nn.Module, found: Sequence[LayerChoice]) -> str | None:
    """Why no attention view is offered, with the fix, or None: a Hugging Face model whose
    fused attention (sdpa, flash) never forms the weights.

    >>> attention_note(nn.Linear(2, 2), []) is None
    True
    """
    impl = getattr(getattr(unwrap(model), "config", None), "_attn_implementation", None)
    fused = impl is not None and (impl in _FUSED or "flash" in str(impl))
    if not fused or any(c.kind == "attention" for c in found):
        return None
    return (
        f"no attention views: the model uses attn_implementation={impl!r}, whose fused kernels "
        'never form the attention weights. Load it with attn_implementation="eager" (e.g. '
        'AutoModel.from_pretrained(name, attn_implementation="eager")) or call '
        'model.set_attn_implementation("eager") before hlviz.inspect.'
    )


def _main_tensor(inputs: Any) -> torch.Tensor:
    if isinstance(inputs, torch.Tensor):
        return inputs
    if isinstance(inputs, Mapping):
        for key in ("input_ids", "inputs_embeds", "pixel_values"):
            if isinstance(inputs.get(key), torch.Tensor):
                return inputs[key]
        values = [v for v in inputs.values() if isinstance(v, torch.Tensor)]
    elif isinstance(inputs, (tuple, list)):
        values = [v for v in inputs if isinstance(v, torch.Tensor)]
    else:
        values = []
    if not values:
        raise OptionTypeError(
            f"inputs must be a tensor (N, ...), a tuple of arguments or a mapping of keyword "
            f"arguments holding tensors (a tokenizer's output), got {type(inputs).__name__}."
        )
    return values[0]


def _batch_size(inputs: Any) -> int:
    main = _main_tensor(inputs)
    if main.dim() == 0 or len(main) == 0:
        raise OptionError(
            f"inputs must hold at least one example along the first axis, got shape "
            f"{tuple(main.shape)}."
        )
    return len(main)


def take(inputs: Any, index: int) -> Any:
    """Example ``index`` of a batch (a tensor, tuple or mapping), keeping the batch axis."""
    n = _batch_size(inputs)

    def one(v: Any) -> Any:
        return (
            v[index : index + 1] if isinstance(v, torch.Tensor) and v.dim() and len(v) == n else v
        )

    if isinstance(inputs, torch.Tensor):
        return one(inputs)
    if isinstance(inputs, Mapping):
        return {k: one(v) for k, v in inputs.items()}
    return tuple(one(v) for v in inputs)


def tokens_of(ids: torch.Tensor, decode: Any) -> list[str]:
    """One label per position of ``ids`` ``(T,)``: ``decode`` may return a list of tokens or a
    string of one character per position (a CodeCorpus' ``decode``), or be a tokenizer."""
    if decode is None:
        return [str(int(i)) for i in ids]
    if hasattr(decode, "convert_ids_to_tokens"):
        return list(decode.convert_ids_to_tokens(ids.tolist()))
    if not callable(decode):
        raise OptionTypeError(
            f"decode must be a callable ids -> tokens (or a string of characters), or a "
            f"tokenizer, got {type(decode).__name__}."
        )
    out = decode(ids)
    tokens = list(out) if isinstance(out, str) else [str(t) for t in out]
    if len(tokens) != len(ids):
        raise OptionError(
            f"decode gave {len(tokens)} tokens for {len(ids)} positions; it must give one token "
            "(or one character) per id."
        )
    return tokens


def _joined(tokens: Sequence[str], width: int = 40) -> str:
    """A short one-line label of a token row: characters joined as they are, tokens by spaces."""
    sep = "" if all(len(t) <= 1 for t in tokens) else " "
    text = sep.join(tokens).replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass(frozen=True, eq=False)
class InputSet:
    """The inputs of an inspector: the batch, its main tensor, labels and tokens per example."""

    inputs: Any
    main: torch.Tensor
    labels: tuple[str, ...]
    tokens: tuple[tuple[str, ...], ...] | None

    @classmethod
    def build(cls, inputs: Any, labels: Sequence[Any] | None, decode: Any) -> InputSet:
        """Check ``inputs`` and make one label (and token row for ids) per example."""
        main = _main_tensor(inputs)
        n = _batch_size(inputs)
        tokens = None
        if not main.is_floating_point() and main.dim() == 2:
            tokens = tuple(tuple(tokens_of(row, decode)) for row in main.cpu())
        if labels is None:
            if tokens is not None:
                labels = [f"{i}: {_joined(t)}" for i, t in enumerate(tokens)]
            else:
                labels = [f"input {i}" for i in range(n)]
        elif len(labels) != n:
            raise OptionError(
                f"labels has {len(labels)} entries for {n} inputs; give one label per input."
            )
        return cls(inputs, main, tuple(str(x) for x in labels), tokens)


def predicted_target(model: nn.Module, inputs: Any, output: Any = None) -> Any:
    """The class the model predicts for one example: ``argmax`` of ``(1, K)`` scores, or
    ``(T - 1, argmax)`` at the last position of ``(1, T, V)`` sequence outputs."""
    from ..attribution import forward as af

    prep = af.prepare(unwrap(model), inputs, output=output)
    with torch.no_grad():
        y = prep.forward(prep.main, *prep.extra)
    if y.dim() == 2:
        return int(y[0].argmax())
    if y.dim() == 3:
        return (y.shape[1] - 1, int(y[0, -1].argmax()))
    if y.dim() == 1:
        return None
    raise OptionError(
        f"the model's output has shape {tuple(y.shape)}; give target= explicitly (see "
        "hlviz.attribute)."
    )


def attribution_methods(main: torch.Tensor) -> tuple[str, ...]:
    """The attribution methods that fit the inputs: token ids, images or flat vectors."""
    if not main.is_floating_point():
        return ("layer_integrated_gradients",)
    if main.dim() == 4:
        return ("saliency", "integrated_gradients", "input_x_gradient", "smoothgrad", "grad_cam")
    return ("saliency", "integrated_gradients", "input_x_gradient", "smoothgrad")


def embedding_layer(model: nn.Module) -> str:
    """The first ``nn.Embedding`` of ``model`` (token attributions go through it)."""
    for name, module in unwrap(model).named_modules():
        if isinstance(module, nn.Embedding):
            return name
    raise LayerShapeError(
        f"{type(model).__name__} takes token ids but has no nn.Embedding to attribute through; "
        "pass attribute_options={'layer': '<the embedding layer>'}."
    )


def resolve_decode(decode: Any) -> Callable[[torch.Tensor], list[str]] | Any:
    """``decode`` as given, or a CodeCorpus' bound ``decode`` when a corpus is passed."""
    if decode is not None and not callable(decode) and hasattr(decode, "decode"):
        return decode.decode
    return decode
