"""Filter atlases at scale: every filter of many layers, chunked, sharded.

:func:`filter_atlas` runs the rendering engine
(:mod:`jaxconvviz.featureviz.render`) -- the book's gradient ascent (the
same step as :func:`~jaxconvviz.filter_patterns`) or lucid's style
(``style="lucid"``, as :func:`~jaxconvviz.render`) -- for every requested
filter of every requested layer, through the one chunk runner of
:mod:`jaxconvviz.featureviz.execution`:

* **Chunks from a memory budget.** Each layer's filters are cut into equal
  chunks whose size comes from an analytic per-filter memory estimate
  (:func:`filter_memory_bytes`) and a per-device budget, given or derived
  from the device's free memory (:func:`device_memory_budget`). Every chunk
  of a layer has one compiled shape; the last one is padded and the padding
  dropped. On XLA:CPU the chunk is also capped at the measured speed optimum
  per device (:func:`jaxconvviz.featureviz.execution.default_batch_size`: 1 filter for
  layers with large feature maps, up to 16 for deep layers).
* **Sharded over devices.** The filter axis of every chunk is split over a
  1-D :class:`jax.sharding.Mesh` of ``devices`` (default: ``jax.devices()``)
  with :class:`~jax.sharding.NamedSharding`; params are replicated. The
  step is per image, so the partitioned program needs no communication.
* **Multi-host.** Under :func:`jax.distributed.initialize`, ``jax.devices()``
  spans every process: each process computes the shards on its own devices
  (its share of the filters), and the chunk is gathered with
  :func:`jax.experimental.multihost_utils.process_allgather`, so every
  process returns the full atlas (write files from process 0 only).

A filter's start image depends only on ``(key, filter index)``, so the atlas
of a layer equals ``filter_patterns(params, layer, indices, key=key, ...)``
whatever the chunking, device count or process count (up to float rounding
of differently batched convolutions).

Imports jax and numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxconvviz._types import Params, PRNGKey
from jaxconvviz.errors import InputError
from jaxconvviz.featureviz import execution as ex
from jaxconvviz.featureviz.execution import (  # noqa: F401 - public re-exports
    ACCELERATOR_MEMORY_FRACTION,
    ACTIVATION_FACTOR,
    CPU_MEMORY_FRACTION,
    MESH_AXIS,
    PARAM_FACTOR,
    LayerPlan,
    device_memory_budget,
    filter_memory_bytes,
    parse_memory_budget,
    plan_chunks,
)
from jaxconvviz.featureviz.render import (
    STYLES,
    RenderSpec,
    check_style,
    dead_hint,
    make_style,
    run_spec,
    warn_unmoved,
)
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.vgg import resolve_model


# ---------------------------------------------------------------- validation
def _check_devices(devices) -> tuple:
    return ex.check_devices(devices, jax.devices, "all of jax.devices()")


def _check_layers(model: ConvNet, layers) -> tuple[str, ...]:
    if layers is None:
        return model.conv_layers
    if isinstance(layers, str):
        layers = (layers,)
    try:
        out = tuple(layers)
    except TypeError:
        out = ()
    if not out:
        raise InputError(
            f"layers must be None (every conv layer) or a non-empty sequence of "
            f"layer names; got {layers!r:.80}."
        )
    for name in out:
        model.check_layer(name, model.spatial_layers, name="layers")
    return tuple(dict.fromkeys(out))


def _filters_for(model: ConvNet, layers, filters_per_layer) -> dict[str, np.ndarray]:
    out = {}
    if filters_per_layer is None or isinstance(filters_per_layer, (int, np.integer)):
        if filters_per_layer is not None:
            n = ex.check_positive_int(filters_per_layer, "filters_per_layer")
        for layer in layers:
            c = model.channels(layer)
            k = c if filters_per_layer is None else min(n, c)
            out[layer] = np.arange(k, dtype=np.int32)
        return out
    if isinstance(filters_per_layer, Mapping):
        extra = set(filters_per_layer) - set(layers)
        if extra:
            raise InputError(
                f"filters_per_layer names layers not in layers: {sorted(extra)}; "
                f"requested layers are {list(layers)}."
            )
        for layer in layers:
            sel = filters_per_layer.get(layer)
            out[layer] = (np.arange(model.channels(layer), dtype=np.int32)
                          if sel is None else ex.check_filters(model, layer, sel))
        return out
    raise InputError(
        f"filters_per_layer must be None (all filters), an int >= 1 (the first n "
        f"filters of each layer) or a dict {{layer: indices}}; got "
        f"{filters_per_layer!r:.80}."
    )


def atlas_plan(
    params: Params,
    *,
    layers: Sequence[str] | None = None,
    filters_per_layer=None,
    size: int = 128,
    memory_budget=None,
    devices=None,
    batch_size: int | None = None,
    model: ConvNet | None = None,
    channel_only: bool | None = None,
) -> list[LayerPlan]:
    """The chunking :func:`filter_atlas` would use, without computing.

    Arguments as :func:`filter_atlas`. Returns one :class:`LayerPlan` per
    layer, in order.
    """
    model = resolve_model(params, model=model)
    layers = _check_layers(model, layers)
    devs = _check_devices(devices)
    return _plan(model, params, layers, _filters_for(model, layers, filters_per_layer),
                 size, parse_memory_budget(memory_budget), devs, batch_size,
                 auto=devices is None, channel_only=channel_only)


def _plan(model, params, layers, fsel, size, budget, devs, batch_size, auto,
          channel_only):
    for layer in layers:
        ex.check_size(model, layer, size)
    if batch_size is not None:
        batch_size = ex.check_positive_int(batch_size, "batch_size")
    if budget is None:
        budget = device_memory_budget(ex.first_local(devs))
        if jax.process_count() > 1 and not ex.all_addressable(devs):
            from jax.experimental import multihost_utils

            # in MiB: int32 survives jax's default 32-bit mode
            mib = multihost_utils.process_allgather(np.asarray([budget >> 20],
                                                               np.int32))
            budget = int(np.min(mib)) << 20
    cpu = devs[0].platform == "cpu"
    fixed = int(PARAM_FACTOR * ex.param_bytes(params))
    n_all = sum(int(fsel[layer].shape[0]) for layer in layers)
    for layer in layers:  # before any compute: the estimate and the limit
        ex.check_fits(model, layer, size, budget_bytes=budget, fixed_bytes=fixed,
                      n_filters=n_all)
    plans = []
    for layer in layers:
        n = int(fsel[layer].shape[0])
        only = ex.resolve_channel_only(channel_only, model, layer)
        # devices=None on one host: light CPU layers run on the first device
        n_dev = (len(ex.auto_devices(devs, model, layer, size, channel_only=only))
                 if auto and ex.all_addressable(devs) else len(devs))
        per = filter_memory_bytes(model, layer, size)
        cap = ex.default_batch_size(n, model, layer, size) if cpu else None
        chunk, n_chunks = plan_chunks(n, per_filter_bytes=per, budget_bytes=budget,
                                      n_devices=n_dev, fixed_bytes=fixed,
                                      cap_per_device=cap)
        if batch_size is not None:  # explicit: at most batch_size per call
            want = -(-min(batch_size, n) // n_dev) * n_dev
            if want < chunk:
                n_chunks = -(-n // want)
                chunk = -(-n // n_chunks)
                chunk = -(-chunk // n_dev) * n_dev
        plans.append(LayerPlan(layer, n, chunk, n_chunks, n_dev, per, budget,
                               only))
    return plans


# --------------------------------------------------------------- public API
def _copy_to_host_async(x):
    """Start copying a chunk's result to the host; the array stays usable."""
    if x.is_fully_addressable:
        x.copy_to_host_async()
    return x


