"""Feature visualizations of filters of one layer: :func:`render` (lucid's
style by default) and :func:`~jaxconvviz.filter_patterns` (the book's).

Both are one request path (:mod:`jaxconvviz.featureviz._engine`, shared with
:func:`~jaxconvviz.filter_atlas`): the same style gives the same images,
whichever entry point runs it. What is optimised is the ``style``
(:class:`~jaxconvviz.featureviz.styles.Book` or
:class:`~jaxconvviz.featureviz.styles.Lucid`) and ``objective``; how it runs
is a :class:`~jaxconvviz.Run` (batch size, memory budget, devices, dtype,
progress) and the model's backend choices.

Imports jax and numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from jaxconvviz._types import Params, PRNGKey
from jaxconvviz.featureviz import _engine
from jaxconvviz.featureviz.objectives import Objective
from jaxconvviz.featureviz.styles import BOOK, LUCID, Book, Lucid
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.run import Run


def _entry_point(name: str, default_style, doc: str):
    """A one-layer entry point: the one request path with ``default_style``."""

    def entry(
        params: Params,
        layer: str,
        filter_indices,
        *,
        key: PRNGKey | None = None,
        style: Book | Lucid = default_style,
        size: int | None = None,
        steps: int | None = None,
        objective: Objective | None = None,
        model: ConvNet | None = None,
        thresholds: Sequence[int] | None = None,
        init=None,
        run: Run | None = None,
    ) -> jax.Array:
        req = _engine.prepare(
            params, lambda m: _engine.select_one(m, layer, filter_indices),
            key=key, style=style, size=size, steps=steps, objective=objective,
            model=model, run=run, thresholds=thresholds, init=init,
            desc=f"{name} {layer}")
        return _engine.execute(params, req, to_host=False)[0]

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = doc
    return entry


_RENDER_DOC = """Feature visualizations of filters of ``layer`` (lucid's style).

    Every filter of the request is optimised in one compiled program per
    chunk (chunked and sharded as :func:`~jaxconvviz.filter_atlas`).

    Args:
      params: ``{layer_name: {"kernel", "bias"}}`` weights.
      layer: a spatial layer (``model.spatial_layers``); required.
      filter_indices: 1-D ints, channels of ``layer``; a repeated index gives
        several images of that filter (lucid: with different keys).
      key: PRNG key drawing the start images (and lucid's transforms); may
        be None only when ``init`` gives the start images. Filter ``k``
        starts from ``fold_in(key, k)`` whatever else is requested.
      style: :class:`~jaxconvviz.Lucid` (default) or
        :class:`~jaxconvviz.Book`: parameterization, transforms, optimizer,
        pre/post-activation, default objective, steps and size.
      size: side of the square images in pixels; None: ``style.size``.
      steps: optimisation steps; None: ``style.steps``.
      objective: None: ``style.objective`` (default: the mean of each
        filter's channel of ``layer``); otherwise an objective of
        :mod:`jaxconvviz.featureviz.objectives` (``channel=None`` there
        means each image's filter).
      model: the network; None infers the VGG16 preset from ``params``.
      thresholds: steps after which to keep a snapshot; the result then has
        a leading axis ``len(thresholds)``.
      init: Book style only: start images ``(f, size, size, c)`` in the
        domain being optimised, instead of the key's.
      run: execution options (:class:`~jaxconvviz.Run`); None: defaults.

    Returns:
      float32 ``(n_filters, size, size, c)`` on the first device, in the
      style's pixel domain (``style.domain(model)``): RGB [0, 255] for
      Lucid and ``Book(preprocess=True)``, the model's input domain (VGG16:
      caffe BGR) for ``Book()``; ``style.to_rgb(images, model)`` gives
      display RGB [0, 255]. With ``thresholds``: ``(len(thresholds),
      n_filters, ...)``. Book style: filters whose images never moved are
      reported (:class:`~jaxconvviz.DeadFilterWarning`).

    Raises:
      ValueError: bad layer, filters, style, size, steps, key, objective,
        thresholds, init or run option, or a size whose memory estimate
        exceeds the budget. All before any compute.
    """

_PATTERNS_DOC = """Input patterns that maximise filters of ``layer``: :func:`render` in
    the book's configuration (``style=Book()``, DLwP listings 5.32-5.38).

    For each filter ``k``: start from ``uniform(0, 1) * 20 + 128`` (drawn from
    ``jax.random.fold_in(key, k)``), then ``steps`` times
    ``x += step_size * g / (sqrt(mean(g**2)) + 1e-5)`` where ``g`` is the
    gradient of the mean of channel ``k`` of ``layer`` with respect to
    ``x``, per image. :class:`~jaxconvviz.Book`'s defaults are the book's
    (40 steps of size 1, 150 px, the network input optimised) except the
    objective: it reads the response *before* the layer's ReLU
    (``pre_activation=True``); the book's is ``Book(pre_activation=False)``.

    Arguments, result and errors as :func:`render` (its pixel domain: the
    book's raw optimised tensors, in the model's input domain unless
    ``Book(preprocess=True)``; display them with
    :func:`~jaxconvviz.atlas_grid` or ``style.to_rgb``).
    """

render = _entry_point("render", LUCID, _RENDER_DOC)
filter_patterns = _entry_point("filter_patterns", BOOK, _PATTERNS_DOC)


__all__ = ["render", "filter_patterns"]
