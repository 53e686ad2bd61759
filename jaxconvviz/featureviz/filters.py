"""Filter patterns by gradient ascent in input space (DLwP listing 5.38), batched.

The book maximises the mean activation of one filter of one layer by 40
normalised gradient steps from a grey noisy image, one filter at a time in
Python. Here every filter of a request is optimised in one compiled program:
one batched forward pass, and the gradient of the sum of the per-image
objectives (each image's own gradient, as no layer mixes images), and the
step loop is either a ``lax.fori_loop`` inside the program (GPU/TPU)
or a Python loop over one jitted batched step (XLA:CPU, where that measured
faster). Filter indices are traced, so a second call with other filters of
the same count reuses the compiled program. Large requests run in chunks of
``batch_size`` filters that all share one compiled shape; each chunk's
filters are split over ``devices`` (default: every local device, so one
device per core after :func:`~jaxconvviz.use_cpu_cores`), each device
stepping its own rows (``shard_map``, no communication).

The objective needs one channel of the target layer per image, so with
``channel_only`` (the default on XLA:CPU) a target conv layer is computed
for that channel only (:meth:`~jaxconvviz.ConvNet.channel_forward`), not
whole and then masked as the book's ``model.output[:, :, :, k]`` does: the
same values up to float summation order, and the target layer's forward and
input gradient cost ``1 / c_out`` of the whole layer's.

Imports jax and numpy only (no Pillow, h5py or matplotlib).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxconvviz.errors import InputError

try:  # jax >= 0.6.1
    from jax import shard_map as _shard_map
except ImportError:  # pragma: no cover - older jax
    from jax.experimental.shard_map import shard_map as _shard_map

from jaxconvviz._types import Params, PRNGKey
from jaxconvviz.models.convnet import ConvNet, resolve_model

#: Step-loop forms accepted by :func:`filter_patterns`.
LOOPS = ("auto", "fori", "python")
#: Compute dtypes accepted by :func:`filter_patterns`.
DTYPES = ("float32", "bfloat16", "float16")

#: Book constants (DLwP listings 5.34 and 5.36): gradient RMS epsilon, start
#: image ``uniform(0, 1) * 20 + 128``.
GRAD_EPS = 1e-5
START_SCALE = 20.0
START_OFFSET = 128.0

#: Largest chunk on XLA:CPU (see :func:`default_batch_size`). Measured with
#: the HED VGG16, 64 px, Python loop, on a shared 2-core CPU: block3_conv1
#: 0.82-1.04 s per filter (40 steps) for chunks of 1-16 (flat within noise);
#: per filter for 10 steps, block5_conv3 0.84 s (chunk 1), 0.45 (4), 0.39
#: (8), 0.36 (16); block2_conv1 0.10 s (1, 4) but 0.12 s (8, 16);
#: block3_conv3 0.23 s (1), 0.21 (2), 0.24 (4). Accelerators run every
#: requested filter at once.
CPU_BATCH_SIZE = 16
#: On XLA:CPU a chunk holds about ``CPU_ROWS / (h' * w')`` filters, ``h' * w'``
#: the target layer's feature-map size: batching pays where the maps are
#: small (deep layers, whose convolutions are thin matrix products for one
#: image) and costs cache where they are large.
CPU_ROWS = 512


#: On XLA:CPU split across several devices (:func:`~jaxconvviz.use_cpu_cores`)
#: only layers whose forward pass costs at least this many multiply-adds per
#: image (:func:`conv_macs`); lighter ones run on one device, where a call's
#: fixed cost dominates. Measured on 2 cores, ms per filter and step, one
#: device vs two: block1_conv1 at 64 px (7.1 M) 0.91 vs 1.22, at 150 px
#: (39 M) 7.4 vs 4.6, at 224 px (87 M) 12.3 vs 9.4; block1_conv2 at 64 px
#: (158 M) 13.6 vs 8.9.
CPU_SHARD_MIN_MACS = 20_000_000


def conv_macs(model: ConvNet, layer: str, size: int, *,
              channel_only: bool = False) -> int:
    """Multiply-adds of the convolutions from the input up to ``layer``.

    One ``size`` x ``size`` image, forward pass only (``h' * w' * k_h * k_w
    * c_in * c_out`` per conv layer, 'same' padding counted as full windows);
    ``channel_only``: ``layer`` itself with one output channel, as
    :meth:`~jaxconvviz.ConvNet.channel_forward` computes it.
    """
    total, c_in = 0, int(model.input_shape[2])
    last = model.layer_index(layer)
    for i, spec in enumerate(model.layers[: last + 1]):
        h, w, c = model.output_shape(spec.name, (size, size))
        if spec.kind == "conv":
            k = spec.opt("kernel_size", 3)
            kh, kw = (k, k) if isinstance(k, int) else k
            total += h * w * kh * kw * c_in * (1 if channel_only and i == last
                                               else c)
        c_in = c
    return total


def auto_devices(devs: tuple, model: ConvNet, layer: str, size: int, *,
                 channel_only: bool = False) -> tuple:
    """The devices a default (``devices=None``) call shards ``layer`` over:
    all of ``devs``, except on CPU for layers under :data:`CPU_SHARD_MIN_MACS`
    (the first device only; counted as the step computes them, see
    :func:`conv_macs`)."""
    if (len(devs) > 1 and devs[0].platform == "cpu"
            and conv_macs(model, layer, size, channel_only=channel_only)
            < CPU_SHARD_MIN_MACS):
        return devs[:1]
    return devs


def resolve_channel_only(channel_only: bool | None, model: ConvNet,
                         layer: str) -> bool:
    """Whether the ascent on ``layer`` computes only each filter's channel of
    it (:meth:`~jaxconvviz.ConvNet.channel_forward`).

    None (the default): on XLA:CPU for conv layers, where it was measured
    (2-core Zen 3, ms per ascent step, whole layer -> one channel:
    block1_conv2 1 filter 10.0 -> 1.6, block2_conv2 26 -> 18, block3_conv1
    2 filters 56 -> 48, block3_conv3 83 -> 69, block4_conv3 8 filters 520
    -> 490); the whole layer elsewhere until measured on an accelerator.
    Pool and other non-conv layers always run whole.
    """
    kind = model.layer(layer).kind
    if channel_only is None:
        return jax.default_backend() == "cpu" and kind == "conv"
    if not isinstance(channel_only, bool):
        raise InputError(
            f"channel_only must be None, True or False; got {channel_only!r}.")
    if channel_only and kind != "conv":
        raise InputError(
            f"channel_only=True needs a conv layer; {layer!r} is a {kind} layer "
            f"(use None or False).")
    return channel_only


def chunk_size(f: int, n_dev: int, batch_size: int | None, model: ConvNet,
               layer: str, size: int) -> int:
    """Filters per compiled call when ``f`` filters are split over ``n_dev``
    devices (``1 <= n_dev <= f``): a multiple of ``n_dev``, at most ``f``
    rounded up to one; per device :func:`default_batch_size`, or
    ``batch_size`` split over the devices."""
    per_dev = -(-f // n_dev)  # filters per device if the request is one chunk
    if batch_size is None:
        return default_batch_size(per_dev, model, layer, size) * n_dev
    return min(-(-batch_size // n_dev), per_dev) * n_dev


#: Name of the mesh axis the filters are split over.
MESH_AXIS = "filters"


def filter_mesh(devs) -> Mesh:
    """A 1-D mesh of ``devs`` along :data:`MESH_AXIS`."""
    return Mesh(np.asarray(devs, dtype=object), (MESH_AXIS,))


def filter_shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
    """``(rows, replicated)``: the filter axis split over ``mesh``, and a copy
    on every device (params, keys, scalars)."""
    return NamedSharding(mesh, P(MESH_AXIS)), NamedSharding(mesh, P())


# --------------------------------------------------------------------- compute
def _objective(params, x, fidx, *, model: ConvNet, layer: str, preprocess: bool):
    """Mean over (h, w) of filter ``fidx`` at ``layer`` for ONE image ``(h, w, c)``."""
    inp = x[None]
    if preprocess:
        inp = model.preprocess(inp)
    act = model.forward(params, inp, stop=layer)[0]  # (h', w', channels)
    a = jax.lax.dynamic_index_in_dim(act, fidx, axis=-1, keepdims=False)
    return a.astype(jnp.float32).mean()


def _value_and_grads(params, x, fidx, *, model, layer, preprocess,
                     channel_only=False):
    """Per-image objective and its input gradient, ``(f,)`` and ``(f, h, w, c)``.

    One batched forward; the gradient of the *sum* of the per-image
    objectives is each image's own gradient, since no layer mixes images
    (inference batchnorm, identity dropout). ``channel_only``: the target
    conv layer computes only each image's own channel
    (:meth:`~jaxconvviz.ConvNet.channel_forward`). Otherwise the whole layer
    runs and the filter is picked with a one-hot mask rather than a gather,
    so the backward pass is elementwise: the same values as ``vmap`` of
    :func:`_objective`'s gradient, measured 2.7x faster for 16 filters of
    block1_conv1 on XLA:CPU, where the vmapped gradient's gather/scatter
    dominated.
    """
    def total(x):
        inp = model.preprocess(x) if preprocess else x
        if channel_only:
            a = model.channel_forward(params, inp, layer, fidx)  # (f, h', w')
        else:
            act = model.forward(params, inp, stop=layer)  # (f, h', w', channels)
            k = jnp.arange(act.shape[-1], dtype=jnp.int32)[None, None, None, :]
            a = jnp.where(k == fidx[:, None, None, None], act,
                          jnp.zeros((), act.dtype)).sum(axis=-1)
        v = a.astype(jnp.float32).mean(axis=(1, 2))
        return v.sum(), v

    g, v = jax.grad(total, has_aux=True)(x)
    return v, g


def _normalise(g):
    """The book's trick: divide by ``sqrt(mean(g**2)) + 1e-5``, per image."""
    rms = jnp.sqrt(jnp.mean(jnp.square(g), axis=(1, 2, 3), keepdims=True))
    return g / (rms + GRAD_EPS)


