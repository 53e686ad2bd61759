"""Feature-visualization internals: argument checks, chunk planning,
devices, memory and the CPU time model (private: the public surface is
:func:`~jaxconvviz.filter_atlas`, :func:`~jaxconvviz.atlas_plan` and
:func:`~jaxconvviz.featureviz.atlas.estimate_seconds`).

Imports jax and numpy only.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxconvviz.backend import memory as _memory
from jaxconvviz.backend.config import Backend
from jaxconvviz.errors import InputError
from jaxconvviz.models import shapes
from jaxconvviz.models.convnet import ConvNet

try:  # jax >= 0.6.1
    from jax import shard_map as _shard_map
except ImportError:  # pragma: no cover - older jax
    from jax.experimental.shard_map import shard_map as _shard_map

#: Largest chunk per device on XLA:CPU (see :func:`default_batch_size`):
#: batching pays for deep layers (small feature maps) and costs cache for
#: early ones; accelerators run every requested filter at once.
CPU_BATCH_SIZE = 16
#: On XLA:CPU a chunk holds about ``CPU_ROWS / (h' * w')`` filters, ``h' * w'``
#: the target layer's feature-map size.
CPU_ROWS = 512
#: On XLA:CPU, split across several devices (:func:`~jaxconvviz.use_cpu_cores`)
#: only layers whose forward pass costs at least this many multiply-adds per
#: image (:func:`~jaxconvviz.models.shapes.conv_macs`); lighter ones run on
#: one device, where a call's fixed cost dominates (docs/benchmarks.md).
CPU_SHARD_MIN_MACS = 20_000_000
#: Name of the mesh axis the filters are split over.
MESH_AXIS = "filters"
#: Fraction of a GPU/TPU's free memory a derived budget uses.
ACCELERATOR_MEMORY_FRACTION = 0.8
#: Fraction of the host's available memory a derived budget uses on XLA:CPU.
CPU_MEMORY_FRACTION = 0.5
#: XLA:CPU's per-filter multiplier on the summed activation sizes (float32
#: bytes) in :func:`filter_memory_bytes`: headroom over XLA's own accounting
#: of one ascent step (docs/design-notes.md). The rule and its constant live
#: in :mod:`jaxconvviz.backend.memory` (``CPU_ACTIVATION_FACTOR``).
ACTIVATION_FACTOR = _memory.CPU_ACTIVATION_FACTOR
#: Fixed per-device overhead as a multiple of the float32 parameter bytes.
PARAM_FACTOR = 3.0
#: The one CPU time model (:func:`estimate_seconds`): XLA:CPU multiply-adds
#: per second per CPU device, for the forward and input-gradient
#: multiply-adds of an ascent step (docs/design-notes.md).
CPU_MACS_PER_SECOND = 5e10
#: ... and seconds per output element of a memory-bound node
#: (:func:`jaxconvviz.models.shapes.memory_bound_elements`: batch norms,
#: activations, adds, pads, depthwise convs) per image per ascent step.
CPU_SECONDS_PER_ELEMENT = 1e-8
#: Runs estimated over this many seconds on XLA:CPU warn first.
CPU_WARN_SECONDS = 60.0
#: Work of one ascent step in forward passes: book (forward + input
#: gradient) and lucid (Adam and the Fourier transforms on top).
STEP_FACTOR = {"book": 3.0, "lucid": 4.0}

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6,
          "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10,
          "mib": 2**20, "gib": 2**30, "tib": 2**40}


# ------------------------------------------------------------------ validation
def short(v) -> str:
    """A value as an error message shows it (arrays by shape and dtype)."""
    shape = getattr(v, "shape", None)
    if shape is not None:
        return f"{type(v).__name__} of shape {tuple(shape)} and dtype {v.dtype}"
    r = repr(v)
    return r if len(r) < 60 else r[:57] + "..."


def check_layer(model: ConvNet, layer) -> str:
    """``layer`` if it is a spatial layer of ``model`` (else lists them)."""
    return model.check_layer(layer, model.spatial_layers, name="layer")


def check_filters(model: ConvNet, layer: str, filter_indices) -> np.ndarray:
    """int32 ``(f,)`` channel indices of ``layer`` from a 1-D integer sequence."""
    if isinstance(filter_indices, jax.core.Tracer):
        raise InputError(
            "filter_indices must be concrete (a list, range or array), not a "
            "traced value: call it outside jit."
        )
    a, n = np.asarray(filter_indices), model.channels(layer)
    if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
        raise InputError("filter_indices must be a non-empty 1-D sequence of "
                         f"integers (e.g. range(16) or [3]); got "
                         f"{short(filter_indices)}.")
    bad = a[(a < 0) | (a >= n)][:5].tolist()
    if bad:
        raise InputError(f"filter_indices must be in 0..{n - 1}: layer {layer!r} "
                         f"has {n} channels; got out-of-range {bad}.")
    return a.astype(np.int32)


def check_size(model: ConvNet, layer: str, size, *, margin: int = 0) -> int:
    """``size`` if it is an int of at least the layer's minimum input size
    (``margin``: pixels the transforms add before the network)."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise InputError(f"size must be an integer number of pixels; got {size!r}.")
    need = model.min_input_size(layer) - margin
    if size < max(need, 1):
        raise InputError(
            f"size must be at least {max(need, 1)} px for layer {layer!r} (its "
            f"feature map would be empty); got {size}."
        )
    return int(size)


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be an integer >= 1; got {value!r}.")
    return int(value)


