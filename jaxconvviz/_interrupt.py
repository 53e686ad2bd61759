"""Ctrl-C within seconds, even inside one long compiled computation.

Python runs a SIGINT handler only when the main thread executes bytecode. A
command blocked in one compiled XLA call (Integrated Gradients' whole path,
Score-CAM's channel batches, a big dataset batch) takes the interrupt only
when that call returns: tens of seconds on a CPU. The engines that can stop
cleanly (the paced feature-visualization loop, the dataset pass) poll and
take Ctrl-C at their next safe point; this module is the backstop for the
rest.

:func:`watchdog` routes SIGINT's wakeup byte (``signal.set_wakeup_fd``:
written by the C-level handler, whatever the main thread is doing) to a
daemon thread. Every Python-level SIGINT handler of the package calls
:func:`acknowledge`. When an interrupt is not acknowledged within ``grace``
seconds (the main thread is stuck in compiled code), the thread removes the
temp files of writes in flight (:mod:`jaxconvviz._atomic` registers them, so
nothing half-written is left), prints the command's one line and ends the
process with exit code 130 (``os._exit``: the stuck call cannot be unwound).
An acknowledged interrupt is left to the main thread, which keeps and
writes what finished.

:class:`DeferredInterrupt` is the engines' side: while a paced run is
active, the first Ctrl-C only sets a flag that the engine takes at its next
poll (never inside JAX's tracing or compile-cache code).

Only the command line installs the watchdog (:func:`jaxconvviz.cli.main`); library
calls keep Python's behaviour.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

#: Seconds an interrupt may go unacknowledged before the process is ended.
GRACE_SECONDS = 3.0

_lock = threading.Lock()
_handled = 0


def acknowledge() -> None:
    """Record that a Python-level SIGINT handler ran (the main thread is
    responsive and will stop by itself)."""
    global _handled
    with _lock:
        _handled += 1


def handled() -> int:
    with _lock:
        return _handled


#: Callables run by the backstop before it ends the process, newest first
#: (:func:`before_forced_exit`); each returns a note for the line or None.
_HOOKS: list[Callable[[], str | None]] = []


@contextlib.contextmanager
def before_forced_exit(fn: Callable[[], str | None]) -> Iterator[None]:
    """While active, the backstop calls ``fn()`` (from its own thread, the
    main thread being stuck) before ending the process: e.g. the dataset pass
    saves its newest finished state there. ``fn`` returns a note for the
    command's line (what it kept) or None."""
    _HOOKS.append(fn)
    try:
        yield
    finally:
        _HOOKS.remove(fn)


def sigint_handler(signum, frame):
    """Python's default SIGINT behaviour (raise KeyboardInterrupt), plus
    :func:`acknowledge`. Engines that defer interrupts treat it as the
    default handler (``is_default``)."""
    acknowledge()
    raise KeyboardInterrupt


def is_default(handler) -> bool:
    """Whether ``handler`` raises KeyboardInterrupt as Python's default does."""
    return handler is signal.default_int_handler or handler is sigint_handler


class DeferredInterrupt:
    """Ctrl-C taken at safe points only, while this context is active.

    Python raises KeyboardInterrupt wherever the main thread happens to be
    when SIGINT arrives: inside JAX's tracing, lowering or persistent-cache
    code it can leave the runtime half-updated (the interpreter then crashed
    at exit, SIGSEGV, in about half of the tries with a compile cache). Here
    the first SIGINT only sets :attr:`hit`; :meth:`Pacer.check` raises
    KeyboardInterrupt at its next poll (every few ms while waiting). A
    second SIGINT raises at once, as usual. Active only in the main thread
    and when SIGINT has Python's default handler (a user's own handler is
    left alone)."""

    def __init__(self):
        self.hit = False
        self._old = None

    def _handler(self, signum, frame):
        acknowledge()
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and is_default(signal.getsignal(signal.SIGINT))):
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None
        return False


@contextlib.contextmanager
def watchdog(on_stuck: Callable[[list[str]], str], *, grace: float | None = None,
             cleanup: Callable[[], None] | None = None) -> Iterator[None]:
    """While active, an interrupt unacknowledged for ``grace`` seconds ends
    the process: the :func:`before_forced_exit` hooks run, temp files are
    removed, ``cleanup()`` is called, the line ``on_stuck(notes)`` (the hooks'
    notes) is printed on stderr, exit code 130. A no-op outside the main
    thread or where SIGINT has a handler of the user's own."""
    if (threading.current_thread() is not threading.main_thread()
            or not is_default(signal.getsignal(signal.SIGINT))):
        yield
        return
    grace = GRACE_SECONDS if grace is None else grace
    r, w = os.pipe()
    os.set_blocking(w, False)
    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    old_handler = signal.signal(signal.SIGINT, sigint_handler)
    stop = threading.Event()

    def watch():
        seen = handled()
        while True:
            try:
                data = os.read(r, 64)
            except OSError:
                return
            if stop.is_set() or not data:
                return
            if signal.SIGINT not in data:
                continue
            seen += data.count(signal.SIGINT)
            _until(lambda n=seen: handled() >= n or stop.is_set(), grace)
            if stop.is_set():
                return
            if handled() < seen:
                _force_exit(on_stuck, cleanup)

    t = threading.Thread(target=watch, name="jaxconvviz-interrupt", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGINT, old_handler)
        os.write(w, b"\0")  # wake the thread so it sees stop
        t.join(timeout=1.0)
        os.close(w)
        os.close(r)


def _until(ok: Callable[[], bool], seconds: float) -> None:
    """Poll ``ok`` every 20 ms for up to ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not ok():
        time.sleep(0.02)


def _force_exit(on_stuck: Callable[[list[str]], str], cleanup) -> None:
    from jaxconvviz._atomic import remove_temp_files

    notes = []
    for fn in reversed(list(_HOOKS)):
        try:
            note = fn()
        except Exception as e:  # keep going: the process must end
            note = f"({type(e).__name__} while saving: {e})"
        if note:
            notes.append(note)
    remove_temp_files()
    try:
        if cleanup is not None:
            cleanup()
        line = on_stuck(notes)
    except Exception as e:  # never let the backstop itself hang or trace
        line = f"interrupted ({type(e).__name__} while reporting)"
    try:
        sys.stderr.write(line.rstrip("\n") + "\n")
        sys.stderr.flush()
    finally:
        os._exit(130)
