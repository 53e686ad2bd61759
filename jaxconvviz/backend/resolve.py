"""Resolving ``"auto"``: each field's per-platform rule, and binding a model to
the process default before a program is traced.

The rules (``platform``: ``Backend.platform``, else the running one, with
``"gpu"`` for CUDA and ROCm):

========== ==============================================================
field      ``"auto"`` resolves to
========== ==============================================================
conv       ``"matmul"`` in the library's own gradient programs for
           bfloat16 compute on the XLA:CPU this process runs on when it
           has bf16 dot instructions (:func:`~jaxconvviz.backend.cpu.
           cpu_has_bf16`); ``"xla"`` otherwise (and always under the
           user's own ``jax.grad``/``jax.jvp``: the matmul form is
           reverse-mode only)
conv3x3    the program's preference (Score-CAM prefers ``"by_shape"``),
           else ``"conv"``; ``"by_shape"`` (Winograd where it pays on
           XLA:CPU) is ``"conv"`` on other platforms
depthwise  ``"slices"`` on CPU, ``"grouped"`` elsewhere
pointwise  ``"dot"`` on CPU, ``"conv"`` elsewhere
conv_vjp   ``"custom"`` inside the library's own gradient programs on CPU;
           ``"jax"`` otherwise (the user's own ``jax.grad``/``jax.jvp``)
loop       ``"fori"``
========== ==============================================================

``channel_only`` and ``stop_dead`` depend on the target layer and the
objective: :func:`resolve_channel_only`, :func:`resolve_stop_dead`.

Imports jax only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxconvviz.backend.config import CHOICES, Backend, default_backend
from jaxconvviz.backend.cpu import cpu_has_bf16
from jaxconvviz.errors import InputError

#: ``Backend.conv3x3`` values a program may prefer for its ``"auto"``.
CONV3X3_PREFERENCES = (None,) + tuple(c for c in CHOICES["conv3x3"] if c != "auto")


def running_platform() -> str:
    """The platform of :func:`jax.default_backend`, with ``"gpu"`` for CUDA
    and ROCm (``"cpu"``, ``"gpu"``, ``"tpu"``, or another plugin's name)."""
    p = jax.default_backend()
    return "gpu" if p in ("cuda", "rocm") else p


def platform_of(backend: Backend) -> str:
    """The platform ``backend``'s ``"auto"`` is resolved for."""
    return backend.platform or running_platform()


def resolve(backend: Backend, *, dtype=jnp.float32, library_gradients: bool = False,
            prefer_conv3x3: str | None = None) -> Backend:
    """``backend`` with every algorithm field's ``"auto"`` resolved (see the
    module docstring) and ``platform`` set; ``channel_only`` and
    ``stop_dead`` are left as they are.

    Args:
      backend: the choices to resolve (fields already set are kept).
      dtype: the model's compute dtype (``conv``'s rule reads it).
      library_gradients: resolve for the library's own gradient programs
        (reverse mode only: the ascent and render engine, the gradient CAMs
        and attributions) rather than for the user's own programs.
      prefer_conv3x3: the program's own choice for ``conv3x3="auto"``, one of
        :data:`CONV3X3_PREFERENCES`.
    """
    if prefer_conv3x3 not in CONV3X3_PREFERENCES:
        raise InputError(f"prefer_conv3x3 must be one of "
                         f"{', '.join(map(repr, CONV3X3_PREFERENCES))}; got "
                         f"{prefer_conv3x3!r}.")
    return _resolve(backend, jnp.dtype(dtype).name, bool(library_gradients),
                    prefer_conv3x3, running_platform())


@functools.lru_cache(maxsize=512)
def _resolve(b: Backend, dtype: str, library: bool, prefer: str | None,
             running: str) -> Backend:
    platform = b.platform or running
    cpu = platform == "cpu"

    def auto(name, value):
        return value if getattr(b, name) == "auto" else getattr(b, name)

    conv3x3 = auto("conv3x3", prefer or "conv")
    if conv3x3 == "by_shape" and not cpu:  # measured on XLA:CPU only
        conv3x3 = "conv"
    return b.replace(
        conv=auto("conv", "matmul" if library and dtype == "bfloat16"
                  and cpu and running == "cpu" and cpu_has_bf16() else "xla"),
        conv3x3=conv3x3,
        depthwise=auto("depthwise", "slices" if cpu else "grouped"),
        pointwise=auto("pointwise", "dot" if cpu else "conv"),
        conv_vjp=auto("conv_vjp", "custom" if library and cpu else "jax"),
        loop=auto("loop", "fori"),
        platform=platform,
    )


def resolve_channel_only(backend: Backend, layer_kind: str,
                         layer: str | None = None) -> bool:
    """Whether filter ascent on a layer of kind ``layer_kind`` computes only
    each filter's channel (:meth:`~jaxconvviz.ConvNet.channel_forward`).

    ``"auto"``: on CPU for conv layers; the whole layer elsewhere (not
    measured on accelerators) and for every other kind. ``True`` needs a
    conv layer (an :class:`~jaxconvviz.errors.InputError` otherwise)."""
    v = backend.channel_only
    if isinstance(v, str):  # "auto"
        return platform_of(backend) == "cpu" and layer_kind == "conv"
    if v and layer_kind != "conv":
        what = (f"{layer!r} is a {layer_kind} layer" if layer
                else f"got a {layer_kind} layer")
        raise InputError(f"Backend.channel_only=True needs a conv layer; {what} "
                         f"(use 'auto' or False).")
    return v


def resolve_stop_dead(backend: Backend, pre_activation: bool) -> bool:
    """Whether filter ascent drops filters whose ascent cannot move.

    ``"auto"``: on for post-ReLU objectives (``pre_activation=False``), where
    silent filters occur; off before the ReLU (the gradient is not zero there,
    so the check would only cost its host sync)."""
    v = backend.stop_dead
    return (not pre_activation) if isinstance(v, str) else v


def bind(model, *, library_gradients: bool, prefer_conv3x3: str | None = None):
    """``model`` with its backend fixed for one program, before tracing.

    Every library entry point that compiles a program with the model as a
    static (hashable) ``jit`` argument calls this first, so the program's
    cache key holds every choice it is built with: the model's own
    ``backend`` fields win over the process default (:func:`~jaxconvviz.
    backend.backend`, read here), which wins over ``"auto"``'s rule for the
    platform (:func:`resolve`, with the model's dtype). A program built under
    ``with jcv.backend(...)`` is therefore never served from the cache of one
    built without it, and the layers, which read only ``model.backend``,
    find nothing left to resolve but ``channel_only``/``stop_dead``.

    Args:
      model: a :class:`~jaxconvviz.ConvNet`.
      library_gradients: the program is one of the library's own gradient
        programs (reverse mode only): ``"auto"`` picks the custom VJPs and,
        for bfloat16 on CPUs with bf16 dots, the matmul convolutions.
      prefer_conv3x3: the program's choice for ``conv3x3="auto"`` (Score-CAM:
        ``"by_shape"``); None: ``"conv"``.

    Returns:
      ``model`` itself when nothing changes, else a clone with the resolved
      backend.
    """
    b = resolve(model.backend.over(default_backend()), dtype=model.dtype,
                library_gradients=library_gradients, prefer_conv3x3=prefer_conv3x3)
    return model if b == model.backend else model.with_backend(b)


__all__ = ["CONV3X3_PREFERENCES", "bind", "platform_of", "resolve",
           "resolve_channel_only", "resolve_stop_dead", "running_platform"]
