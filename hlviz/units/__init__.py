"""Single units: top-activating patches, unit statistics, feature visualisation."""

from . import featurevis, image_params, patches
from .featurevis import FeatureVis, Objective, channel, direction, diversity, neuron, visualize
from .image_params import (
    Transform,
    compose,
    fourier_image,
    jitter,
    pad,
    pixel_image,
    rotate,
    scale,
    standard_transforms,
)
from .patches import ReceptiveField, TopPatches, UnitStats, receptive_field, top_patches, unit_stats

__all__ = [
    "FeatureVis",
    "Objective",
    "ReceptiveField",
    "TopPatches",
    "Transform",
    "UnitStats",
    "channel",
    "compose",
    "direction",
    "diversity",
    "featurevis",
    "fourier_image",
    "image_params",
    "jitter",
    "neuron",
    "pad",
    "patches",
    "pixel_image",
    "receptive_field",
    "rotate",
    "scale",
    "standard_transforms",
    "top_patches",
    "unit_stats",
    "visualize",
]
