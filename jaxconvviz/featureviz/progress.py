"""Progress and warnings of feature-visualization runs (public).

:class:`Progress` reports a chunked run (``Run(progress=...)``);
:class:`SlowOnCPUWarning` and :class:`DeadFilterWarning` are what the
runs warn with. Imports the standard library only (tqdm lazily, for the bar).
"""

from __future__ import annotations

import math
import sys
import time

from jaxconvviz.errors import InputError

#: A plain-text :class:`Progress` prints a line at least this often while a
#: run computes (seconds; the issue asks for one every 10 s on a CPU).
HEARTBEAT_SECONDS = 5.0


class RunInterrupted(KeyboardInterrupt):
    """A feature-visualization run stopped by Ctrl-C (KeyboardInterrupt).

    Attributes:
      results: ``{layer: images}`` of the layers that finished before the
        interrupt, as the run would have returned them (the atlas keeps and
        writes them).
      layers: every layer that was requested, in order.
    """

    def __init__(self, results: dict, layers: list):
        super().__init__(f"interrupted after {len(results)} of {len(layers)} "
                         "layers")
        self.results, self.layers = dict(results), list(layers)


class SlowOnCPUWarning(UserWarning):
    """A feature-visualization run on XLA:CPU is estimated to take long."""


class DeadFilterWarning(UserWarning):
    """Filters whose gradient was exactly zero at every step (their images
    never moved from the start): the result shows the start noise."""


#: Layer kinds that pool the layer below (no weights, no activation of their own).
POOL_KINDS = ("maxpool", "avgpool", "gmp", "gap")


def own_objective_source(model, layer: str) -> tuple[bool, str | None]:
    """``(has_own, below)``: whether ``layer`` has an activation of its own
    (or weights: its pre-activation response differs from its output), and
    the nearest convolving layer it reads (following first inputs), or None."""
    spec = model.layer(layer)
    has_own = spec.has_params or spec.opt("activation") not in (None, "linear")
    filters = set(model.filter_layers)
    name, below = layer, None
    while below is None:
        s = model.layer(name)
        i = model.layer_index(name)
        prev = s.inputs[0] if s.inputs else (model.layers[i - 1].name if i else None)
        if prev is None or prev not in model.layer_names:
            break
        if prev in filters:
            below = prev
        name = prev
    return has_own, below


def dead_filter_hint(model, layer: str, *, pre_activation: bool) -> str:
    """The advice of a :class:`DeadFilterWarning`, matching ``layer``'s kind:
    a pooling (or other weightless, activation-free) layer has no pre-ReLU
    objective of its own, so ``pre_activation`` cannot revive its filters;
    the advice names the convolving layer below it."""
    has_own, below = own_objective_source(model, layer)
    if has_own:
        if pre_activation:
            return ("even their pre-activation response has no gradient from the "
                    "start image: the layers below give them nothing to climb "
                    "(units upstream all zero or saturated, as in untrained "
                    "networks); try other start images (init=), another size or "
                    "other weights.")
        return ("they are silent on the start image under the post-ReLU "
                "objective; pre_activation=True (the default) revives them.")
    kind = model.layer(layer).kind
    what = "a pooling layer" if kind in POOL_KINDS else f"a layer of kind {kind!r}"
    src = f"the ReLU output of {below!r}" if below else "the layers below"
    how = ("the max" if kind in ("maxpool", "gmp") else "the mean"
           if kind in ("avgpool", "gap") else "a function")
    hint = (f"{layer} is {what}, with no pre-ReLU objective of its own: its "
            f"response is {how} of {src}, so filters silent on the start image "
            "stay silent")
    if below:
        hint += (f"; visualise {below!r} instead (its pre-ReLU objective can "
                 "revive them)")
    return hint + "."


def format_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "? s"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


