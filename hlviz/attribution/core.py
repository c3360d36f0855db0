"""Attribution that does not silently lie: one checked front-end over Captum.

>>> import torch, torch.nn as nn, hlviz
>>> _ = torch.manual_seed(0)
>>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
>>> attr = hlviz.attribute(model, torch.randn(2, 4), target=1, method="integrated_gradients")
>>> tuple(attr.values.shape), bool(attr.delta.abs().max() < 1e-3)
((2, 4), True)

:func:`attribute` picks the Captum call for ``method``, and checks what Captum does not:
the target leaves one score per example, token ids do not go to a gradient method, the
input differs from its baseline, Grad-CAM gets a layer with space, ``internal_batch_size``
fits a memory budget, the convergence delta is small (else a :class:`ConvergenceWarning`),
and RNNs get a backward pass in eval mode (cuDNN off for the call). Captum is imported on
the first call.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import (
    ConvergenceWarning,
    HlvizWarning,
    LayerShapeError,
    OptionError,
    TokenInputError,
)
from ..hooks.layers import check_module, resolve_modules, unwrap
from . import forward as af
from .methods import (
    _BASELINE_METHODS,
    _DELTA_METHODS,
    _LAYER_METHODS,
    _TOKEN_OK,
    METHODS,
    baseline_for,
    run,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["METHODS", "Attribution", "attribute", "token_baseline"]


from .forward import token_baseline

DELTA_TOLERANCE = 0.05


@dataclass(frozen=True)
class Attribution:
    """The result of :func:`attribute` (tensors detached, on the CPU).

    ``values``: the attribution, shaped like the input (``(N, C, H, W)`` for images), like
    the layer output (``layer_conductance``), ``(N, 1, h, w)`` for Grad-CAM (upsampled to the
    input's size by default), ``(N, T)`` per token for token ids (summed over the embedding).
    ``delta`` ``(N,)``: Captum's convergence delta (sum of attributions minus
    ``F(x) - F(baseline)``) for the methods that have one, else ``None``;
    ``output_change`` ``(N,)``: ``F(x) - F(baseline)``. ``inputs`` is the attributed input,
    ``tokens`` the token strings when known (a list per example).
    """

    values: torch.Tensor
    method: str
    target: Any
    layer: str | None
    delta: torch.Tensor | None
    output_change: torch.Tensor | None
    inputs: torch.Tensor
    tokens: list[list[str]] | None = None

    def summary(self) -> str:
        """One line: method, target, layer, shape, value range and the convergence delta."""
        v = self.values
        text = (
            f"{self.method} target={self.target!r}"
            + (f" layer={self.layer!r}" if self.layer else "")
            + f": values {tuple(v.shape)} in [{v.min().item():.3g}, {v.max().item():.3g}]"
        )
        if self.delta is not None:
            worst = (self.delta.abs() / self.output_change.abs().clamp_min(1e-12)).max()
            text += f"; |delta| <= {self.delta.abs().max().item():.3g} ({worst.item():.1%} of |F(x) - F(baseline)|)"
        return text

    def plot(self, **kwargs: Any) -> Figure:
        """Draw it: an overlay on the input images, or attribution over positions (tokens,
        time steps). Keyword arguments go to :mod:`hlviz.attribution.plots`."""
        from . import plots as ap

        if self.inputs.dim() == 4 and self.values.dim() == 4 and self.inputs.is_floating_point():
            return ap.plot_attribution_images(self, **kwargs)
        return ap.plot_over_time(self, **kwargs)

    def per_position(self) -> torch.Tensor:
        """One value per position, ``(N, T)``: Grad-CAM's ``(N, 1, T)`` map, a sequence's
        ``(N, T, F)`` summed over features, or token scores as they are."""
        v = self.values
        if self.method == "grad_cam" and v.dim() == 3:
            return v[:, 0]
        if v.dim() == 3:
            return v.sum(-1)
        if v.dim() != 2:
            raise LayerShapeError(
                f"{self.method} values have shape {tuple(v.shape)}, not one value per token or "
                "time step ((N, T) or (N, T, F)); use .plot() for images."
            )
        return v

    def to_html(self, **kwargs: Any) -> str:
        """A self-contained token heat map (one row per example); positions are numbered
        when the tokens are not known. Keyword arguments go to
        :func:`hlviz.plotting.html.token_heatmap_html`."""
        from ..plotting.html import token_heatmap_html

        values = self.per_position()
        tokens = self.tokens or [[str(t) for t in range(values.shape[1])]] * len(values)
        kwargs.setdefault("title", f"{self.method}, target {self.target!r}")
        return token_heatmap_html(tokens, values.numpy(), **kwargs)


def _check_method(method: Any, options: dict[str, Any]) -> None:
    if method not in METHODS:
        close = difflib.get_close_matches(str(method), list(METHODS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        raise OptionError(
            f"method={method!r} is not an attribution method{hint} Choose one of "
            f"{', '.join(METHODS)} (TCAV concepts: hlviz.tcav; sanity checks: hlviz.sanity_check)."
        )
    unknown = sorted(set(options) - set(METHODS[method]) - {"input_key"})
    if unknown:
        allowed = ", ".join(METHODS[method]) or "none"
        raise OptionError(
            f"method {method!r} does not take {', '.join(unknown)}; its options are: {allowed} "
            "(and input_key=)."
        )


def _layer(model: nn.Module, layer: Any, method: str) -> tuple[str | None, nn.Module | None]:
    if method not in _LAYER_METHODS:
        if layer is not None:
            raise OptionError(
                f"method {method!r} attributes to the input and takes no layer (got "
                f"layer={layer!r}); use layer_conductance or grad_cam for a layer."
            )
        return None, None
    if layer is None and method == "layer_integrated_gradients":
        embed = getattr(model, "get_input_embeddings", lambda: None)()
        if isinstance(embed, nn.Module):
            layer = embed
    if layer is None:
        raise OptionError(
            f"method {method!r} needs layer= (a name such as 'features.3', a glob, a type or "
            "a module of the model). See hlviz.list_layers(model)."
        )
    found = resolve_modules(model, layer)
    if len(found) != 1:
        raise OptionError(
            f"layer={layer!r} selects {len(found)} layers ({', '.join(list(found)[:5])}); "
            f"{method} attributes to one layer at a time: name one."
        )
    return next(iter(found.items()))


def _token_error(model: nn.Module, method: str, dtype: torch.dtype) -> TokenInputError:
    embeds = [n for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
    where = f"layer={embeds[0]!r}" if embeds else "layer=<the embedding layer>"
    return TokenInputError(
        f"method {method!r} takes gradients with respect to its input, but the input holds "
        f"integer token ids ({dtype}), which have no gradient. Attribute tokens with "
        f"method='layer_integrated_gradients', {where} (the PAD baseline keeps special tokens)."
    )


def _batch_size(method, internal_batch_size, memory_budget, prep, probed, n_steps, options):
    """Captum's batching argument for ``method`` (``None``: all rows at once)."""
    n = len(prep.main)
    if internal_batch_size is None:
        return None
    minimum = 2 * n if method == "layer_conductance" else n
    if internal_batch_size != "auto":
        if (
            isinstance(internal_batch_size, bool)
            or not isinstance(internal_batch_size, int)
            or internal_batch_size < minimum
        ):
            raise OptionError(
                f"internal_batch_size={internal_batch_size!r}: give 'auto' (from memory_budget), "
                f"None (all steps at once) or an int >= {minimum} (the batch of {n} examples"
                + (", twice over for layer_conductance" if minimum > n else "")
                + ")."
            )
        return internal_batch_size
    budget = af.parse_budget(memory_budget, prep.main.device)
    rows, fits = af.auto_rows(probed.bytes_per_row, budget, minimum)
    if fits < minimum:
        warnings.warn(
            f"memory_budget of {budget / 2**20:.0f} MiB fits about {fits} rows (examples x steps) "
            f"but Captum needs at least {minimum} per internal batch: the batch of {n} examples "
            "will go over budget. Attribute smaller batches.",
            HlvizWarning,
            stacklevel=3,
        )
    total = n * {"smoothgrad": options.get("nt_samples", 10)}.get(method, n_steps)
    return None if rows >= total else rows


