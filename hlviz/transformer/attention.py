"""Capture every attention head's pattern (any ``nn.MultiheadAttention`` model or Hugging Face
model), and score heads against patterns of keys (the pattern functions live in
:mod:`hlviz.transformer.patterns` and are re-exported here).

>>> import torch, torch.nn as nn
>>> from hlviz.transformer import attention
>>> layer = nn.TransformerEncoderLayer(8, 2, batch_first=True)
>>> maps = attention.capture(nn.TransformerEncoder(layer, 2).eval(), torch.randn(1, 5, 8))
>>> tuple(maps.patterns.shape)       # (layers, N, heads, queries, keys)
(2, 1, 2, 5, 5)

Scoring heads against a pattern (``head_scores``, ``previous_token``, ...) is documented in
:mod:`hlviz.transformer.patterns`, with an example.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .._checks import choice
from ..errors import (
    EmptySelectionError,
    HlvizWarning,
    OptionError,
    OptionTypeError,
    ShapeMismatchError,
)
from ..hooks.checks import once, refuse_meta
from ..hooks.context import HookContext, mark
from ..hooks.layers import LayerSpec, check_module, resolve, unwrap
from ..runtime import run_model

if TYPE_CHECKING:
    from matplotlib.axes import Axes

from .patterns import (
    head_scores,
    induction,
    matching_bracket,
    previous_token,
    same_word,
    to_token,
)

__all__ = [
    "AttentionMaps",
    "capture",
    "head_scores",
    "induction",
    "matching_bracket",
    "previous_token",
    "same_word",
    "to_token",
]


# ------------------------------------------------------------------ capturing patterns
@dataclass(frozen=True)
class AttentionMaps:
    """Attention patterns of several layers: ``patterns`` is ``(L, N, H, T, S)`` (float32, CPU).

    >>> from hlviz.models.gpt import CharGPT
    >>> _ = torch.manual_seed(0)
    >>> maps = capture(CharGPT(vocab_size=10, d_model=16, n_heads=2, n_layers=2), torch.randint(0, 10, (3, 5)))
    >>> tuple(maps.patterns.shape), maps.layers
    ((2, 3, 2, 5, 5), ('blocks.0.attn.pattern', 'blocks.1.attn.pattern'))
    >>> mask = torch.ones(3, 5, dtype=torch.bool)
    >>> head_scores(maps, previous_token(mask), mask).shape     # (layers, heads)
    (2, 2)

    Rows are queries, columns keys (``S == T`` for self-attention). It iterates like the
    ``.attentions`` tuple of a Hugging Face output (one ``(N, H, T, S)`` tensor per layer),
    so it goes straight into :func:`head_scores`.
    """

    patterns: torch.Tensor
    layers: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.patterns[index]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.patterns)

    def _layer_index(self, layer: int | str) -> int:
        if isinstance(layer, str):
            return self.layers.index(
                choice(
                    "layer",
                    layer,
                    self.layers,
                    hint="Give a captured layer (see .layers) or its index.",
                )
            )
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise OptionTypeError(f"layer must be an int or a name, got {layer!r}.")
        if not -len(self) <= layer < len(self):
            raise OptionError(f"layer {layer} is out of range for {len(self)} captured layers.")
        return layer % len(self)

    def summary(self):
        """A ``pandas.DataFrame``, one row per (layer, head): the mean over examples and queries of
        the pattern's entropy (nats), its largest weight, and the weight on the query's own
        position, the position before it, and the first position."""
        import pandas as pd

        p = self.patterns
        t, s = p.shape[-2:]
        entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)  # (L, N, H, T)
        eye = torch.eye(t, s, dtype=torch.bool)
        before = torch.zeros(t, s, dtype=torch.bool)
        steps = torch.arange(1, min(t, s + 1))
        before[steps, steps - 1] = True
        rows = []
        for li, name in enumerate(self.layers):
            for h in range(p.shape[2]):
                head = p[li, :, h]  # (N, T, S)
                rows.append(
                    {
                        "layer": name,
                        "head": h,
                        "entropy": float(entropy[li, :, h].mean()),
                        "max_weight": float(head.amax(-1).mean()),
                        "self": float((head * eye).sum(-1).mean()),
                        "previous": float((head * before).sum(-1)[:, 1:].mean()) if t > 1 else 0.0,
                        "first": float(head[..., 0].mean()),
                    }
                )
        return pd.DataFrame(rows)

    def plot(
        self,
        layer: int | str = 0,
        head: int = 0,
        example: int = 0,
        tokens: Sequence[str] | None = None,
        *,
        ax: Axes | None = None,
    ) -> Axes:
        """Heat map of one head's pattern (queries down, keys across); returns the ``Axes``."""
        from .plots import plot_attention_pattern

        index = self._layer_index(layer)
        n, h = self.patterns.shape[1:3]
        if not (-h <= head < h and -n <= example < n):
            raise OptionError(
                f"head {head} / example {example} out of range: the maps hold {h} heads and "
                f"{n} examples."
            )
        pattern = self.patterns[index, example, head].numpy()
        title = f"{self.layers[index]}, head {head % h}"
        return plot_attention_pattern(pattern, tokens=tokens, title=title, ax=ax)


