"""Feature visualisation: optimise an input image so that a unit, channel or direction fires.

>>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
>>> vis = visualize(model, channel("2", 1), shape=(1, 1, 16, 16), steps=20)
>>> tuple(vis.images.shape), bool(vis.final > vis.start)
((1, 1, 16, 16), True)

In the spirit of Lucent, the pieces compose: an objective (:func:`channel`, :func:`neuron`,
:func:`direction`, :func:`diversity`, combined with ``+``, ``-`` and ``*``), an image
parameterisation (:func:`pixel_image`, or :func:`fourier_image`, which decorrelates
pixels by optimising a 1/f-scaled spectrum) and random transforms applied at every step
(:func:`jitter`, :func:`scale`, :func:`rotate`, :func:`pad`, :func:`compose`), which keep
the image from exploiting single pixels. Unlike Lucent, the activations are read through
:func:`hlviz.edit`, whose hooks are removed when :func:`visualize` returns or raises, the
model's own gradients are left untouched (``torch.autograd.grad`` on the image only) and
its train/eval mode is restored.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OptionError, OptionTypeError, UnitIndexError
from ..hooks.checks import refuse_meta
from ..hooks.editing import edit
from ..hooks.layers import check_module, resolve, unwrap
from ..runtime import model_device
from .image_params import (
    Transform,
    _check_int,
    _check_shape,
    compose,
    fourier_image,
    jitter,
    pad,
    pixel_image,
    rotate,
    scale,
    standard_transforms,
)

__all__ = [
    "FeatureVis",
    "Objective",
    "channel",
    "compose",
    "direction",
    "diversity",
    "fourier_image",
    "jitter",
    "neuron",
    "pad",
    "pixel_image",
    "rotate",
    "scale",
    "standard_transforms",
    "visualize",
]


class Objective:
    """A score of layer activations to maximise; ``a + b``, ``a - b``, ``2 * a``, ``a * b``, ``-a``.

    >>> obj = channel("features.0", 3) - 0.5 * channel("features.0", 4)
    >>> obj.layers, obj.name
    (('features.0',), 'channel(features.0, 3) - 0.5 * channel(features.0, 4)')

    ``fn`` maps ``{layer: activation}`` to one value per image ``(B,)``; calling the
    objective sums them to the scalar that :func:`visualize` raises.
    """

    def __init__(self, fn: Callable[[dict], torch.Tensor], layers: Sequence[str], name: str):
        self.fn, self.layers, self.name = fn, tuple(dict.fromkeys(layers)), name

    def __call__(self, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fn(acts).sum()

    def _combine(self, other: Any, op: Callable, symbol: str) -> Objective:
        if isinstance(other, Objective):
            return Objective(
                lambda acts: op(self.fn(acts), other.fn(acts)),
                self.layers + other.layers,
                f"{self.name} {symbol} {other.name}",
            )
        if isinstance(other, numbers.Real) and not isinstance(other, bool):
            return Objective(
                lambda acts: op(self.fn(acts), other), self.layers, f"{self.name} {symbol} {other}"
            )
        raise OptionTypeError(
            f"an Objective combines with another Objective or a number, not "
            f"{type(other).__name__}; e.g. channel(layer, 3) + 0.1 * diversity(layer)."
        )

    def __add__(self, other: Any) -> Objective:
        return self._combine(other, lambda a, b: a + b, "+")

    def __sub__(self, other: Any) -> Objective:
        return self._combine(other, lambda a, b: a - b, "-")

    def __mul__(self, other: Any) -> Objective:
        return self._combine(other, lambda a, b: a * b, "*")

    def __rmul__(self, other: Any) -> Objective:
        if isinstance(other, numbers.Real) and not isinstance(other, bool):
            return Objective(
                lambda acts: other * self.fn(acts), self.layers, f"{other} * {self.name}"
            )
        return self._combine(other, lambda a, b: b * a, "*")

    __radd__ = __add__

    def __neg__(self) -> Objective:
        return Objective(lambda acts: -self.fn(acts), self.layers, f"-{self.name}")

    def __repr__(self) -> str:
        return f"Objective({self.name})"


def _unit(acts: dict, layer: str, n: int) -> torch.Tensor:
    act = acts[layer]
    if not -act.shape[1] <= n < act.shape[1]:
        raise UnitIndexError(
            f"unit {n} is out of range for {layer!r}, whose output has {act.shape[1]} channels "
            f"(shape {tuple(act.shape)}); use 0..{act.shape[1] - 1}."
        )
    return act[:, n]


def _only(values: torch.Tensor, batch: int | None) -> torch.Tensor:
    """Keep the value of one image of the batch (``batch=i``), zero the others."""
    if batch is None:
        return values
    if not -len(values) <= batch < len(values):
        raise UnitIndexError(
            f"batch={batch} is out of range for a batch of {len(values)} images; "
            f"use 0..{len(values) - 1} or make shape[0] larger."
        )
    mask = torch.zeros_like(values)
    mask[batch] = 1
    return values * mask


def channel(layer: str, n: int, batch: int | None = None) -> Objective:
    """Mean activation of channel ``n`` of ``layer`` over space (``(B, C, H, W)`` or ``(B, C)``).

    >>> channel("features.0", 2).name
    'channel(features.0, 2)'

    ``batch=i`` scores image ``i`` of the batch only, so one call can visualise several
    channels: ``sum(channel(layer, c, batch=i) for i, c in enumerate([3, 7, 9]))``.
    """
    _check_int(n, "channel n")
    where = "" if batch is None else f", batch={batch}"
    return Objective(
        lambda acts: _only(_unit(acts, layer, n).reshape(len(acts[layer]), -1).mean(1), batch),
        [layer],
        f"channel({layer}, {n}{where})",
    )


def neuron(
    layer: str, n: int, x: int | None = None, y: int | None = None, batch: int | None = None
) -> Objective:
    """Activation of channel ``n`` at one position ``(y, x)`` (the centre by default).

    >>> neuron("features.0", 2, x=3, y=4).name
    'neuron(features.0, 2, y=4, x=3)'
    """
    _check_int(n, "neuron n")

    def fn(acts):
        act = _unit(acts, layer, n)
        if act.dim() != 3:
            raise OptionError(
                f"neuron() needs a spatial layer (B, C, H, W); {layer!r} gives "
                f"{tuple(acts[layer].shape)}: use channel({layer!r}, {n}) instead."
            )
        row = act.shape[1] // 2 if y is None else y
        col = act.shape[2] // 2 if x is None else x
        if not (0 <= row < act.shape[1] and 0 <= col < act.shape[2]):
            raise UnitIndexError(
                f"position (y={row}, x={col}) is outside {layer!r}'s {act.shape[1]}x{act.shape[2]} map."
            )
        return _only(act[:, row, col], batch)

    where = "" if x is None and y is None else f", y={y}, x={x}"
    where += "" if batch is None else f", batch={batch}"
    return Objective(fn, [layer], f"neuron({layer}, {n}{where})")


def direction(layer: str, vector: torch.Tensor | Sequence[float]) -> Objective:
    """Projection of the activation on a unit ``vector`` in channel space, averaged over space.

    >>> direction("features.0", [1.0, 0.0, -1.0]).name
    'direction(features.0, 3-d)'

    Use it for directions found elsewhere: a probe's weights, a TCAV concept vector.
    """
    vec = torch.as_tensor(vector, dtype=torch.float32).flatten()
    if vec.norm() == 0:
        raise OptionError("direction vector is all zeros; give a non-zero vector (C,).")
    vec = vec / vec.norm()

    def fn(acts):
        act = acts[layer]
        if act.shape[1] != len(vec):
            raise OptionError(
                f"direction has {len(vec)} entries but {layer!r} has {act.shape[1]} channels; "
                "give one weight per channel."
            )
        flat = act.reshape(len(act), act.shape[1], -1)
        return torch.einsum("bcp,c->bp", flat, vec.to(act)).mean(1)

    return Objective(fn, [layer], f"direction({layer}, {len(vec)}-d)")


def diversity(layer: str) -> Objective:
    """Minus the mean cosine similarity between the Gram matrices of the images of a batch.

    >>> diversity("features.0").name
    'diversity(features.0)'

    Add it (with a weight) to make the images of a batch differ in style:
    ``channel(layer, 3) + 0.5 * diversity(layer)`` with ``shape=(4, 1, 28, 28)``.
    """

    def fn(acts):
        act = acts[layer]
        b = len(act)
        if b < 2:
            raise OptionError(
                "diversity compares the images of a batch: use a batch of at least 2, "
                f"e.g. shape=(4, 1, 28, 28); got a batch of {b}."
            )
        flat = act.reshape(b, act.shape[1], -1)
        gram = F.normalize(torch.bmm(flat, flat.transpose(1, 2)).reshape(b, -1), dim=1)
        sim = gram @ gram.T
        off = (sim.sum(1) - sim.diagonal()) / (b - 1)
        return -off

    return Objective(fn, [layer], f"diversity({layer})")


@dataclass(frozen=True, eq=False)
class FeatureVis:
    """Images optimised for an objective: ``images (B, C, H, W)`` in ``[0, 1]``.

    ``start`` and ``final`` are the objective on the untransformed image before and after
    optimisation; ``history`` the objective (on the transformed image) at every step.
    """

    objective: str
    images: torch.Tensor
    history: np.ndarray
    start: float
    final: float

    def summary(self) -> dict[str, Any]:
        """Objective, batch, start and final values as a dict (rounded)."""
        return {
            "objective": self.objective,
            "images": len(self.images),
            "start": round(self.start, 3),
            "final": round(self.final, 3),
            "steps": len(self.history),
        }

    def plot(self, ax=None, *, cmap: str = "gray_r", title: str | None = None):
        """Show the first image (grey or colour) on ``ax``; returns the ``Axes``."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(2, 2))
        image = self.images[0].float()
        image = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)
        ax.imshow(image.numpy(), cmap=cmap, vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(self.objective if title is None else title, fontsize=8)
        return ax


def visualize(
    model: nn.Module,
    objective: Objective,
    *,
    param: nn.Module | None = None,
    shape: Sequence[int] = (1, 1, 28, 28),
    transforms: Transform | str | None = "standard",
    steps: int = 128,
    lr: float = 0.01,
    seed: int = 0,
) -> FeatureVis:
    """Raise ``objective`` by gradient ascent on an image; returns a :class:`FeatureVis`.

    Example::

        vis = visualize(model, channel("features.block3.conv", 5), steps=128)
        vis.plot()

    ``param`` is the image parameterisation (default ``fourier_image(shape)``);
    ``transforms`` are applied before each forward pass (``"standard"`` for
    :func:`standard_transforms` of the image size, ``None`` for none). Adam with
    learning rate ``lr`` for ``steps`` steps; ``seed`` fixes the transforms' randomness.
    The model runs in eval mode (restored afterwards), its gradients are not touched, and
    the hooks are gone when this returns or raises.
    """
    check_module(model)
    if not isinstance(objective, Objective):
        raise OptionTypeError(
            f"objective must be an hlviz.units.featurevis.Objective (channel(...), neuron(...), ...), "
            f"got {type(objective).__name__}."
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise OptionError(f"steps must be a positive int, got {steps!r}.")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 0 < lr < math.inf:
        raise OptionError(f"lr must be a positive finite number (Adam's step size), got {lr!r}.")
    names = {layer: resolve(unwrap(model), layer) for layer in objective.layers}
    for layer, found in names.items():
        if len(found) != 1:
            raise OptionError(f"objective layer {layer!r} selects {len(found)} layers; name one.")
    refuse_meta(model, "visualize")
    device = model_device(model)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    if param is None:
        param = fourier_image(shape, seed=seed)
    param = param.to(device)
    if transforms == "standard":
        transforms = standard_transforms(_check_shape(tuple(param().shape))[-1])
    elif transforms is not None and not callable(transforms):
        raise OptionTypeError(
            f"transforms must be 'standard', None or a callable, got {transforms!r}."
        )
    generator = torch.Generator().manual_seed(seed)
    tensors = [p for p in param.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(tensors, lr=lr)
    acts: dict[str, torch.Tensor] = {}

    def capture(output: torch.Tensor, layer: str) -> None:
        acts[layer] = output

    captures = {layer: capture for layer in {found[0] for found in names.values()}}
    aliases = {layer: found[0] for layer, found in names.items()}
    was_training = model.training
    history = []

    def score(image: torch.Tensor) -> torch.Tensor:
        acts.clear()
        model(image.to(dtype))
        return objective({layer: acts[aliases[layer]] for layer in objective.layers})

    try:
        model.eval()
        with edit(model, captures):
            with torch.no_grad():
                start = float(score(param()))
            for _ in range(steps):
                image = param()
                if transforms is not None:
                    image = transforms(image, generator)
                value = score(image)
                grads = torch.autograd.grad(-value, tensors)
                for tensor, grad in zip(tensors, grads):
                    tensor.grad = grad
                optimizer.step()
                history.append(value.item())
            with torch.no_grad():
                final_image = param().detach()
                final = float(score(final_image))
    finally:
        acts.clear()
        model.train(was_training)
    return FeatureVis(
        objective=objective.name,
        images=final_image.cpu(),
        history=np.asarray(history),
        start=start,
        final=final,
    )
