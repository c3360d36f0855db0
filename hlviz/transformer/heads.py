"""Head ablation: how much does each attention head matter to a behaviour?

>>> from hlviz.models.gpt import CharGPT
>>> _ = torch.manual_seed(0)
>>> model = CharGPT(vocab_size=10, d_model=16, n_heads=2, n_layers=2).eval()
>>> ids = torch.tensor([[1, 2, 3, 4]])
>>> metric = lambda logits: logits[:, -1, 4] - logits[:, -1, 7]   # one number per example
>>> heads = hlviz.ablate_heads(model, ids, "blocks.*.attn.heads", metric=metric)
>>> heads.effect.shape                   # (layers, heads): change in the metric
(2, 2)

Heads live either in a layer of their own (a 4-D output ``(N, H, T, Dh)``, heads on axis 1,
as ``attn.heads`` of :class:`~hlviz.models.gpt.CharGPT`) or in the input of an attention's
output projection (``attn.c_proj`` of GPT-2, ``attention.output.dense`` of BERT), which
concatenates the heads ``(N, T, H * Dh)``. The first are edited with :func:`hlviz.edit`,
the second through forward pre-hooks with the same leak-proof discipline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .._checks import callable_
from ..errors import OptionError, OptionTypeError, ShapeMismatchError, UnitIndexError
from ..hooks.checks import refuse_meta, warn_if_training
from ..hooks.context import HookContext, mark
from ..hooks.editing import EditFn, edit
from ..hooks.layers import LayerSpec, check_module, resolve, unwrap
from ..hooks.outputs import layout
from ..hooks.recording import record
from ..runtime import run_model
from .patching import _batch_of, _repeat, _scores

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["HeadAblation", "ablate_heads", "ablating_heads"]


class _HeadInputs(HookContext):
    """Ablate heads in the input of output projections (``(N, T, H * Dh)``, heads in blocks of
    ``Dh``) through forward pre-hooks. ``plan[layer]`` lists, per copy of the batch, the heads
    to ablate in that copy."""

    def __init__(self, model, layers, plan, n_heads, value, n):
        super().__init__(model, layers)
        self._plan, self._heads, self._value, self._n = plan, n_heads, value, n

    def _attach(self, model, modules):
        for name, module in modules.items():
            self._add(module.register_forward_pre_hook(self._make(name)))

    def _make(self, name):
        plan = self._plan[name]

        def pre(module, args):
            if not args or not isinstance(args[0], torch.Tensor):
                raise OptionError(
                    f"{name!r} was called without a positional input tensor, so its heads "
                    "cannot be ablated in its input; choose the layer that outputs the heads."
                )
            x = args[0]
            h = self._heads
            if x.shape[-1] % h:
                raise ShapeMismatchError(
                    f"the input of {name!r} has {x.shape[-1]} features, not a multiple of "
                    f"{h} heads; pass n_heads= the model's number of heads."
                )
            heads = x.reshape(*x.shape[:-1], h, x.shape[-1] // h)  # (N, T, H, Dh)
            out = _ablate(heads, plan, self._value, self._n, heads.dim() - 2, name)
            return (out.reshape(x.shape), *args[1:])

        return mark(pre)


def _ablate(x, plan, value, n, unit_axis, name):
    """Copy ``c`` of ``x`` (rows ``c*n..``; the whole batch when ``n`` is None) gets heads
    ``plan[c]`` set to ``value`` (a number, or ``"mean"``: the head's mean over the examples
    of one copy and positions, per feature). ``name`` is the layer, for errors."""
    if plan and max((max(p, default=-1) for p in plan), default=-1) >= x.shape[unit_axis]:
        raise UnitIndexError(
            f"head {max(max(p, default=-1) for p in plan)} is out of range for "
            f"{x.shape[unit_axis]} heads in layer {name!r}; give heads 0.."
            f"{x.shape[unit_axis] - 1}."
        )
    out = x.clone()
    moved = out.movedim(unit_axis, 1)  # (N, H, ...) view of out
    if value == "mean":
        dims = [d for d in range(moved.dim()) if d not in (1, moved.dim() - 1)]
        fill = x.movedim(unit_axis, 1)[:n].mean(dim=dims, keepdim=True)[0]  # (H, 1.., Dh)
    for c, heads in enumerate(plan):
        rows = slice(None) if n is None else slice(c * n, (c + 1) * n)
        for h in heads:
            block = moved[rows, h]
            if value == "mean":
                block.copy_(fill[h].expand_as(block))
            else:
                block.fill_(value)
    return out


class _HeadOutputs(EditFn):
    def __init__(self, plan, value, n):
        self.plan, self.value, self.n = plan, value, n

    def apply(self, tensor, layer, hint):
        return _ablate(tensor, self.plan, self.value, self.n, layout(hint, tensor).units, layer)


def _int_attr(obj: Any, keys: Sequence[str]) -> int | None:
    for key in keys:
        value = getattr(obj, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _n_heads(model: nn.Module, n_heads: int | None) -> int | None:
    """``n_heads``, else the config's number of heads, else the model's ``n_heads`` (CharGPT)."""
    if n_heads is not None:
        return n_heads
    config = getattr(model, "config", None)
    if config is not None:
        found = _int_attr(config, ("num_attention_heads", "n_head", "num_heads"))
        if found is not None:
            return found
    return _int_attr(model, ("n_heads",))


_HEAD_LAYERS = (
    "GPT-2 'transformer.h.*.attn.c_proj', BERT 'encoder.layer.*.attention.output.dense', "
    "Llama 'model.layers.*.self_attn.o_proj', CharGPT 'blocks.*.attn.heads' (or "
    "'blocks.*.attn.out')"
)


def _widths(module: nn.Module) -> tuple[int, int]:
    """``(input, output)`` features of an ``nn.Linear`` or a transformers ``Conv1D``
    (whose weight is ``(in, out)``)."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return int(module.weight.shape[0]), int(module.weight.shape[1])


