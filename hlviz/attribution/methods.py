"""Method by method: the Captum call behind :func:`hlviz.attribute`, and its baselines.

>>> sorted(METHODS)[:3]
['grad_cam', 'input_x_gradient', 'integrated_gradients']

Internal: :mod:`hlviz.attribution` checks the arguments and calls :func:`run`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import BaselineError, HlvizWarning, LayerShapeError, OptionError
from ..hooks.outputs import layout_hint, pick, put_back
from . import forward as af

__all__ = ["METHODS", "baseline_for", "run"]

# method -> its own options (every method also takes input_key=)
METHODS: dict[str, tuple[str, ...]] = {
    "saliency": ("abs",),
    "input_x_gradient": (),
    "integrated_gradients": (),
    "smoothgrad": ("nt_samples", "stdevs", "abs"),
    "occlusion": ("window", "strides"),
    "grad_cam": ("channel_dim", "relu", "upsample"),
    "layer_conductance": (),
    "neuron_conductance": ("neuron",),
    "layer_integrated_gradients": ("pad_id", "special_ids", "tokenizer", "tokens"),
}
_LAYER_METHODS = (
    "grad_cam",
    "layer_conductance",
    "neuron_conductance",
    "layer_integrated_gradients",
)
_BASELINE_METHODS = (
    "integrated_gradients",
    "occlusion",
    "layer_conductance",
    "neuron_conductance",
    "layer_integrated_gradients",
)
_DELTA_METHODS = ("integrated_gradients", "layer_conductance", "layer_integrated_gradients")
_TOKEN_OK = ("grad_cam", "layer_integrated_gradients")


def baseline_for(model, main, baseline, method, options) -> torch.Tensor | float | int:
    if method not in _BASELINE_METHODS:
        if baseline is not None:
            raise OptionError(f"method {method!r} uses no baseline; drop baseline={baseline!r}.")
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
    if method == "occlusion" and baseline is None:
        return 0  # Captum's own default, a scalar
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


class _ChannelsFirst(nn.Module):
    """Identity that moves ``dim`` to axis 1: Captum's Grad-CAM hooks this, not the layer."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t.movedim(self.dim, 1)


def _grad_cam(prep, module, name, probed, target, options):
    from captum.attr import LayerAttribution, LayerGradCam

    shape = probed.layer_shape
    nd = len(shape)
    if nd == 3 and not layout_hint(module).batch_first:
        raise LayerShapeError(
            f"layer {name!r} is sequence-first (T, N, C) (batch_first=False): Grad-CAM needs the "
            "batch on axis 0. Build the layer with batch_first=True, or attribute another layer."
        )
    channel_dim = options.get("channel_dim")
    if channel_dim is None:
        if nd == 3 and not layout_hint(module).channels_first:
            raise LayerShapeError(
                f"layer {name!r} outputs {tuple(shape)}, a sequence (N, T, C): Grad-CAM would "
                f"treat its {shape[1]} positions as channels. Pass channel_dim=-1 to use the last "
                "axis as channels (positions become the map), or use layer_integrated_gradients."
            )
        channel_dim = 1
    if nd < 3:
        raise LayerShapeError(
            f"layer {name!r} outputs {tuple(shape)}, which has no spatial or time axis for a "
            "Grad-CAM map: choose a convolutional layer (N, C, H, W) or a sequence layer."
        )
    if (
        isinstance(channel_dim, bool)
        or not isinstance(channel_dim, int)
        or not -nd < channel_dim < nd
        or channel_dim % nd == 0
    ):
        raise OptionError(
            f"channel_dim={channel_dim!r} is not an axis of layer {name!r}'s output {tuple(shape)} "
            f"(batch excluded): give 1..{nd - 1} or a negative index."
        )
    channel_dim %= nd
    relu = options.get("relu", True)
    kwargs = dict(target=target, additional_forward_args=prep.extra_args, relu_attributions=relu)
    with af.rnn_safe(prep.forward):
        if channel_dim == 1 and probed.layer_is_tensor:
            values = LayerGradCam(prep.forward, module).attribute(prep.main, **kwargs)
        else:
            adapter = _ChannelsFirst(channel_dim)

            def hook(mod, args, out):
                picked = pick(out, None, name)
                return put_back(
                    out, picked.path, adapter(picked.tensor).movedim(1, channel_dim), name
                )

            hook.__hlviz__ = True  # type: ignore[attr-defined]
            handle = module.register_forward_hook(hook)
            try:
                values = LayerGradCam(prep.forward, adapter).attribute(prep.main, **kwargs)
            finally:
                handle.remove()
    if options.get("upsample", True) and values.dim() == 4 and prep.main.dim() == 4:
        values = LayerAttribution.interpolate(values, tuple(prep.main.shape[2:]), "bilinear")
    return values


def run(method, prep, module, name, probed, target, base, n_steps, ibs, options):
    """The Captum call: ``(values, delta or None)``."""
    import captum.attr as ca

    fwd, main, extra = prep.forward, prep.main, prep.extra_args
    if method in ("saliency", "input_x_gradient"):
        main = main.detach().requires_grad_(True)  # what Captum would do, without its warning
    common = dict(target=target, additional_forward_args=extra)
    path = dict(baselines=base, n_steps=n_steps, internal_batch_size=ibs)
    if method == "grad_cam":
        return _grad_cam(prep, module, name, probed, target, options), None
    with af.rnn_safe(fwd):
        if method == "saliency":
            return ca.Saliency(fwd).attribute(main, abs=options.get("abs", True), **common), None
        if method == "input_x_gradient":
            return ca.InputXGradient(fwd).attribute(main, **common), None
        if method == "integrated_gradients":
            return ca.IntegratedGradients(fwd).attribute(
                main, **common, **path, return_convergence_delta=True
            )
        if method == "smoothgrad":
            stdevs = options.get("stdevs", float(0.15 * (main.max() - main.min())))
            samples = options.get("nt_samples", 10)
            per = None if ibs is None else max(1, ibs // len(main))
            return ca.NoiseTunnel(ca.Saliency(fwd)).attribute(
                main,
                nt_type="smoothgrad",
                nt_samples=samples,
                nt_samples_batch_size=per,
                stdevs=stdevs,
                abs=options.get("abs", True),
                **common,
            ), None
        if method == "occlusion":
            window = options.get("window") or (
                (main.shape[1], *(max(1, s // 8) for s in main.shape[2:]))
                if main.dim() > 2
                else (1,)
            )
            return ca.Occlusion(fwd).attribute(
                main,
                sliding_window_shapes=tuple(window),
                strides=options.get("strides"),
                baselines=base,
                **common,
            ), None
        if method == "layer_conductance":
            return ca.LayerConductance(fwd, module).attribute(
                main, **common, **path, return_convergence_delta=True
            )
        if method == "neuron_conductance":
            neuron = _neuron(options.get("neuron"), probed.layer_shape, name)
            return ca.NeuronConductance(fwd, module).attribute(
                main, neuron_selector=neuron, **common, **path
            ), None
        return ca.LayerIntegratedGradients(fwd, module).attribute(
            main, **common, **path, return_convergence_delta=True
        )


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
