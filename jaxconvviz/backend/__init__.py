"""Value-neutral algorithm choices (:class:`Backend`) and the machinery
behind them: the convolution algorithms (:mod:`.matmul`, :mod:`.winograd`,
:mod:`.depthwise`, chosen per layer by :mod:`.algorithms`), the resolution
of ``"auto"`` per platform (:mod:`.resolve`), the per-program XLA options
(:mod:`.xla`), CPU-core use (:mod:`.cpu`) and the persistent compilation
cache (:mod:`.compile_cache`).

This subpackage is itself callable as the process-default context manager
:func:`~jaxconvviz.backend.config.backend`: ``with jcv.backend(conv3x3=
"winograd"): ...`` works while ``jcv.backend.Backend`` and ``import
jaxconvviz.backend.xla`` keep working. (Binding the function to the name
``jaxconvviz.backend`` instead would hide the subpackage: ``import
jaxconvviz.backend.xla as x`` would then fail.)
"""

import sys
import types

from jaxconvviz.backend.config import (
    CHOICES,
    PLATFORMS,
    Backend,
    backend,
    default_backend,
)
from jaxconvviz.backend.resolve import (
    bind,
    resolve,
    resolve_channel_only,
    resolve_stop_dead,
)


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`backend` (``jcv.backend(...)``)."""

    def __call__(self, **fields):
        return backend(**fields)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["CHOICES", "PLATFORMS", "Backend", "backend", "bind", "default_backend",
           "resolve", "resolve_channel_only", "resolve_stop_dead"]
