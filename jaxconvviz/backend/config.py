"""The one backend object: every value-neutral algorithm choice in one place.

A :class:`Backend` names *how* the network is computed, never *what*: each of
its fields changes results only up to float summation order (the 3x3
Winograd form: within float32 rounding, ~1e-6 relative). Every field is
``"auto"`` by default, and ``"auto"`` is resolved for a named platform
(``"cpu"``, ``"gpu"``, ``"tpu"``), by default the running one
(:func:`jax.default_backend`), so a program for another platform can be
built on purpose (``Backend(platform="gpu")``).

Precedence, as :func:`jax.default_matmul_precision`: a field set on the
model's backend (``ConvNet.backend``) wins over the process default set with
:func:`backend` (``with jcv.backend(conv3x3="winograd"): ...``), which wins
over ``"auto"``'s per-platform rule (:mod:`jaxconvviz.backend.resolve`).
The library's entry points apply all three before tracing
(:func:`~jaxconvviz.backend.bind`), so a compiled program's cache key holds
every choice it was built with; the layers of a model read only its own
``backend`` field, so under your own ``jax.jit`` of ``model.forward`` set
the field (``model.with_backend(...)``) or bind the model yourself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Any

from jaxconvviz.errors import InputError

__all__ = ["CHOICES", "PLATFORMS", "Backend", "backend", "default_backend"]

#: Accepted values of each field (``"auto"`` first); booleans for the two
#: switches.
CHOICES: dict[str, tuple[Any, ...]] = {
    # convolutions in general: lax.conv_general_dilated or im2col matmul
    # (auto: matmul only for bfloat16 on an XLA:CPU with bf16 dot instructions)
    "conv": ("auto", "xla", "matmul"),
    # stride-1 3x3 float32 convolutions: "conv" (as Keras), "winograd"
    # (F(2x2,3x3) everywhere), "by_shape" (Winograd where it pays on XLA:CPU;
    # "conv" elsewhere). auto: "conv", or the program's own preference
    # (Score-CAM: "by_shape").
    "conv3x3": ("auto", "conv", "winograd", "by_shape"),
    # depthwise: shifted slices (auto on CPU) or grouped lax conv (elsewhere)
    "depthwise": ("auto", "slices", "grouped"),
    # 1x1: strided slice + dot (auto on CPU) or lax conv (elsewhere)
    "pointwise": ("auto", "dot", "conv"),
    # input gradients of convolutions: JAX's rules or the library's custom
    # VJPs. auto: custom inside the library's own gradient programs on CPU,
    # JAX's rules under the user's own jax.grad/jax.jvp.
    "conv_vjp": ("auto", "jax", "custom"),
    # ascent on a conv layer computes only each filter's channel
    # (auto: on CPU for conv layers)
    "channel_only": ("auto", True, False),
    # drop filters whose ascent cannot move (auto: on for post-ReLU objectives)
    "stop_dead": ("auto", True, False),
    # ascent loop: lax.fori_loop or a Python loop of jitted steps
    "loop": ("auto", "fori", "python"),
}
PLATFORMS = ("cpu", "gpu", "tpu")


@dataclasses.dataclass(frozen=True)
class Backend:
    """Value-neutral algorithm choices, hashable (a static jit argument).

    Attributes:
      conv, conv3x3, depthwise, pointwise, conv_vjp, channel_only,
      stop_dead, loop: see :data:`CHOICES`; ``"auto"`` by default.
      platform: ``"cpu"``, ``"gpu"``, ``"tpu"`` or None (the running one):
        the platform ``"auto"`` is resolved for.
    """

    conv: str = "auto"
    conv3x3: str = "auto"
    depthwise: str = "auto"
    pointwise: str = "auto"
    conv_vjp: str = "auto"
    channel_only: Any = "auto"
    stop_dead: Any = "auto"
    loop: str = "auto"
    platform: str | None = None

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            v = getattr(self, name)
            if not any(v is a or (type(v) is type(a) and v == a) for a in allowed):
                raise InputError(
                    f"Backend.{name} must be one of "
                    f"{', '.join(map(repr, allowed))}; got {v!r}.")
        if self.platform is not None and self.platform not in PLATFORMS:
            raise InputError(f"Backend.platform must be None or one of "
                             f"{', '.join(map(repr, PLATFORMS))}; got "
                             f"{self.platform!r}.")

    def replace(self, **changes) -> Backend:
        return dataclasses.replace(self, **changes)

    def over(self, default: Backend) -> Backend:
        """This backend's set (non-"auto") fields over ``default``'s."""
        changes = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if getattr(self, f.name) not in ("auto", None)}
        return dataclasses.replace(default, **changes)


_STATE = threading.local()


def default_backend() -> Backend:
    """The process (thread) default set by :func:`backend`; all "auto" if none."""
    return getattr(_STATE, "backend", None) or Backend()


@contextlib.contextmanager
def backend(**fields):
    """Set process-default backend fields inside a ``with`` block.

    ``with jcv.backend(conv3x3="winograd"): jcv.cam(...)``. Fields set on a
    model's own ``backend`` still win. Nested blocks stack.
    """
    prev = default_backend()
    new = Backend(**fields).over(prev)
    _STATE.backend = new
    try:
        yield new
    finally:
        _STATE.backend = prev