def _step(params, x, fidx, step_size, *, model, layer, preprocess,
          channel_only=False):
    _, g = _value_and_grads(params, x, fidx, model=model, layer=layer,
                            preprocess=preprocess, channel_only=channel_only)
    return x + step_size * _normalise(g.astype(jnp.float32))


_STATIC = ("model", "layer", "preprocess", "channel_only")


def _per_device(fn, mesh: Mesh | None):
    """``fn(params, x, fidx, step_size)`` run by every device of ``mesh`` on
    its own rows of ``x``/``fidx`` (``shard_map``; params and step size
    replicated); ``fn`` itself when ``mesh`` is None.

    Each filter's ascent is independent, so the program has no
    communication, and per-device code sees its local chunk: the
    one-call-per-image convolutions of
    :meth:`~jaxconvviz.ConvNet.channel_forward` slice the local rows only.
    (GSPMD partitioning of a jitted step, used before, would have to move
    rows between devices to slice a sharded axis.)
    """
    if mesh is None:
        return fn
    rows, repl = P(MESH_AXIS), P()
    return _shard_map(fn, mesh=mesh, in_specs=(repl, rows, rows, repl),
                      out_specs=rows)


@functools.partial(jax.jit, static_argnames=(*_STATIC, "mesh"))
def _step_jit(params, x, fidx, step_size, *, model, layer, preprocess,
              channel_only=False, mesh=None):
    """One ascent step for a batch ``(f, h, w, c)``, split over ``mesh``.

    The CPU loop form calls it ``steps`` times from Python. On XLA:CPU this
    measured 3.3x faster than the same steps in a ``fori_loop`` for
    block3_conv1 (6.5 s vs 21.6 s for 8 filters, 64 px, 40 steps) and equal
    for block1_conv1 (0.25 s vs 0.23 s).
    """
    fn = functools.partial(_step, model=model, layer=layer, preprocess=preprocess,
                           channel_only=channel_only)
    return _per_device(fn, mesh)(params, x, fidx, step_size)


