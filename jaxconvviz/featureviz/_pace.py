"""Pacing of the gradient ascents: segments of bounded duration (private).

A chunk's ascent is cut into segments of :meth:`Pacer.length` steps (one
compiled loop with a traced step count, so the cut does not change a single
bit, :class:`jaxconvviz.featureviz._programs.Program`), and at most
:data:`QUEUE_DEPTH` segments are in flight: the host waits for
the oldest by polling ``is_ready()`` with short sleeps, so a
KeyboardInterrupt (Ctrl-C) is taken within a poll, and what is left to run
after it is at most about ``QUEUE_DEPTH`` segments of
:data:`SEGMENT_SECONDS` each (or one step, when a single step is longer).
A segment's length comes from the planner's time estimate per chunk-step
(:func:`jaxconvviz.featureviz._plan.estimate_seconds`) times a correction
factor measured from the segments that finished, so segments stay near
:data:`SEGMENT_SECONDS` whatever the layer, chunk size or machine, and the
time left that the progress reports is corrected as the
run goes.

Multi-process runs keep every process's segments equal (each process must
launch the same programs): the length then comes from the planner's
estimate only, never from measured times.

Imports jax (for ``tree.leaves``) and the standard library only; the clock
and the sleep are injectable (tests run without timing).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import jax

from jaxconvviz._interrupt import DeferredInterrupt

#: Target duration of one segment, in seconds. Each call of the compiled
#: loop has a fixed cost (about 40-60 ms of CPU time for VGG16's block5 on a
#: loaded 2-core CPU: entering the loop, its buffers), so segments of 2 s
#: keep it near 2-3% while Ctrl-C still waits at most about 2 s.
SEGMENT_SECONDS = 2.0
#: The first segment (before any measurement) aims at this fraction of
#: :data:`SEGMENT_SECONDS`: the planner's estimate may be optimistic.
FIRST_FRACTION = 0.5
#: Steps of a layer's first segment at most (its time is not measured yet:
#: the planner's estimate can be off by 10x or more, e.g. on tiny models).
FIRST_STEPS = 2
#: Segments in flight at most: 1, the running one (the host dispatches the
#: next when it is done: a gap of one poll, at most :data:`POLL_SECONDS`, per
#: segment, well under 1% of it); 2 would keep the device busy through the
#: gap but double what Ctrl-C waits for.
QUEUE_DEPTH = 1
#: Longest sleep between two ``is_ready()`` polls (the first ones are shorter).
POLL_SECONDS = 0.005
#: The progress callback is offered a heartbeat at most this often while
#: waiting (it prints one only when its own interval has passed).
BEAT_SECONDS = 0.25


@dataclass
class LayerWork:
    """One layer's work: ``units`` chunk-steps planned, ``unit_seconds`` the
    planner's estimate per chunk-step (None: unknown)."""

    layer: str
    n_filters: int
    units: int
    unit_seconds: float | None


