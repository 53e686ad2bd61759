"""Pixel-domain checks for arrays handed to the library (no Pillow, no jax).

Every technique takes images as RGB [0, 255] floats (the model's own
preprocessing, e.g. caffe BGR mean subtraction, is applied inside). The most
common newcomer mistake is passing an image scaled to [0, 1] (or [-1, 1]):
it runs, and gives different, wrong maps. :func:`check_pixel_range` warns
about it; the CAM and attribution entry points call it on their input.
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np

from jaxconvviz.errors import InputWarning

__all__ = ["PixelRangeWarning", "check_pixel_range", "EXPECTED_DOMAIN"]

#: The pixel domain every public entry point expects.
EXPECTED_DOMAIN = "RGB [0, 255]"


class PixelRangeWarning(InputWarning):
    """An image's values suggest another pixel domain than RGB [0, 255].
    Silence it with ``warnings.filterwarnings("ignore",
    category=jcv.PixelRangeWarning)`` when a dark image is meant."""


def _user_stacklevel() -> int:
    """The ``stacklevel`` (for a ``warnings.warn`` in :func:`check_pixel_range`)
    of the first frame outside this package: the user's call, however deep
    the entry point calls the check."""
    pkg = os.path.dirname(os.path.abspath(__file__)) + os.sep
    f, level = sys._getframe(2), 2  # 0: here, 1: check_pixel_range
    while f is not None and os.path.abspath(f.f_code.co_filename).startswith(pkg):
        f, level = f.f_back, level + 1
    return level


def check_pixel_range(x, *, name: str = "x", domain: str = EXPECTED_DOMAIN,
                      stacklevel: int | None = None) -> None:
    """Warn (:class:`PixelRangeWarning`) when ``x`` looks scaled to [0, 1] or
    [-1, 1] instead of ``domain``.

    The rule: a nonzero array with all values in [-1, 1]. All-zero
    arrays, arrays being traced by JAX (inside ``jit``) and non-numeric input
    pass silently; the check costs one reduction (on the device for a JAX
    array). The warning points at ``stacklevel`` frames above the caller
    (None: the first frame outside jaxconvviz, the user's call), so a loop
    of calls warns once. Returns None.
    """
    try:
        import jax

        if isinstance(x, jax.core.Tracer):
            return
    except ImportError:  # pragma: no cover - jax is a dependency
        pass
    try:
        import jax

        if isinstance(x, jax.Array):  # reduce on the device, copy two scalars
            hi, lo = float(x.max()), float(x.min())
        else:
            hi, lo = float(np.max(x)), float(np.min(x))
    except (TypeError, ValueError):
        return
    if not np.isfinite(hi) or hi > 1.0 or lo < -1.0 or (hi == 0.0 and lo == 0.0):
        return
    scale = "[-1, 1]" if lo < 0 else "[0, 1]"
    fix = "(x + 1) * 127.5" if lo < 0 else "x * 255"
    warnings.warn(
        f"{name} has values in [{lo:.3g}, {hi:.3g}], which looks scaled to "
        f"{scale}; jaxconvviz expects {domain} (pass {fix}).",
        PixelRangeWarning,
        stacklevel=_user_stacklevel() if stacklevel is None else stacklevel + 1)
