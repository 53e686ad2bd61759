"""The rendering engine: today's book results kept, lucid style (Fourier
parameterization, transforms, Adam), objectives, batch == alone, quality on
real weights, progress and up-front validation, the render CLI."""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.backend import Backend
from jaxconvviz.cli import main
from jaxconvviz.featureviz import _engine
from jaxconvviz.featureviz import _plan as pl
from jaxconvviz.featureviz import objectives as O
from jaxconvviz.featureviz import transforms as T
from jaxconvviz.featureviz._programs import (
    RenderSpec,
    lucid_network_input,
    objective_values,
)
from jaxconvviz.featureviz.param import COLOR_CORRELATION_NORMALIZED, FourierParam
from jaxconvviz.featureviz.progress import Progress
from jaxconvviz.featureviz.render import render
from jaxconvviz.featureviz.styles import Book, Lucid, book_display
from jaxconvviz.run import Run

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "tests" / "data" / "featureviz_reference.npz"
L, S = "block3_conv1", 16  # tiny VGG16: 8 channels


@pytest.fixture(scope="module")
def tiny_notop(tiny_params_notop):
    return jcv.tiny_vgg16(include_top=False), tiny_params_notop


# ------------------------------------------------- today's results (step 0)
def _reference_cases():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from featureviz_reference import CASES, run_case, tiny_params
    finally:
        sys.path.pop(0)
    return CASES, run_case, tiny_params


def _compare(name, got, ref):
    for sub, (x, act) in got.items():
        rx, ra = ref[f"{name}{sub}:x"], ref[f"{name}{sub}:act"]
        if np.array_equal(x, rx):
            continue  # bitwise: the compiled computation is unchanged
        # otherwise the same activation reached, within 1e-3 relative
        np.testing.assert_allclose(act, ra, rtol=1e-3, atol=1e-3 * np.abs(ra).max())


@pytest.mark.parametrize("name", ["tiny_patterns", "tiny_patterns_pre",
                                  "tiny_patterns_rgb", "tiny_atlas"])
@pytest.mark.slow
def test_book_style_keeps_todays_results_tiny(name):
    """Same arguments as before the refactor (the book's post-ReLU objective
    was the default then: pre_activation=False) give the saved results."""
    cases, run_case, tiny_params = _reference_cases()
    _, kind, kw = cases[name]
    kw = {"pre_activation": False, **kw}
    _compare(name, run_case(tiny_params(), kind, kw), np.load(REF))


@pytest.mark.hed
@pytest.mark.slow
@pytest.mark.parametrize("name", ["hed_patterns", "hed_atlas"])
def test_book_style_keeps_todays_results_hed(name, hed_params):
    cases, run_case, _ = _reference_cases()
    _, kind, kw = cases[name]
    kw = {"pre_activation": False, **kw}
    _compare(name, run_case(hed_params, kind, kw), np.load(REF))


# ------------------------------------------------------------ transforms
def _img(h=9, w=9, c=3, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(0, 1, (h, w, c)),
                       jnp.float32)


def test_pad_value_and_shape():
    x = _img(5, 6)
    y = np.asarray(T.Pad(3, 0.5)(None, x))
    assert y.shape == (11, 12, 3)
    np.testing.assert_array_equal(y[3:8, 3:9], np.asarray(x))
    border = np.ones(y.shape[:2], bool)
    border[3:8, 3:9] = False
    assert np.all(y[border] == 0.5)


def test_jitter_shifts_by_the_drawn_offset():
    x = _img(10, 10)
    j = T.Jitter(4)
    seen = set()
    for s in range(12):
        k = jax.random.key(s)
        dy, dx = (int(v) for v in j.offsets(k))
        seen.add((dy, dx))
        assert 0 <= dy < 4 and 0 <= dx < 4
        want = np.zeros((10, 10, 3), np.float32)
        want[dy:, dx:] = np.asarray(x)[:10 - dy, :10 - dx]
        np.testing.assert_array_equal(np.asarray(j(k, x)), want)
    assert len(seen) > 3  # the draw varies with the key