def filter_atlas(
    params: Params,
    *,
    layers: Sequence[str] | None = None,
    filters_per_layer: int | Mapping[str, Sequence[int]] | None = None,
    size: int = 128,
    steps: int = 40,
    key: PRNGKey | None = None,
    dtype=jnp.float32,
    memory_budget: int | str | None = None,
    devices: Sequence[jax.Device] | None = None,
    step_size: float | None = None,
    preprocess: bool | None = None,
    batch_size: int | None = None,
    loop: str = "auto",
    model: ConvNet | None = None,
    progress: Callable[[int, int], None] | bool | None = None,
    pre_activation: bool = True,
    conv_impl: str = "auto",
    channel_only: bool | None = None,
    style: str = "book",
    learning_rate: float | None = None,
    stop_dead: bool | None = None,
    image_dtype="float32",
) -> dict[str, np.ndarray]:
    """Filter patterns of every filter of every requested layer.

    The same ascent as :func:`~jaxconvviz.filter_patterns` (book defaults but
    128 px), run layer by layer in equal memory-budgeted chunks whose filter
    axis is sharded over ``devices`` (and over processes after
    :func:`jax.distributed.initialize`).

    Args:
      params: ``{layer_name: {"kernel", "bias"}}`` weights.
      layers: spatial layers to render, in order; None: every conv layer of
        the model (VGG16: :data:`~jaxconvviz.CONV_LAYERS`, 4,224 filters).
      filters_per_layer: None (every filter), an int ``n`` (the first ``n``
        filters of each layer, fewer where a layer has fewer), or a dict
        ``{layer: indices}`` (layers it omits get every filter).
      size: side of the square patterns in pixels (default 128).
      steps: ascent steps (book: 40).
      key: PRNG key (required). Filter ``k`` of every layer starts from
        ``fold_in(key, k)``, as in :func:`~jaxconvviz.filter_patterns`.
      dtype: network compute dtype, ``jnp.float32`` or ``jnp.bfloat16``;
        images and gradient normalisation stay float32.
      memory_budget: bytes each device may use for a chunk: an int or a
        string like ``"16GB"``; None derives it from the device's free
        memory (:func:`device_memory_budget`). In a multi-process run the
        smallest budget of all processes is used.
      devices: devices to shard the filters over; None: ``jax.devices()``
        (all processes' devices after ``jax.distributed.initialize``), except
        that in one process on XLA:CPU layers lighter than
        :data:`jaxconvviz.featureviz.filters.CPU_SHARD_MIN_MACS` run on the first
        device (:func:`jaxconvviz.featureviz.filters.auto_devices`).
      step_size: step along the RMS-normalised gradient (book: 1.0).
      preprocess: as :func:`~jaxconvviz.filter_patterns`: False optimises
        the network input (VGG16: caffe BGR, the book); True an RGB image
        fed through ``model.preprocess``.
      batch_size: optional cap on filters per compiled call (rounded up to a
        multiple of the device count); None: from the budget (and, on
        XLA:CPU, at most :func:`~jaxconvviz.featureviz.filters.default_batch_size` per
        device).
      loop: ``"auto"``, ``"fori"`` or ``"python"``, as
        :func:`~jaxconvviz.filter_patterns` (auto: ``lax.fori_loop``).
      model: the network; None infers the VGG16 preset from ``params``.
      progress: None, True (a tqdm bar on a TTY, a plain line per chunk
        otherwise, with an up-front estimate on CPU), a
        :class:`~jaxconvviz.featureviz.execution.Progress`, or a callable
        ``progress(done, total)`` called after each chunk, counting filters
        over the whole atlas. On XLA:CPU a run estimated over
        :data:`~jaxconvviz.featureviz.execution.CPU_WARN_SECONDS` warns first
        (:class:`~jaxconvviz.featureviz.execution.SlowOnCPUWarning`).
      pre_activation: True (default): maximise each filter's pre-ReLU
        response; False: the book's post-ReLU mean (see
        :func:`~jaxconvviz.filter_patterns`).
      style: ``"book"`` (default: the ascent above) or ``"lucid"`` (as
        :func:`~jaxconvviz.render`: decorrelated Fourier image, random
        transforms, Adam 0.05; ``step_size`` and ``preprocess`` do not apply,
        ``learning_rate`` does).
      learning_rate: lucid style only (default 0.05).
      conv_impl: ``"auto"``, ``"xla"`` or ``"matmul"``, as
        :func:`~jaxconvviz.filter_patterns` (auto: matrix-product convs for
        bfloat16 on XLA:CPU, XLA's convolutions otherwise).
      channel_only: None, True or False, as
        :func:`~jaxconvviz.filter_patterns` (None: each conv layer computes
        only each filter's own channel on XLA:CPU, the whole layer
        elsewhere; True needs every layer to be a conv).
      stop_dead: book style: stop the filters whose gradient is exactly zero
        after one step and run the other steps for the rest only, as
        :func:`~jaxconvviz.filter_patterns` (None: on with
        ``pre_activation=False``). Each layer then waits for its first step
        before dispatching the rest (one host sync of ``(f,)`` booleans).
      image_dtype: book style: ``"float32"`` (default) or ``"bfloat16"``
        image storage between steps, as :func:`~jaxconvviz.filter_patterns`.

    Returns:
      ``{layer: float32 numpy (n_filters, size, size, c)}`` in layer order:
      book style: the raw optimised tensors; lucid style: RGB in [0, 255]
      (host memory: a full VGG16 atlas at 128 px is 0.8 GB). Every process
      receives the full atlas.

    Raises:
      ValueError: unknown layer (lists the valid ones), size too small for a
        layer, bad filter selection, missing key, bad dtype/loop/budget/
        devices/steps/conv_impl/channel_only/style, a size whose memory
        estimate exceeds the per-device budget or whose results exceed the
        host's memory (the message gives the estimate and the limit). All
        before any compute.
    """
    style = check_style(style)
    model = resolve_model(params, model=model)
    layers = _check_layers(model, layers)
    fsel = _filters_for(model, layers, filters_per_layer)
    steps = ex.check_positive_int(steps, "steps")
    st = make_style(style, learning_rate=learning_rate, step_size=step_size,
                    preprocess=preprocess, image_dtype=image_dtype)
    pre_activation = ex.check_bool(pre_activation, "pre_activation")
    stop_dead = ex.resolve_stop_dead(stop_dead, pre_activation=pre_activation)
    specs = {layer: RenderSpec(layer=layer, style=st, steps=steps,
                               pre_activation=pre_activation) for layer in layers}
    margin = specs[layers[0]].margin()
    for layer in layers:
        size = ex.check_size(model, layer, size, margin=margin)
    ex.check_key(key)
    dt = ex.check_dtype(dtype)
    loop = ex.resolve_loop(loop)
    devs = _check_devices(devices)
    budget = parse_memory_budget(memory_budget)
    model = ex.with_compute(model, dt, conv_impl)  # shapes unchanged: plan below
    plans = _plan(model, params, layers, fsel, size + margin, budget, devs,
                  batch_size, auto=devices is None, channel_only=channel_only)
    total = sum(p.n_filters for p in plans)
    # lucid: Adam's moments and the Fourier transforms cost ~1.3x a book step
    factor = 3.0 if style == "book" else 4.0
    est = ex.warn_if_slow(model, plans, size + margin, steps, what="filter_atlas",
                          step_factor=factor)
    prog = ex.as_progress(progress, "atlas")
    if isinstance(prog, ex.Progress):
        prog.start(total, est)
    counter = ex.Counter(total)
    output = "raw" if style == "book" else "rgb"
    out: dict[str, np.ndarray] = {}
    try:
        # Every layer's chunks are dispatched before any result is fetched,
        # so the device queue never drains between layers; each chunk's copy
        # to the host starts as soon as it is dispatched and overlaps the
        # compute of the rest. Fetching (and progress) then follow in order.
        dispatched = [(plan, run_spec(
            params, specs[plan.layer], model, plan, fsel[plan.layer], key=key,
            devs=devs, size=size, output=output, loop=loop, progress=None,
            counter=ex.Counter(plan.n_filters), finish=_copy_to_host_async,
            stop_dead=stop_dead))
            for plan in plans]
        for plan, device_chunks in dispatched:
            chunks = []
            for c, x in enumerate(device_chunks):
                chunks.append(ex.fetch(x))
                counter.done += min(plan.chunk, plan.n_filters - c * plan.chunk)
                if isinstance(prog, ex.Progress):
                    prog.update(counter.done, total, layer=plan.layer, chunk=c + 1,
                                n_chunks=plan.n_chunks)
                elif prog is not None:
                    prog(counter.done, total)
            out[plan.layer] = np.concatenate(chunks, axis=0)[: plan.n_filters]
            if style == "book":
                warn_unmoved(plan.layer, fsel[plan.layer], out[plan.layer], key=key,
                             style=st, size=size, channels=int(model.input_shape[2]),
                             hint=dead_hint(pre_activation))
    finally:
        if isinstance(prog, ex.Progress):
            prog.close()
    return out


__all__ = ["filter_atlas", "atlas_plan", "LayerPlan", "plan_chunks",
           "filter_memory_bytes", "device_memory_budget", "parse_memory_budget",
           "STYLES"]
