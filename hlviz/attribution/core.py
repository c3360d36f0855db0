"""Attribution that does not silently lie: one checked front-end over Captum.

>>> import torch, torch.nn as nn, hlviz
>>> _ = torch.manual_seed(0)
>>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
>>> attr = hlviz.attribute(model, torch.randn(2, 4), target=1, method="integrated_gradients")
>>> tuple(attr.values.shape), bool(attr.delta.abs().max() < 1e-3)
((2, 4), True)

:func:`attribute` picks the Captum call for ``method``, and checks what Captum does not:
the target leaves one score per example, token ids go only to methods that accept them
(the record in :mod:`~hlviz.attribution.registry` says which), inputs are finite, the
input differs from its baseline, Grad-CAM gets a layer with space, ``internal_batch_size``
fits a memory budget, the convergence delta is small (else a :class:`ConvergenceWarning`),
and RNNs get a backward pass in eval mode (cuDNN off for the call). Captum is imported on
the first call.
"""

from __future__ import annotations

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
    ShapeMismatchError,
)
from ..hooks.layers import check_module, unwrap
from . import forward as af
from .layers import did_not_run, running_embedding
from .methods import METHODS, baseline_for
from .registry import Call, Method, lookup

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
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

    def summary(self) -> pd.DataFrame:
        """One row per example: ``example``, ``target``, ``min``, ``max`` and ``sum`` of its
        values, and for the methods with a convergence delta ``delta``, ``output_change``
        (``F(x) - F(baseline)``) and ``relative_delta`` (``|delta| / |output_change|``)."""
        import pandas as pd

        n = len(self.values)
        flat = self.values.reshape(n, -1).double()
        targets = self.target if isinstance(self.target, list) else [self.target] * n
        table = pd.DataFrame(
            {
                "example": range(n),
                "target": targets,
                "min": flat.min(1).values.numpy(),
                "max": flat.max(1).values.numpy(),
                "sum": flat.sum(1).numpy(),
            }
        )
        if self.delta is not None and self.output_change is not None:
            change = self.output_change.double()
            table["delta"] = self.delta.double().numpy()
            table["output_change"] = change.numpy()
            table["relative_delta"] = (
                self.delta.double().abs() / change.abs().clamp_min(1e-12)
            ).numpy()
        return table

    def describe(self) -> str:
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

    def plot(
        self, *, ax: Axes | None = None, fig: Figure | None = None, **kwargs: Any
    ) -> Axes | Figure:
        """Draw it. Images ``(N, C, H, W)``: a multi-panel overlay on the inputs, drawn into
        ``fig`` and returned as the ``Figure`` (:func:`~hlviz.attribution.plots.
        plot_attribution_images`). Positions (tokens, time steps): one line per example on
        ``ax``, returned as the ``Axes`` (:func:`~hlviz.attribution.plots.plot_over_time`).
        Other keyword arguments go to that function."""
        from . import plots as ap

        if self.inputs.dim() == 4 and self.values.dim() == 4 and self.inputs.is_floating_point():
            if ax is not None:
                raise OptionError(
                    "image attributions draw several panels: pass fig= (a Figure), not ax=."
                )
            return ap.plot_attribution_images(self, fig=fig, **kwargs)
        if fig is not None:
            raise OptionError("attributions over positions draw on one Axes: pass ax=, not fig=.")
        return ap.plot_over_time(self, ax=ax, **kwargs)

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