@pytest.mark.slow
def test_scale_one_and_rotation_zero_are_identity():
    x = _img(11, 11)
    np.testing.assert_allclose(T.RandomScale().apply(x, 1.0), x, atol=1e-6)
    np.testing.assert_allclose(T.RandomRotate().apply(x, 0.0), x, atol=1e-6)
    # a draw from {1.0} / {0} is the identity too
    np.testing.assert_allclose(T.RandomScale((1.0,))(jax.random.key(0), x), x,
                               atol=1e-6)


def test_rotation_90_is_rot90_and_scale_two_zooms_about_the_centre():
    x = _img(7, 7)
    r = np.asarray(T.RandomRotate().apply(x, 90.0))
    np.testing.assert_allclose(r, np.rot90(np.asarray(x), k=1), atol=1e-5)
    z = np.asarray(T.RandomScale().apply(x, 2.0))
    # out[p] = x(c + (p - c) / 2): at p = c + 2 the source is c + 1 (c = 3)
    np.testing.assert_allclose(z[5, 5], np.asarray(x)[4, 4], atol=1e-6)
    np.testing.assert_allclose(z[3, 3], np.asarray(x)[3, 3], atol=1e-6)


def test_composed_transforms_equal_sequential_for_shifts_and_pad_first():
    """apply_transforms resamples a run of geometric transforms once: for
    integer shifts that is exactly the sequential result; Pad runs first."""
    x = _img(12, 12)
    key = jax.random.key(5)
    tf = (T.Pad(2, 0.5), T.Jitter(4), T.Jitter(3))
    seq = x
    for i, t in enumerate(tf):
        seq = t(jax.random.fold_in(key, i), seq)
    np.testing.assert_array_equal(np.asarray(T.apply_transforms(tf, key, x)),
                                  np.asarray(seq))


def test_standard_transforms_are_lucids():
    pad, j8, sc, rot, j4 = T.STANDARD_TRANSFORMS
    assert (pad.width, pad.value, j8.d, j4.d) == (12, 0.5, 8, 4)
    assert np.allclose(sc.scales, [1 + (i - 5) / 50 for i in range(11)])
    assert rot.angles == tuple(range(-10, 11)) + (0,) * 5
    assert T.margin(T.STANDARD_TRANSFORMS) == 24


# ------------------------------------------------------------ parameterization
def test_fourier_dc_spectrum_closed_form():
    """A DC-only spectrum a: irfft2 (ortho) gives a / size, the 1/f scale at
    f = 0 is size, /4, then the colour matrix: a / 4 * C_norm[c, :]."""
    p, size = FourierParam(), 8
    z = np.zeros(p.shape(size, 3), np.float32)
    a = 0.7
    z[1, 0, 0, 0] = a  # green channel, DC, real part
    lin = np.asarray(p.to_linear(jnp.asarray(z), size))
    want = a / 4 * COLOR_CORRELATION_NORMALIZED[:, 1]  # e_1 @ C.T = C[:, 1]
    np.testing.assert_allclose(lin, np.broadcast_to(want, (size, size, 3)),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p.to_image(jnp.zeros(p.shape(size, 3)), size), 0.5)
    assert np.abs(np.linalg.norm(COLOR_CORRELATION_NORMALIZED, axis=0).max() - 1
                  ) < 1e-6


