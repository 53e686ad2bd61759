"""Feature visualization.

Public: :func:`~jaxconvviz.render`, :func:`~jaxconvviz.filter_patterns`,
:func:`~jaxconvviz.filter_atlas` (one request path, :mod:`.render` and
:mod:`.atlas`), the styles :class:`~jaxconvviz.Book` and
:class:`~jaxconvviz.Lucid` (:mod:`.styles`), :mod:`.objectives`,
:mod:`.transforms`, :mod:`.param`, :mod:`.progress`, and the planning
surface :func:`~jaxconvviz.atlas_plan` and
:func:`~jaxconvviz.featureviz.atlas.estimate_seconds`.

Private (no other package imports them): ``_engine`` (the one validation,
planning and chunk/progress loop), ``_plan`` (checks, memory, devices, the
CPU time model) and ``_programs`` (the compiled programs).
"""

__all__: list[str] = []  # the public names are re-exported by jaxconvviz