class Pacer:
    """Cuts ascents into segments and keeps the device queue short.

    ``target`` and ``depth`` default to :data:`SEGMENT_SECONDS` and
    :data:`QUEUE_DEPTH` as they are when the pacer is made; ``target=inf``
    turns pacing off (each chunk's steps in one call; with a large ``depth``
    nothing waits: the engine's behaviour before pacing, for benchmarks).

    ``on_progress(done_filters, seconds_left, layer, beat)`` is called after
    each finished segment and, while waiting, every :data:`BEAT_SECONDS`
    (``beat`` True: a heartbeat, which the sink prints only when its own
    interval has passed; done counts finished segments as fractions of their
    layer's filters; ``seconds_left`` None when unknown).
    """

    def __init__(self, layers: list[LayerWork], *,
                 on_progress: Callable | None = None, adaptive: bool = True,
                 target: float | None = None, depth: int | None = None,
                 clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], object] = time.sleep):
        self.layers, self.on_progress = layers, on_progress
        target = SEGMENT_SECONDS if target is None else target
        depth = QUEUE_DEPTH if depth is None else depth
        self.adaptive, self.target, self.depth = adaptive, target, max(1, depth)
        self.clock, self.sleep = clock, sleep
        self.factor: float | None = None   # measured / estimated seconds
        self.layer_factor: float | None = None  # the same, this layer only
        self.unit_seconds: float | None = None  # measured, layers without estimate
        self.pending: deque = deque()      # (array, steps, dispatch time)
        self.cur, self.done_units, self.base = 0, 0, 0
        self.last_done: float | None = None
        self.last_beat = clock()
        self.segments: list[tuple[int, float]] = []  # (steps, seconds) measured
        self.interrupt = DeferredInterrupt()

    def check(self) -> None:
        """Raise KeyboardInterrupt if a SIGINT was deferred
        (:class:`DeferredInterrupt`)."""
        if self.interrupt.hit:
            raise KeyboardInterrupt

    def settle(self) -> None:
        """After an interrupt: block (no polling) until the queued segments
        are done, so the process never exits with computations in flight.
        At most :data:`QUEUE_DEPTH` segments of about :data:`SEGMENT_SECONDS`."""
        while self.pending:
            state = self.pending.popleft()[0]
            for leaf in jax.tree.leaves(state):
                if hasattr(leaf, "block_until_ready"):
                    try:
                        leaf.block_until_ready()
                    except Exception:  # noqa: BLE001 - only waiting
                        pass

    # ------------------------------------------------------------ layers
    def begin(self, i: int) -> None:
        """Start layer ``i`` of :attr:`layers`."""
        self.check()
        self.cur, self.done_units = i, 0
        self.layer_factor = None

    def end(self) -> None:
        """Layer :attr:`cur` landed."""
        self.drain()
        self.base += self.layers[self.cur].n_filters
        self.done_units = self.layers[self.cur].units

    # ------------------------------------------------------------ segments
    def seconds_per_unit(self, i: int | None = None) -> float | None:
        """Estimated seconds per chunk-step of layer ``i`` (default: the
        current one): the planner's estimate times the measured factor."""
        i = self.cur if i is None else i
        w = self.layers[i]
        if w.unit_seconds is None:
            return self.unit_seconds
        f = self.layer_factor if i == self.cur and self.layer_factor else self.factor
        return w.unit_seconds * (1.0 if f is None else f)

    def length(self, remaining: int) -> int:
        """Steps of the next segment: about :data:`SEGMENT_SECONDS` by the
        current estimate, at least 1, at most ``remaining``; a layer's first
        segments, before any of its own is measured, at most
        :data:`FIRST_STEPS` (and half the target)."""
        if math.isinf(self.target):  # pacing off: each chunk in one call
            return int(remaining)
        per = self.seconds_per_unit()
        measured = (self.layer_factor is not None
                    or (self.layers[self.cur].unit_seconds is None
                        and self.unit_seconds is not None))
        if per is None:
            return 1
        target = self.target * (1.0 if measured else FIRST_FRACTION)
        n = int(target / per) if per > 0 else remaining
        if not measured:
            n = min(n, FIRST_STEPS)
        return max(1, min(int(remaining), n))

    def __call__(self, state, steps: int) -> None:
        """A segment of ``steps`` steps was dispatched; its result is
        ``state``. Waits until at most ``depth - 1`` segments are queued."""
        self.pending.append((state, int(steps), self.clock()))
        self.check()
        # one step longer than the target (a big chunk on a slow or loaded
        # CPU): segments are single steps already, so queue none behind the
        # running one -- Ctrl-C then waits for one step, not two
        per = self.seconds_per_unit() if self.layer_factor is not None else None
        depth = 1 if per is not None and per > self.target else self.depth
        while len(self.pending) >= max(1, depth) and self.pending:
            self._finish_oldest()

    def drain(self) -> None:
        """Wait for every queued segment (polling: Ctrl-C is taken)."""
        while self.pending:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        state, steps, t_disp = self.pending[0]
        self.wait(state)
        now = self.clock()
        self.pending.popleft()
        start = t_disp if self.last_done is None else max(t_disp, self.last_done)
        self.last_done = now
        self.done_units += steps
        seconds = now - start
        self.segments.append((steps, seconds))
        if self.adaptive and seconds > 0:
            w = self.layers[self.cur]
            if w.unit_seconds is None:
                sample = seconds / steps
                self.unit_seconds = sample if self.unit_seconds is None else (
                    0.5 * self.unit_seconds + 0.5 * sample)
            else:
                sample = seconds / (steps * w.unit_seconds)
                self.factor = sample if self.factor is None else (
                    0.5 * self.factor + 0.5 * sample)
                self.layer_factor = sample if self.layer_factor is None else (
                    0.5 * self.layer_factor + 0.5 * sample)
        self.report(beat=True)

    # ------------------------------------------------------------ waiting
    def wait(self, x) -> None:
        """Wait until every array of ``x`` is ready, sleeping between polls
        (so signals are handled) and offering heartbeats; objects without
        ``is_ready`` are waited for with ``block_until_ready``."""
        for leaf in jax.tree.leaves(x):
            ready = getattr(leaf, "is_ready", None)
            if ready is None:
                if hasattr(leaf, "block_until_ready"):
                    leaf.block_until_ready()
                continue
            if not ready():  # poll only what is not done
                self.check()
            delay = 1e-4
            while not ready():
                self.check()
                self.sleep(delay)
                delay = min(2 * delay, POLL_SECONDS)
                if self.clock() - self.last_beat >= BEAT_SECONDS:
                    self.report(beat=True)

    # ------------------------------------------------------------ progress
    def done_filters(self) -> float:
        w = self.layers[self.cur] if self.layers else None
        if w is None or w.units <= 0:
            return float(self.base)
        return self.base + w.n_filters * min(1.0, self.done_units / w.units)

    def seconds_left(self) -> float | None:
        """Estimated seconds of the work not finished yet (None: unknown)."""
        if not self.layers:
            return 0.0
        total = 0.0
        for i in range(self.cur, len(self.layers)):
            w = self.layers[i]
            per = self.seconds_per_unit(i)
            if per is None:
                return None
            units = w.units - (self.done_units if i == self.cur else 0)
            total += max(0, units) * per
        return total

    def report(self, *, beat: bool = False) -> None:
        self.last_beat = self.clock()
        if self.on_progress is not None and self.layers:
            self.on_progress(self.done_filters(), self.seconds_left(),
                             self.layers[self.cur].layer, beat)


__all__ = ["Pacer", "LayerWork", "DeferredInterrupt", "SEGMENT_SECONDS", "QUEUE_DEPTH"]