# ------------------------------------------------------------ objectives
@pytest.mark.slow
def test_objectives_against_hand_computed_values(tiny_params):
    model = jcv.tiny_vgg16(include_top=True)
    x = jnp.asarray(np.random.default_rng(0).normal(0, 30, (3, 32, 32, 3)),
                    jnp.float32)
    fidx = jnp.asarray([1, 2, 1])
    act = np.asarray(model.forward(tiny_params, x, stop=L))  # (3, 8, 8, 8)
    c = act.shape[1] // 2  # the centre unit
    logits = np.asarray(model.logits(tiny_params, x))
    images = np.asarray(x) / 255

    def val(obj):
        spec = RenderSpec(layer=L, style=Lucid(), steps=1, objective=obj)
        return np.asarray(objective_values(tiny_params, x, fidx, jnp.asarray(images),
                                           spec=spec, model=model))

    ch = act[np.arange(3), :, :, [1, 2, 1]]  # each image's filter
    np.testing.assert_allclose(val(O.Channel(L)), ch.mean((1, 2)), rtol=1e-5)
    np.testing.assert_allclose(val(O.Channel(L, 5)), act[..., 5].mean((1, 2)),
                               rtol=1e-5)
    np.testing.assert_allclose(val(O.Neuron(L, 3)), act[:, c, c, 3], rtol=1e-5)
    v = np.arange(8, dtype=np.float32) - 3
    np.testing.assert_allclose(val(O.Direction(L, tuple(v))),
                               (act @ v).mean((1, 2)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(val(O.ClassLogit(7)), logits[:, 7], rtol=1e-5,
                               atol=1e-5)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(val(O.ClassProbability(7)), p[:, 7], rtol=1e-4)
    tv = (np.abs(np.diff(images, axis=1)).sum((1, 2, 3))
          + np.abs(np.diff(images, axis=2)).sum((1, 2, 3)))
    np.testing.assert_allclose(val(O.TotalVariation()), tv, rtol=1e-5)
    np.testing.assert_allclose(val(O.L1(0.25)), np.abs(images - 0.25).sum((1, 2, 3)),
                               rtol=1e-5)
    # composition: + - and scalar *
    np.testing.assert_allclose(
        val(2 * O.Channel(L) - O.Neuron(L, 3) + 0.5 * O.L1()),
        2 * ch.mean((1, 2)) - act[:, c, c, 3]
        + 0.5 * np.abs(images - 0.5).sum((1, 2, 3)), rtol=1e-4)
    np.testing.assert_allclose(val(-O.Channel(L, 5)), -act[..., 5].mean((1, 2)),
                               rtol=1e-5)
    # blur: 0.5 * sum (x - box3(x))^2, box edge-normalised
    pad = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cnt = np.pad(np.ones_like(images), ((0, 0), (1, 1), (1, 1), (0, 0)))
    box = sum(pad[:, i:i + 32, j:j + 32] for i in range(3) for j in range(3))
    n = sum(cnt[:, i:i + 32, j:j + 32] for i in range(3) for j in range(3))
    np.testing.assert_allclose(val(O.Blur()),
                               0.5 * ((images - box / n) ** 2).sum((1, 2, 3)),
                               rtol=1e-4)
    # diversity: images 0 and 2 share filter 1; image 1 is alone (0)
    g = np.einsum("npc,npd->ncd", act.reshape(3, 64, 8), act.reshape(3, 64, 8))
    g = g.reshape(3, -1)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    s02 = float(g[0] @ g[2])
    np.testing.assert_allclose(val(O.Diversity(L)), [-s02 / 2, 0.0, -s02 / 2],
                               rtol=1e-4, atol=1e-6)


def test_objective_errors(tiny_notop):
    model, params = tiny_notop
    with pytest.raises(ValueError, match="number"):
        O.Channel(L) * "2"
    with pytest.raises(ValueError, match="top"):
        render(params, L, [0], key=jax.random.key(0), objective=O.ClassLogit(1),
               size=S, steps=1, model=model)
    with pytest.raises(ValueError, match="objective"):
        render(params, L, [0], key=jax.random.key(0), objective=lambda c: 0,
               size=S, steps=1, model=model)


# ------------------------------------------------------------ render
@pytest.mark.slow
def test_render_batch_equals_alone_and_thresholds(tiny_notop):
    model, params = tiny_notop
    kw = dict(key=jax.random.key(3), size=S, steps=4, model=model)
    both = np.asarray(render(params, L, [2, 5, 2], **kw))
    alone = np.asarray(render(params, L, [5], **kw))
    np.testing.assert_allclose(both[1], alone[0], atol=1e-4)
    assert both.shape == (3, S, S, 3) and both.dtype == np.float32
    assert 0 <= both.min() and both.max() <= 255
    assert not np.allclose(both[0], both[2])  # a repeated filter: another key
    first = np.asarray(render(params, L, [2], **kw))
    np.testing.assert_allclose(both[0], first[0], atol=1e-4)
    snaps = np.asarray(render(params, L, [2, 5, 2], thresholds=(2, 4), **kw))
    assert snaps.shape == (2, 3, S, S, 3)
    np.testing.assert_allclose(snaps[1], both, atol=1e-5)
    two = np.asarray(render(params, L, [2, 5, 2], **{**kw, "steps": 2}))
    np.testing.assert_allclose(snaps[0], two, atol=1e-5)


def test_batched_equals_alone_up_to_rounding_and_is_reproducible(tiny_notop):
    """What holds for "batched == alone": a filter's image does not depend on
    the other filters of the request, up to the float summation order of
    differently batched convolutions (XLA:CPU picks its algorithm per shape:
    a batch of one, and some batch sizes at some layers, round differently;
    the optimisation amplifies it over many steps); the same request is
    bit-reproducible."""
    model, params = tiny_notop
    others = [0, 1, 2, 4, 5, 6, 7]
    for style in (Lucid(steps=4, size=S), Book(steps=4, size=S)):
        kw = dict(key=jax.random.key(0), style=style, model=model)
        got = [np.asarray(render(params, L, others[:n] + [3],
                                 run=Run(batch_size=n + 1), **kw))[-1]
               for n in (0, 1, 2, 7)]
        for g in got[1:]:
            np.testing.assert_allclose(g, got[0], rtol=0, atol=0.05)
        again = np.asarray(render(params, L, others[:7] + [3],
                                  run=Run(batch_size=8), **kw))[-1]
        np.testing.assert_array_equal(again, got[-1])


@pytest.mark.slow
def test_render_lucid_raises_its_objective(tiny_notop):
    model, params = tiny_notop
    spec = RenderSpec(layer=L, style=Lucid(), steps=1, pre_activation=True)
    m = spec.model_for(model)
    kw = dict(key=jax.random.key(1), size=S, model=model)
    x0, x1 = (render(params, L, [0, 1, 2, 3], steps=s, **kw) for s in (1, 30))
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(9), i))(
        jnp.arange(4))

    def value(x):
        inp = lucid_network_input(jnp.asarray(x) / 255, keys, spec=spec, model=m)
        return np.asarray(objective_values(params, inp, jnp.arange(4), x,
                                           spec=spec, model=m))

    assert np.all(value(x1) > value(x0))