def check_key(key):
    """``key`` if it is one typed or legacy PRNG key."""
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
            f"jax.random.PRNGKey); got {short(key)}."
        )
    return key


def key_parts(key) -> tuple[np.ndarray, str | None]:
    """``(key data, impl name or None for a legacy uint32 key)``."""
    key = check_key(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key)), str(jax.random.key_impl(key))
    return np.asarray(key), None


def key_of(kd, key_impl: str | None):
    """Inverse of :func:`key_parts` (inside or outside jit)."""
    return kd if key_impl is None else jax.random.wrap_key_data(kd, impl=key_impl)


def check_init(init, f: int, size: int, channels: int):
    shape = getattr(init, "shape", None)
    want = (f, size, size, channels)
    if shape is None or tuple(shape) != want:
        raise InputError(
            f"init must have shape (len(filter_indices), size, size, channels) = "
            f"{want}; got {short(init)}."
        )
    x = jnp.asarray(init, jnp.float32)
    if not bool(jnp.isfinite(x).all()):
        raise InputError("init contains NaN or inf values; start images must be "
                         "finite.")
    return x


def check_devices(devices, default: Callable[[], list], default_name: str) -> tuple:
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


# ------------------------------------------------------------------ planning

def auto_devices(devs: tuple, model: ConvNet, layer: str, size: int, *,
                 channel_only: bool = False) -> tuple:
    """The devices a default (``devices=None``) call shards ``layer`` over:
    all of ``devs``, except on CPU for layers under :data:`CPU_SHARD_MIN_MACS`
    (the first device only)."""
    if (len(devs) > 1 and devs[0].platform == "cpu"
            and shapes.conv_macs(model, layer, size, channel_only=channel_only)
            < CPU_SHARD_MIN_MACS):
        return devs[:1]
    return devs


def resolve_channel_only(channel_only, model: ConvNet, layer: str,
                         platform: str) -> bool:
    """Whether the ascent on ``layer`` computes only each filter's channel of
    it (:meth:`~jaxconvviz.ConvNet.channel_forward`): ``Backend.channel_only``
    (``"auto"``, True or False) resolved for ``platform`` and the layer's kind
    by :func:`jaxconvviz.backend.resolve_channel_only`."""
    from jaxconvviz.backend.resolve import resolve_channel_only as resolve

    return resolve(Backend(channel_only=channel_only, platform=platform),
                   model.layer(layer).kind, layer)


