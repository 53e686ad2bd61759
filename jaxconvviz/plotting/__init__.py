"""Matplotlib Figure builders (object API, no pyplot state, never ``show``).

Each takes NumPy arrays (uint8 display images or float maps) and returns a
``matplotlib.figure.Figure``; only the CLI saves them. One submodule per
technique; this package re-exports them.
"""

from ._common import new_figure

# -- each technique's submodule adds its re-export line below --
from ._gradcam import plot_gradcam  # noqa: E402
