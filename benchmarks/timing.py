"""Timing, compile counting and per-case device memory."""

from __future__ import annotations

__all__ = ["CaseMemory", "CompileCounter", "log", "memory_stats", "sync", "timed",
           "timeit"]

import statistics
import sys
import time
from collections.abc import Callable


def log(msg: str) -> None:
    """Progress on stderr (stdout carries the JSON)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sync(x):
    """Block until every array in ``x`` is computed; returns ``x``."""
    import jax

    jax.block_until_ready(x)
    return x


def timed(fn: Callable[[], object]) -> float:
    """Seconds of one call of ``fn``, results ready on the host side."""
    t0 = time.perf_counter()
    sync(fn())
    return time.perf_counter() - t0


def timeit(fn: Callable[[], object], *, repeat: int) -> tuple[float, float, list]:
    """``(cold seconds of the first call, median of repeat more, samples)``.

    The first call compiles; the timed calls repeat exactly that call, so
    they run with the shapes it compiled."""
    cold = timed(fn)
    samples = [timed(fn) for _ in range(max(1, repeat))]
    return cold, statistics.median(samples), samples


class CompileCounter:
    """Counts XLA backend compilations while active (``with`` block), from
    jax's ``/jax/core/compile/backend_compile_duration`` monitoring event.

    A timed region that compiled was not warm: records carry the count so a
    reader can check that the warm-up used exactly the timed shapes.
    """

    EVENT = "/jax/core/compile/backend_compile_duration"
    _installed = False
    _active: list[CompileCounter] = []

    def __init__(self):
        self.count = 0
        self.seconds = 0.0

    @classmethod
    def _listener(cls, event: str, duration: float, **_kw) -> None:
        if event == cls.EVENT:
            for c in cls._active:
                c.count += 1
                c.seconds += duration

    def __enter__(self) -> CompileCounter:
        if not CompileCounter._installed:
            import jax

            jax.monitoring.register_event_duration_secs_listener(
                CompileCounter._listener)
            CompileCounter._installed = True
        CompileCounter._active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        CompileCounter._active.remove(self)


def memory_stats() -> dict | None:
    """``memory_stats()`` of the first local device (None on XLA:CPU)."""
    import jax

    try:
        return jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without stats raise or return None
        return None


class CaseMemory:
    """The device's peak memory during one case.

    ``peak_bytes_in_use`` is a process-wide high-water mark with no reset, so
    within one process a case's own peak is known only when the mark rose
    during the case (then the new mark was reached by this case). Otherwise
    the record says the case stayed at or below the earlier mark. A probe
    that runs each case in its own process (``scripts/gpu_probe.py``) gets
    every case's own peak. On XLA:CPU there are no device memory stats: the
    record says so (the process RSS is not device memory and is not
    reported as such).
    """

    def __init__(self, own_process: bool = False):
        self.own_process = own_process
        self.before = None

    def __enter__(self) -> CaseMemory:
        self.before = memory_stats()
        return self

    def __exit__(self, *exc) -> None:
        self.after = memory_stats()

    def record(self) -> dict:
        import jax

        dev = jax.local_devices()[0]
        if self.before is None or self.after is None or \
                "peak_bytes_in_use" not in self.after:
            return {"peak_bytes": None, "source": "not available",
                    "note": f"{dev.platform} device {dev.device_kind!r} has no "
                            f"memory_stats() (XLA:CPU has none); the process RSS "
                            f"is not device memory and is not reported"}
        b = int(self.before.get("peak_bytes_in_use", 0))
        a = int(self.after["peak_bytes_in_use"])
        out = {"source": "device.memory_stats()['peak_bytes_in_use']",
               "device": str(dev), "limit_bytes": self.after.get("bytes_limit")}
        if self.own_process or a > b:
            out.update(peak_bytes=a, per_case=True)
        else:
            out.update(peak_bytes=None, per_case=False, at_most_bytes=a,
                       note="this case did not raise the process's high-water "
                            "mark set by an earlier case; its own peak is at "
                            "most at_most_bytes (run it alone for the exact "
                            "figure)")
        return out
