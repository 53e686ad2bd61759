"""One XLA:CPU device per core, so batched filter ascent runs a chunk per core.

XLA:CPU parallelises a single convolution poorly across cores when its
image is large and its channels few, so the one-filter-per-call ascent of
the early VGG16 layers leaves a core mostly idle. Splitting the host into
one JAX device per core and sharding the filter axis over them (every
filter's ascent is independent: no communication) keeps every core busy
(the measurements: ``docs/design-notes.md``).

JAX fixes the CPU device count when its backends start, i.e. at the first
computation, so this is a process-wide switch the caller makes once, right
after import. The library does not flip it on import: it would change what
``jax.devices()`` returns for the rest of the user's program. The
``jaxconvviz`` CLI and ``scripts/benchmark.py`` own their processes and turn
it on by default (``--cpu-devices``).

Imports jax only.
"""

from __future__ import annotations

import functools
import os
import re

import jax

from jaxconvviz.errors import InputError

_FORCE_FLAG = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


#: /proc/cpuinfo flags of the instructions XLA:CPU's bf16 dot kernels need to
#: beat float32 (bf16 dot products in hardware).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags_have_bf16(cpuinfo: str) -> bool:
    """Whether a ``/proc/cpuinfo`` text lists :data:`BF16_FLAGS` on its first CPU."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return any(f in flags for f in BF16_FLAGS)
    return False


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this host's CPU computes bf16 dot products in hardware
    (AVX512-BF16 or AMX-BF16, from ``/proc/cpuinfo``; False where that file
    is missing). Without them bf16 is emulated and no faster than float32
    (``docs/design-notes.md``)."""
    try:
        with open("/proc/cpuinfo") as fh:
            return cpu_flags_have_bf16(fh.read())
    except OSError:
        return False


def use_cpu_cores(n: int | None = None) -> int:
    """Split XLA:CPU into ``n`` devices, one per core, before JAX starts.

    Afterwards ``jax.devices("cpu")`` has ``n`` devices, and
    :func:`~jaxconvviz.filter_patterns` / :func:`~jaxconvviz.filter_atlas`
    shard their filters over them by default (same results as one device,
    up to float rounding of differently batched convolutions). Only the CPU
    backend changes; on a GPU/TPU host the accelerators stay the default.

    Call it once, right after ``import jaxconvviz``, before any JAX
    computation. Calling it again with the count in effect is a no-op. An
    ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS`` or a
    ``JAX_NUM_CPU_DEVICES`` set by the user wins over ``n=None``.

    Args:
      n: devices (>= 1); None: :func:`available_cores`.

    Returns:
      the CPU device count in effect.

    Raises:
      ValueError: ``n`` not a positive int, or it contradicts ``XLA_FLAGS``.
      RuntimeError: JAX's backends already started with another count (call
        it earlier, or set ``JAX_NUM_CPU_DEVICES`` in the environment).
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise InputError(f"n must be None (every available core) or an int >= 1; "
                         f"got {n!r}.")
    forced = _FORCE_FLAG.search(os.environ.get("XLA_FLAGS", ""))
    if forced is not None:
        count = int(forced.group(1))
        if n is not None and n != count:
            raise InputError(
                f"n={n} contradicts XLA_FLAGS={os.environ['XLA_FLAGS']!r}, which "
                f"forces {count} CPU devices; drop one of the two.")
        return count
    current = int(jax.config.jax_num_cpu_devices)
    if n is None:
        if current > 0:  # the user's JAX_NUM_CPU_DEVICES or an earlier call
            return current
        n = available_cores()
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:
        have = len(jax.devices("cpu"))
        if have == n:
            return n
        raise RuntimeError(
            f"use_cpu_cores({n}) came after JAX started its CPU backend with {have} "
            f"device(s): call it right after `import jaxconvviz`, before any JAX "
            f"computation, or set JAX_NUM_CPU_DEVICES={n} in the environment."
        ) from None
    return n


__all__ = ["use_cpu_cores", "available_cores", "cpu_has_bf16", "cpu_flags_have_bf16"]
