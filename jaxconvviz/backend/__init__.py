"""Value-neutral algorithm choices (:class:`Backend`) and the machinery
behind them."""

from jaxconvviz.backend.config import CHOICES, PLATFORMS, Backend, backend, default_backend

__all__ = ["CHOICES", "PLATFORMS", "Backend", "backend", "default_backend"]