def _check_steps(n_steps: Any) -> None:
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 2:
        raise OptionError(
            f"n_steps must be an int >= 2 (steps of the path integral), got {n_steps!r}."
        )


def attribute(
    model: nn.Module,
    inputs: Any,
    *,
    target: Any,
    method: str,
    layer: Any = None,
    baseline: Any = None,
    n_steps: int = 50,
    internal_batch_size: int | str | None = "auto",
    output: Any = None,
    memory_budget: int | str | None = None,
    **options: Any,
) -> Attribution:
    """Attribute the model's score for ``target`` to the input (or a layer) with Captum.

    >>> import torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
    >>> a = attribute(model, torch.randn(2, 1, 4, 4), target=0, method="grad_cam", layer="1")
    >>> tuple(a.values.shape)   # (N, 1, H, W), upsampled to the input
    (2, 1, 4, 4)

    ``inputs``: a tensor ``(N, ...)``, a tuple (the attributed tensor first, then other
    arguments), or a mapping of keyword arguments (a tokenizer's output: ``input_ids``
    is attributed, ``attention_mask`` etc. go along). ``target``: the class index (an int,
    a label of ``model.config.label2id``, a tuple for outputs with more axes, or a list with
    one per example); ``None`` only when the model gives one score per example. ``output``
    picks the scored tensor from a tuple/dict/ModelOutput (default: ``logits`` or the first
    tensor). ``method``: one of :data:`METHODS`; ``layer`` (layer methods) is a name, glob,
    type or module of the model. ``baseline``: ``None`` (zeros; PAD tokens keeping special
    tokens for token ids), a number, a tensor, or ``"pad"``/an int PAD id for token ids.
    ``internal_batch_size="auto"`` picks Captum's batch from ``memory_budget`` (bytes or
    ``"512MB"``; default half the free GPU memory, or a quarter of free RAM up to 4 GiB).

    Method options: saliency ``abs=True``; smoothgrad ``nt_samples=10``,
    ``stdevs=0.15 * (max - min of the inputs)``, ``abs=True``; occlusion
    ``window=(C, H//8, W//8)``, ``strides=1``; grad_cam ``channel_dim`` (required for
    ``(N, T, C)`` layers: ``-1``), ``relu=True``, ``upsample=True``; neuron_conductance
    ``neuron`` (an index into the layer's output, batch excluded); layer_integrated_gradients
    ``pad_id``, ``special_ids``, ``tokenizer`` (for PAD/special ids and token strings),
    ``tokens``. Every method takes ``input_key`` (the key of a mapping input to attribute).
    """
    check_module(model)
    model = unwrap(model)
    _check_method(method, options)
    name, module = _layer(model, layer, method)
    prep = af.prepare(model, inputs, output=output, input_key=options.get("input_key"))
    main, n = prep.main, len(prep.main)
    if not main.is_floating_point() and method not in _TOKEN_OK:
        raise _token_error(model, method, main.dtype)
    if method in _DELTA_METHODS or method == "neuron_conductance":
        _check_steps(n_steps)
    base = baseline_for(model, main, baseline, method, options)
    batched = method in (*_BASELINE_METHODS, "smoothgrad") and method != "occlusion"
    probed = af.probe(
        prep.forward,
        main,
        prep.extra,
        measure=batched and internal_batch_size == "auto",
        layer=module if method in ("grad_cam", "neuron_conductance") else None,
    )
    target = af.check_target(torch.empty(probed.output_shape), target, n, model)
    if not batched and internal_batch_size not in ("auto", None):
        raise OptionError(
            f"method {method!r} does no internal batching; drop internal_batch_size="
            f"{internal_batch_size!r} (it applies to the path methods and smoothgrad)."
        )
    ibs = (
        _batch_size(method, internal_batch_size, memory_budget, prep, probed, n_steps, options)
        if batched
        else None
    )
    values, delta = run(method, prep, module, name, probed, target, base, n_steps, ibs, options)
    values, change = values.detach(), None
    if delta is not None:
        delta = delta.detach().reshape(n).to(values.dtype)
        change = values.reshape(n, -1).sum(1) - delta  # F(x) - F(baseline)
        _warn_delta(method, delta, change, n_steps)
    tokens = None
    if method == "layer_integrated_gradients" and not main.is_floating_point():
        values = values.sum(-1)  # (N, T): one score per token
        tokens = _tokens(main, options)
    return Attribution(
        values=values.cpu(),
        method=method,
        target=target,
        layer=name,
        delta=None if delta is None else delta.cpu(),
        output_change=None if change is None else change.cpu(),
        inputs=main.detach().cpu(),
        tokens=tokens,
    )


def _tokens(ids: torch.Tensor, options: dict) -> list[list[str]] | None:
    if options.get("tokens") is not None:
        return [list(map(str, row)) for row in options["tokens"]]
    tokenizer = options.get("tokenizer")
    if tokenizer is None:
        return None
    return [tokenizer.convert_ids_to_tokens(row) for row in ids.tolist()]


def _warn_delta(method: str, delta: torch.Tensor, change: torch.Tensor, n_steps: int) -> None:
    ratio = delta.abs() / change.abs().clamp_min(torch.finfo(change.dtype).tiny)
    bad = ratio > DELTA_TOLERANCE
    if bad.any():
        worst = int(ratio.argmax())
        warnings.warn(
            f"{method}: the convergence delta exceeds {DELTA_TOLERANCE:.0%} of "
            f"|F(x) - F(baseline)| for {int(bad.sum())} of {len(delta)} example(s) (worst: "
            f"example {worst}, delta {delta[worst].item():.3g} vs {change[worst].item():.3g}): "
            f"the attributions do not add up to the change in output. Raise n_steps (now "
            f"{n_steps}) or choose a baseline the model scores differently.",
            ConvergenceWarning,
            stacklevel=3,
        )
