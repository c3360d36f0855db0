"""Image parameterisations and random transforms for :mod:`hlviz.units.featurevis` (Lucent-style).

>>> from hlviz.units.featurevis import fourier_image, jitter
>>> image = fourier_image((1, 1, 28, 28))()
>>> tuple(jitter(2)(image, torch.Generator()).shape)
(1, 1, 26, 26)

A parameterisation is a module whose ``forward()`` returns the image ``(B, C, H, W)`` in
``(0, 1)``; a transform is a function ``(image, generator) -> image`` whose randomness
comes from the generator, so a seed reproduces a whole optimisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OptionError, OptionTypeError

__all__ = [
    "Transform",
    "compose",
    "fourier_image",
    "jitter",
    "pad",
    "pixel_image",
    "rotate",
    "scale",
    "standard_transforms",
]


def _check_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionTypeError(f"{name} must be an int, got {value!r}.")


# --- image parameterisations: modules whose forward() returns the image (B, C, H, W) in (0, 1)


#: most values (batch x channels x height x width) an optimised image may hold
MAX_PIXELS = 2**26


def _check_shape(shape: Any) -> tuple[int, int, int, int]:
    if (
        not isinstance(shape, (tuple, list))
        or len(shape) != 4
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
    ):
        raise OptionError(f"shape must be (batch, channels, height, width) ints, got {shape!r}.")
    if math.prod(shape) > MAX_PIXELS:
        raise OptionError(
            f"shape {tuple(shape)} asks for {math.prod(shape):,} pixel values, more than the "
            f"{MAX_PIXELS:,} an image to optimise may hold; give the model's input size "
            "(e.g. (1, 3, 224, 224))."
        )
    return tuple(shape)


class _Pixel(nn.Module):
    def __init__(self, shape, sd, generator):
        super().__init__()
        self.raw = nn.Parameter(torch.randn(shape, generator=generator) * sd)

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.raw)


def pixel_image(shape: Sequence[int], *, sd: float = 0.01, seed: int = 0) -> nn.Module:
    """Optimise pixels directly (through a sigmoid); ``pixel_image(shape)()`` is ``(B, C, H, W)``.

    >>> pixel_image((1, 1, 8, 8))().shape
    torch.Size([1, 1, 8, 8])
    """
    return _Pixel(_check_shape(shape), sd, torch.Generator().manual_seed(seed))


# colour decorrelation of Lucent/Lucid (square root of ImageNet's colour covariance)
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


class _Fourier(nn.Module):
    def __init__(self, shape, sd, decay_power, generator):
        super().__init__()
        b, c, h, w = shape
        self.size = (h, w)
        fy = torch.fft.fftfreq(h)[:, None]
        fx = torch.fft.rfftfreq(w)[None, :]
        freqs = torch.sqrt(fx**2 + fy**2)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay_power
        self.register_buffer("scale", scale * math.sqrt(h * w))
        self.spectrum = nn.Parameter(torch.randn(b, c, h, w // 2 + 1, 2, generator=generator) * sd)
        self.channels = c

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        image = torch.fft.irfft2(spectrum, s=self.size, norm="ortho") / 4.0
        if self.channels == 3:
            flat = _COLOR_SQRT.to(image) / _COLOR_SQRT.norm(dim=0).max()
            image = torch.einsum("bchw,dc->bdhw", image, flat)
        return torch.sigmoid(image)


def fourier_image(
    shape: Sequence[int], *, sd: float = 0.01, decay_power: float = 1.0, seed: int = 0
) -> nn.Module:
    """Optimise a spectrum scaled by ``1/f**decay_power``: a decorrelated image parameterisation.

    >>> fourier_image((2, 1, 28, 28))().shape
    torch.Size([2, 1, 28, 28])

    Each step of gradient ascent then moves all frequencies at a comparable pace, instead of
    the high frequencies dominating as they do for raw pixels; 3-channel images are also
    decorrelated across colours (Lucid's ImageNet colour matrix).
    """
    if not decay_power >= 0:
        raise OptionError(f"decay_power must be >= 0, got {decay_power!r}; 1.0 is the usual 1/f.")
    return _Fourier(_check_shape(shape), sd, decay_power, torch.Generator().manual_seed(seed))


# --- transforms: (image, generator) -> image, random but reproducible from the seed

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _choice(options: Sequence[float], generator: torch.Generator) -> float:
    return float(options[int(torch.randint(len(options), (1,), generator=generator))])


def pad(width: int, value: float = 0.0) -> Transform:
    """Pad by ``width`` pixels of ``value`` (so jitter and rotation do not wrap content in)."""
    _check_int(width, "pad width")
    return lambda image, generator: F.pad(image, (width,) * 4, value=value)


def jitter(d: int) -> Transform:
    """Crop at a random offset of up to ``d`` pixels (the image shrinks by ``d``)."""
    _check_int(d, "jitter d")
    if d < 1:
        raise OptionError(f"jitter needs d >= 1 pixels, got {d}.")

    def fn(image, generator):
        dy, dx = (int(v) for v in torch.randint(d + 1, (2,), generator=generator))
        h, w = image.shape[-2:]
        return image[..., dy : dy + h - d, dx : dx + w - d]

    return fn


def scale(factors: Sequence[float]) -> Transform:
    """Resize by a factor drawn from ``factors`` (bilinear)."""
    factors = list(factors)
    if not factors or min(factors) <= 0:
        raise OptionError(f"scale factors must be positive numbers, got {factors!r}.")

    def fn(image, generator):
        f = _choice(factors, generator)
        h, w = image.shape[-2:]
        size = (max(1, round(h * f)), max(1, round(w * f)))
        return F.interpolate(image, size=size, mode="bilinear", align_corners=False)

    return fn


def rotate(angles: Sequence[float]) -> Transform:
    """Rotate by an angle in degrees drawn from ``angles`` (bilinear, zeros outside)."""
    angles = list(angles)
    if not angles:
        raise OptionError("rotate needs at least one angle in degrees, e.g. range(-10, 11).")

    def fn(image, generator):
        theta = math.radians(_choice(angles, generator))
        c, s = math.cos(theta), math.sin(theta)
        matrix = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=image.dtype, device=image.device)
        grid = F.affine_grid(
            matrix.expand(len(image), 2, 3), list(image.shape), align_corners=False
        )
        return F.grid_sample(image, grid, align_corners=False)

    return fn


def compose(*transforms: Transform) -> Transform:
    """Apply ``transforms`` in order."""
    for t in transforms:
        if not callable(t):
            raise OptionTypeError(f"compose takes transforms (callables), got {type(t).__name__}.")

    def fn(image, generator):
        for t in transforms:
            image = t(image, generator)
        return image

    return fn


def standard_transforms(size: int = 28) -> Transform:
    """Lucent's standard robustness transforms, scaled to an image of ``size`` pixels.

    >>> standard_transforms(28)(torch.rand(1, 1, 28, 28), torch.Generator()).dim()
    4
    """
    k = max(1, round(size / 28))
    return compose(
        pad(2 * k),
        jitter(2 * k),
        scale([1 + (i - 5) / 50 for i in range(11)]),
        rotate(list(range(-10, 11)) + 5 * [0]),
        jitter(k),
    )
