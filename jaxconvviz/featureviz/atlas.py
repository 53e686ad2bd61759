"""Filter atlases at scale: every filter of many layers, chunked, sharded.

:func:`filter_atlas` runs the book's gradient ascent (the same step as
:func:`~jaxconvviz.filter_patterns`) for every requested filter of every
requested layer:

* **Chunks from a memory budget.** Each layer's filters are cut into equal
  chunks whose size comes from an analytic per-filter memory estimate
  (:func:`filter_memory_bytes`) and a per-device budget, given or derived
  from the device's free memory (:func:`device_memory_budget`). Every chunk
  of a layer has one compiled shape; the last one is padded and the padding
  dropped. On XLA:CPU the chunk is also capped at the measured speed optimum
  per device (:func:`jaxconvviz.featureviz.filters.default_batch_size`: 1 filter for
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

import functools
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from jaxconvviz._types import Params, PRNGKey
from jaxconvviz.errors import InputError
from jaxconvviz.featureviz import filters as _f
from jaxconvviz.models.convnet import ConvNet, resolve_model

#: Name of the mesh axis the filters are split over.
MESH_AXIS = _f.MESH_AXIS

#: Fraction of a GPU/TPU's free memory a derived budget uses.
ACCELERATOR_MEMORY_FRACTION = 0.8
#: Fraction of the host's available memory a derived budget uses on XLA:CPU
#: (the host is shared with the program itself and other processes).
CPU_MEMORY_FRACTION = 0.5
#: Per-filter multiplier on the summed activation sizes (float32 bytes) in
#: :func:`filter_memory_bytes`. XLA's own accounting (``memory_analysis()``)
#: of one ascent step measured 2.0x (block1_conv2) to 3.9x (block3_conv1)
#: the summed activations on XLA:CPU at 64 px, float32 and bfloat16 alike
#: (CPU convolutions keep float32 work buffers); 5 leaves headroom.
ACTIVATION_FACTOR = 5.0
#: Fixed per-device overhead as a multiple of the float32 parameter bytes
#: (replicated params, their compute-dtype copy, transposed kernels).
PARAM_FACTOR = 3.0

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6,
          "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10,
          "mib": 2**20, "gib": 2**30, "tib": 2**40}


# ------------------------------------------------------------------ memory
def parse_memory_budget(budget) -> int | None:
    """Bytes from ``None``, an int, or a string such as ``"16GB"``/``"12GiB"``.

    Args:
      budget: None (derive it), a positive number of bytes, or a string: a
        number and an optional unit (B, KB, MB, GB, TB: powers of 1000;
        KiB, MiB, GiB, TiB: powers of 1024), case-insensitive.

    Returns:
      The budget in bytes, or None.

    Raises:
      ValueError: anything else, or a budget below 1 byte.
    """
    if budget is None:
        return None
    value = None
    if isinstance(budget, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", budget)
        if m and m.group(2).lower() in _UNITS:
            value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    elif isinstance(budget, (int, float, np.integer, np.floating)) and not isinstance(
            budget, bool):
        value = float(budget)
    if value is None or not math.isfinite(value) or value < 1:
        raise InputError(
            f"memory_budget must be None, a positive number of bytes or a string "
            f"like '16GB' or '12GiB'; got {budget!r}."
        )
    return int(value)


def _host_available_bytes() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 * 10**9


def device_memory_budget(device=None) -> int:
    """Bytes a chunk may use on ``device`` (default: the first local device).

    Accelerators: :data:`ACCELERATOR_MEMORY_FRACTION` of
    ``bytes_limit - bytes_in_use`` from ``device.memory_stats()``. XLA:CPU
    (no memory stats): :data:`CPU_MEMORY_FRACTION` of the host's available
    memory (``MemAvailable``), divided among the local CPU devices.
    """
    device = jax.local_devices()[0] if device is None else device
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without stats raise various errors
        stats = None
    if stats and "bytes_limit" in stats:
        free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return int(max(free, 0) * ACCELERATOR_MEMORY_FRACTION)
    n_local = max(1, sum(d.platform == device.platform for d in jax.local_devices()))
    return int(_host_available_bytes() * CPU_MEMORY_FRACTION / n_local)


def _param_bytes(params) -> int:
    return int(sum(np.prod(np.shape(leaf)) * 4 for leaf in jax.tree.leaves(params)))


def filter_memory_bytes(model: ConvNet, layer: str, size: int) -> int:
    """Estimated device bytes one filter adds to an ascent step at ``layer``.

    ``ACTIVATION_FACTOR`` x the float32 bytes of every activation up to and
    including ``layer`` for one ``size`` x ``size`` image (stored forward
    values, backward buffers and work space), plus four float32 copies of the
    image (image, gradient, update, loop carry). Analytic: nothing is
    compiled. An upper bound of XLA's ``memory_analysis()`` of the step on
    XLA:CPU (tested) and of the peak measured on GPU (docs/benchmarks.md).
    """
    elems = 0
    for spec in model.layers[: model.layer_index(layer) + 1]:
        shape = model.output_shape(spec.name, (size, size))
        elems += int(np.prod(shape))
    image = size * size * int(model.input_shape[2])
    return int(ACTIVATION_FACTOR * 4 * elems + 4 * 4 * image)


@dataclass(frozen=True)
class LayerPlan:
    """How :func:`filter_atlas` runs one layer.

    Attributes:
      layer: layer name.
      n_filters: filters requested.
      chunk: filters per compiled call (a multiple of ``n_devices``).
      n_chunks: calls; ``chunk * n_chunks - n_filters`` are padding.
      n_devices: devices the filter axis is split over.
      per_filter_bytes: :func:`filter_memory_bytes` estimate.
      budget_bytes: per-device budget the chunk was cut from.
      channel_only: whether the ascent computes only each filter's channel
        of the layer (:func:`jaxconvviz.featureviz.filters.resolve_channel_only`).
    """

    layer: str
    n_filters: int
    chunk: int
    n_chunks: int
    n_devices: int
    per_filter_bytes: int
    budget_bytes: int
    channel_only: bool = False


def plan_chunks(n_filters: int, *, per_filter_bytes: int, budget_bytes: int,
                n_devices: int = 1, fixed_bytes: int = 0,
                cap_per_device: int | None = None) -> tuple[int, int]:
    """Equal chunks of ``n_filters`` that fit a per-device memory budget.

    Each device holds ``chunk / n_devices`` filters, so at most
    ``(budget_bytes - fixed_bytes) // per_filter_bytes`` (at least 1) per
    device, further capped by ``cap_per_device``. The number of chunks is the
    fewest that respect that; the chunk is then the smallest multiple of
    ``n_devices`` that covers ``n_filters`` in that many chunks, so chunks
    are as equal as possible and padding is minimal.

    Returns:
      ``(chunk, n_chunks)`` with ``chunk * n_chunks >= n_filters`` and
      ``chunk % n_devices == 0``.
    """
    per_dev = max(1, (int(budget_bytes) - int(fixed_bytes)) // max(1, per_filter_bytes))
    if cap_per_device is not None:
        per_dev = max(1, min(per_dev, int(cap_per_device)))
    max_chunk = per_dev * n_devices
    n_chunks = -(-n_filters // max_chunk)
    chunk = -(-n_filters // n_chunks)
    chunk = -(-chunk // n_devices) * n_devices
    return chunk, n_chunks


# ---------------------------------------------------------------- validation
def _check_devices(devices) -> tuple:
    return _f._check_devices(devices, jax.devices, "all of jax.devices()")


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
            n = _f._check_positive_int(filters_per_layer, "filters_per_layer")
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
                          if sel is None else _f._check_filters(model, layer, sel))
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
    model = resolve_model(params, model)
    layers = _check_layers(model, layers)
    devs = _check_devices(devices)
    return _plan(model, params, layers, _filters_for(model, layers, filters_per_layer),
                 size, parse_memory_budget(memory_budget), devs, batch_size,
                 auto=devices is None, channel_only=channel_only)


def _plan(model, params, layers, fsel, size, budget, devs, batch_size, auto,
          channel_only):
    for layer in layers:
        _f._check_size(model, layer, size)
    if batch_size is not None:
        batch_size = _f._check_positive_int(batch_size, "batch_size")
    if budget is None:
        budget = device_memory_budget(_first_local(devs))
        if jax.process_count() > 1 and not _all_addressable(devs):
            from jax.experimental import multihost_utils

            # in MiB: int32 survives jax's default 32-bit mode
            mib = multihost_utils.process_allgather(np.asarray([budget >> 20],
                                                               np.int32))
            budget = int(np.min(mib)) << 20
    cpu = devs[0].platform == "cpu"
    fixed = int(PARAM_FACTOR * _param_bytes(params))
    plans = []
    for layer in layers:
        n = int(fsel[layer].shape[0])
        only = _f.resolve_channel_only(channel_only, model, layer)
        # devices=None on one host: light CPU layers run on the first device
        n_dev = (len(_f.auto_devices(devs, model, layer, size, channel_only=only))
                 if auto and _all_addressable(devs) else len(devs))
        per = filter_memory_bytes(model, layer, size)
        cap = _f.default_batch_size(n, model, layer, size) if cpu else None
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


def _first_local(devs):
    pid = jax.process_index()
    for d in devs:
        if d.process_index == pid:
            return d
    return jax.local_devices()[0]


def _all_addressable(devs) -> bool:
    pid = jax.process_index()
    return all(d.process_index == pid for d in devs)


# ------------------------------------------------------------------- engine
@functools.lru_cache(maxsize=64)
def _programs(mesh: Mesh, model: ConvNet, layer: str, preprocess: bool, steps: int,
              size: int, channels: int, key_impl: str | None, channel_only: bool):
    """Jitted (start, step, ascend) for one layer, sharded over ``mesh``
    (each device steps its own rows: ``filters._per_device``)."""
    rows, repl = _f.filter_shardings(mesh)
    static = dict(model=model, layer=layer, preprocess=preprocess,
                  channel_only=channel_only, mesh=mesh)

    def key_of(kd):
        return kd if key_impl is None else jax.random.wrap_key_data(kd, impl=key_impl)

    def start(kd, idx):
        return _f._start_images(key_of(kd), idx, size=size, channels=channels)

    def ascend(params, kd, idx, step):
        x0 = start(kd, idx)
        return _f._ascend_fori(params, x0, idx, step, steps=steps, **static)

    def step_fn(params, x, idx, step):
        return _f._step_jit(params, x, idx, step, **static)

    start_j = jax.jit(start, in_shardings=(repl, rows), out_shardings=rows)
    ascend_j = jax.jit(ascend, in_shardings=(repl, repl, rows, repl),
                       out_shardings=rows)
    step_j = jax.jit(step_fn, in_shardings=(repl, rows, rows, repl),
                     out_shardings=rows, donate_argnums=(1,))
    return start_j, step_j, ascend_j


def _to_global(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    value = np.asarray(value)
    if _all_addressable(tuple(sharding.mesh.devices.flat)):
        return jax.device_put(value, sharding)
    return jax.make_array_from_callback(value.shape, sharding, lambda i: value[i])


def _fetch(x: jax.Array) -> np.ndarray:
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _key_parts(key) -> tuple[np.ndarray, str | None]:
    key = _f._check_key(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key)), str(jax.random.key_impl(key))
    return np.asarray(key), None


# --------------------------------------------------------------- public API
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
    step_size: float = 1.0,
    preprocess: bool = False,
    batch_size: int | None = None,
    loop: str = "auto",
    model: ConvNet | None = None,
    progress: Callable[[int, int], None] | None = None,
    pre_activation: bool = False,
    conv_impl: str = "auto",
    channel_only: bool | None = None,
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
        :func:`~jaxconvviz.filter_patterns` (auto: a Python loop over a
        jitted step on XLA:CPU, ``lax.fori_loop`` elsewhere).
      model: the network; None infers the VGG16 preset from ``params``.
      progress: optional ``progress(done, total)`` called after each chunk,
        counting filters over the whole atlas.
      pre_activation: maximise each filter's pre-ReLU response instead of the
        book's post-ReLU mean (see :func:`~jaxconvviz.filter_patterns`).
      conv_impl: ``"auto"``, ``"xla"`` or ``"matmul"``, as
        :func:`~jaxconvviz.filter_patterns` (auto: matrix-product convs for
        bfloat16 on XLA:CPU, XLA's convolutions otherwise).
      channel_only: None, True or False, as
        :func:`~jaxconvviz.filter_patterns` (None: each conv layer computes
        only each filter's own channel on XLA:CPU, the whole layer
        elsewhere; True needs every layer to be a conv).

    Returns:
      ``{layer: float32 numpy (n_filters, size, size, c)}`` in layer order:
      the raw optimised tensors (host memory: a full VGG16 atlas at 128 px is
      0.8 GB). Every process receives the full atlas.

    Raises:
      ValueError: unknown layer (lists the valid ones), size too small for a
        layer, bad filter selection, missing key, bad dtype/loop/budget/
        devices/steps/conv_impl/channel_only. All before any compute.
    """
    model = resolve_model(params, model)
    layers = _check_layers(model, layers)
    fsel = _filters_for(model, layers, filters_per_layer)
    size = _f._check_size(model, layers[0], size)
    steps = _f._check_positive_int(steps, "steps")
    kd, key_impl = _key_parts(key)
    dt = _f._check_dtype(dtype)
    loop = _f._resolve_loop(loop)
    step_size = _f._check_step_size(step_size)
    if not isinstance(preprocess, bool):
        raise InputError(f"preprocess must be True or False; got {preprocess!r}.")
    devs = _check_devices(devices)
    budget = parse_memory_budget(memory_budget)
    model = _f._with_compute(model, dt, conv_impl)  # shapes unchanged: plan below
    plans = _plan(model, params, layers, fsel, size, budget, devs, batch_size,
                  auto=devices is None, channel_only=channel_only)

    channels = int(model.input_shape[2])
    single = len(devs) == 1 and _all_addressable(devs)
    mesh = _f.filter_mesh(devs)
    rows, repl = _f.filter_shardings(mesh)
    if single or any(p.n_devices == 1 for p in plans):
        params_1 = jax.device_put(params, devs[0])
        step_1 = jax.device_put(jnp.asarray(step_size, jnp.float32), devs[0])
    params_r = kd_r = step_r = None
    if not single:
        params_r = jax.tree.map(
            lambda a: jax.device_put(a, repl) if _all_addressable(devs)
            else _to_global(np.asarray(a), repl), params)
        kd_r = _to_global(kd, repl)
        step_r = _to_global(np.asarray(step_size, np.float32), repl)
    if not isinstance(pre_activation, bool):
        raise InputError(
            f"pre_activation must be True or False; got {pre_activation!r}.")
    total = sum(p.n_filters for p in plans)
    done = 0
    out: dict[str, np.ndarray] = {}
    for plan in plans:
        layer_model = (model.without_activation(plan.layer) if pre_activation
                       else model)
        static = dict(model=layer_model, preprocess=preprocess,
                      channel_only=plan.channel_only)
        one = single or plan.n_devices == 1
        if not one:
            start_j, step_j, ascend_j = _programs(mesh, layer_model, plan.layer,
                                                  preprocess, steps, size, channels,
                                                  key_impl, plan.channel_only)
        fidx = fsel[plan.layer]
        pad = plan.chunk * plan.n_chunks - fidx.shape[0]
        fidx_p = np.concatenate([fidx, np.repeat(fidx[-1:], pad)])
        result = np.empty((plan.n_chunks * plan.chunk, size, size, channels),
                          np.float32)
        pending: tuple[int, jax.Array] | None = None
        for c in range(plan.n_chunks):
            sel = fidx_p[c * plan.chunk:(c + 1) * plan.chunk]
            if one:  # filter_patterns' own programs (shared compilations)
                with jax.default_device(devs[0]):
                    x = _run_single(params_1, key, jnp.asarray(sel), step_1, loop,
                                    steps, size, channels,
                                    {**static, "layer": plan.layer})
            else:
                idx = _to_global(sel, rows)
                if loop == "fori":
                    x = ascend_j(params_r, kd_r, idx, step_r)
                else:
                    x = start_j(kd_r, idx)
                    for _ in range(steps):
                        x = step_j(params_r, x, idx, step_r)
            # fetch the previous chunk while this one runs
            if pending is not None:
                done = _store(result, pending, plan, done, total, progress)
            pending = (c, x)
        done = _store(result, pending, plan, done, total, progress)
        out[plan.layer] = result[: plan.n_filters]
    return out


def _run_single(params, key, idx, step, loop, steps, size, channels, static):
    """One chunk on one device, exactly as :func:`filter_patterns` runs it."""
    x = _f._start_images(key, idx, size=size, channels=channels)
    if loop == "fori":
        return _f._ascend_fori(params, x, idx, step, steps=steps, **static)
    for _ in range(steps):
        x = _f._step_jit(params, x, idx, step, **static)
    return x


def _store(result, pending, plan, done, total, progress) -> int:
    c, x = pending
    result[c * plan.chunk:(c + 1) * plan.chunk] = _fetch(x)
    done = min(done + plan.chunk, done + plan.n_filters - c * plan.chunk)
    if progress is not None:
        progress(done, total)
    return done


__all__ = ["filter_atlas", "atlas_plan", "LayerPlan", "plan_chunks",
           "filter_memory_bytes", "device_memory_budget", "parse_memory_budget"]