def test_render_book_style_is_the_books_patterns_for_display(tiny_notop):
    """render(style=Book()) is filter_patterns (one path, one pixel domain:
    the model input, caffe BGR); Book.to_rgb maps it for display."""
    model, params = tiny_notop
    kw = dict(key=jax.random.key(0), size=S, steps=3, model=model)
    style = Book()
    raw_r = render(params, L, [0, 1], style=style, **kw)
    raw = jcv.filter_patterns(params, L, [0, 1], **kw)
    np.testing.assert_array_equal(np.asarray(raw_r), np.asarray(raw))
    got = np.asarray(style.to_rgb(raw_r, model))
    np.testing.assert_allclose(got, book_display(raw, model, False), atol=1e-4)
    # display: the book's deprocess_image as float, in RGB order
    u8 = jcv.deprocess_image(jcv.caffe_to_rgb(raw))
    assert np.abs(got - u8.astype(np.float32)).max() <= 1.0
    assert style.domain(model).startswith("caffe BGR")
    assert Book(preprocess=True).domain(model) == Lucid().domain(model) == (
        "RGB [0, 255]")


def test_entry_points_share_one_signature_of_at_most_12_parameters():
    import inspect

    sigs = {f.__name__: inspect.signature(f).parameters
            for f in (jcv.render, jcv.filter_patterns, jcv.filter_atlas)}
    assert all(len(p) <= 12 for p in sigs.values())
    for name in ("key", "style", "size", "steps", "objective", "model", "run"):
        # the same meaning everywhere: None = the style's (key: see init)
        assert {p[name].default is None or name == "style"
                for p in sigs.values()} == {True}, name
    assert sigs["render"]["style"].default == Lucid()
    assert sigs["filter_patterns"]["style"].default == Book()
    assert sigs["filter_atlas"]["style"].default == Book(size=128)  # the atlas size
    assert (Book().steps, Book().size, Lucid().steps, Lucid().size) == (
        40, 150, 512, 128)
    assert hash(Lucid()) == hash(Lucid()) and Book(steps=3) != Book()


