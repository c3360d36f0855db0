"""Grad-CAM on any layer with channels and positions: the channel axis comes from the layout.

>>> import torch, torch.nn as nn, hlviz
>>> feat = nn.Sequential(nn.Conv1d(1, 8, 9, stride=4), nn.ReLU())     # (N, C=8, L=98)
>>> model = nn.Sequential(feat, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 2))
>>> a = hlviz.attribute(model, torch.randn(2, 1, 400), target=0, method="grad_cam", layer="0.1")
>>> tuple(a.values.shape)       # a map over the 98 time steps of the ReLU after the conv
(2, 1, 98)

Captum's ``LayerGradCam`` takes the channels on axis 1. Which axis of a 3-D output holds
the channels is read from the tensor the layer returns and the model's conventions
(:func:`hlviz.hooks.outputs.layout`, the same rule ``record(reduce=...)``, ``ablate`` and
``collect`` use): a ReLU after a ``Conv1d`` gives ``(N, C, L)`` like the conv, a linear
layer over tokens ``(N, T, D)``; an output read ``(N, T, D)`` is moved to ``(N, D, T)``
through an identity Captum hooks instead. ``channel_dim=`` overrides it; where the layout
is only a guess (both axes or neither match the layer's width) Grad-CAM asks for it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import LayerShapeError, OptionError
from ..hooks.outputs import Layout, explain, layout, layout_hints, pick, put_back
from .registry import Call

__all__ = ["channel_axis", "grad_cam"]


class _ChannelsFirst(nn.Module):
    """Identity that moves ``dim`` to axis 1: Captum's Grad-CAM hooks this, not the layer."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t.movedim(self.dim, 1)


def _confident(lay: Layout) -> bool:
    """The layout was declared or read from the layer's width (not a type default)."""
    return lay.how.startswith("declared") or "matches" in lay.how


def _no_map(name: str, shape: torch.Size) -> LayerShapeError:
    return LayerShapeError(
        f"layer {name!r} outputs {tuple(shape)}, which has no spatial or time axis for a "
        "Grad-CAM map: choose a convolutional layer (N, C, H, W) or a sequence layer."
    )


def _layout(model: nn.Module, name: str, shape: torch.Size) -> Layout:
    lay = layout(layout_hints(model, [name])[name], torch.empty(shape, device="meta"))
    if lay.kind == "sequence_first":
        raise LayerShapeError(
            f"layer {name!r} is sequence-first (T, N, C) (batch_first=False): Grad-CAM needs the "
            "batch on axis 0. Build the layer with batch_first=True, or attribute another layer."
        )
    return lay


def channel_axis(model: nn.Module, name: str, shape: torch.Size, given: Any = None) -> int:
    """The channel axis of layer ``name``'s output of ``shape`` (batch on axis 0) for
    Grad-CAM: ``given`` (the user's ``channel_dim``) when there is one, else the layout's.

    >>> model = nn.Sequential(nn.Conv1d(1, 16, 5), nn.ReLU(), nn.Linear(4, 16))
    >>> channel_axis(model, "1", torch.Size([1, 16, 47])), channel_axis(model, "2", torch.Size([1, 7, 16]))
    (1, 2)
    """
    nd = len(shape)
    if nd < 3:
        raise _no_map(name, shape)
    lay = _layout(model, name, shape)
    if given is not None:
        if (
            isinstance(given, bool)
            or not isinstance(given, int)
            or not -nd < given < nd
            or given % nd == 0
        ):
            raise OptionError(
                f"channel_dim={given!r} is not an axis of layer {name!r}'s output {tuple(shape)} "
                f"(batch excluded): give 1..{nd - 1} or a negative index."
            )
        return given % nd
    if nd > 3 or lay.kind == "channels_first" or _confident(lay):
        return lay.units
    last = shape[-1]
    raise LayerShapeError(
        f"layer {name!r} outputs {tuple(shape)}: which axis holds its channels cannot be told "
        f"from the tensor ({explain(lay, name)}). Pass channel_dim=1 if its {shape[1]} are the "
        f"channels (a map over the {last} positions) or channel_dim=-1 if its {last} are (a map "
        f"over the {shape[1]} positions), or use layer_integrated_gradients."
    )


def grad_cam(call: Call) -> tuple[torch.Tensor, None]:
    """Captum's ``LayerGradCam`` on ``call``'s layer, with its channels moved to axis 1."""
    from captum.attr import LayerAttribution, LayerGradCam

    prep, module, name, options = call.prep, call.module, call.name, call.options
    shape = call.probed.layer_shape
    dim = channel_axis(prep.forward.model, name, shape, options.get("channel_dim"))
    kwargs = dict(
        target=call.target,
        additional_forward_args=prep.extra_args,
        relu_attributions=options.get("relu", True),
    )
    if dim == 1 and call.probed.layer_is_tensor:
        values = LayerGradCam(prep.forward, module).attribute(prep.main, **kwargs)
    else:
        adapter = _ChannelsFirst(dim)

        def hook(mod, args, out):
            picked = pick(out, None, name)
            return put_back(out, picked.path, adapter(picked.tensor).movedim(1, dim), name)

        hook.__hlviz__ = True  # type: ignore[attr-defined]
        handle = module.register_forward_hook(hook)
        try:
            values = LayerGradCam(prep.forward, adapter).attribute(prep.main, **kwargs)
        finally:
            handle.remove()
    if options.get("upsample", True) and values.dim() == 4 and prep.main.dim() == 4:
        values = LayerAttribution.interpolate(values, tuple(prep.main.shape[2:]), "bilinear")
    return values, None
