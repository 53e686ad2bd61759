"""Views of what a network holds.

Activation grids, kernel grids and weight histograms, image grids, heatmaps.
"""

__all__: list[str] = []  # the public names are re-exported by jaxconvviz