@functools.partial(jax.jit, static_argnames=(*_STATIC, "steps", "mesh"))
def _ascend_fori(params, x0, fidx, step_size, *, model, layer, preprocess, steps,
                 channel_only=False, mesh=None):
    """All ``steps`` ascent steps in one program (``lax.fori_loop``)."""
    def ascend(params, x0, fidx, step_size):
        def body(_, x):
            return _step(params, x, fidx, step_size, model=model, layer=layer,
                         preprocess=preprocess, channel_only=channel_only)

        return jax.lax.fori_loop(0, steps, body, x0)

    return _per_device(ascend, mesh)(params, x0, fidx, step_size)


@functools.partial(jax.jit, static_argnames=("size", "channels"))
def _start_images(key, fidx, *, size, channels):
    """The book's grey start ``uniform(0, 1) * 20 + 128``, one stream per filter.

    Filter ``k``'s image comes from ``fold_in(key, k)``: it does not depend on
    the other filters requested, so batched and one-at-a-time runs agree.
    """
    def one(i):
        u = jax.random.uniform(jax.random.fold_in(key, i), (size, size, channels),
                               jnp.float32)
        return u * START_SCALE + START_OFFSET

    return jax.vmap(one)(fidx)


@functools.partial(jax.jit, static_argnames=("model", "layer", "preprocess"))
def _activation_jit(params, images, fidx, *, model, layer, preprocess):
    obj = functools.partial(_objective, model=model, layer=layer,
                            preprocess=preprocess)
    return jax.vmap(obj, in_axes=(None, 0, 0))(params, images, fidx)


