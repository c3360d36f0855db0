"""Shared figures and escaped HTML views."""

from . import figures, html
from .figures import plot_by_layer, plot_cka, plot_feature_maps, plot_images, plot_layer_embeddings
from .html import HTML, diverging_colour, token_heatmap_html

__all__ = [
    "HTML",
    "diverging_colour",
    "figures",
    "html",
    "plot_by_layer",
    "plot_cka",
    "plot_feature_maps",
    "plot_images",
    "plot_layer_embeddings",
    "token_heatmap_html",
]
