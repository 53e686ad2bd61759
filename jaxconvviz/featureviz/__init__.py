"""Feature visualization.

Gradient ascent on inputs (filter patterns), whole-network atlases, and the
execution plan they share.
"""

__all__: list[str] = []  # the public names are re-exported by jaxconvviz
