"""Matplotlib Figure builders (object API, no pyplot state, never ``show``).

Each takes NumPy arrays (uint8 display images or float maps) and returns a
``matplotlib.figure.Figure``; only the CLI saves them. One submodule per
technique; this package re-exports them.
"""

from jaxconvviz.plotting._activations import plot_activation_grid, plot_feature_maps  # noqa: E402, F401
from jaxconvviz.plotting._common import new_figure

# -- each technique's submodule adds its re-export line below --
from jaxconvviz.plotting._filters import plot_atlas, plot_side_by_side  # noqa: E402, F401
from jaxconvviz.plotting._explain import plot_methods, plot_metrics  # noqa: E402, F401
from jaxconvviz.plotting._gradcam import plot_gradcam  # noqa: E402
from jaxconvviz.plotting._kernels import plot_kernels, plot_weight_histograms  # noqa: E402, F401
