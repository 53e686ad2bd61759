"""Feature visualization.

One rendering engine (:mod:`~jaxconvviz.featureviz.render`: what to optimise
as a hashable spec, in the book's style or lucid's), its objectives,
parameterization and transforms, and the execution layer it shares with
filter patterns and whole-network atlases
(:mod:`~jaxconvviz.featureviz.execution`: chunks, devices, memory, progress).
"""

__all__: list[str] = []  # the public names are re-exported by jaxconvviz
