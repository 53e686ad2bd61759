"""Filter atlases at scale: every filter of many layers, chunked, sharded.

:func:`filter_atlas` runs the one request path of
:func:`~jaxconvviz.render` and :func:`~jaxconvviz.filter_patterns`
(:mod:`jaxconvviz.featureviz._engine`) for every requested filter of every
requested layer:

* **Chunks from a memory budget.** Each layer's filters are cut into equal
  chunks from an analytic per-filter memory estimate and a per-device
  budget (``Run.memory_budget``, or derived from the device's free memory).
  Every chunk of a layer has one compiled shape; the last one is padded and
  the padding dropped. On XLA:CPU a chunk is also capped per device (1
  filter for layers with large feature maps, up to 16 for deep layers).
* **Sharded over devices.** The filter axis of every chunk is split over a
  1-D :class:`jax.sharding.Mesh` of ``Run.devices`` (default:
  ``jax.devices()``); params are replicated; the step is per image, so the
  program needs no communication.
* **Multi-host.** Under :func:`jax.distributed.initialize`, ``jax.devices()``
  spans every process: each process computes the shards on its own devices,
  and every process returns the full atlas (write files from process 0).

A filter's start image depends only on ``(key, filter index)``, so the atlas
of a layer equals ``filter_patterns(params, layer, indices, key=key,
style=style)`` whatever the chunking, device count or process count (up to
float rounding of differently batched convolutions).

:func:`atlas_plan` and :func:`estimate_seconds` are the planning surface
(what a run would do, without computing).

Imports jax and numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxconvviz._types import Params, PRNGKey
from jaxconvviz.backend.resolve import platform_of
from jaxconvviz.featureviz import _engine
from jaxconvviz.featureviz import _plan as pl
from jaxconvviz.featureviz._plan import LayerPlan
from jaxconvviz.featureviz.objectives import Objective
from jaxconvviz.featureviz.styles import Book, Lucid, check_style
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.vgg import resolve_model
from jaxconvviz.run import Run

#: The atlas's default style: the book's ascent at the atlas's customary
#: 128 px (a whole network's filters; ``filter_patterns`` keeps the book's
#: 150 px).
ATLAS_BOOK = Book(size=128)

def filter_atlas(
    params: Params,
    *,
    layers: Sequence[str] | None = None,
    filters_per_layer: int | Mapping[str, Sequence[int]] | None = None,
    key: PRNGKey | None = None,
    style: Book | Lucid = ATLAS_BOOK,
    size: int | None = None,
    steps: int | None = None,
    objective: Objective | None = None,
    model: ConvNet | None = None,
    run: Run | None = None,
) -> dict[str, np.ndarray]:
    """Feature visualizations of every filter of every requested layer.

    The images of :func:`~jaxconvviz.filter_patterns` / :func:`~jaxconvviz.render`
    (the same style, key and filter give the same image), run layer by layer
    in equal memory-budgeted chunks whose filter axis is sharded over
    ``run.devices`` (and over processes after :func:`jax.distributed.initialize`;
    the smallest budget of all processes is used).

    Args:
      params: ``{layer_name: {"kernel", "bias"}}`` weights.
      layers: spatial layers to render, in order; None: every conv layer of
        the model (VGG16: :data:`~jaxconvviz.CONV_LAYERS`, 4,224 filters).
      filters_per_layer: None (every filter), an int ``n`` (the first ``n``
        filters of each layer, fewer where a layer has fewer), or a dict
        ``{layer: indices}`` (layers it omits get every filter).
      key: PRNG key (required): filter ``k`` of every layer starts from
        ``fold_in(key, k)``, as in :func:`~jaxconvviz.render`.
      style: :class:`~jaxconvviz.Book` (default: ``Book(size=128)``, the
        atlas's customary size) or :class:`~jaxconvviz.Lucid`.
      size, steps, objective: as :func:`~jaxconvviz.render` (None: the
        style's).
      model: the network; None infers the VGG16 preset from ``params``.
      run: execution options (:class:`~jaxconvviz.Run`); ``progress`` counts
        filters over the whole atlas. On XLA:CPU a run estimated over a
        minute warns first (:class:`~jaxconvviz.SlowOnCPUWarning`).

    Returns:
      ``{layer: float32 numpy (n_filters, size, size, c)}`` in layer order,
      in the style's pixel domain (``style.domain(model)``, as
      :func:`~jaxconvviz.render`). Every process receives the full atlas.

    Raises:
      ValueError: unknown layer (lists the valid ones), size too small for a
        layer, bad filter selection, missing key, bad style/objective/run
        option, a size whose memory estimate exceeds the per-device budget or
        whose results exceed the host's memory (the message gives the
        estimate and the limit). All before any compute.
    """
    req = _engine.prepare(
        params, lambda m: _engine.select_many(m, layers, filters_per_layer),
        key=key, style=style, size=size, steps=steps, objective=objective,
        model=model, run=run, desc="atlas")
    outs = _engine.execute(params, req, to_host=True)
    return {p.layer: out for p, out in zip(req.plans, outs, strict=True)}


def atlas_plan(
    params: Params,
    *,
    layers: Sequence[str] | None = None,
    filters_per_layer=None,
    style: Book | Lucid = ATLAS_BOOK,
    size: int | None = None,
    model: ConvNet | None = None,
    run: Run | None = None,
) -> list[LayerPlan]:
    """The chunking :func:`filter_atlas` would use, without computing.

    Arguments as :func:`filter_atlas`. Returns one ``LayerPlan`` per layer,
    in order (``chunk`` filters per call, ``n_chunks`` calls, split over
    ``n_devices``, ``channel_only`` as the backend resolves it).
    """
    run = Run() if run is None else run
    style = check_style(style)
    model = resolve_model(params, model=model)
    fsel = _engine.select_many(model, layers, filters_per_layer)
    size = style.size if size is None else size
    for layer in fsel:
        size = pl.check_size(model, layer, size, margin=style.margin)
    backend = _engine.backend_of(model)
    return _engine.plan_layers(
        model, params, fsel, size + style.margin,
        pl.parse_memory_budget(run.memory_budget),
        pl.check_devices(run.devices, jax.devices, "all of jax.devices()"),
        run.batch_size, auto=run.devices is None,
        channel_only=backend.channel_only, platform=platform_of(backend),
        dtype=jnp.dtype(run.dtype))


def estimate_seconds(model: ConvNet, n_filters: Mapping[str, int], *,
                     style: Book | Lucid = ATLAS_BOOK, size: int | None = None,
                     steps: int | None = None) -> float:
    """Seconds XLA:CPU is estimated to take for ``n_filters[layer]`` filters
    of each layer on one device: the one CPU time model of the library
    (forward multiply-adds times the style's step factor at
    ``CPU_MACS_PER_SECOND``, plus memory-bound elements; the model the
    runs' up-front estimate and :class:`~jaxconvviz.SlowOnCPUWarning` use).
    ``size``/``steps`` None: the style's."""
    style = check_style(style)
    size = (style.size if size is None else size) + style.margin
    steps = style.steps if steps is None else steps
    plans = [LayerPlan(layer, int(n), int(n), 1, 1, 0, 0,
                       pl.resolve_channel_only("auto", model, layer, "cpu"))
             for layer, n in n_filters.items()]
    return pl.estimate_seconds(model, plans, size, steps,
                               step_factor=pl.STEP_FACTOR[style.name])



def lowered_step(params: Params, layer: str, n_filters: int, *,
                 style: Book | Lucid = ATLAS_BOOK, size: int | None = None,
                 model: ConvNet | None = None, run: Run | None = None):
    """One optimisation step of a chunk of ``n_filters`` filters of
    ``layer`` on one device, exactly as the engine compiles it (the style,
    ``run.dtype`` and the model's backend applied), lowered and not run:
    a :class:`jax.stages.Lowered` for cost and memory analysis
    (``.compile().cost_analysis()``, ``.memory_analysis()``)."""
    import jax.numpy as jnp

    from jaxconvviz.featureviz import _programs as pg

    run = Run() if run is None else run
    style = check_style(style)
    model = resolve_model(params, model=model)
    layer = pl.check_layer(model, layer)
    n = pl.check_positive_int(n_filters, "n_filters")
    size = pl.check_size(model, layer, style.size if size is None else size,
                         margin=style.margin)
    backend = _engine.backend_of(model)
    spec = pg.RenderSpec(layer=layer, style=style.replace(size=size), steps=1,
                         objective=style.objective,
                         pre_activation=style.pre_activation)
    only = (False if style.objective is not None else pl.resolve_channel_only(
        backend.channel_only, model, layer, platform_of(backend)))
    compute = spec.model_for(_engine.compute_model(model, backend,
                                                    jnp.dtype(run.dtype)))
    c = int(model.input_shape[2])
    kd, impl = pl.key_parts(jax.random.key(0))
    prog = pg.program(spec, compute, size, c, only, None, impl)
    ids = jax.ShapeDtypeStruct((n,), jnp.int32)
    state = jax.eval_shape(prog.init, kd, ids)
    return prog.step.lower(params, state, ids, np.float32(prog.hyper()),
                           np.int32(0))


__all__ = ["filter_atlas", "atlas_plan", "estimate_seconds", "lowered_step",
           "LayerPlan"]