@pytest.mark.parametrize("make,match", [
    (lambda: Book(steps=0), "Book.steps must be an integer >= 1"),
    (lambda: Lucid(size=1.5), "Lucid.size must be an integer >= 1"),
    (lambda: Book(step_size=float("nan")), "step_size must be a finite number"),
    (lambda: Book(image_dtype="float16"), "image_dtype must be one of float32, "
                                          "bfloat16; got 'float16'"),
    (lambda: Book(preprocess="yes"), "preprocess must be True or False"),
    (lambda: Lucid(pre_activation="yes"), "pre_activation must be True or False"),
    (lambda: Lucid(learning_rate=0.0), "learning_rate must be > 0"),
    (lambda: Lucid(transforms=(1, 2)), "transforms must be a sequence"),
    (lambda: Book(objective=lambda c: 0), "objective must be None"),
    (lambda: Run(progress="yes"), "progress"),
    (lambda: Run(batch_size=0), "batch_size must be None or a positive int"),
    (lambda: Run(dtype=jnp.int32), "dtype must be one of"),
    (lambda: Backend(loop="scan"), "loop must be one of 'auto', 'fori', 'python'"),
])
def test_styles_reject_bad_options(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("kw,match", [
    (dict(layer=None), "layer is required"),
    (dict(style="deepdream"), "style must be jcv.Book"),
    (dict(thresholds=(5, 2)), "thresholds"),
    (dict(steps=0), "steps"),
    (dict(size=0), "size must be at least 1 px"),
    (dict(style=Book(), size=2), "size must be at least 4 px"),
    (dict(filter_indices=[99]), "filter_indices"),
    (dict(key=None), "key is required"),
    (dict(init=np.zeros((1, S, S, 3))), "init .* applies to the Book style"),
    (dict(run="fast"), "run must be None or a jcv.Run"),
    (dict(run=Run(memory_budget="lots")), "memory_budget must be"),
])
def test_render_rejects_bad_input_before_compute(tiny_notop, kw, match):
    model, params = tiny_notop
    args = dict(layer=L, filter_indices=[0], key=jax.random.key(0), size=S,
                steps=2, model=model)
    args.update(kw)
    layer, fidx = args.pop("layer"), args.pop("filter_indices")
    with pytest.raises(ValueError, match=match):
        render(params, layer, fidx, **args)


def test_size_beyond_memory_is_an_error_with_estimate_and_limit(tiny_notop):
    model, params = tiny_notop
    with pytest.raises(ValueError, match=r"size=100000 px needs an estimated .* GB"
                       r".* more than the .* GB per device"):
        jcv.filter_patterns(params, L, [0], key=jax.random.key(0), size=100000,
                            model=model)
    with pytest.raises(ValueError, match="GB"):
        jcv.filter_atlas(params, layers=[L], size=100000, key=jax.random.key(0),
                         model=model)


@pytest.mark.slow
def test_progress_plain_lines_when_not_a_tty(tiny_notop):
    model, params = tiny_notop
    buf = io.StringIO()
    prog = Progress(desc="atlas", stream=buf)
    assert not prog.tty
    jcv.filter_atlas(params, layers=["block1_conv1", L], filters_per_layer=2,
                     size=S, steps=1, key=jax.random.key(0), model=model,
                     run=Run(batch_size=1, progress=prog))
    lines = buf.getvalue().splitlines()
    chunk_lines = [ln for ln in lines if "chunk" in ln]
    assert len(chunk_lines) == 4  # 2 layers x 2 chunks of 1 filter
    assert chunk_lines[0].startswith("atlas: block1_conv1 chunk 1/2: 1/4 filters")
    assert chunk_lines[-1].startswith(f"atlas: {L} chunk 2/2: 4/4 filters")


def test_progress_reports_a_chunk_when_its_result_is_ready(monkeypatch):
    """Dispatch is asynchronous: the engine reports chunk c only after
    waiting for its result (not when it was queued), and every chunk is
    dispatched before the first wait, so the device never idles."""
    events = []

    class Pending:  # a queued result: ready once waited for
        def __init__(self, c):
            self.c = c

        def block_until_ready(self):
            events.append(("ready", self.c))
            return self

    def run_spec(params, spec, model, plan, fidx, **kw):
        out = []
        for c in range(plan.n_chunks):
            events.append(("dispatch", c))
            out.append(Pending(c))
        return out

    monkeypatch.setattr(_engine.pg, "run_spec", run_spec)
    monkeypatch.setattr(_engine.pg, "concat_chunks", lambda outs, n, t: outs)
    monkeypatch.setattr(_engine, "_on_first_device", lambda x, devs, n: x)
    plan = pl.LayerPlan(layer="l", n_filters=5, chunk=2, n_chunks=3, n_devices=1,
                        per_filter_bytes=0, budget_bytes=0)
    spec = RenderSpec(layer="l", style=Lucid(), steps=1)
    req = _engine.Request(
        model=None, compute=None, style=Lucid(), specs={"l": spec},
        fsel={"l": np.arange(5)}, plans=[plan], devs=(), key=None, size=8,
        init=None, loop="fori", stop_dead=False,
        run=Run(progress=lambda done, total: events.append(("report", done))),
        estimate=None, desc="test")
    _engine.execute({}, req, to_host=False)
    assert events == [("dispatch", 0), ("dispatch", 1), ("dispatch", 2),
                      ("ready", 0), ("report", 2), ("ready", 1), ("report", 4),
                      ("ready", 2), ("report", 5)]


def test_atlas_warns_up_front_on_cpu_with_an_estimate(tiny_notop, monkeypatch):
    model, params = tiny_notop
    monkeypatch.setattr(pl, "CPU_MACS_PER_SECOND", 1.0)  # make it "slow"
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        jcv.filter_atlas(params, layers=[L], filters_per_layer=1, size=S, steps=1,
                         key=jax.random.key(0), model=model)
    msgs = [(str(w.message), w.filename) for w in rec
            if issubclass(w.category, jcv.SlowOnCPUWarning)]
    assert len(msgs) == 1 and "estimated" in msgs[0][0]
    assert msgs[0][1] == __file__  # it points at the caller's line


def test_cpu_estimate_counts_multiply_adds_and_memory_bound_nodes():
    # conv (8 -> 4 px: 3x3x3x6 MACs per output pixel) -> batch norm -> relu:
    # the conv is priced by multiply-adds, the other two by their elements
    from jaxconvviz.models.convnet import ConvNet, Layer

    mk = Layer.make
    model = ConvNet(layers=(
        mk("c", "conv", features=6, kernel_size=3, strides=2, padding="same"),
        mk("bn", "batchnorm", features=6, epsilon=1e-3),
        mk("act", "activation", activation="relu"),
    ), input_shape=(None, None, 3), preprocessing="none")
    macs, elems = 4 * 4 * 27 * 6, 2 * 4 * 4 * 6
    plan = pl.LayerPlan(layer="act", n_filters=5, chunk=3, n_chunks=2, n_devices=2,
                        per_filter_bytes=1, budget_bytes=1)
    per_image_step = (macs * 3 / pl.CPU_MACS_PER_SECOND
                      + elems * pl.CPU_SECONDS_PER_ELEMENT)
    assert pl.estimate_seconds(model, [plan], 8, 10) == pytest.approx(
        per_image_step * 10 * 6 / 2)  # 2 chunks of 3 (one padded) on 2 devices
    # the public surface: the same model, one device, no padding
    from jaxconvviz.featureviz.atlas import estimate_seconds

    assert estimate_seconds(model, {"act": 5}, style=Book(size=8, steps=10)) == (
        pytest.approx(per_image_step * 10 * 5))
    lucid = (macs * 4 / pl.CPU_MACS_PER_SECOND + elems * pl.CPU_SECONDS_PER_ELEMENT)
    assert estimate_seconds(model, {"act": 5}, style=Lucid(transforms=(), size=8,
                                                           steps=10)) == (
        pytest.approx(lucid * 10 * 5))


def test_atlas_lucid_style_equals_render(tiny_notop):
    model, params = tiny_notop
    kw = dict(size=S, steps=2, key=jax.random.key(4), model=model)
    res = jcv.filter_atlas(params, layers=[L], filters_per_layer=3, style=Lucid(),
                           **kw)
    want = np.asarray(render(params, L, range(3), **kw))
    np.testing.assert_allclose(res[L], want, atol=1e-4)
    pats = np.asarray(jcv.filter_patterns(params, L, range(3), style=Lucid(), **kw))
    np.testing.assert_array_equal(pats, np.asarray(render(params, L, range(3), **kw)))


@pytest.mark.parametrize("style", [Book(), Lucid()], ids=["book", "lucid"])
def test_every_objective_through_every_entry_point(tiny_notop, style):
    """A Direction objective (and a fixed-channel one) through render,
    filter_patterns and filter_atlas: the same images, and the optimisation
    raises that objective."""
    model, params = tiny_notop
    v = tuple(float(x) for x in np.arange(8) - 3)
    obj = O.Direction(L, v) + O.Channel(L, 5)
    kw = dict(key=jax.random.key(2), size=S, steps=3, model=model,
              objective=obj, style=style)
    a = np.asarray(render(params, L, [0, 1], **kw))
    b = np.asarray(jcv.filter_patterns(params, L, [0, 1], **kw))
    c = jcv.filter_atlas(params, layers=[L], filters_per_layer=2, **kw)[L]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-3)
    if style.name == "lucid":
        assert 0 <= a.min() and a.max() <= 255
        return
    # book: the (pre-ReLU) objective rose from step 1 to step 3
    x1 = np.asarray(render(params, L, [0, 1], **{**kw, "steps": 1}))
    m = model.without_activation(L)

    def val(x):
        act = np.asarray(m.forward(params, jnp.asarray(x), stop=L))
        return (act @ np.asarray(v)).mean((1, 2)) + act[..., 5].mean((1, 2))

    assert np.all(val(a) > val(x1))


