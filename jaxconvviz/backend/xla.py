"""Per-program XLA:CPU options for the inference and attribution programs.

XLA:CPU in jaxlib 0.10 hands convolutions and matrix products to YNNPACK,
and by default it may also fuse a *chain* of matrix products into one
YNNPACK call. For VGG16's classifier head (fc1 is 25088 x 4096, 411 MB)
that fused chain is erratic: measured on a 2-core AMD EPYC (Zen 4), the
head alone on 4 images took 931 ms instead of 29 ms, so Eigen-CAM (a
forward pass to the logits plus a 196 x 196 eigenproblem) ran at 1.43 s
for 4 images where Grad-CAM (forward *and* the head's backward) ran at
0.81 s. With only individual convolutions and individual dots given to
YNNPACK (``OPTIONS`` below) the same programs take 0.76 s and 0.82 s, a
plain forward to the logits 198 ms instead of 315 ms for one image, and
ResNet50 / MobileNetV2 Grad-CAM 11 % / 20 % less (the table is in
``docs/design-notes.md``).

The option is set **per compiled program** with ``jax.jit(...,
compiler_options=...)``, never through ``XLA_FLAGS``: the user's own
programs in the same process are not touched. It is applied only where it
was measured to help (predictions, activations, the CAM family, gradient
attributions, faithfulness metrics); the filter-ascent engine, where it was
neutral within noise (block3_conv1 +5 %, block4_conv3 -3 %), keeps XLA's
defaults. It is also skipped, explicitly rather than silently, when:

* the default backend is not the CPU (the option is an XLA:CPU one);
* the user set ``--xla_cpu_experimental_ynn_fusion_type`` in ``XLA_FLAGS``
  (their choice wins);
* ``JAXCONVVIZ_XLA_OPTIONS=off`` is in the environment;
* this jaxlib does not know the option (older than the YNNPACK fusions):
  a one-time probe compile decides, and :func:`compiler_options` returns
  ``None`` with the reason in :data:`STATUS`.

Imports jax only.
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

#: The options, in the form ``compiler_options`` takes (the proto enum names).
OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,"
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
}

#: Why :func:`compiler_options` returned what it did (filled on first use).
STATUS: dict[str, str] = {}


def _reset() -> None:
    """Forget the cached decision (tests)."""
    compiler_options.cache_clear()
    STATUS.clear()


@functools.cache
def compiler_options() -> dict[str, str] | None:
    """:data:`OPTIONS` where they apply in this process, else None (the
    reason is in ``STATUS["reason"]``). Decided once, at the first compiled
    call of a program that uses them (the backend is up by then)."""
    if os.environ.get("JAXCONVVIZ_XLA_OPTIONS", "").lower() in ("off", "0", "no"):
        STATUS["reason"] = "JAXCONVVIZ_XLA_OPTIONS=off"
        return None
    if "xla_cpu_experimental_ynn_fusion_type" in os.environ.get("XLA_FLAGS", ""):
        STATUS["reason"] = "XLA_FLAGS sets the YNN fusion types (the user's choice)"
        return None
    backend = jax.default_backend()
    if backend != "cpu":
        STATUS["reason"] = f"default backend is {backend}, not cpu"
        return None
    try:
        jax.jit(lambda x: x + 1, compiler_options=OPTIONS).lower(
            np.float32(0)).compile()
    except Exception as e:  # noqa: BLE001 - an older jax/jaxlib: keep defaults
        STATUS["reason"] = (f"this jax/jaxlib does not take the options "
                            f"({type(e).__name__}: {str(e)[:120]})")
        return None
    STATUS["reason"] = "applied"
    return dict(OPTIONS)


class _LazyJit:
    """``jax.jit(fun, **kwargs)`` with :func:`compiler_options`, built at the
    first call (or attribute access such as ``.lower``), so importing the
    library neither starts a backend nor fixes the CPU device count."""

    def __init__(self, fun, kwargs):
        self._fun, self._kwargs, self._jitted = fun, kwargs, None
        functools.update_wrapper(self, fun)

    def _get(self):
        if self._jitted is None:
            opts = compiler_options()
            kw = dict(self._kwargs)
            if opts:
                kw["compiler_options"] = opts
            self._jitted = jax.jit(self._fun, **kw)
        return self._jitted

    def __call__(self, *args, **kwargs):
        return self._get()(*args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._get(), name)


def jit(fun=None, **kwargs):
    """``jax.jit`` for the inference and attribution programs, with
    :func:`compiler_options`; usable as ``@jit`` or
    ``@functools.partial(jit, static_argnames=...)``."""
    if fun is None:
        return functools.partial(jit, **kwargs)
    return _LazyJit(fun, kwargs)


__all__ = ["OPTIONS", "STATUS", "compiler_options", "jit"]