def _batch_size(
    method: Method,
    internal_batch_size: Any,
    memory_budget: Any,
    prep: af.Prepared,
    probed: af.Probe,
    n_steps: int,
    options: dict[str, Any],
) -> int | None:
    """Captum's batching argument for ``method`` (``None``: all rows at once)."""
    if not method.batched:
        if internal_batch_size not in ("auto", None):
            raise OptionError(
                f"method {method.name!r} does no internal batching; drop internal_batch_size="
                f"{internal_batch_size!r} (it applies to "
                f"{', '.join(m.name for m in METHODS.values() if m.batched)})."
            )
        return None
    n = len(prep.main)
    if internal_batch_size is None:
        return None
    minimum = method.rows_per_example * n
    if internal_batch_size != "auto":
        if (
            isinstance(internal_batch_size, bool)
            or not isinstance(internal_batch_size, int)
            or internal_batch_size < minimum
        ):
            raise OptionError(
                f"internal_batch_size={internal_batch_size!r}: give 'auto' (from memory_budget), "
                f"None (all steps at once) or an int >= {minimum} (the batch of {n} examples"
                + (
                    f", {_times(method.rows_per_example)} over for {method.name}"
                    if minimum > n
                    else ""
                )
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
    per = options.get(*method.steps_option) if method.steps_option else n_steps
    return None if rows >= n * per else rows


def _times(k: int) -> str:
    return {2: "twice"}.get(k, f"{k} times")


def _check_finite(values: torch.Tensor, what: str, fix: str) -> None:
    """Refuse NaN/inf, naming how many rows (examples) hold them and which."""
    if not values.is_floating_point():
        return
    bad = (~torch.isfinite(values.detach())).reshape(len(values), -1).any(1)
    if bad.any():
        rows = bad.nonzero().flatten().tolist()
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        raise OptionError(
            f"{what} holds NaN or inf in {len(rows)} of {len(values)} rows (examples {shown}): "
            f"{fix}"
        )


MAX_STEPS = 1000


def _check_steps(n_steps: Any) -> None:
    """``n_steps`` for a path method: an int in ``2..MAX_STEPS``. Captum's Gauss-Legendre
    weights take time cubic in ``n_steps`` (1000 steps about a second, 4000 a minute,
    ``10**12`` would not fit in memory), and past a few hundred steps the integral no longer
    changes."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 2:
        raise OptionError(
            f"n_steps must be an int >= 2 (steps of the path integral), got {n_steps!r}."
        )
    if n_steps > MAX_STEPS:
        raise OptionError(
            f"n_steps={n_steps} is more than the {MAX_STEPS} steps a path integral can use: "
            "Captum's Gauss-Legendre weights take time and memory that grow with n_steps**3 "
            f"(1000 steps about a second, {n_steps} would not finish). Give n_steps <= "
            f"{MAX_STEPS} (50-300 is usual; raise it only while the convergence delta shrinks)."
        )


def _check_examples(main: torch.Tensor) -> None:
    """Refuse a 0-d input or an empty batch up front (nothing to attribute)."""
    if main.dim() == 0:
        raise ShapeMismatchError(
            f"the attributed input is a 0-d tensor ({main.item()!r}): give a batch (N, ...), "
            "e.g. x.reshape(1, 1) for one example with one feature."
        )
    if len(main) == 0:
        raise ShapeMismatchError(
            f"inputs hold 0 examples (the attributed input has shape {tuple(main.shape)}): "
            "there is nothing to attribute. Pass at least one example (check the filter or "
            "the slice that made this batch)."
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
    arguments), or a mapping of keyword arguments (a tokenizer's output: ``input_ids`` is
    attributed, ``attention_mask`` etc. go along). ``target``: the class index (an int, a
    label of ``model.config.label2id``, a tuple for outputs with more axes, or a list with
    one per example); ``None`` only when the model gives one score per example. ``output``
    picks the scored tensor from a tuple/dict/ModelOutput (default: ``logits`` or the first
    tensor). ``method``: one of :data:`METHODS`; ``layer`` (layer methods) is a name, glob,
    type or module of the model (layer_integrated_gradients defaults to
    ``model.get_input_embeddings()``, or the embedding tied to its weight that reads the ids
    when that one never runs, as on T5); a layer that never runs is refused. ``baseline``:
    ``None`` (zeros; PAD tokens keeping special tokens for token ids), a number, a tensor,
    or ``"pad"``/an int PAD id for token ids. ``internal_batch_size="auto"`` picks Captum's
    batch from ``memory_budget`` (bytes or ``"512MB"``; default half the free GPU memory, or
    a quarter of free RAM up to 4 GiB).

    Method options: saliency ``abs=True``; smoothgrad ``nt_samples=10``, ``stdevs=0.15 *
    (max - min of the inputs)``, ``abs=True``, ``seed=0`` (the noise is drawn from torch's
    generators seeded with it, which are restored afterwards); occlusion ``window=(C, H//8,
    W//8)`` (``(1,)`` for sequences and token ids), ``strides=1``,
    ``perturbations_per_eval=1``; feature_ablation ``feature_mask`` (features with the same
    id are ablated together; default each element), ``perturbations_per_eval``; grad_cam
    ``channel_dim`` (default: the channel axis of the layer's layout,
    :func:`hlviz.hooks.outputs.layout`; give it where the layout cannot tell),
    ``relu=True``, ``upsample=True``; neuron_conductance ``neuron`` (an index into the
    layer's output, batch excluded); layer_integrated_gradients, occlusion and
    feature_ablation ``pad_id``, ``special_ids``, ``tokenizer`` (for PAD/special ids and
    token strings), ``tokens``. Every method takes ``input_key`` (the key of a mapping input
    to attribute). What each method needs is in its record,
    ``hlviz.attribution.METHODS[name]`` (:class:`~hlviz.attribution.registry.Method`).

    Occlusion and feature ablation need no gradients, so they take integer token ids as they
    are: with ``baseline=<id>`` each token in turn becomes that id, and entry ``[n, t]`` is
    the score minus the score with token ``t`` replaced (``(N, T)``). Inputs or attributions
    holding NaN or inf raise, naming the examples.
    """
    check_module(model)
    model = unwrap(model)
    spec = lookup(method, options)
    name, module = spec.resolve_layer(model, layer)
    prep = af.prepare(model, inputs, output=output, input_key=options.get("input_key"))
    _check_examples(prep.main)
    main, n = prep.main, len(prep.main)
    spec.check_input(model, main)
    _check_finite(main, "the attributed input", "drop those examples or fix them first.")
    if spec.path:
        _check_steps(n_steps)
    if layer is None and spec.embedding_layer and module is not None:
        name, module = running_embedding(model, prep, name, module)
    base = baseline_for(model, main, baseline, spec, options)
    probed = af.probe(
        prep.forward,
        main,
        prep.extra,
        measure=spec.batched and internal_batch_size == "auto",
        layer=module if spec.probe_layer else None,
    )
    if spec.probe_layer and module is not None and probed.layer_shape is None:
        raise did_not_run(model, name, module)
    target = af.check_target(torch.empty(probed.output_shape), target, n, model)
    ibs = _batch_size(spec, internal_batch_size, memory_budget, prep, probed, n_steps, options)
    call = Call(prep, module, name, probed, target, base, n_steps, ibs, options)
    with af.rnn_safe(prep.forward):
        try:
            values, delta = spec.run(call)
        except AssertionError as err:  # Captum's layer hook saw no call of the layer
            if "did not obtain any outputs" not in str(err):
                raise
            raise did_not_run(model, name, module) from err
    values, change = values.detach(), None
    _check_finite(
        values,
        f"the {spec.name} attribution",
        "the model's score or its gradient is not finite there; check the model's output "
        "on those examples (e.g. torch.isfinite(model(x)).all(1)).",
    )
    if delta is not None:
        delta = delta.detach().reshape(n).to(values.dtype)
        change = values.reshape(n, -1).sum(1) - delta  # F(x) - F(baseline)
        _warn_delta(spec.name, delta, change, n_steps)
    return Attribution(
        values=values.cpu(),
        method=spec.name,
        target=target,
        layer=name,
        delta=None if delta is None else delta.cpu(),
        output_change=None if change is None else change.cpu(),
        inputs=main.detach().cpu(),
        tokens=None if main.is_floating_point() else _tokens(main, options),
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