# ------------------------------------------------------------ CLI
@pytest.mark.slow
def test_cli_render_writes_grid_figure_and_one_png_per_filter(tmp_path, capsys,
                                                              monkeypatch):
    from jaxconvviz.commands import common

    model = jcv.tiny_vgg16(include_top=False)
    params = model.init_params(jax.random.key(1))
    monkeypatch.setattr(common, "load_model_and_params",
                        lambda args, include_top: (model, params, "tiny VGG16"))
    rc = main(["render", "--layer", L, "--filters", "0:3", "--size", "16",
               "--steps", "2", "--out", str(tmp_path)])
    assert rc in (0, None)
    from .conftest import decode_png

    grid = decode_png(tmp_path / f"render_{L}_lucid.png")
    assert grid.shape == (16, 3 * 16 + 2 * 5, 3)
    for k in range(3):
        one = decode_png(tmp_path / f"render_{L}_lucid_{k}.png")
        np.testing.assert_array_equal(one, grid[:, k * 21:k * 21 + 16])
    decode_png(tmp_path / f"render_{L}_lucid_figure.png")
    capsys.readouterr()
    rc = main(["render", "--layer", L, "--filters", "0:3", "--size", "100000",
               "--steps", "1", "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "GB" in err[-1] and "Traceback" not in "\n".join(err)


# ------------------------------------------------------------ quality (real)
def hf_fraction(images) -> np.ndarray:
    """Per image: spectral power above half the Nyquist frequency (radial
    frequency > 0.25 cycles/pixel) over all non-DC power, channels summed."""
    x = np.asarray(images, np.float64)
    x = x - x.mean(axis=(1, 2), keepdims=True)
    p = (np.abs(np.fft.fft2(x, axes=(1, 2))) ** 2).sum(-1)
    h, w = x.shape[1:3]
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None] ** 2)
    return p[:, f > 0.25].sum(1) / np.maximum(p[:, f > 0].sum(1), 1e-12)