def _is_hf(model: nn.Module) -> bool:
    return hasattr(model, "config") and hasattr(model.config, "_attn_implementation")


def _stack_layers(values: dict[str, torch.Tensor], hf: bool = False) -> AttentionMaps:
    shapes = {name: tuple(v.shape) for name, v in values.items()}
    for name, shape in shapes.items():
        if len(shape) != 4:
            hint = (
                " This is a Hugging Face model: its layers= are integer indices into "
                "outputs.attentions (e.g. layers=[0, 1], or None for all), not module names."
                if hf
                else ""
            )
            raise ShapeMismatchError(
                f"layer {name!r} outputs shape {shape}, not an attention pattern (N, heads, T, T); "
                "pass the layers that output the softmaxed attention (e.g. '**.attn.pattern')."
                + hint
            )
    if len(set(shapes.values())) > 1:
        raise ShapeMismatchError(
            f"the attention layers differ in shape ({shapes}); capture layers with the same "
            "number of heads and positions in one call."
        )
    patterns = torch.stack([v.detach().float().cpu() for v in values.values()])
    return AttentionMaps(patterns, tuple(values))


class _MHAWeights(HookContext):
    """Makes ``nn.MultiheadAttention`` layers compute per-head weights, keeps them, and hands
    the caller the output it asked for (no weights, or averaged ones)."""

    def __init__(self, model: nn.Module, layers: list[str]):
        super().__init__(model, layers)
        self.weights: dict[str, list[torch.Tensor]] = {n: [] for n in self._names}

    def _attach(self, model: nn.Module, modules: dict[str, nn.Module]) -> None:
        for name, module in modules.items():
            asked: list[tuple[bool, bool]] = []

            def pre(mod, args, kwargs, asked=asked):
                args = list(args)
                need = args[4] if len(args) > 4 else kwargs.get("need_weights", True)
                avg = args[6] if len(args) > 6 else kwargs.get("average_attn_weights", True)
                asked.append((bool(need), bool(avg)))
                for pos, key, value in (
                    (4, "need_weights", True),
                    (6, "average_attn_weights", False),
                ):
                    if len(args) > pos:
                        args[pos] = value
                    else:
                        kwargs[key] = value
                return tuple(args), kwargs

            def post(mod, args, output, name=name, asked=asked):
                need, avg = asked.pop()
                out, weights = output
                self.weights[name].append(weights.detach())
                if not need:
                    return out, None
                # per-head weights are (N, H, L, S), or (H, L, S) for an unbatched call
                return out, weights.mean(weights.dim() - 3) if avg else weights

            self._add(module.register_forward_pre_hook(mark(pre), with_kwargs=True))
            self._add(module.register_forward_hook(mark(post)))


_KINDS = ("attentions", "encoder_attentions", "decoder_attentions", "cross_attentions")


def _found_attentions(out: Any) -> dict[str, torch.Tensor]:
    """``{"<kind>.<i>": weights}`` from a model output: ``attentions``, else an
    encoder-decoder's encoder, decoder and cross attentions (those of the encoder's shape)."""
    found = {}
    for kind in _KINDS:
        for i, weights in enumerate(getattr(out, kind, None) or ()):
            if weights is not None:
                found[f"{kind}.{i}"] = weights
    shapes = {tuple(w.shape) for w in found.values()}
    if len(shapes) > 1:  # decoder and cross attention have other lengths: the first kind only
        first = next(iter(found)).partition(".")[0]
        skipped = sorted({k.partition(".")[0] for k in found if not k.startswith(first + ".")})
        warnings.warn(
            f"the model returned attention of several lengths; capturing {first!r} only. "
            f"{skipped} come from model(**inputs, output_attentions=True).",
            HlvizWarning,
            stacklevel=3,
        )
        found = {k: w for k, w in found.items() if k.startswith(first + ".")}
    return found


