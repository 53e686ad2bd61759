"""Batched feature visualization of directions (private): every direction
in one :func:`~jaxconvviz.render` call per ``C`` directions (``C`` the
layer's channels), with the :class:`~jaxconvviz.objectives.CosineDirection`
objective.

Direction ``i`` is image row ``i % C`` of table ``i // C`` (the whole table
is one objective constant whichever rows a call requests), and its key is
``fold_in(key, i // C)`` folded with ``i % C`` by the renderer: a
direction's image depends on the key, its table and its own index only,
never on which other directions share the batch.

Imports jax and numpy only.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxconvviz.errors import InputError
from jaxconvviz.featureviz.atlas import estimate_seconds
from jaxconvviz.featureviz.objectives import CosineDirection
from jaxconvviz.featureviz.render import render
from jaxconvviz.featureviz.styles import Lucid

#: The default rendering style of directions (lucid's, 512 steps, 128 px).
DIRECTION_STYLE = Lucid()


def _check_style(style):
    if style is None:
        return DIRECTION_STYLE
    if not isinstance(style, Lucid):
        raise InputError(f"style must be a jcv.Lucid(...) for direction renders; "
                         f"got {style!r:.80}.")
    return style


def render_seconds(model, layer: str, n: int, *, style=DIRECTION_STYLE,
                   size: int | None = None, steps: int | None = None) -> float:
    """XLA:CPU seconds estimated for ``n`` direction renders (the library's
    one CPU time model, :func:`~jaxconvviz.featureviz.atlas.estimate_seconds`)."""
    return estimate_seconds(model, {layer: max(int(n), 1)}, style=_check_style(style),
                            size=size, steps=steps)


def render_directions(params, layer: str, directions, *, key, model, ids=None,
                      style=DIRECTION_STYLE, size: int | None = None,
                      steps: int | None = None, center: bool = True,
                      cossim_pow: float = 4.0, run=None) -> np.ndarray:
    """float32 ``(len(ids), s, s, 3)`` RGB [0, 255]: the rendering of each
    direction ``directions[ids[j]]`` (``directions`` ``(m, C)``; ``ids``
    None: all ``m``)."""
    style = _check_style(style)
    d = np.asarray(directions, np.float32)
    c = model.channels(layer)
    if d.ndim != 2 or d.shape[1] != c or d.shape[0] == 0:
        raise InputError(f"directions must be (m, {c}) for layer {layer!r}; got "
                         f"shape {d.shape}.")
    ids = np.arange(d.shape[0]) if ids is None else np.asarray(ids, np.int64)
    out: dict[int, np.ndarray] = {}
    for g in sorted(set((ids // c).tolist())):
        table = d[g * c:(g + 1) * c]
        rows = ids[ids // c == g]
        obj = CosineDirection(layer, tuple(map(tuple, table.tolist())),
                              cossim_pow=cossim_pow, center=center)
        kg = key if g == 0 else jax.random.fold_in(key, g)
        imgs = render(params, layer, (rows % c).astype(int).tolist(), key=kg,
                      style=style, size=size, steps=steps, objective=obj,
                      model=model, run=run)
        imgs = np.asarray(imgs, np.float32)
        for i, im in zip(rows.tolist(), imgs, strict=True):
            out[i] = im
    return np.stack([out[i] for i in ids.tolist()])