def robustness(params, images_rgb, layer, fidx, *, seed):
    """Objective of each image under a fresh standard-transform draw over its
    value as optimised: centred in lucid's padding, no jitter, scale or
    rotation (pre-ReLU channel mean)."""
    model = jcv.tiny_vgg16(include_top=False) if "fc1" in params else None
    model = jcv.resolve_model(params, model=model)
    spec = RenderSpec(layer=layer, style=Lucid(), steps=1, pre_activation=True)
    m = spec.model_for(model)
    f = jnp.asarray(fidx)
    x = jnp.asarray(images_rgb, jnp.float32)
    pad = jax.vmap(lambda im: T.Pad(12, 0.5)(None, im))(x / 255)
    base = objective_values(params, m.preprocess(pad * 255), f, x, spec=spec,
                            model=m)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(
        jnp.arange(x.shape[0]))
    inp = lucid_network_input(x / 255, keys, spec=spec, model=m)
    fresh = objective_values(params, inp, f, x, spec=spec, model=m)
    return np.asarray(fresh) / np.asarray(base)


@pytest.mark.hed
@pytest.mark.slow
def test_lucid_quality_vs_book_on_block4_conv1(hed_params, record_property):
    layer, fidx, size, steps = "block4_conv1", list(range(6)), 48, 48
    kw = dict(key=jax.random.key(0), size=size, steps=steps)
    lucid = np.asarray(render(hed_params, layer, fidx, **kw))
    raw = jcv.filter_patterns(hed_params, layer, fidx, **kw)
    book = np.asarray(book_display(raw, jcv.resolve_model(hed_params), False))
    hf_l, hf_b = hf_fraction(lucid).mean(), hf_fraction(book).mean()
    record_property("hf_lucid", float(hf_l))
    record_property("hf_book", float(hf_b))
    assert hf_l <= 0.5 * hf_b, (hf_l, hf_b)
    rl = robustness(hed_params, lucid, layer, fidx, seed=123)
    rgb_book = np.asarray(jcv.caffe_to_rgb(raw))
    rb = robustness(hed_params, rgb_book, layer, fidx, seed=123)
    record_property("robust_lucid", float(np.median(rl)))
    record_property("robust_book", float(np.median(rb)))
    print(f"hf lucid {hf_l:.4f} book {hf_b:.4f}; robustness median lucid "
          f"{np.median(rl):.3f} (min {rl.min():.3f}) book {np.median(rb):.3f}")
    assert np.median(rl) >= 0.7, rl
    assert np.median(rl) > np.median(rb)
