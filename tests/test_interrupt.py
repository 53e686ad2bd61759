"""Ctrl-C and progress on long runs (issue 29): ascents cut into paced
segments (bit-identical to one loop), at most two segments queued, progress
heartbeats with the time left corrected by measured segments, finished
layers kept when a run is interrupted, and a real CLI process stopped by
SIGINT within 5 s."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.featureviz import _pace
from jaxconvviz.featureviz.progress import Progress, RunInterrupted
from jaxconvviz.run import Run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    model = jcv.tiny_vgg16(include_top=False)
    return model, model.init_params(jax.random.key(42))


def _render(params, model, style, layer, n_steps, monkeypatch):
    """``render`` with every segment ``n_steps`` long (None: the pacer's)."""
    if n_steps is not None:
        monkeypatch.setattr(_pace.Pacer, "length",
                            lambda self, remaining: min(n_steps, remaining))
    try:
        return np.asarray(jcv.render(params, layer, range(6), key=jax.random.key(1),
                                     style=style, model=model,
                                     run=Run(batch_size=4)))
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("style", [jcv.Book(size=32, steps=7),
                                   jcv.Lucid(size=32, steps=7)],
                         ids=["book", "lucid"])
def test_segments_are_bit_identical(tiny, style, monkeypatch):
    """However the steps are cut (1, 2, 3 steps per segment, or the whole
    ascent in one call), the pixels are the same, bit for bit: every segment
    runs the same compiled loop with a traced step count."""
    model, params = tiny
    whole = _render(params, model, style, "block3_conv1", 1000, monkeypatch)
    for n in (1, 2, 3):
        cut = _render(params, model, style, "block3_conv1", n, monkeypatch)
        np.testing.assert_array_equal(cut, whole)
    # and the pacer's own choice
    np.testing.assert_array_equal(
        _render(params, model, style, "block3_conv1", None, monkeypatch), whole)


def test_thresholds_with_segments(tiny, monkeypatch):
    model, params = tiny
    kw = dict(key=jax.random.key(3), style=jcv.Book(size=32, steps=6), model=model)
    monkeypatch.setattr(_pace.Pacer, "length", lambda self, r: min(1, r))
    cut = np.asarray(jcv.render(params, "block2_conv1", [0, 1], thresholds=(2, 5, 6),
                                **kw))
    monkeypatch.undo()
    whole = np.asarray(jcv.render(params, "block2_conv1", [0, 1],
                                  thresholds=(2, 5, 6), **kw))
    np.testing.assert_array_equal(cut, whole)


# ------------------------------------------------------------ the pacer, fake time
class FakeDevice:
    """A serial device: a segment of ``n`` steps takes ``n * step_s`` fake
    seconds after the previous one; ``sleep`` advances the fake clock."""

    def __init__(self, step_s: float):
        self.now, self.step_s, self.busy_until = 0.0, step_s, 0.0
        self.max_queued = 0
        self.queued: list = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s

    def dispatch(self, n: int):
        start = max(self.now, self.busy_until)
        self.busy_until = start + n * self.step_s
        dev = self

        class Seg:
            done_at = self.busy_until

            def is_ready(self):
                return dev.now >= self.done_at

        seg = Seg()
        self.queued = [s for s in self.queued if not s.is_ready()] + [seg]
        self.max_queued = max(self.max_queued, len(self.queued))
        return seg


def _drive(pacer: _pace.Pacer, dev: FakeDevice, steps: int, chunks: int) -> list[int]:
    lengths = []
    for _ in range(chunks):
        t = 0
        while t < steps:
            n = pacer.length(steps - t)
            lengths.append(n)
            pacer(dev.dispatch(n), n)
            t += n
    pacer.drain()
    return lengths


@pytest.mark.parametrize("depth", [1, 2])
def test_pacer_segments_near_the_target_and_queue_short(depth):
    """The planner's estimate is 10x optimistic: after the first (short)
    segment the measured factor brings segments to about 1 s each (target 1
    here), at most ``depth`` are in flight, and the device waits for the
    host at most a poll per segment (none with two in flight)."""
    dev = FakeDevice(step_s=0.25)
    beats = []
    w = _pace.LayerWork("l", n_filters=8, units=2 * 40, unit_seconds=0.025)
    pacer = _pace.Pacer([w], clock=dev.clock, sleep=dev.sleep, target=1.0,
                        depth=depth, on_progress=lambda *a: beats.append(a))
    pacer.begin(0)
    lengths = _drive(pacer, dev, steps=40, chunks=2)
    assert lengths[0] <= _pace.FIRST_STEPS
    # ~1 s / 0.25 s per step (a chunk's last segment: what remains)
    assert max(lengths) <= 5 and sorted(lengths)[len(lengths) // 2] in (3, 4), lengths
    assert dev.max_queued <= depth
    assert sum(n for n, _ in pacer.segments) == 80
    idle = dev.now - 80 * 0.25
    assert 0 <= idle <= (len(lengths) if depth == 1 else 2) * _pace.POLL_SECONDS
    assert pacer.factor == pytest.approx(10.0, rel=0.1)
    # the time left, corrected: halfway through it says ~10 s, not ~1 s
    mid = [b for b in beats if 3.5 <= b[0] <= 4.5]
    assert mid and all(b[1] == pytest.approx(10.0, rel=0.25) for b in mid)


def test_pacer_without_an_estimate_measures():
    dev = FakeDevice(step_s=0.1)
    w = _pace.LayerWork("l", n_filters=1, units=100, unit_seconds=None)
    pacer = _pace.Pacer([w], clock=dev.clock, sleep=dev.sleep, target=1.0)
    pacer.begin(0)
    lengths = _drive(pacer, dev, steps=100, chunks=1)
    assert lengths[0] == 1 and max(lengths) <= 11
    assert sorted(lengths)[len(lengths) // 2] in (9, 10), lengths
    assert pacer.seconds_left() == pytest.approx(0.0)


def test_multiprocess_pacing_ignores_measured_times():
    """adaptive=False (several processes): the segment lengths come from the
    estimate only, so every process launches the same programs."""
    dev = FakeDevice(step_s=0.25)
    w = _pace.LayerWork("l", n_filters=1, units=40, unit_seconds=0.025)
    pacer = _pace.Pacer([w], clock=dev.clock, sleep=dev.sleep, adaptive=False,
                        target=1.0)
    pacer.begin(0)
    assert _drive(pacer, dev, steps=40, chunks=1) == [2] * 20
    assert pacer.factor is None


def test_progress_heartbeat_every_interval_with_runner_estimate():
    t = [0.0]
    buf = io.StringIO()
    prog = Progress(desc="atlas", stream=buf, every=5.0, clock=lambda: t[0])
    prog.start(64, estimate=30.0)
    for step in range(1, 41):  # a heartbeat offered every 0.5 s for 20 s
        t[0] = step * 0.5
        prog.update(step * 0.8, 64, layer="block5_conv1", left=100.0 - step,
                    heartbeat=True)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "atlas: 64 filters, estimated 30 s"
    beats = lines[1:]
    assert len(beats) == 4  # at 5, 10, 15, 20 s
    assert beats[0] == ("atlas: block5_conv1 8.0/64 filters (12%), 5 s elapsed, "
                        "~1.5 min left")
    t[0] = 20.5
    prog.update(32, 64, layer="block5_conv1", chunk=2, n_chunks=4, left=60.0)
    assert buf.getvalue().splitlines()[-1] == (
        "atlas: block5_conv1 chunk 2/4: 32/64 filters, 20 s elapsed, ~60 s left")


def test_engine_reports_heartbeats(tiny):
    model, params = tiny
    buf = io.StringIO()
    prog = Progress(desc="atlas", stream=buf, every=0.0)  # every offered beat
    jcv.filter_atlas(params, layers=["block1_conv1", "block2_conv1"],
                     filters_per_layer=2, size=32, steps=6, key=jax.random.key(0),
                     model=model, run=Run(batch_size=1, progress=prog))
    lines = buf.getvalue().splitlines()
    beats = [ln for ln in lines if "%" in ln]
    assert beats and all("left" in ln and "chunk" not in ln for ln in beats)
    assert sum("chunk" in ln for ln in lines) == 4


def test_interrupt_keeps_finished_layers(tiny):
    """Ctrl-C in the second layer: RunInterrupted (a KeyboardInterrupt)
    carries the first layer, equal to an uninterrupted run's."""
    model, params = tiny
    kw = dict(layers=["block1_conv1", "block2_conv1"], filters_per_layer=2, size=32,
              steps=3, key=jax.random.key(0), model=model)
    full = jcv.filter_atlas(params, **kw)

    def progress(done, total):
        if done > 2:  # the second layer's first chunk
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as e:
        jcv.filter_atlas(params, run=Run(batch_size=1, progress=progress), **kw)
    assert isinstance(e.value, KeyboardInterrupt)
    assert list(e.value.results) == ["block1_conv1"]
    assert e.value.layers == ["block1_conv1", "block2_conv1"]
    np.testing.assert_array_equal(e.value.results["block1_conv1"],
                                  full["block1_conv1"])


# ------------------------------------------------------------ a real CLI process
#: Ctrl-C must stop the command within this many seconds (the issue's bound).
#: Measured on the 2-core CI CPU with four other jobs: 2-3 s, which includes
#: writing the finished layer's two PNGs (matplotlib) and the interpreter's
#: exit; the rest of the 5 s is the margin for a loaded machine.
EXIT_SECONDS = 5.0


def test_sigint_stops_a_long_atlas_within_5_s(tmp_path, tiny):
    """SIGINT to ``jaxconvviz atlas --all-layers`` on the tiny VGG16 while its
    second layer computes (1000 steps per layer: several seconds each, many
    segments): exit 130 within 5 s, one line, no traceback, the finished
    layer written (both PNGs, atomically: no temp files), nothing else."""
    from jaxconvviz.models.keras_export import save_keras_model

    model, params = tiny
    save_keras_model(params, tmp_path / "tiny.keras", model=model)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "jaxconvviz", "atlas", "--all-layers", "--size", "64",
           "--steps", "1000", "--model", str(tmp_path / "tiny.keras"), "--out",
           str(out)]
    p = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in p.stderr:  # progress lines: the first layer has landed
            seen.append(line)
            if "block1_conv1 chunk 4/4" in line:
                break
        else:
            pytest.fail(f"no progress line: {''.join(seen)[-2000:]}")
        time.sleep(1.5)  # inside the second layer's segments
        assert p.poll() is None, "the run ended before SIGINT; make it longer"
        t0 = time.perf_counter()
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=60)
        took = time.perf_counter() - t0
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, stderr
    assert took < EXIT_SECONDS, f"exited {took:.1f} s after SIGINT"
    assert "Traceback" not in stderr
    last = [ln for ln in stderr.splitlines() if ln.startswith("jaxconvviz atlas:")]
    assert len(last) == 1
    assert last[0].startswith("jaxconvviz atlas: interrupted after 1 of 13 layers; "
                              "the 2 files finished before it are kept in ")
    assert "nothing half-written" in last[0]
    files = sorted(f.name for f in out.iterdir())
    assert files == ["atlas_block1_conv1.png", "atlas_block1_conv1_figure.png"]
    assert "wrote" in stdout
