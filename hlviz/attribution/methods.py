"""The built-in attribution methods: one :class:`~hlviz.attribution.registry.Method` record each.

>>> sorted(METHODS)[:3]
['feature_ablation', 'grad_cam', 'input_x_gradient']
>>> [m.name for m in METHODS.values() if not m.gradients]   # these accept token ids as they are
['occlusion', 'feature_ablation']

A record says what the method needs and holds the function that makes the Captum call;
:func:`hlviz.attribute` checks the arguments against the record and calls ``record.run``.
:func:`baseline_for` turns the user's ``baseline=`` into what Captum gets.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import BaselineError, HlvizWarning, OptionError
from . import forward as af
from ._rng import seeded
from .gradcam import grad_cam
from .registry import METHODS, Call, Method, register

__all__ = ["METHODS", "baseline_for"]

_TOKEN_OPTIONS = ("pad_id", "special_ids", "tokenizer", "tokens")


def baseline_for(
    model: nn.Module, main: torch.Tensor, baseline: Any, method: Method, options: dict
) -> torch.Tensor | float | int:
    """The baseline Captum gets for ``method`` on ``main`` (checked: it broadcasts to the
    input and differs from every example); ``0`` for methods without a baseline."""
    if not method.baseline:
        if baseline is not None:
            raise OptionError(
                f"method {method.name!r} uses no baseline; drop baseline={baseline!r}."
            )
        return 0
    if not main.is_floating_point():  # token ids
        if isinstance(baseline, torch.Tensor):
            out = baseline.to(main.device)
        else:
            pad = baseline if isinstance(baseline, int) and baseline is not True else None
            if baseline not in (None, "pad") and pad is None:
                raise BaselineError(
                    f"baseline for token ids must be None or 'pad' (PAD tokens, special tokens "
                    f"kept), an int token id, or a tensor of ids; got {baseline!r}."
                )
            out = af.token_baseline(
                main, _pad_id(model, options, pad), _special_ids(model, options)
            )
    elif baseline is None:
        out = torch.zeros_like(main)
    elif isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        out = torch.full_like(main, float(baseline))
    elif isinstance(baseline, torch.Tensor):
        out = baseline.to(device=main.device, dtype=main.dtype)
    else:
        raise BaselineError(
            f"baseline must be None (zeros), a number or a tensor, got {type(baseline).__name__}."
        )
    try:
        same = (torch.broadcast_to(out, main.shape) == main).reshape(len(main), -1).all(1)
    except RuntimeError:
        raise BaselineError(
            f"baseline of shape {tuple(out.shape)} does not broadcast to the input's "
            f"{tuple(main.shape)}; give one baseline per example or one for all (batch 1)."
        ) from None
    if same.any():
        idx = same.nonzero().flatten().tolist()
        raise BaselineError(
            f"example(s) {idx} equal their baseline, so every attribution would be exactly 0 "
            "(the path from baseline to input is empty). Use another baseline (e.g. a blurred "
            "input, noise, or PAD tokens) or drop those examples."
        )
    if not method.path and baseline is None and main.is_floating_point():
        return 0  # Captum's own default for perturbation methods, a scalar
    return out


def _pad_id(model: nn.Module, options: dict, given: int | None) -> int:
    for pad in (
        given,
        options.get("pad_id"),
        getattr(options.get("tokenizer"), "pad_token_id", None),
        getattr(getattr(model, "config", None), "pad_token_id", None),
    ):
        if pad is not None:
            return int(pad)
    raise BaselineError(
        "no PAD token id is known for the token baseline: pass pad_id=<id> (or tokenizer=, or "
        "baseline=<tensor of ids>). The model has no config.pad_token_id."
    )


def _special_ids(model: nn.Module, options: dict) -> list[int]:
    if options.get("special_ids") is not None:
        return [int(i) for i in options["special_ids"]]
    if options.get("tokenizer") is not None:
        return list(options["tokenizer"].all_special_ids)
    config = getattr(model, "config", None)
    found = [
        getattr(config, f"{k}_token_id", None) for k in ("cls", "sep", "bos", "eos", "unk", "mask")
    ]
    found = [int(i) for i in found if isinstance(i, int)]
    if not found:
        warnings.warn(
            "no special token ids are known, so the PAD baseline replaces every token "
            "(including [CLS]/[SEP] if present): pass tokenizer= or special_ids= to keep them.",
            HlvizWarning,
            stacklevel=4,
        )
    return found


def _common(call: Call) -> dict[str, Any]:
    return dict(target=call.target, additional_forward_args=call.prep.extra_args)


def _path(call: Call) -> dict[str, Any]:
    return dict(
        baselines=call.baseline,
        n_steps=call.n_steps,
        internal_batch_size=call.internal_batch_size,
    )


def _grad_input(call: Call) -> torch.Tensor:
    return call.prep.main.detach().requires_grad_(True)  # what Captum does, without its warning


def _saliency(call: Call) -> tuple[torch.Tensor, None]:
    import captum.attr as ca

    attr = ca.Saliency(call.prep.forward)
    return attr.attribute(
        _grad_input(call), abs=call.options.get("abs", True), **_common(call)
    ), None


def _input_x_gradient(call: Call) -> tuple[torch.Tensor, None]:
    import captum.attr as ca

    return ca.InputXGradient(call.prep.forward).attribute(_grad_input(call), **_common(call)), None


def _integrated_gradients(call: Call) -> tuple[torch.Tensor, torch.Tensor]:
    import captum.attr as ca

    return ca.IntegratedGradients(call.prep.forward).attribute(
        call.prep.main, **_common(call), **_path(call), return_convergence_delta=True
    )


def _smoothgrad(call: Call) -> tuple[torch.Tensor, None]:
    import captum.attr as ca

    main, options, ibs = call.prep.main, call.options, call.internal_batch_size
    seed = options.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise OptionError(f"seed must be an int (the noise's random seed), got {seed!r}.")
    with seeded(seed):  # the noise is repeatable and the caller's generators are left alone
        values = ca.NoiseTunnel(ca.Saliency(call.prep.forward)).attribute(
            main,
            nt_type="smoothgrad",
            nt_samples=options.get("nt_samples", 10),
            nt_samples_batch_size=None if ibs is None else max(1, ibs // len(main)),
            stdevs=options.get("stdevs", float(0.15 * (main.max() - main.min()))),
            abs=options.get("abs", True),
            **_common(call),
        )
    return values, None


def _perturbations(call: Call) -> int:
    per = call.options.get("perturbations_per_eval", 1)
    if isinstance(per, bool) or not isinstance(per, int) or per < 1:
        raise OptionError(
            f"perturbations_per_eval must be an int >= 1 (perturbed copies of the batch per "
            f"forward pass), got {per!r}."
        )
    return per


def _occlusion(call: Call) -> tuple[torch.Tensor, None]:
    import captum.attr as ca

    main = call.prep.main
    window = call.options.get("window") or (
        (main.shape[1], *(max(1, s // 8) for s in main.shape[2:])) if main.dim() > 2 else (1,)
    )
    return ca.Occlusion(call.prep.forward).attribute(
        main,
        sliding_window_shapes=tuple(window),
        strides=call.options.get("strides"),
        baselines=call.baseline,
        perturbations_per_eval=_perturbations(call),
        **_common(call),
    ), None


def _feature_ablation(call: Call) -> tuple[torch.Tensor, None]:
    import captum.attr as ca

    mask = call.options.get("feature_mask")
    return ca.FeatureAblation(call.prep.forward).attribute(
        call.prep.main,
        baselines=call.baseline,
        feature_mask=None if mask is None else torch.as_tensor(mask).to(call.prep.main.device),
        perturbations_per_eval=_perturbations(call),
        **_common(call),
    ), None


def _layer_conductance(call: Call) -> tuple[torch.Tensor, torch.Tensor]:
    import captum.attr as ca

    return ca.LayerConductance(call.prep.forward, call.module).attribute(
        call.prep.main, **_common(call), **_path(call), return_convergence_delta=True
    )


def _neuron_conductance(call: Call) -> tuple[torch.Tensor, None]:
    import captum.attr as ca

    neuron = _neuron(call.options.get("neuron"), call.probed.layer_shape, call.name)
    return ca.NeuronConductance(call.prep.forward, call.module).attribute(
        call.prep.main, neuron_selector=neuron, **_common(call), **_path(call)
    ), None


def _layer_integrated_gradients(call: Call) -> tuple[torch.Tensor, torch.Tensor]:
    import captum.attr as ca

    values, delta = ca.LayerIntegratedGradients(call.prep.forward, call.module).attribute(
        call.prep.main, **_common(call), **_path(call), return_convergence_delta=True
    )
    if not call.prep.main.is_floating_point():
        values = values.sum(-1)  # (N, T): one score per token, summed over the embedding
    return values, delta


def _neuron(neuron: Any, shape: Sequence[int], name: str) -> int | tuple[int, ...]:
    per = tuple(shape[1:])
    index = (neuron,) if isinstance(neuron, int) and not isinstance(neuron, bool) else neuron
    if (
        not isinstance(index, tuple)
        or len(index) != len(per)
        or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < s
            for i, s in zip(index, per)
        )
    ):
        raise OptionError(
            f"neuron={neuron!r} does not index one unit of layer {name!r}, whose output is "
            f"{tuple(shape)} (N first): give {len(per)} non-negative index(es) below {per}, "
            f"e.g. neuron={(0,) * len(per) if len(per) > 1 else 0}."
        )
    return neuron


_PATH = dict(baseline=True, path=True, batched=True)
for _record in (
    Method("saliency", "Saliency", _saliency, options=("abs",)),
    Method("input_x_gradient", "InputXGradient", _input_x_gradient),
    Method(
        "integrated_gradients", "IntegratedGradients", _integrated_gradients, delta=True, **_PATH
    ),
    Method(
        "smoothgrad",
        "NoiseTunnel(Saliency)",
        _smoothgrad,
        options=("nt_samples", "stdevs", "abs", "seed"),
        batched=True,
        steps_option=("nt_samples", 10),
    ),
    Method(
        "occlusion",
        "Occlusion",
        _occlusion,
        options=("window", "strides", "perturbations_per_eval", *_TOKEN_OPTIONS),
        baseline=True,
        gradients=False,
        token_ids=True,
    ),
    Method(
        "feature_ablation",
        "FeatureAblation",
        _feature_ablation,
        options=("feature_mask", "perturbations_per_eval", *_TOKEN_OPTIONS),
        baseline=True,
        gradients=False,
        token_ids=True,
    ),
    Method(
        "grad_cam",
        "LayerGradCam",
        grad_cam,
        options=("channel_dim", "relu", "upsample"),
        layer=True,
        probe_layer=True,
        token_ids=True,
    ),
    Method(
        "layer_conductance",
        "LayerConductance",
        _layer_conductance,
        layer=True,
        delta=True,
        rows_per_example=2,
        **_PATH,
    ),
    Method(
        "neuron_conductance",
        "NeuronConductance",
        _neuron_conductance,
        options=("neuron",),
        layer=True,
        probe_layer=True,
        **_PATH,
    ),
    Method(
        "layer_integrated_gradients",
        "LayerIntegratedGradients",
        _layer_integrated_gradients,
        options=_TOKEN_OPTIONS,
        layer=True,
        embedding_layer=True,
        delta=True,
        token_ids=True,
        **_PATH,
    ),
):
    register(_record)
