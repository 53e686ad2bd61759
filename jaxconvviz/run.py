"""How a request runs: :class:`Run`, the one home of execution options.

Every public entry point that runs a compiled program over many filters or
images (``render``, ``filter_patterns``, ``filter_atlas``, ``cam``,
``attribution``, ``activations``, ...) takes ``run: Run | None = None``
instead of spelling these options out in its own signature. Algorithm
choices live in :class:`~jaxconvviz.backend.Backend`, not here: a ``Run``
never changes results beyond float summation order either, except
``dtype`` (the compute precision).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from jaxconvviz.errors import InputError

__all__ = ["DTYPES", "Run"]

#: Compute dtypes accepted by :attr:`Run.dtype`.
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class Run:
    """Execution options of one request (frozen, hashable).

    Attributes:
      batch_size: filters (or images) per compiled call; None: the planner's
        choice for the memory budget and platform.
      memory_budget: bytes (int) or a string such as ``"8GB"``/``"512MiB"``;
        None: the device's memory (host memory on CPU) less a margin.
      devices: a sequence of ``jax.Device`` to shard over; None: the
        planner's choice (all local devices where the work pays for it).
      dtype: compute dtype name, one of :data:`DTYPES` (params stay
        float32); results are float32.
      progress: None/False (silent), True (a bar on a terminal, a line per
        chunk otherwise) or a callable ``(done, total) -> None``.
    """

    batch_size: int | None = None
    memory_budget: int | str | None = None
    devices: tuple | None = None
    dtype: str = "float32"
    progress: bool | Callable[[int, int], Any] | None = None

    def __post_init__(self):
        bs = self.batch_size
        if bs is not None and (isinstance(bs, bool) or not isinstance(bs, int)
                               or bs < 1):
            raise InputError(f"Run.batch_size must be None or a positive int; "
                             f"got {bs!r}.")
        if self.devices is not None:
            if isinstance(self.devices, (str, bytes)) or not isinstance(
                    self.devices, Sequence) or not self.devices:
                raise InputError(f"Run.devices must be None or a non-empty "
                                 f"sequence of jax devices; got {self.devices!r}.")
            object.__setattr__(self, "devices", tuple(self.devices))
        import numpy as np

        try:
            name = np.dtype(self.dtype).name if self.dtype != "bfloat16" else "bfloat16"
        except TypeError:
            name = getattr(self.dtype, "__name__", None) or getattr(
                getattr(self.dtype, "dtype", None), "name", None)
        if name not in DTYPES:
            raise InputError(f"Run.dtype must be one of {', '.join(DTYPES)}; "
                             f"got {self.dtype!r}.")
        object.__setattr__(self, "dtype", name)
        p = self.progress
        if not (p is None or isinstance(p, bool) or callable(p)):
            raise InputError(f"Run.progress must be None, a bool or a callable "
                             f"(done, total); got {p!r}.")

    def replace(self, **changes) -> Run:
        return dataclasses.replace(self, **changes)