def _capture_hf(model: nn.Module, inputs: Any, layers: Any) -> AttentionMaps:
    if isinstance(inputs, Mapping):
        kwargs = dict(inputs)
    elif isinstance(inputs, torch.Tensor):  # input_ids, pixel_values, input_values, ...
        kwargs = {getattr(model, "main_input_name", None) or "input_ids": inputs}
    else:
        raise OptionTypeError(
            "a Hugging Face model takes a tokenizer's or processor's output (a dict) or one "
            f"tensor of its main input ({getattr(model, 'main_input_name', 'input_ids')}), "
            f"got {type(inputs).__name__}."
        )
    with torch.no_grad():
        out = run_model(model, {**kwargs, "output_attentions": True})
    found = _found_attentions(out)
    if not found:
        impl = model.config._attn_implementation
        if impl in ("sdpa", "flash_attention_2", "flex_attention") or "flash" in str(impl):
            raise OptionError(
                f"the model returned no attention weights (attn_implementation={impl!r}: fused "
                'kernels never form them). Load it with attn_implementation="eager", '
                'e.g. AutoModel.from_pretrained(name, attn_implementation="eager"), or call '
                'model.set_attn_implementation("eager") first.'
            )
        keys = list(out.keys()) if isinstance(out, Mapping) else type(out).__name__
        raise OptionError(
            f"the model (attn_implementation={impl!r}) returned no attention weights with "
            f"output_attentions=True (its output: {keys}), so there is nothing to capture; "
            "record its attention modules with hlviz.record(model, '**.attention') instead."
        )
    attentions = list(found.values())
    names = list(found)
    count = len(attentions)
    chosen = list(range(count)) if layers is None else list(layers)
    bad = [i for i in chosen if not -count <= i < count]
    if bad:
        raise OptionError(
            f"layers {bad} are out of range: the model returned {count} attention layers; "
            f"give indices 0..{count - 1} (or None for all)."
        )
    return _stack_layers({names[i % count]: attentions[i] for i in chosen})


def capture(model: nn.Module, inputs: Any, layers: LayerSpec | None = None) -> AttentionMaps:
    """Run ``model`` once on ``inputs`` and return the attention patterns of ``layers``.

    >>> layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    >>> model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    >>> maps = capture(model, torch.randn(3, 5, 8))   # every nn.MultiheadAttention
    >>> tuple(maps.patterns.shape), maps.layers[0]
    ((2, 3, 2, 5, 5), 'layers.0.self_attn')

    Three kinds of model are understood:

    * models whose attention pattern is a layer of its own (an identity module whose
      output is ``(N, H, T, T)``, as ``attn.pattern`` in :class:`~hlviz.models.gpt.CharGPT`):
      ``layers`` defaults to every module named ``pattern``;
    * ``nn.MultiheadAttention`` layers (the default when there is no ``pattern`` layer):
      for this call they compute per-head weights (``need_weights=True,
      average_attn_weights=False``) and the caller still receives what it asked for;
    * Hugging Face models (neither of the above): called with ``output_attentions=True``;
      ``layers`` are then integer indices into the returned ``attentions`` (default all).
      Models loaded with sdpa or flash attention return none and are refused.

    ``nn.MultiheadAttention`` must be called on batched inputs (``(N, T, E)`` with
    ``batch_first=True``, else ``(T, N, E)``); an unbatched call is refused with a
    :class:`~hlviz.errors.ShapeMismatchError` after the model ran unchanged.

    ``inputs`` is a tensor, a tuple of arguments or a dict of keyword arguments. Hooks are
    removed when the call returns, even when the model raises.
    """
    check_module(model)
    refuse_meta(model, "hlviz.attention.capture")
    inner = unwrap(model)
    modules = dict(inner.named_modules())
    if layers is None:
        names = [n for n in modules if n.rpartition(".")[2] == "pattern"]
        if not names:
            names = [n for n, m in modules.items() if isinstance(m, nn.MultiheadAttention)]
        if not names:
            if _is_hf(inner):
                return _capture_hf(model, inputs, None)
            raise EmptySelectionError(
                f"{type(inner).__name__} has no layer named 'pattern', no nn.MultiheadAttention "
                "and is not a Hugging Face model; pass layers= the modules that output the "
                "attention pattern (N, heads, T, T)."
            )
    elif (
        _is_hf(inner)
        and isinstance(layers, (list, tuple, range))
        and layers
        and all(isinstance(i, int) and not isinstance(i, bool) for i in layers)
    ):
        return _capture_hf(model, inputs, layers)
    else:
        names = resolve(inner, layers)
    if all(isinstance(modules[n], nn.MultiheadAttention) for n in names):
        ctx = _MHAWeights(model, names)
        with torch.no_grad(), ctx:
            run_model(model, inputs)
        values = {}
        for name in names:
            calls = ctx.weights[name]
            if len(calls) != 1:
                once(name, calls, "capture needs one attention map per layer")
            if calls[0].dim() != 4:
                raise ShapeMismatchError(
                    f"layer {name!r} was called without a batch (its per-head weights are "
                    f"{tuple(calls[0].shape)}, (heads, T, S)); capture needs batched inputs: "
                    "(N, T, E) with batch_first=True, or (T, N, E), the layout the module uses "
                    "otherwise. Add a batch axis, e.g. x[None] or x.unsqueeze(1)."
                )
            values[name] = calls[0]
        return _stack_layers(values)
    from ..hooks.recording import record

    with torch.no_grad(), record(model, names) as rec:
        run_model(model, inputs)
    values = {}
    for name in names:
        values[name] = once(name, rec[name], "capture needs one attention map per layer")
    return _stack_layers(values, hf=_is_hf(inner))
