"""Shared figure helpers."""

from __future__ import annotations

from matplotlib.figure import Figure


def new_figure(width_px: int, height_px: int, *, dpi: int = 100) -> Figure:
    """A pyplot-free Figure sized in pixels."""
    return Figure(figsize=(max(width_px, 1) / dpi, max(height_px, 1) / dpi), dpi=dpi)