class Progress:
    """Progress of a chunked run, on ``stream`` (default ``sys.stderr``).

    On a TTY a tqdm bar; otherwise (CI logs, ``| tee``) one plain line per
    chunk: ``"<desc>: <layer> chunk c/n: done/total filters, 12 s elapsed,
    ~40 s left"``, and between chunks a heartbeat line at least every
    ``every`` seconds (:data:`HEARTBEAT_SECONDS`): ``"<desc>: <layer>
    37.5/64 filters (59%), 25 s elapsed, ~18 s left"``. The time left comes
    from the runner (the planner's estimate corrected by the measured
    segment times) when it gives one, else from the elapsed time. Pass it as
    ``Run(progress=...)`` to the feature-visualization functions
    (``progress=True`` makes one); a plain callable ``progress(done,
    total)`` is also accepted there (called per chunk). ``clock``: the time
    source (tests pass a fake one).
    """

    def __init__(self, total: int | None = None, *, desc: str = "render",
                 stream=None, tty: bool | None = None, estimate: float | None = None,
                 every: float = HEARTBEAT_SECONDS, clock=None):
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.tty = bool(isatty()) if tty is None else tty
        self.desc, self.total, self.estimate = desc, total, estimate
        self.every = float(every)
        self.clock = time.perf_counter if clock is None else clock
        self.t0 = self.last = self.clock()
        self._bar = None
        self.lines: list[str] = []

    def start(self, total: int, estimate: float | None = None) -> None:
        """Called by the runner before the first chunk."""
        self.total = total
        if estimate is not None:
            self.estimate = estimate
        self.t0 = self.last = self.clock()
        if self.estimate is not None and not self.tty:
            self._say(f"{self.desc}: {total} filters, estimated "
                      f"{format_seconds(self.estimate)}")
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="filter", desc=self.desc,
                             file=self.stream, leave=False)

    def update(self, done: float, total: int, *, layer: str = "", chunk: int = 0,
               n_chunks: int = 0, left: float | None = None,
               heartbeat: bool = False) -> None:
        """Called by the runner after each chunk's results are on the host,
        and (``heartbeat=True``) while it computes: a heartbeat prints only
        when ``every`` seconds passed since the last line. ``left``: the
        runner's estimate of the seconds left (None: from the elapsed
        time)."""
        if self.total is None:
            self.start(total)
        now = self.clock()
        if heartbeat and now - self.last < self.every:
            return
        el = now - self.t0
        if left is None or not math.isfinite(left):
            left = el / done * (total - done) if done else math.nan
        if self._bar is not None:
            self.last = now
            self._bar.set_postfix_str(f"{layer} ~{format_seconds(left)} left",
                                      refresh=False)
            self._bar.update(done - self._bar.n)
            return
        if heartbeat:
            pct = 100.0 * done / total if total else 0.0
            where = f"{layer} " if layer else ""
            self._say(f"{self.desc}: {where}{done:.1f}/{total} filters "
                      f"({pct:.0f}%), {format_seconds(el)} elapsed, "
                      f"~{format_seconds(left)} left")
            return
        where = f"{layer} chunk {chunk}/{n_chunks}: " if layer else ""
        self._say(f"{self.desc}: {where}{done:g}/{total} filters, "
                  f"{format_seconds(el)} elapsed, ~{format_seconds(left)} left")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _say(self, line: str) -> None:
        self.last = self.clock()
        self.lines.append(line)
        print(line, file=self.stream, flush=True)

    def __call__(self, done: int, total: int) -> None:
        self.update(done, total)


def as_progress(progress, desc: str):
    """``progress=`` as accepted by the public functions: None, True (a
    :class:`Progress` on stderr), a :class:`Progress` or a callable
    ``progress(done, total)``."""
    if progress is None or progress is False:
        return None
    if progress is True:
        return Progress(desc=desc)
    if isinstance(progress, Progress) or callable(progress):
        return progress
    raise InputError(
        f"progress must be None, True, a jaxconvviz Progress or a callable "
        f"progress(done, total); got {progress!r:.80}.")



__all__ = ["Progress", "RunInterrupted", "HEARTBEAT_SECONDS", "SlowOnCPUWarning",
           "DeadFilterWarning", "format_seconds", "dead_filter_hint",
           "own_objective_source"]
