"""Value-neutral algorithm choices (:class:`Backend`) and the machinery
behind them: the convolution algorithms (:mod:`.matmul`, :mod:`.winograd`,
:mod:`.depthwise`, chosen per layer by :mod:`.algorithms`), the resolution
of ``"auto"`` per platform (:mod:`.resolve`), the per-program XLA options
(:mod:`.xla`), CPU-core use (:mod:`.cpu`) and the persistent compilation
cache (:mod:`.compile_cache`)."""

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

__all__ = ["CHOICES", "PLATFORMS", "Backend", "backend", "bind", "default_backend",
           "resolve", "resolve_channel_only", "resolve_stop_dead"]
