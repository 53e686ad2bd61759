"""Views of what a network holds.

Activation grids, kernel grids and weight histograms, image grids, heatmaps.
"""