def cpu_batch_size(n_filters: int, model: ConvNet, layer: str, size: int) -> int:
    """Filters per device and call on XLA:CPU when ``Run.batch_size`` is None:
    ``ceil(CPU_ROWS / (h' * w'))`` with ``h' x w'`` the feature map of
    ``layer`` at ``size`` px, at most :data:`CPU_BATCH_SIZE` and
    ``n_filters`` (VGG16 at 64 px: 1 filter up to block2, 2 at block3, 8 at
    block4, 16 at block5). Accelerators take every filter at once."""
    h, w = model.output_shape(layer, (size, size))[:2]
    return max(1, min(n_filters, CPU_BATCH_SIZE, -(-CPU_ROWS // max(1, h * w))))


def filter_mesh(devs) -> Mesh:
    """A 1-D mesh of ``devs`` along :data:`MESH_AXIS`."""
    return Mesh(np.asarray(devs, dtype=object), (MESH_AXIS,))


def filter_shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
    """``(rows, replicated)``: the filter axis split over ``mesh``, and a copy
    on every device (params, keys, scalars)."""
    return NamedSharding(mesh, P(MESH_AXIS)), NamedSharding(mesh, P())


def per_device(fn, mesh: Mesh | None, *, n_rows: int = 2, n_repl_after: int = 1):
    """``fn(params, *rows, *replicated)`` run by every device of ``mesh`` on
    its own rows (``shard_map``; params and the trailing ``n_repl_after``
    arguments replicated; every leaf of the ``n_rows`` row arguments split
    along its first axis); ``fn`` itself when ``mesh`` is None.

    Each filter's optimisation is independent, so the program has no
    communication, and per-device code sees its local chunk.
    """
    if mesh is None:
        return fn
    rows, repl = P(MESH_AXIS), P()
    return _shard_map(fn, mesh=mesh,
                      in_specs=(repl,) + (rows,) * n_rows + (repl,) * n_repl_after,
                      out_specs=rows)


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


def host_available_bytes() -> int:
    """The host's available memory (``MemAvailable``), or 8 GB if unknown."""
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
    memory, divided among the local CPU devices.
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
    return int(host_available_bytes() * CPU_MEMORY_FRACTION / n_local)


def param_bytes(params) -> int:
    """float32 bytes of ``params``."""
    return int(sum(np.prod(np.shape(leaf)) * 4 for leaf in jax.tree.leaves(params)))


def memory_platform(platform: str) -> str:
    """The platform whose memory rule applies to devices of ``platform``
    (``jax.Device.platform`` or a ``Backend.platform``): ``"gpu"`` for
    CUDA and ROCm, ``"tpu"``, and XLA:CPU's (the most conservative) for
    the CPU and any other plugin."""
    if platform in ("gpu", "cuda", "rocm"):
        return "gpu"
    return "tpu" if platform == "tpu" else "cpu"


def filter_memory_bytes(model: ConvNet, layer: str, size: int, *,
                        platform: str = "cpu", dtype="float32") -> int:
    """Estimated device bytes one filter adds to an ascent step at ``layer``
    compiled for ``platform`` (:func:`memory_platform`) in the compute
    ``dtype``: :func:`jaxconvviz.backend.memory.filter_memory_bytes`, the
    estimate calibrated per platform and dtype against XLA's buffer
    assignment. On XLA:CPU (the dtype ignored): ``ACTIVATION_FACTOR`` x the
    float32 bytes of every activation up to and including ``layer`` for one
    ``size`` x ``size`` image (stored forward values, backward buffers and
    work space), plus four float32 copies of the image. Analytic: nothing
    is compiled.
    """
    return _memory.filter_memory_bytes(model, layer, size,
                                       platform=memory_platform(platform),
                                       dtype=jnp.dtype(dtype).name)


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def check_fits(model: ConvNet, layer: str, size: int, *, budget_bytes: int,
               fixed_bytes: int, n_filters: int = 1, host_bytes: int | None = None,
               flag: str = "size", platform: str = "cpu", dtype="float32") -> int:
    """Raise before any compute when one filter of ``layer`` at ``size`` px
    cannot fit the per-device budget, or the ``n_filters`` results cannot fit
    host memory. Returns the per-filter estimate (bytes, :func:`filter_memory_bytes`
    for the devices' ``platform`` and the compute ``dtype``).

    The message gives the estimate and the limit.
    """
    per = filter_memory_bytes(model, layer, size, platform=platform, dtype=dtype)
    if per + fixed_bytes > budget_bytes:
        raise InputError(
            f"{flag}={size} px needs an estimated {_gb(per)} per filter at layer "
            f"{layer!r} (plus {_gb(fixed_bytes)} of weights), more than the "
            f"{_gb(budget_bytes)} per device allowed (memory_budget, default "
            f"{CPU_MEMORY_FRACTION:.0%} of the free host memory on CPU, "
            f"{ACCELERATOR_MEMORY_FRACTION:.0%} of the free device memory "
            f"otherwise); use a smaller {flag}.")
    result = n_filters * size * size * int(model.input_shape[2]) * 4
    limit = host_available_bytes() if host_bytes is None else host_bytes
    if result > limit:
        raise InputError(
            f"{flag}={size} px: the {n_filters} result images need {_gb(result)} "
            f"of host memory, more than the {_gb(limit)} available; use a "
            f"smaller {flag} or fewer filters.")
    return per


@dataclass(frozen=True)
class LayerPlan:
    """How one layer's filters run.

    Attributes:
      layer: layer name.
      n_filters: filters requested.
      chunk: filters per compiled call (a multiple of ``n_devices``).
      n_chunks: calls; ``chunk * n_chunks - n_filters`` are padding.
      n_devices: devices the filter axis is split over.
      per_filter_bytes: :func:`filter_memory_bytes` estimate (for the
        devices' platform and the compute dtype).
      budget_bytes: per-device budget the chunk was cut from.
      channel_only: whether the ascent computes only each filter's channel
        of the layer (:func:`resolve_channel_only`).
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
    ``n_devices`` that covers ``n_filters`` in that many chunks.

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


# ------------------------------------------------------------------ time model
def estimate_seconds(model: ConvNet, plans: Sequence[LayerPlan], size: int,
                     steps: int, *, step_factor: float = 3.0) -> float:
    """Seconds a CPU run of ``plans`` is estimated to take, per image step
    (padded chunks included, split over the devices): forward multiply-adds
    (:func:`~jaxconvviz.models.shapes.conv_macs`) x ``step_factor``
    (:data:`STEP_FACTOR`) at
    :data:`CPU_MACS_PER_SECOND`, plus the memory-bound nodes' output
    elements at :data:`CPU_SECONDS_PER_ELEMENT` (what makes MobileNet-like
    graphs slow on a CPU although they have few multiply-adds)."""
    total = 0.0
    for p in plans:
        macs = shapes.conv_macs(model, p.layer, size, channel_only=p.channel_only)
        elems = shapes.memory_bound_elements(model, p.layer, size)
        per_image_step = (macs * step_factor / CPU_MACS_PER_SECOND
                          + elems * CPU_SECONDS_PER_ELEMENT)
        total += per_image_step * steps * p.chunk * p.n_chunks / p.n_devices
    return total

# ------------------------------------------------------------------ runner
def all_addressable(devs) -> bool:
    pid = jax.process_index()
    return all(d.process_index == pid for d in devs)


def first_local(devs):
    pid = jax.process_index()
    for d in devs:
        if d.process_index == pid:
            return d
    return jax.local_devices()[0]


def to_global(value, sharding: NamedSharding) -> jax.Array:
    """A host array placed with ``sharding`` (multi-process: each process
    supplies its addressable shards)."""
    value = np.asarray(value)
    if all_addressable(tuple(sharding.mesh.devices.flat)):
        return jax.device_put(value, sharding)
    return jax.make_array_from_callback(value.shape, sharding, lambda i: value[i])


def fetch(x: jax.Array) -> np.ndarray:
    """``x`` on the host (multi-process: gathered from every process)."""
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