# ------------------------------------------------------------------ validation
def _check_layer(model: ConvNet, layer) -> str:
    return model.check_layer(layer, model.spatial_layers, name="layer")


def _check_filters(model: ConvNet, layer: str, filter_indices) -> np.ndarray:
    if isinstance(filter_indices, jax.core.Tracer):
        raise InputError(
            "filter_indices must be concrete (a list, range or array), not a "
            "traced value: call filter_patterns outside jit."
        )
    a = np.asarray(filter_indices)
    n = model.channels(layer)
    if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
        raise InputError(
            f"filter_indices must be a non-empty 1-D sequence of integers "
            f"(e.g. range(16) or [3]); got {_short(filter_indices)}."
        )
    bad = a[(a < 0) | (a >= n)]
    if bad.size:
        raise InputError(
            f"filter_indices must be in 0..{n - 1}: layer {layer!r} has {n} "
            f"channels; got out-of-range {bad[:5].tolist()}."
        )
    return a.astype(np.int32)


def _check_size(model: ConvNet, layer: str, size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise InputError(f"size must be an integer number of pixels; got {size!r}.")
    need = model.min_input_size(layer)
    if size < need:
        raise InputError(
            f"size must be at least {need} px for layer {layer!r} (its feature "
            f"map would be empty); got {size}."
        )
    return int(size)


def _check_step_size(step_size) -> float:
    try:
        value = float(step_size)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise InputError(f"step_size must be a finite number; got {step_size!r}.")
    return value


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be an integer >= 1; got {value!r}.")
    return int(value)


def _check_key(key):
    if key is None:
        raise InputError(
            "key is required (e.g. key=jax.random.key(0)): it draws the start "
            "images; or pass init= start images."
        )
    typed = isinstance(key, jax.Array) and jnp.issubdtype(key.dtype,
                                                          jax.dtypes.prng_key)
    legacy = (isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32
              and key.shape == (2,))
    if not (typed and key.shape == () or legacy):
        raise InputError(
            f"key must be one PRNG key from jax.random.key(seed) (or the legacy "
            f"jax.random.PRNGKey); got {_short(key)}."
        )
    return key


def _check_dtype(dtype):
    try:
        name = jnp.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}.")
    return jnp.dtype(name)


def _check_init(init, f: int, size: int, channels: int):
    shape = getattr(init, "shape", None)
    want = (f, size, size, channels)
    if shape is None or tuple(shape) != want:
        raise InputError(
            f"init must have shape (len(filter_indices), size, size, channels) = "
            f"{want}; got {_short(init)}."
        )
    x = jnp.asarray(init, jnp.float32)
    if not bool(jnp.isfinite(x).all()):
        raise InputError("init contains NaN or inf values; start images must be "
                         "finite.")
    return x


def _short(v) -> str:
    shape = getattr(v, "shape", None)
    if shape is not None:
        return f"{type(v).__name__} of shape {tuple(shape)} and dtype {v.dtype}"
    r = repr(v)
    return r if len(r) < 60 else r[:57] + "..."


def _check_devices(devices, default: Callable[[], list], default_name: str) -> tuple:
    """``devices`` as a tuple of distinct jax devices of one platform."""
    if devices is None:
        return tuple(default())
    try:
        devs = tuple(devices)
    except TypeError:
        devs = ()
    if not devs or not all(isinstance(d, jax.Device) for d in devs):
        raise InputError(
            f"devices must be None ({default_name}) or a non-empty sequence "
            f"of jax devices; got {devices!r:.80}."
        )
    if len({d.platform for d in devs}) != 1 or len(set(devs)) != len(devs):
        raise InputError(
            f"devices must be distinct devices of one platform; got {devs!r:.120}."
        )
    return devs


