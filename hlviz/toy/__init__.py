"""Toy problems in the plane: data, small MLPs, linear regions and their figures."""

from . import data, plots
from .data import (
    DATASETS,
    Extent,
    LinearRegions,
    PlaneGrid,
    PlaneMaps,
    ToyData,
    fit_mlp,
    linear_regions,
    make_toy,
    plane_activations,
    plane_grid,
    regions_on_line,
)
from .plots import (
    plot_data,
    plot_decision,
    plot_layer,
    plot_layer_movement,
    plot_regions,
    plot_sweep,
    plot_unit_maps,
)

__all__ = [
    "DATASETS",
    "Extent",
    "LinearRegions",
    "PlaneGrid",
    "PlaneMaps",
    "ToyData",
    "data",
    "fit_mlp",
    "linear_regions",
    "make_toy",
    "plane_activations",
    "plane_grid",
    "plot_data",
    "plot_decision",
    "plot_layer",
    "plot_layer_movement",
    "plot_regions",
    "plot_sweep",
    "plot_unit_maps",
    "plots",
    "regions_on_line",
]