def _expected_widths(model: nn.Module) -> tuple[int, int] | None:
    """``(heads * head_dim, hidden)`` from the config (or CharGPT's ``d_model``), if known."""
    config = getattr(model, "config", None)
    source = config if config is not None else model
    hidden = _int_attr(source, ("hidden_size", "n_embd", "d_model"))
    if hidden is None:
        return None
    heads, head_dim = _int_attr(source, ("num_attention_heads", "n_head", "num_heads")), None
    if config is not None:
        head_dim = _int_attr(config, ("head_dim", "d_kv"))
    return (heads * head_dim if heads and head_dim else hidden), hidden


def _check_projection(model: nn.Module, name: str, module: nn.Module, count: int) -> None:
    """Refuse a linear layer that is not an attention output projection (heads -> hidden)."""
    expected = _expected_widths(model)
    if expected is None:
        return
    width, out = _widths(module)
    heads_width, hidden = expected
    if width != heads_width:
        raise ShapeMismatchError(
            f"{name!r} is not an attention output projection: its input is {width} features "
            f"wide, but the {count} heads together are {heads_width} (heads x head_dim, from the "
            "model's config or attributes). Heads are held by the layer that maps them back to the "
            f"hidden size, e.g. {_HEAD_LAYERS}."
        )
    if out != hidden:
        raise ShapeMismatchError(
            f"{name!r} is not an attention output projection: it maps {width} features to "
            f"{out}, not back to the hidden size {hidden} (a query/key/value or MLP layer?). "
            f"Heads are held by e.g. {_HEAD_LAYERS}."
        )


def _refuse_mha_out_proj(modules: Mapping[str, nn.Module], names: Sequence[str]) -> None:
    """``nn.MultiheadAttention`` never calls its ``out_proj`` as a module (it passes the
    weight to ``F.multi_head_attention_forward``), so no hook can reach the heads there."""
    for name in names:
        parent, _, leaf = name.rpartition(".")
        if leaf == "out_proj" and isinstance(modules.get(parent), nn.MultiheadAttention):
            raise OptionError(
                f"{name!r} is the out_proj of an nn.MultiheadAttention, which never runs as a "
                "module (the attention passes its weight to F.multi_head_attention_forward), "
                "so its input, where the heads are, cannot be hooked and nothing would be "
                "ablated. Ablate a head by hand instead, zeroing its columns of the weight: "
                f"with torch.no_grad(): w = model.get_submodule({name!r}).weight; "
                "saved = w.clone(); w[:, h * head_dim:(h + 1) * head_dim] = 0; ...; "
                "w.copy_(saved). Or use an attention module that calls its output projection."
            )