def _check_local_devices(devices) -> tuple:
    devs = _check_devices(devices, jax.local_devices, "all of jax.local_devices()")
    pid = jax.process_index()
    remote = [d for d in devs if d.process_index != pid]
    if remote:
        raise InputError(
            f"devices must belong to this process (filter_patterns does not span "
            f"hosts; filter_atlas does); got {remote[0]!r} of process "
            f"{remote[0].process_index}.")
    return devs


def _resolve_loop(loop: str) -> str:
    if loop not in LOOPS:
        raise InputError(f"loop must be one of {', '.join(LOOPS)}; got {loop!r}.")
    if loop == "auto":
        return "python" if jax.default_backend() == "cpu" else "fori"
    return loop


def _with_compute(model: ConvNet, dt, conv_impl) -> ConvNet:
    """``model`` computing in ``dt`` with convs by ``conv_impl`` (``"auto"``
    resolved for ``dt``; a bad value is a ValueError)."""
    if dt != jnp.float32:
        model = model.with_dtype(dt)
    return model.with_conv_impl(conv_impl)


def default_batch_size(n_filters: int, model: ConvNet | None = None,
                       layer: str | None = None, size: int | None = None) -> int:
    """Chunk size used when ``batch_size=None``.

    GPU/TPU: all ``n_filters``. XLA:CPU: ``ceil(CPU_ROWS / (h' * w'))``
    filters with ``h' x w'`` the feature map of ``layer`` at ``size`` px, at
    most :data:`CPU_BATCH_SIZE` (VGG16 at 64 px: 1 filter per chunk up to
    block2, 2 at block3, 8 at block4, 16 at block5); without a layer,
    :data:`CPU_BATCH_SIZE`.
    """
    if jax.default_backend() != "cpu":
        return n_filters
    if model is None or layer is None or size is None:
        return min(n_filters, CPU_BATCH_SIZE)
    h, w = model.output_shape(layer, (size, size))[:2]
    return max(1, min(n_filters, CPU_BATCH_SIZE, -(-CPU_ROWS // max(1, h * w))))


# ------------------------------------------------------------------ public API
def filter_patterns(
    params: Params,
    layer: str,
    filter_indices,
    *,
    key: PRNGKey | None = None,
    steps: int = 40,
    step_size: float = 1.0,
    size: int = 150,
    init=None,
    preprocess: bool = False,
    model: ConvNet | None = None,
    batch_size: int | None = None,
    dtype=jnp.float32,
    loop: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    pre_activation: bool = False,
    conv_impl: str = "auto",
    devices: Sequence[jax.Device] | None = None,
    channel_only: bool | None = None,
) -> jax.Array:
    """Input patterns that maximise filters of ``layer`` (the book's method).

    For each filter ``k``: start from ``uniform(0, 1) * 20 + 128`` (drawn from
    ``jax.random.fold_in(key, k)``), then ``steps`` times
    ``x += step_size * g / (sqrt(mean(g**2)) + 1e-5)`` where ``g`` is the
    gradient of ``mean_{h,w} activation[layer][..., k]`` (after the layer's
    ReLU, as Keras reports it) with respect to ``x``, per image. Defaults are
    DLwP listings 5.32-5.38 (40 steps of size 1, 150 px).

    Every filter runs in one compiled program (vmapped over filters), compiled
    once per (layer, size, steps, chunk shape, dtype): other filters of the
    same count reuse it. A filter's result does not depend on which other
    filters are requested, up to float rounding of batched convolutions.

    Args:
      params: ``{layer_name: {"kernel", "bias"}}`` weights.
      layer: a spatial layer of the model (``model.spatial_layers``), e.g.
        ``"block3_conv1"``.
      filter_indices: 1-D integers, channels of ``layer`` (``range(64)``,
        ``[0, 5]``, an int array).
      key: PRNG key drawing the start images; required unless ``init`` is given.
      steps: number of ascent steps, >= 1.
      step_size: step length along the RMS-normalised gradient (book: 1.0).
      size: side of the square images in pixels, at least
        ``model.min_input_size(layer)``.
      init: optional start images, float ``(f, size, size, c)`` with
        ``f = len(filter_indices)``, in the domain being optimised (see
        ``preprocess``); replaces the key-drawn starts.
      preprocess: False (the book): ``x`` is fed to the network as is, i.e.
        optimised in the model's input domain (VGG16: caffe BGR around 128, as
        the book's Keras model has no preprocessing layer). True: ``x`` is an
        RGB image in [0, 255] passed through ``model.preprocess`` inside the
        objective, so gradients flow through the caffe conversion.
      model: the network; None infers the VGG16 preset from ``params``.
      batch_size: filters per compiled chunk; the last chunk is padded to the
        same shape and the padding dropped. None: all filters on GPU/TPU,
        1 to :data:`CPU_BATCH_SIZE` by layer on CPU
        (:func:`default_batch_size`).
      dtype: network compute dtype: ``jnp.float32`` or ``jnp.bfloat16``
        (``float16`` also accepted). Images, gradients and their
        normalisation stay float32.
      loop: ``"fori"`` (steps inside the compiled program), ``"python"`` (a
        Python loop over one jitted batched step) or ``"auto"`` (python on
        XLA:CPU, where it measured faster; fori on GPU/TPU).
      progress: optional callback ``progress(done, total)`` called after each
        chunk completes (the CLI drives a progress bar with it).
      pre_activation: False (the book): maximise the mean of the layer's
        output after its ReLU. True: the mean before the ReLU. A filter whose
        response is negative everywhere on the start image has an exactly
        zero post-ReLU gradient and never moves ("dead"); its pre-ReLU
        gradient is not zero, so it still finds a pattern.
      conv_impl: how the convolutions are computed (replaces
        ``model.conv_impl``): ``"xla"``, ``"matmul"`` (as matrix products,
        :mod:`jaxconvviz.models.convs`) or ``"auto"``: matmul for bfloat16 on
        XLA:CPU, where XLA's dot has bf16 kernels its convolutions lack
        (1.2-1.7x faster than float32 from block1_conv2 on), xla otherwise
        (:func:`~jaxconvviz.models.convs.resolve_conv_impl`).
      devices: devices of this process to split the filters of each chunk
        over (a 1-D mesh; params replicated, no communication); None: all of
        ``jax.local_devices()``, i.e. one device unless there are several
        GPUs/TPUs or the host was split with :func:`~jaxconvviz.use_cpu_cores`
        (on a 2-core CPU 1.1-1.9x faster per layer than one device; layers
        lighter than :data:`CPU_SHARD_MIN_MACS` stay on the first device). With
        ``d`` devices a chunk holds ``d`` times the per-device
        ``batch_size`` (``batch_size`` given: split over the devices); fewer
        filters than devices use that many devices. Results equal one
        device's up to float rounding of differently batched convolutions.
      channel_only: compute only each filter's own channel of ``layer``
        (its kernel column) instead of the whole layer and then picking the
        channel: the same objective and gradient up to float summation
        order, with the target layer costing ``1 / c_out`` (VGG16 at 64 px:
        17x fewer multiply-adds at block1_conv2, 1.2x at block3_conv1).
        None: on XLA:CPU for conv layers, where it measured 1.07-6x faster
        per step; the whole layer on GPU/TPU until measured there
        (:func:`resolve_channel_only`). True needs a conv ``layer``.

    Returns:
      float32 ``(f, size, size, c)``: the optimised tensors, raw (not
      deprocessed), in the optimised domain, on the first of ``devices``.
      Display them with :func:`~jaxconvviz.atlas_grid` or
      :func:`~jaxconvviz.deprocess_image`.

    Raises:
      ValueError: unknown layer (lists the valid ones), filter index out of
        range, size too small for the layer, ``steps`` < 1, bad ``init``
        (shape or non-finite values), missing or malformed ``key``, bad
        ``batch_size``/``dtype``/``loop``/``step_size``/``conv_impl``/``devices``/
        ``channel_only``. All before any compute.
    """
    model = resolve_model(params, model)
    layer = _check_layer(model, layer)
    channel_only = resolve_channel_only(channel_only, model, layer)
    fidx = _check_filters(model, layer, filter_indices)
    size = _check_size(model, layer, size)
    steps = _check_positive_int(steps, "steps")
    step_size = _check_step_size(step_size)
    channels = int(model.input_shape[2])
    f = int(fidx.shape[0])
    if init is not None:
        x_all = _check_init(init, f, size, channels)
    else:
        key = _check_key(key)
        x_all = None
    if batch_size is not None:
        batch_size = _check_positive_int(batch_size, "batch_size")
    devs = _check_local_devices(devices)
    if devices is None:
        devs = auto_devices(devs, model, layer, size, channel_only=channel_only)
    n_dev = min(len(devs), f)
    sharded = devices is not None or n_dev > 1
    bs = chunk_size(f, n_dev, batch_size, model, layer, size)
    dt = _check_dtype(dtype)
    loop = _resolve_loop(loop)
    if not isinstance(preprocess, bool):
        raise InputError(f"preprocess must be True or False; got {preprocess!r}.")
    if not isinstance(pre_activation, bool):
        raise InputError(
            f"pre_activation must be True or False; got {pre_activation!r}.")
    if pre_activation:
        model = model.without_activation(layer)
    model = _with_compute(model, dt, conv_impl)

    n_chunks = -(-f // bs)
    pad = n_chunks * bs - f
    fidx_p = np.concatenate([fidx, np.repeat(fidx[-1:], pad)])
    if x_all is not None and pad:
        x_all = jnp.concatenate([x_all, jnp.repeat(x_all[-1:], pad, axis=0)])
    step_arr = jnp.asarray(step_size, jnp.float32)
    static = dict(model=model, layer=layer, preprocess=preprocess,
                  channel_only=channel_only)
    if sharded:  # filters split over a 1-D mesh; everything else replicated
        mesh = filter_mesh(devs[:n_dev])
        static["mesh"] = mesh
        rows, repl = filter_shardings(mesh)
        params, step_arr = jax.device_put((params, step_arr), repl)
        if x_all is None:
            key = jax.device_put(key, repl)

    outs = []
    for c in range(n_chunks):
        idx = fidx_p[c * bs:(c + 1) * bs]
        idx = jax.device_put(idx, rows) if sharded else jnp.asarray(idx)
        if x_all is None:
            x = _start_images(key, idx, size=size, channels=channels)
        else:
            x = x_all[c * bs:(c + 1) * bs]
        if sharded:
            x = jax.device_put(x, rows)
        if loop == "fori":
            x = _ascend_fori(params, x, idx, step_arr, steps=steps, **static)
        else:
            for _ in range(steps):
                x = _step_jit(params, x, idx, step_arr, **static)
        outs.append(x)
        if progress is not None:
            jax.block_until_ready(x)
            progress(min((c + 1) * bs, f), f)
    out = outs[0] if n_chunks == 1 else jnp.concatenate(outs, axis=0)
    return jax.device_put(out[:f], devs[0]) if sharded else out[:f]


def filter_activation(
    params: Params,
    images,
    layer: str,
    filter_indices,
    *,
    preprocess: bool = False,
    model: ConvNet | None = None,
) -> jax.Array:
    """Mean activation of filter ``filter_indices[i]`` on its own image ``i``.

    The objective :func:`filter_patterns` maximises, evaluated in float32.

    Args:
      params: model weights.
      images: float ``(f, h, w, c)`` in the model's input domain
        (``preprocess=False``) or RGB [0, 255] (``preprocess=True``).
      layer: a spatial layer of the model.
      filter_indices: ``f`` channel indices of ``layer``.
      preprocess: pass ``images`` through ``model.preprocess`` first.
      model: the network; None infers the VGG16 preset from ``params``.

    Returns:
      float32 ``(f,)``: ``mean_{h,w} act[layer][i, :, :, filter_indices[i]]``.
    """
    from jaxconvviz.models.predict import check_images

    model = resolve_model(params, model)
    layer = _check_layer(model, layer)
    fidx = _check_filters(model, layer, filter_indices)
    x = check_images(images, name="images", channels=int(model.input_shape[2]))
    if x.shape[0] != fidx.shape[0]:
        raise InputError(
            f"images and filter_indices must have the same length; got "
            f"{x.shape[0]} images and {fidx.shape[0]} filters."
        )
    _check_size(model, layer, min(x.shape[1], x.shape[2]))
    return _activation_jit(params, x, jnp.asarray(fidx), model=model, layer=layer,
                           preprocess=bool(preprocess))


__all__ = ["filter_patterns", "filter_activation", "default_batch_size", "LOOPS",
           "CPU_BATCH_SIZE"]
