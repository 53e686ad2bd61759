"""Matplotlib Figure builders (object API, no pyplot state, never ``show``).

Each takes NumPy arrays (uint8 display images or float maps) and returns a
``matplotlib.figure.Figure``; only the CLI saves them. One submodule per
technique; this package re-exports them.
"""

from jaxconvviz.plotting._activations import (
    plot_activation_grid,
    plot_feature_maps,
    solid_channels,
)
from jaxconvviz.plotting._common import new_figure
from jaxconvviz.plotting._dataset import (
    plot_layer_examples,
    plot_unit_examples,
    plot_unit_lists,
)
from jaxconvviz.plotting._directions import plot_activation_atlas, plot_factorization
from jaxconvviz.plotting._explain import plot_methods, plot_metrics
from jaxconvviz.plotting._filters import plot_atlas, plot_side_by_side
from jaxconvviz.plotting._gradcam import plot_gradcam
from jaxconvviz.plotting._kernels import plot_kernels, plot_weight_histograms

__all__ = [
    "new_figure",
    "plot_activation_atlas",
    "plot_factorization",
    "plot_activation_grid",
    "plot_atlas",
    "plot_feature_maps",
    "plot_gradcam",
    "plot_layer_examples",
    "plot_kernels",
    "plot_methods",
    "plot_metrics",
    "plot_side_by_side",
    "plot_unit_examples",
    "plot_unit_lists",
    "plot_weight_histograms",
    "solid_channels",
]
