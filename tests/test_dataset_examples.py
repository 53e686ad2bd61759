"""jcv.dataset_examples: the streamed pass equals a brute-force computation
(all activations in memory, argsort) exactly for indices and positions and to
1e-5 for values and statistics, whatever the batch size, device count
(4 forced host devices, in a subprocess), process count (2 processes under
jax.distributed) or a SIGKILL + resume; crops fed through the network give
the recorded value; the result round-trips through a folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.dataset import stream
from jaxconvviz.dataset.result import DatasetExamples
from jaxconvviz.errors import InputError
from jaxconvviz.models.receptive import receptive_field
from jaxconvviz.run import Run
from tests._procs import communicate_all, free_port

ROOT = Path(__file__).resolve().parents[1]

#: Shared with the subprocesses (they import these names from this module).
MODEL = jcv.tiny_vgg16(include_top=False)
PARAMS = MODEL.init_params(jax.random.key(7))
LAYERS = ("block1_conv2", "block2_conv2", "block3_conv1", "block3_pool")
SIZE, N, K = 40, 240, 5


def make_images():
    """N uint8 images: random, structured (gradients, stripes), mirrored,
    constant (exact ties) and duplicated."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (N, SIZE, SIZE, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for i in range(0, N, 6):
        f = (i // 6) % 4
        g = (xx * (3 + f) + yy * (7 - f)) % 256 if f < 2 else \
            128 + 120 * np.sin((xx + 2 * f) / (1.5 + f)) * np.cos(yy / 3)
        x[i] = np.clip(g[..., None] * np.array([1.0, 0.6, 0.3]) + i, 0, 255)
    x[60:80] = x[20:40, :, ::-1]  # mirror images
    x[100:104] = 128  # constant images: exact ties, broken by index
    x[120:130] = x[0:10]  # exact duplicates
    return x


IMAGES = make_images()


def _allowed(layer, border):
    """Positions whose field is at least half inside the image, from the
    receptive field's boxes (independently of stream.border_map)."""
    rf = receptive_field(MODEL, layer, (SIZE, SIZE))
    h, w = rf.output_hw
    ok = np.zeros((h, w), bool)
    for i in range(h):
        for j in range(w):
            y0, y1, x0, x1 = rf.box(i, j)
            inside = (max(0, min(y1, SIZE) - max(y0, 0))
                      * max(0, min(x1, SIZE) - max(x0, 0)))
            ok[i, j] = inside * 2 >= (y1 - y0) * (x1 - x0)
    return ok if border == "exclude" else np.ones_like(ok)


@pytest.fixture(scope="module")
def acts():
    return {k: np.asarray(v, np.float64) for k, v in jcv.activations(
        PARAMS, IMAGES.astype(np.float32), layers=LAYERS,
        model=MODEL).items()}


def brute(acts, layer, border="exclude", k=K):
    a = acts[layer]
    n, h, w, c = a.shape
    ok = _allowed(layer, border).reshape(-1)
    flat = np.where(ok[None, :, None], a.reshape(n, h * w, c), -np.inf)
    best, at = flat.max(1), flat.argmax(1)
    idx = np.stack([np.lexsort((np.arange(n), -best[:, u]))[:k] for u in range(c)])
    vals = a.reshape(n, h * w, c)[:, ok, :]
    hist = np.stack([np.histogram(best[:, u], stream.BIN_EDGES.astype(np.float64))[0]
                     for u in range(c)])
    return {"index": idx, "value": np.take_along_axis(best.T, idx, 1),
            "flat": np.take_along_axis(at.T, idx, 1), "w": w,
            "mean": vals.mean((0, 1)), "std": vals.std((0, 1)),
            "max": vals.max((0, 1)), "frac_pos": (vals > 0).mean((0, 1)),
            "hist": hist, "count": vals.shape[0] * vals.shape[1]}


def check_equal(res, acts, border="exclude", layers=LAYERS):
    for layer in layers:
        le, want = res.layers[layer], brute(acts, layer, border)
        np.testing.assert_array_equal(le.index, want["index"], err_msg=layer)
        np.testing.assert_array_equal(
            le.position[..., 0] * want["w"] + le.position[..., 1], want["flat"])
        np.testing.assert_allclose(le.value, want["value"], rtol=1e-5, atol=1e-6)
        scale = np.abs(acts[layer]).max()
        for f in ("mean", "std", "max"):
            np.testing.assert_allclose(getattr(le, f), want[f], rtol=1e-5,
                                       atol=1e-6 * scale, err_msg=f"{layer} {f}")
        np.testing.assert_allclose(le.frac_pos, want["frac_pos"], rtol=1e-6)
        assert le.count == want["count"] and le.images == N
        # exact integers; a value within float rounding of a bin edge may
        # fall on either side of it in a differently batched convolution
        assert np.abs(le.hist - want["hist"]).sum() <= 2, layer
        assert (le.hist.sum(1) == N).all()


def run_pass(**kw):
    kw.setdefault("layers", LAYERS)
    return jcv.dataset_examples(PARAMS, IMAGES, k=K, model=MODEL,
                                size=SIZE, **kw)


@pytest.fixture(scope="module")
def reference():
    return run_pass(run=Run(batch_size=32))


# ------------------------------------------------------------------ exact
def test_streamed_equals_brute_force(reference, acts):
    check_equal(reference, acts)
    assert reference.names[:2] == ["array[0]", "array[1]"]
    assert reference.bad == [] and reference.transforms.shape == (N, 6)
    np.testing.assert_array_equal(reference.transforms[0], [SIZE, SIZE, 1, 1, 0, 0])
    # constant images tie exactly: the smaller index first, once per image
    le = reference.layers["block3_pool"]
    for u in range(le.units):
        assert len(set(le.index[u])) == K


@pytest.mark.slow
@pytest.mark.parametrize("bs", [1, 7])
def test_batch_size_does_not_change_the_result(bs, reference, acts):
    res = run_pass(run=Run(batch_size=bs))
    check_equal(res, acts)
    for layer in LAYERS:
        np.testing.assert_array_equal(res.layers[layer].index,
                                      reference.layers[layer].index)


def test_border_keep_and_mark(acts):
    res = run_pass(border="mark", layers=("block2_conv2", "block3_conv1"),
                   run=Run(batch_size=64))
    check_equal(res, acts, border="keep", layers=("block2_conv2", "block3_conv1"))
    le = res.layers["block3_conv1"]
    edge = ~_allowed("block3_conv1", "exclude")
    np.testing.assert_array_equal(le.border, edge[le.position[..., 0],
                                                  le.position[..., 1]])
    assert le.border.any()  # some border examples are marked ...
    np.testing.assert_array_equal(stream.border_map(MODEL, "block3_conv1", SIZE), edge)


def test_crop_through_network_gives_recorded_value(reference):
    """Cut the top example's receptive field (grown to the pooling grid,
    clipped to the image) from the model input and run it alone: the unit
    has the recorded value at the recorded position."""
    for layer in ("block2_conv2", "block3_conv1"):
        le = reference.layers[layer]
        (jh, _), = {le.field[1]}
        for unit in range(0, le.units, 3):
            y0, y1, x0, x1 = le.box(unit, 0)
            box = []
            for lo, hi in ((y0, y1), (x0, x1)):
                c0 = max(0, lo // jh * jh)
                box += [c0, min(SIZE, c0 - (-(hi - c0) // jh) * jh)]
            img = IMAGES[le.index[unit, 0], box[0]:box[1], box[2]:box[3]]
            got = jcv.activations(PARAMS, img[None].astype(np.float32),
                                  layers=layer, model=MODEL)[layer]
            r, c = le.position[unit, 0]
            v = float(got[0, r - box[0] // jh, c - box[2] // jh, unit])
            np.testing.assert_allclose(v, le.value[unit, 0], rtol=1e-4, atol=1e-5)


def test_save_load_selectivity_dead(reference, tmp_path):
    reference.save(tmp_path / "ex")
    back = DatasetExamples.load(tmp_path / "ex")
    assert back.names == reference.names and back.k == K
    for layer in LAYERS:
        a, b = reference.layers[layer], back.layers[layer]
        for f in ("value", "index", "position", "mean", "std", "hist", "border"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        assert (a.count, a.hw, a.field) == (b.count, b.hw, b.field)
        sel = a.selectivity()
        top = a.value.mean(1)
        np.testing.assert_allclose(sel, np.where(a.std > 0, (top - a.mean) /
                                                 np.where(a.std > 0, a.std, 1), 0),
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(a.dead(), np.flatnonzero(a.max <= 0))
    # a half-written folder never loads
    (tmp_path / "ex" / "examples.npz").write_bytes(b"PK\x03\x04 half")
    with pytest.raises(InputError, match="does not match"):
        DatasetExamples.load(tmp_path / "ex")


def test_boxes_and_crops(reference):
    from jaxconvviz.dataset.crops import example_boxes, example_crops

    boxes = example_boxes(reference, "block3_conv1", 0)
    le = reference.layers["block3_conv1"]
    assert [b[0] for b in boxes] == [f"array[{i}]" for i in le.index[0]]
    y0, y1, x0, x1 = le.box(0, 0)
    assert boxes[0][1] == (max(y0, 0), min(y1, SIZE), max(x0, 0), min(x1, SIZE))
    crops = example_crops(reference, "block3_conv1", 0, size=24, source=IMAGES)
    assert crops.shape == (K, 24, 24, 3) and crops.dtype == np.uint8
    with pytest.raises(InputError, match="source="):
        example_crops(reference, "block3_conv1", 0)


def test_progress_reports_images(capsys):
    seen = []
    run_pass(layers=("block1_conv2",),
             run=Run(batch_size=100, progress=lambda d, t: seen.append((d, t))))
    assert seen[0] == (0, N) and seen[-1] == (N, N)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    run_pass(layers=("block1_conv2",), run=Run(batch_size=120, progress=True))
    err = capsys.readouterr().err
    assert f"{N}/{N} images" in err and "images/s" in err


def test_layer_without_inner_positions_keeps_the_central_ones():
    """block5_conv3 at 40 px: a 2x2 map whose fields (196 px) lie mostly
    outside the image: the most central positions (here all four) are used,
    flagged, with a warning."""
    with pytest.warns(stream.BorderWarning, match="block5_conv3"):
        res = run_pass(layers=("block5_conv3",), run=Run(batch_size=120))
    le = res.layers["block5_conv3"]
    assert le.border.all() and le.images == N and (le.index >= 0).all()


def test_bad_arguments_refused_before_compute(tmp_path):
    with pytest.raises(InputError, match="border"):
        run_pass(border="drop")
    with pytest.raises(InputError, match="k must"):
        jcv.dataset_examples(PARAMS, IMAGES, k=0, model=MODEL)
    with pytest.raises(InputError, match="layers"):
        run_pass(layers=("block9_conv1",))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError):
        jcv.dataset_examples(PARAMS, str(empty), model=MODEL, size=SIZE, layers=LAYERS)


# ------------------------------------------------ devices, processes, resume
_SCRIPT = textwrap.dedent("""
    import sys, time
    import jax
    import jaxconvviz as jcv
    from jaxconvviz.run import Run
    mode, out = sys.argv[1], sys.argv[2]
    kw = {}
    if mode.startswith("proc"):  # before any computation (the params below)
        port, pid = sys.argv[3], int(mode[4:])
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2,
                                   process_id=pid)
    from tests.test_dataset_examples import K, LAYERS, MODEL, PARAMS, SIZE, make_images
    if mode in ("slow", "resume", "interrupt"):
        kw = dict(checkpoint=sys.argv[3], resume=mode == "resume",
                  checkpoint_every=10_000 if mode == "interrupt" else 24)
    progress = None
    if mode == "slow":
        progress = lambda d, t: time.sleep(0.4)  # noqa: E731
    if mode == "interrupt":  # say how far it got, slowly
        def progress(d, t):
            with open(sys.argv[4], "w") as f:
                f.write(str(d))
            time.sleep(0.3)
    res = jcv.dataset_examples(PARAMS, make_images(), layers=LAYERS, k=K,
                               model=MODEL, size=SIZE,
                               run=Run(batch_size=12, progress=progress), **kw)
    if jax.process_index() == 0:
        res.save(out)
        print("devices", jax.device_count(), "processes", jax.process_count())
""")


def _spawn(args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
           **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-c", _SCRIPT, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)


def _same(a: DatasetExamples, b: DatasetExamples):
    assert a.names == b.names and a.bad == b.bad
    np.testing.assert_array_equal(a.transforms, b.transforms)
    for layer in LAYERS:
        x, y = a.layers[layer], b.layers[layer]
        for f in ("index", "position", "border"):
            np.testing.assert_array_equal(getattr(x, f), getattr(y, f), err_msg=layer)
        for f in ("value", "mean", "std", "max", "frac_pos"):
            np.testing.assert_allclose(getattr(x, f), getattr(y, f), rtol=1e-5,
                                       atol=1e-6, err_msg=f"{layer} {f}")
        assert np.abs(x.hist - y.hist).sum() <= 2 and x.count == y.count


@pytest.mark.slow
def test_four_host_devices_equal_one(tmp_path, reference, acts):
    p = _spawn(["devices", str(tmp_path / "d")],
               {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert "devices 4 processes 1" in out
    res = DatasetExamples.load(tmp_path / "d")
    _same(res, reference)
    check_equal(res, acts)


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, reference):
    port = str(free_port())
    procs = [_spawn([f"proc{i}", str(tmp_path / "p"), port], {"XLA_FLAGS": ""})
             for i in (0, 1)]
    outs = communicate_all(procs)
    assert "devices 2 processes 2" in outs[0][0] and "devices" not in outs[1][0]
    _same(DatasetExamples.load(tmp_path / "p"), reference)


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, reference):
    ck = tmp_path / "ck"
    p = _spawn(["slow", str(tmp_path / "never"), str(ck)])
    t0 = time.time()
    while not (ck / "checkpoint.json").exists():
        assert p.poll() is None, p.communicate()[1][-3000:]
        assert time.time() - t0 < 200
        time.sleep(0.1)
    time.sleep(0.5)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    meta = json.loads((ck / "checkpoint.json").read_text())
    assert 0 < meta["meta"]["end"] < N  # killed mid-way
    assert not (tmp_path / "never").exists()
    q = _spawn(["resume", str(tmp_path / "r"), str(ck)])
    out, err = q.communicate(timeout=300)
    assert q.returncode == 0, err[-3000:]
    _same(DatasetExamples.load(tmp_path / "r"), reference)


@pytest.mark.slow
def test_ctrl_c_checkpoints_then_resume_equals_uninterrupted(tmp_path, reference):
    """SIGINT mid-way (no periodic checkpoint is due): the pass writes a
    checkpoint, re-raises KeyboardInterrupt, and resuming gives the
    uninterrupted result."""
    ck, marker = tmp_path / "ck", tmp_path / "done.txt"
    p = _spawn(["interrupt", str(tmp_path / "never"), str(ck), str(marker)])
    t0 = time.time()

    def done() -> int:
        text = marker.read_text() if marker.exists() else ""
        return int(text) if text.isdigit() else 0

    while done() < 36:
        assert p.poll() is None, p.communicate()[1][-3000:]
        assert time.time() - t0 < 200
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0 and "KeyboardInterrupt" in err
    end = json.loads((ck / "checkpoint.json").read_text())["meta"]["end"]
    # the newest *finished* batch is saved (Ctrl-C does not wait for the one
    # in flight): at most one batch behind the 36 images reported
    assert 0 < end < N
    q = _spawn(["resume", str(tmp_path / "r"), str(ck)])
    _, err = q.communicate(timeout=300)
    assert q.returncode == 0, err[-3000:]
    _same(DatasetExamples.load(tmp_path / "r"), reference)


def test_resume_refuses_another_pass(tmp_path):
    ck = tmp_path / "ck"
    run_pass(layers=("block1_conv2",), checkpoint=ck, checkpoint_every=100,
             run=Run(batch_size=120))
    assert json.loads((ck / "checkpoint.json").read_text())["meta"]["end"] == N
    with pytest.raises(InputError, match="another pass"):
        run_pass(layers=("block2_conv2",), checkpoint=ck, resume=True)
    # resuming a finished pass computes nothing more and gives the result
    again = run_pass(layers=("block1_conv2",), checkpoint=ck, resume=True)
    assert again.layers["block1_conv2"].images == N


@pytest.mark.slow
def test_folder_with_bad_files_keeps_indices_exact(tmp_path):
    """A folder with undecodable files in the middle: they are skipped with
    one warning each and listed; every other image keeps its index, and the
    top-k equals brute force over the decoded good images; the crops come
    from the original files."""
    from jaxconvviz.dataset.crops import example_boxes, example_crops
    from jaxconvviz.dataset.loader import BadImageWarning
    from jaxconvviz.dataset.sources import decode, open_source
    from tests._dataset_fixtures import make_image_folder

    folder = make_image_folder(tmp_path / "imgs", n_photos=14, n_blobs=4)
    with pytest.warns(BadImageWarning) as w:
        res = jcv.dataset_examples(PARAMS, str(folder.root), k=3, model=MODEL,
                                   size=SIZE, layers=("block2_conv2",),
                                   run=Run(batch_size=5))
    assert len(w) == len(folder.bad)
    assert [b[0] for b in res.bad] == folder.bad_indices
    assert res.names == folder.files
    ds = open_source(str(folder.root))
    good = folder.good_indices
    x = np.stack([decode(ds, i, size=SIZE)[0] for i in good]).astype(np.float32)
    a = {"block2_conv2": np.asarray(jcv.activations(
        PARAMS, x, layers="block2_conv2", model=MODEL)["block2_conv2"], np.float64)}
    want = brute(a, "block2_conv2", k=3)
    le = res.layers["block2_conv2"]
    np.testing.assert_array_equal(le.index, np.asarray(good)[want["index"]])
    np.testing.assert_allclose(le.value, want["value"], rtol=1e-5, atol=1e-6)
    assert le.images == len(good)
    assert (res.transforms[folder.bad_indices] == 0).all()
    name, box, value = example_boxes(res, "block2_conv2", 1)[0]
    oh, ow = res.transforms[le.index[1, 0], :2]
    assert name == folder.files[le.index[1, 0]] and value == le.value[1, 0]
    assert 0 <= box[0] < box[1] <= oh and 0 <= box[2] < box[3] <= ow
    crops = example_crops(res, "block2_conv2", 1, size=32)
    assert crops.shape == (3, 32, 32, 3) and crops.std() > 0


def test_bfloat16_pass_is_close(reference):
    res = run_pass(layers=("block2_conv2",), run=Run(batch_size=120, dtype="bfloat16"))
    a, b = res.layers["block2_conv2"], reference.layers["block2_conv2"]
    assert a.value.dtype == np.float32
    np.testing.assert_allclose(a.max, b.max, rtol=0.05)
    np.testing.assert_allclose(a.mean, b.mean, rtol=0.05,
                               atol=0.02 * np.abs(b.max).max())