def _head_contexts(model, heads_per_layer, value, n_heads, n):
    """Hook contexts ablating ``heads_per_layer[layer]`` (a list per copy) on every layer."""
    inner = unwrap(model)
    modules = dict(inner.named_modules())
    _refuse_mha_out_proj(modules, list(heads_per_layer))
    out_layers = {k: v for k, v in heads_per_layer.items() if not _is_projection(modules[k])}
    in_layers = {k: v for k, v in heads_per_layer.items() if k not in out_layers}
    contexts = []
    if out_layers:
        contexts.append(edit(model, {k: _HeadOutputs(v, value, n) for k, v in out_layers.items()}))
    if in_layers:
        count = _n_heads(inner, n_heads)
        if count is None:
            raise OptionError(
                f"layers {list(in_layers)} are output projections whose input holds the heads, "
                "but the model's number of heads is unknown; pass n_heads=."
            )
        for name in in_layers:
            _check_projection(inner, name, modules[name], count)
        contexts.append(_HeadInputs(model, list(in_layers), in_layers, count, value, n))
    return contexts


def _is_projection(module: nn.Module) -> bool:
    """A linear map (``nn.Linear`` or transformers' ``Conv1D``) whose input holds the heads."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


class ablating_heads:
    """Ablate chosen heads inside a ``with`` block: ``{layer: [heads]}``.

    >>> from hlviz.models.gpt import CharGPT
    >>> model = CharGPT(vocab_size=10, d_model=16, n_heads=2, n_layers=1).eval()
    >>> with hlviz.transformer.heads.ablating_heads(model, {"blocks.0.attn.heads": [1]}), hlviz.record(
    ...     model, "blocks.0.attn.heads") as rec:
    ...     _ = model(torch.zeros(1, 3, dtype=torch.long))
    >>> rec["blocks.0.attn.heads"][:, 1].abs().max().item()
    0.0

    A layer whose output is 4-D holds heads on axis 1 (``attn.heads`` of CharGPT); any other
    layer must be an output projection (``attn.c_proj`` of GPT-2, ``attention.output.dense``
    of BERT, ``self_attn.o_proj`` of Llama, ``attn.out`` of CharGPT) whose input
    ``(N, T, H * Dh)`` is split into ``n_heads`` heads (default: the model config's
    ``num_attention_heads``/``n_head``, or the model's ``n_heads``). Where the config (or
    CharGPT) gives the hidden size, a linear layer whose input is not ``H * Dh`` wide or whose
    output is not the hidden size (an MLP, a query/key/value projection) is refused with a
    :class:`~hlviz.errors.ShapeMismatchError`. ``value`` is a number or ``"mean"`` (the head's
    mean over the batch and positions).
    """

    def __init__(
        self,
        model: nn.Module,
        heads: Mapping[Any, Sequence[int]],
        *,
        value: float | str = 0.0,
        n_heads: int | None = None,
    ):
        check_module(model)
        _check_value(value)
        if not isinstance(heads, Mapping) or not heads:
            raise OptionTypeError(
                f"heads must be a non-empty dict {{layer: [head, ...]}}, got {heads!r}."
            )
        inner = unwrap(model)
        plan = {}
        for spec, chosen in heads.items():
            for name in resolve(inner, spec):
                plan[name] = [[int(h) for h in chosen]]
        self._model, self._plan, self._value, self._n_heads = model, plan, value, n_heads
        self._stack: list = []

    def __enter__(self):
        contexts = _head_contexts(self._model, self._plan, self._value, self._n_heads, None)
        try:
            for ctx in contexts:
                ctx.__enter__()
                self._stack.append(ctx)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        while self._stack:
            self._stack.pop().__exit__(None, None, None)
        return False


def _check_value(value: Any) -> None:
    if not ((isinstance(value, (int, float)) and not isinstance(value, bool)) or value == "mean"):
        raise OptionError(f"value must be a number or 'mean', got {value!r}.")


@dataclass(frozen=True)
class HeadAblation:
    """Change in the metric when each head is ablated alone: ``effect`` is ``(layers, heads)``
    (``ablated - base``; NaN where a layer has fewer heads), ``base_score`` the unablated metric."""

    effect: np.ndarray
    base_score: float
    layers: tuple[str, ...]

    def summary(self):
        """A ``pandas.DataFrame``: layer, head, effect, ablated score; largest |effect| first."""
        import pandas as pd

        rows = [
            {"layer": layer, "head": h, "effect": e, "ablated": self.base_score + e}
            for i, layer in enumerate(self.layers)
            for h, e in enumerate(self.effect[i])
            if not np.isnan(e)
        ]
        frame = pd.DataFrame(rows)
        return frame.reindex(frame["effect"].abs().sort_values(ascending=False).index)

    def plot(self, *, ax: Axes | None = None) -> Axes:
        """Heat map layer x head of the change in the metric (blue-red, centred at 0)."""
        from .plots import plot_grid

        return plot_grid(
            self.effect,
            rows=self.layers,
            columns=list(range(self.effect.shape[1])),
            xlabel="head",
            title=f"head ablation (metric {self.base_score:.3g} unablated)",
            colorbar="change in metric",
            diverging=True,
            ax=ax,
        )


def ablate_heads(
    model: nn.Module,
    inputs: Any,
    layers: LayerSpec,
    *,
    metric: Callable[[torch.Tensor], torch.Tensor],
    value: float | str = 0.0,
    n_heads: int | None = None,
) -> HeadAblation:
    """Ablate each attention head alone and measure the change in ``metric``.

    Example::

        gpt2_heads = hlviz.ablate_heads(gpt2, batch, "transformer.h.*.attn.c_proj",
                                        metric=lambda logits: logits[:, -1, good])
        gpt2_heads.plot()

    ``layers`` hold heads as in :class:`ablating_heads` (CharGPT's ``blocks.*.attn.heads``,
    GPT-2's ``transformer.h.*.attn.c_proj``, BERT's ``encoder.layer.*.attention.output.dense``).
    ``metric`` is as in :func:`activation_patching`. All heads of one layer are ablated in
    one batched forward pass (one copy of the batch per head).
    """
    check_module(model)
    refuse_meta(model, "ablate_heads")
    _check_value(value)
    callable_("metric", metric, "a function logits -> tensor")
    names = resolve(unwrap(model), layers)
    n = _batch_of(inputs)
    warn_if_training(model, "the runs (the clean one and every ablated one)")
    modules = dict(unwrap(model).named_modules())
    _refuse_mha_out_proj(modules, names)
    with torch.no_grad():
        base = float(_scores(metric, run_model(model, inputs), 1, n)[0])
        counts = {}
        probe = [k for k in names if not _is_projection(modules[k])]
        if probe:
            with record(model, probe, to=None) as rec:
                run_model(model, inputs)
            for k in probe:
                value_k = rec[k]
                if isinstance(value_k, list) or value_k.dim() != 4:
                    shape = "several calls" if isinstance(value_k, list) else tuple(value_k.shape)
                    raise ShapeMismatchError(
                        f"layer {k!r} outputs {shape}: give layers whose output is (N, heads, "
                        "T, Dh) or output projections (nn.Linear / Conv1D) whose input holds "
                        "the heads."
                    )
                counts[k] = value_k.shape[1]
        projection_heads = _n_heads(unwrap(model), n_heads)
        for k in names:
            if k not in counts:
                if projection_heads is None:
                    raise OptionError(
                        f"{k!r} is an output projection whose input holds the heads, but the "
                        "model's number of heads is unknown; pass n_heads=."
                    )
                _check_projection(unwrap(model), k, modules[k], projection_heads)
                counts[k] = projection_heads
        effect = np.full((len(names), max(counts.values())), np.nan)
        for i, name in enumerate(names):
            h = counts[name]
            plan = {name: [[j] for j in range(h)]}
            contexts = _head_contexts(model, plan, value, n_heads, n)
            with contexts[0]:
                out = run_model(model, _repeat(inputs, h, n))
            effect[i, :h] = _scores(metric, out, h, n) - base
    return HeadAblation(effect, base, tuple(names))
