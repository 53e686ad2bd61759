"""Filter patterns by gradient ascent: closed forms, invariants, errors, grid,
CLI and the Keras oracle (the book's listings 5.32-5.38 built in Keras 3)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.backend import Backend, backend
from jaxconvviz.cli import main
from jaxconvviz.featureviz import _programs as R
from jaxconvviz.featureviz._programs import book_start_images_jit
from jaxconvviz.models.convnet import ConvNet, Layer
from jaxconvviz.run import Run

from .conftest import keras_vgg16


# ------------------------------------------------------------------ helpers
def one_conv_model(features: int = 2) -> ConvNet:
    """input -> one 3x3 'same' ReLU conv named 'conv' (caffe domain)."""
    return ConvNet(layers=(Layer.make("conv", "conv", features=features,
                                      kernel_size=3, padding="same",
                                      activation="relu"),),
                   preprocessing="caffe", name_="one_conv")


def one_conv_params(seed: int = 0, features: int = 2, bias=None):
    rng = np.random.default_rng(seed)
    k = rng.normal(0, 1, (3, 3, 3, features)).astype(np.float32)
    b = (rng.normal(0, 1, features) if bias is None else np.asarray(bias)
         ).astype(np.float32)
    return {"conv": {"kernel": jnp.asarray(k), "bias": jnp.asarray(b)}}


def conv_same_np(x, k, b):
    """Reference 3x3 'same' cross-correlation by loops: x (h, w, c) -> (h, w, f)."""
    h, w, _ = x.shape
    xp = np.pad(x.astype(np.float64), ((1, 1), (1, 1), (0, 0)))
    z = np.zeros((h, w, k.shape[-1]))
    for i, j in itertools.product(range(h), range(w)):
        z[i, j] = np.einsum("abc,abcf->f", xp[i:i + 3, j:j + 3], k) + b
    return z


def mean_act_grad_np(x, k, b, f):
    """Hand gradient of mean_{h,w} relu(conv(x))[..., f] w.r.t. x (h, w, c)."""
    h, w, _ = x.shape
    z = conv_same_np(x, k, b)[..., f]
    gp = np.zeros((h + 2, w + 2, x.shape[-1]))
    for i, j in itertools.product(range(h), range(w)):
        if z[i, j] > 0:  # ReLU passes the gradient where the output is positive
            gp[i:i + 3, j:j + 3] += k[..., f]
    return np.maximum(z, 0).mean(), gp[1:-1, 1:-1] / (h * w)


def rms(a, axis=(1, 2, 3)):
    return np.sqrt(np.mean(np.square(np.asarray(a, np.float64)), axis=axis))


@pytest.fixture(scope="module")
def tiny_notop(tiny_params_notop):
    # one layer and one size for most tests, so they share compiled programs
    return jcv.tiny_vgg16(include_top=False), tiny_params_notop


L, S = "block3_conv1", 16  # 8 channels; 16 px -> a 4x4 feature map


# ------------------------------------------------------------ closed forms
def test_one_step_matches_hand_gradient_on_one_conv():
    model, params = one_conv_model(), one_conv_params(seed=3, bias=[0.5, -0.3])
    k, b = np.asarray(params["conv"]["kernel"]), np.asarray(params["conv"]["bias"])
    img = np.random.default_rng(1).normal(0, 1, (5, 5, 3)).astype(np.float32)
    x0 = np.stack([img, img])  # the same start for filters 0 and 1
    filters = [0, 1]
    with jax.default_matmul_precision("float32"):
        x1 = jcv.filter_patterns(params, "conv", filters, init=x0, steps=1, size=5,
                                 model=model, style=jcv.Book(
                                     step_size=0.5, pre_activation=False))
        act = jcv.filter_activation(params, x0, "conv", filters, model=model)
    for i, f in enumerate(filters):
        z = conv_same_np(x0[i], k, b)[..., f]
        assert np.abs(z).min() > 1e-3  # no ReLU kink within rounding
        assert 0 < (z > 0).mean() < 1  # the mask matters
        loss, g = mean_act_grad_np(x0[i], k, b, f)
        want = x0[i] + 0.5 * g / (np.sqrt(np.mean(g * g)) + 1e-5)
        np.testing.assert_allclose(act[i], loss, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(x1[i], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", [1e-7, 1e-5, 1.0, 1e3])
def test_step_is_rms_normalised_with_book_epsilon(scale):
    # scaling kernel and bias by s keeps the ReLU mask and scales g by s, so the
    # step g / (rms(g) + 1e-5) has RMS r s / (r s + 1e-5), r = rms(g) at s = 1
    model = one_conv_model()
    base = one_conv_params(seed=5, bias=[0.2, -0.1])
    params = {"conv": {k: v * scale for k, v in base["conv"].items()}}
    x0 = np.random.default_rng(2).normal(0, 1, (2, 6, 6, 3)).astype(np.float32)
    k, b = (np.asarray(base["conv"][n], np.float64) for n in ("kernel", "bias"))
    r = np.array([np.sqrt(np.mean(mean_act_grad_np(x0[i], k, b, i)[1] ** 2))
                  for i in range(2)])
    with jax.default_matmul_precision("float32"):
        x1 = jcv.filter_patterns(params, "conv", [0, 1], init=x0, steps=1, size=6,
                                 model=model, style=jcv.Book(
                                     step_size=3.0, pre_activation=False))
    delta = (np.asarray(x1, np.float64) - x0) / 3.0
    np.testing.assert_allclose(rms(delta), r * scale / (r * scale + 1e-5),
                               rtol=2e-5)


@pytest.mark.slow
def test_dead_filter_does_not_move_and_is_finite():
    model = one_conv_model()
    params = one_conv_params(bias=[-1e4, -1e4])  # ReLU kills every position
    x0 = np.full((2, 6, 6, 3), 128.0, np.float32)
    with pytest.warns(jcv.DeadFilterWarning, match=r"2 of 2 filters of conv .*"
                      r"\[0, 1\]; they are silent .* post-ReLU objective; "
                      r"pre_activation=True \(the default\) revives them") as rec:
        x = jcv.filter_patterns(params, "conv", [0, 1], init=x0, steps=3, size=6,
                                model=model, style=jcv.Book(pre_activation=False))
    with pytest.warns(jcv.DeadFilterWarning, match=r"\[1\]") as rec2:
        jcv.filter_atlas(one_conv_params(bias=[1e4, -1e4]), layers=["conv"],
                         size=6, steps=2, key=jax.random.key(0), model=model,
                         style=jcv.Book(pre_activation=False))
    # the warnings point at the caller's line, not inside the package
    for r in (*rec, *rec2):
        if issubclass(r.category, jcv.DeadFilterWarning):
            assert r.filename == __file__, r.filename
    np.testing.assert_array_equal(x, x0)  # g = 0: 0 / (0 + 1e-5) = 0, no NaN
    np.testing.assert_array_equal(
        jcv.filter_activation(params, x, "conv", [0, 1], model=model), [0.0, 0.0])
    # dead below the layer: its pre-activation has no gradient either, and
    # the warning says so instead of suggesting pre_activation=True
    two = ConvNet(layers=(*one_conv_model().layers, Layer.make(
        "top", "conv", features=2, kernel_size=1, activation="relu")),
        preprocessing="caffe")
    p2 = {**params, "top": {"kernel": np.ones((1, 1, 2, 2), np.float32),
                            "bias": np.zeros(2, np.float32)}}
    with pytest.warns(jcv.DeadFilterWarning, match=r"\[0, 1\]; even their "
                      r"pre-activation response has no gradient"):
        jcv.filter_patterns(p2, "top", [0, 1], init=x0, steps=2, size=6, model=two)


def test_start_is_book_uniform_per_filter_key():
    key = jax.random.key(11)
    x0 = book_start_images_jit(key, jnp.asarray([5, 2]), size=8, channels=3)
    for i, f in enumerate([5, 2]):
        want = jax.random.uniform(jax.random.fold_in(key, f), (8, 8, 3)) * 20 + 128
        np.testing.assert_allclose(x0[i], want, rtol=2e-7)  # jit may fuse an FMA
    assert 128 <= float(x0.min()) and float(x0.max()) < 148


def test_ascent_increases_the_objective(tiny_notop):
    model, params = tiny_notop
    key, filters = jax.random.key(0), [0, 3, 5]
    x0 = book_start_images_jit(key, jnp.asarray(filters), size=S, channels=3)
    x = jcv.filter_patterns(params, L, filters, key=key, steps=10, size=S,
                            model=model)
    before = jcv.filter_activation(params, x0, L, filters, model=model)
    after = jcv.filter_activation(params, x, L, filters, model=model)
    assert np.all(np.asarray(after) > np.asarray(before))


# -------------------------------------------------------------- invariants
@pytest.mark.parametrize("loop", ["python", "fori"])
@pytest.mark.slow
def test_batched_equals_one_at_a_time(tiny_notop, loop):
    model, params = tiny_notop
    key, layer, filters = jax.random.key(5), L, [6, 0, 3, 7]
    kw = dict(key=key, size=S, model=model)
    with jax.default_matmul_precision("float32"), backend(loop=loop):
        batch1 = jcv.filter_patterns(params, layer, filters, steps=1, **kw)
        batch = jcv.filter_patterns(params, layer, filters, steps=6, **kw)
        act = jcv.filter_activation(params, batch, layer, filters, model=model)
        for i, f in enumerate(filters):
            x0 = book_start_images_jit(key, jnp.asarray([f]), size=S, channels=3)
            one1 = jcv.filter_patterns(params, layer, [f], steps=1, **kw)
            one = jcv.filter_patterns(params, layer, [f], steps=6, **kw)
            # first step: the normalised gradient of filter f alone
            np.testing.assert_allclose(batch1[i] - x0[0], one1[0] - x0[0],
                                       rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(batch[i], one[0], rtol=1e-5, atol=1e-3)
            a1 = jcv.filter_activation(params, one, layer, [f], model=model)
            np.testing.assert_allclose(act[i], a1[0], rtol=1e-4)


def test_fori_and_python_loops_agree(tiny_notop):
    model, params = tiny_notop
    kw = dict(key=jax.random.key(2), size=S, steps=5, model=model)
    with backend(loop="fori"):
        a = jcv.filter_patterns(params, L, range(4), **kw)
    with backend(loop="python"):
        b = jcv.filter_patterns(params, L, range(4), **kw)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-3)


def test_same_key_is_bitwise_reproducible(tiny_notop):
    model, params = tiny_notop
    kw = dict(size=S, steps=4, model=model)
    a = jcv.filter_patterns(params, L, range(4), key=jax.random.key(9), **kw)
    b = jcv.filter_patterns(params, L, range(4), key=jax.random.key(9), **kw)
    c = jcv.filter_patterns(params, L, range(4), key=jax.random.key(10), **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("loop", ["python", "fori"])
def test_other_filters_same_count_do_not_recompile(tiny_notop, loop):
    model, params = tiny_notop
    kw = dict(key=jax.random.key(0), size=S, steps=5, model=model,
              run=Run(batch_size=4))
    loop_ctx = backend(loop=loop)
    loop_ctx.__enter__()
    jcv.filter_patterns(params, L, [0, 1, 2, 3], **kw)
    misses = R.program.cache_info().misses
    progs = []
    real = R.program

    def spy(*a):
        progs.append(real(*a))
        return progs[-1]

    R.program = spy
    try:
        jcv.filter_patterns(params, L, [0, 1, 2, 3], **kw)
        p = progs[-1]
        jitted = p.ascend if loop == "fori" else p.step
        n_step, n_start = jitted._cache_size(), p.init._cache_size()
        jcv.filter_patterns(params, L, [5, 3, 7, 1], **kw)
        # 7 filters in chunks of 4 (the last one padded): still the same program
        jcv.filter_patterns(params, L, [4, 6, 1, 0, 2, 3, 5], **kw)
    finally:
        R.program = real
        loop_ctx.__exit__(None, None, None)
    assert all(q is p for q in progs)
    assert R.program.cache_info().misses == misses
    assert jitted._cache_size() == n_step
    assert p.init._cache_size() == n_start


def test_chunked_equals_unchunked(tiny_notop):
    model, params = tiny_notop
    kw = dict(key=jax.random.key(4), size=S, steps=4, model=model)
    filters = [7, 1, 2, 6, 4, 0, 3, 5, 2]
    seen = []
    whole = jcv.filter_patterns(params, L, filters, run=Run(batch_size=9), **kw)
    chunked = jcv.filter_patterns(params, L, filters, **kw, run=Run(
        batch_size=4, progress=lambda d, t: seen.append((d, t))))
    assert chunked.shape == (9, S, S, 3) and chunked.dtype == jnp.float32
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-3)
    # at most 4 per call: 3 equal chunks of 3 (no padding)
    assert seen == [(3, 9), (6, 9), (9, 9)]
    np.testing.assert_array_equal(chunked[2], chunked[8])  # same filter, same key


@pytest.mark.slow
def test_bfloat16_network_reaches_similar_activations(tiny_notop):
    model, params = tiny_notop
    kw = dict(key=jax.random.key(1), size=S, steps=8, model=model)
    filters = [0, 1, 2, 3]
    x32 = jcv.filter_patterns(params, L, filters, **kw)
    x16 = jcv.filter_patterns(params, L, filters, run=Run(dtype="bfloat16"), **kw)
    assert x16.dtype == jnp.float32 and bool(jnp.isfinite(x16).all())
    a32 = jcv.filter_activation(params, x32, L, filters, model=model)
    a16 = jcv.filter_activation(params, x16, L, filters, model=model)
    np.testing.assert_allclose(a16, a32, rtol=0.1)
    assert not np.array_equal(x16, x32)  # it really ran in bf16


@pytest.mark.slow
def test_init_replaces_key_drawn_starts(tiny_notop):
    model, params = tiny_notop
    key, filters = jax.random.key(8), [2, 4, 1, 6]
    x0 = book_start_images_jit(key, jnp.asarray(filters), size=S, channels=3)
    kw = dict(size=S, steps=3, model=model)
    a = jcv.filter_patterns(params, L, filters, key=key, **kw)
    b = jcv.filter_patterns(params, L, filters, init=x0, **kw)
    np.testing.assert_array_equal(a, b)
    x0_np = np.asarray(x0).copy()
    jcv.filter_patterns(params, L, filters, init=x0_np, **kw)
    np.testing.assert_array_equal(x0_np, x0)  # init is never mutated


@pytest.mark.slow
def test_preprocess_true_differentiates_through_caffe(tiny_notop):
    model, params = tiny_notop
    rng = np.random.default_rng(0)
    x_rgb = rng.uniform(100, 160, (2, S, S, 3)).astype(np.float32)
    filters, layer = [1, 5], L
    with jax.default_matmul_precision("float32"):
        got = jcv.filter_patterns(params, layer, filters, init=x_rgb, steps=1,
                                  model=model, size=S, style=jcv.Book(
                                      preprocess=True, pre_activation=False))
        # hand composition: RGB -> caffe BGR -> forward -> mean of channel f
        @jax.jit
        @jax.grad
        def grad_obj(x, f):
            act = model.forward(params, jcv.preprocess_input(x[None]), stop=layer)
            return act[0, :, :, f].mean()

        for i, f in enumerate(filters):
            g = np.asarray(grad_obj(jnp.asarray(x_rgb[i]), f), np.float64)
            want = x_rgb[i] + g / (np.sqrt(np.mean(g * g)) + 1e-5)
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-4)
        act = jcv.filter_activation(params, x_rgb, layer, filters, preprocess=True,
                                    model=model)
        act_caffe = jcv.filter_activation(params, jcv.preprocess_input(x_rgb),
                                          layer, filters, model=model)
    np.testing.assert_allclose(act, act_caffe, rtol=1e-6)
    # channel order: the RGB step is the caffe (BGR) step with channels flipped
    with jax.default_matmul_precision("float32"):
        caffe = jcv.filter_patterns(params, layer, filters,
                                    init=jcv.preprocess_input(x_rgb), steps=1,
                                    model=model, size=S,
                                    style=jcv.Book(pre_activation=False))
    np.testing.assert_allclose(np.flip(np.asarray(caffe - jcv.preprocess_input(
        x_rgb)), -1), got - x_rgb, rtol=1e-4, atol=1e-4)


def test_resolves_vgg_preset_from_params(tiny_notop):
    model, params = tiny_notop
    kw = dict(key=jax.random.key(0), size=S, steps=2)
    np.testing.assert_array_equal(
        jcv.filter_patterns(params, L, [1], **kw),
        jcv.filter_patterns(params, L, [1], model=model, **kw))


# ------------------------------------------------------------------- errors
BAD = [
    (dict(layer="block9_conv1"), "layer must be one of block1_conv1, "),
    (dict(layer="flatten"), "layer must be one of"),
    (dict(filters=[8]), "layer 'block3_conv1' has 8 channels"),
    (dict(filters=[-1]), "filter_indices must be in 0..7"),
    (dict(filters=[]), "non-empty 1-D"),
    (dict(filters=3), "non-empty 1-D"),
    (dict(filters=[0.5]), "integers"),
    (dict(size=3), "at least 4 px for layer 'block3_conv1'"),
    (dict(size=32.0), "size must be an integer"),
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(style="book"), "style must be jcv.Book(...) or jcv.Lucid(...)"),
    (dict(key=None), "key is required"),
    (dict(key=np.array([1, 2, 3], np.uint32)), "key must be one PRNG key"),
    (dict(key=0), "key must be one PRNG key"),
    (dict(init=np.zeros((1, 32, 32, 3))), "init must have shape"),
    (dict(init=np.zeros((2, 16, 16, 3))), "(2, 32, 32, 3)"),
    (dict(init=np.full((2, 32, 32, 3), np.nan)), "init contains NaN"),
    (dict(run=Run(batch_size=None, memory_budget=-5)), "memory_budget must be"),
]


@pytest.mark.parametrize("bad,msg", BAD, ids=[m[:24] for _, m in BAD])
def test_bad_input_raises_before_compute(tiny_notop, bad, msg, monkeypatch):
    model, params = tiny_notop

    def boom(*a, **k):
        raise AssertionError("computed before validating")

    monkeypatch.setattr(R, "program", boom)
    kw = dict(key=jax.random.key(0), size=32, steps=2, model=model)
    layer = bad.pop("layer", "block3_conv1")
    filters = bad.pop("filters", [0, 1])
    kw.update(bad)
    with pytest.raises(ValueError, match=None) as e:
        jcv.filter_patterns(params, layer, filters, **kw)
    assert msg in str(e.value)


def test_filter_activation_rejects_mismatch(tiny_notop):
    model, params = tiny_notop
    with pytest.raises(ValueError, match="same length"):
        jcv.filter_activation(params, np.zeros((2, 32, 32, 3)), "block1_conv1",
                              [0], model=model)
    with pytest.raises(ValueError, match="at least 16 px"):
        jcv.filter_activation(params, np.zeros((1, 8, 8, 3)), "block5_conv1",
                              [0], model=model)


# -------------------------------------------------------------------- grids
def test_tile_grid_row_major_positions_and_padding():
    tiles = np.stack([np.full((2, 3, 3), k + 1, np.uint8) for k in range(5)])
    tiles[:, 0, 0] = 200  # mark each tile's top-left corner
    g = jcv.tile_grid(tiles, n_cols=3, margin=1)
    assert g.shape == (2 * 2 + 1, 3 * 3 + 2, 3)
    for k in range(5):
        r, c = divmod(k, 3)
        y, x = r * 3, c * 4
        np.testing.assert_array_equal(g[y:y + 2, x:x + 3], tiles[k])
    assert (g[2] == 0).all() and (g[:, 3] == 0).all() and (g[:, 7] == 0).all()
    assert (g[3:, 8:] == 0).all()  # the 6th cell of the last row: background
    # fewer tiles than columns: the grid is only as wide as needed
    assert jcv.tile_grid(tiles[:2], n_cols=8, margin=5).shape == (2, 11, 3)


def test_atlas_grid_deprocesses_each_image_in_row_major_order():
    rng = np.random.default_rng(0)
    imgs = rng.normal(0, 1, (10, 4, 4, 3)).astype(np.float32)
    imgs *= np.arange(1, 11, dtype=np.float32)[:, None, None, None] * 10
    imgs += 128
    g = jcv.atlas_grid(imgs, n_cols=4, margin=2)
    assert g.dtype == np.uint8 and g.shape == (3 * 4 + 2 * 2, 4 * 4 + 3 * 2, 3)
    for k in range(10):
        r, c = divmod(k, 4)
        np.testing.assert_array_equal(g[r * 6:r * 6 + 4, c * 6:c * 6 + 4],
                                      jcv.deprocess_image(imgs[k]))
    assert (g[12:, 12:] == 0).all()  # cells 11 and 12 (last row): black
    np.testing.assert_array_equal(
        jcv.atlas_grid(imgs, n_cols=4, margin=2),
        jcv.tile_grid(jcv.deprocess_image(imgs), n_cols=4, margin=2))


def test_book_grid_size():
    g = jcv.atlas_grid(np.random.default_rng(0).normal(size=(64, 8, 8, 3)))
    assert g.shape == (8 * 8 + 7 * 5, 8 * 8 + 7 * 5, 3)


@pytest.mark.parametrize("kw,msg", [
    (dict(n_cols=0), "n_cols must be an integer >= 1"),
    (dict(margin=-1), "margin must be an integer >= 0"),
])
def test_grid_bad_layout(kw, msg):
    with pytest.raises(ValueError, match=msg):
        jcv.atlas_grid(np.zeros((2, 4, 4, 3)), **kw)


def test_atlas_grid_bad_images():
    with pytest.raises(ValueError, match="non-empty batch"):
        jcv.atlas_grid(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        jcv.atlas_grid(np.full((1, 4, 4, 3), np.inf))
    with pytest.raises(ValueError, match="uint8"):
        jcv.tile_grid(np.zeros((1, 4, 4, 3), np.float32))


def test_plot_atlas_title_names_layer_and_weights():
    from jaxconvviz.plotting import plot_atlas

    grid = jcv.atlas_grid(np.random.default_rng(0).normal(size=(3, 8, 8, 3)))
    fig = plot_atlas(grid, layer="block3_conv1", n_filters=3, source="HED weights",
                     filter_indices=[7, 2, 9], n_cols=8, margin=5)
    title = " ".join(t.get_text() for t in fig.texts)
    assert "block3_conv1" in title and "3 filters" in title and "HED" in title
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), grid)
    # the grid fills the canvas below the title; tiles are numbered in order
    x0, y0, w, h = fig.axes[0].get_position().bounds
    np.testing.assert_allclose((x0, y0, w), (0, 0, 1), atol=1e-6)
    assert h > 0.75
    nums = [(t.get_text(), t.get_position()) for t in fig.axes[0].texts]
    assert [n for n, _ in nums] == ["7", "2", "9"]
    assert [round(p[0] - 1.5) for _, p in nums] == [0, 13, 26]  # 8 px + 5 margin
    with pytest.raises(ValueError, match="grid_u8 must be a uint8"):
        plot_atlas(grid.astype(np.float32), layer="x", n_filters=1)


# ---------------------------------------------------------------------- CLI
@pytest.mark.hed
@pytest.mark.slow
def test_cli_atlas_writes_the_grid(hed_path, hed_params, tmp_path, capsys):
    from PIL import Image

    rc = main(["atlas", "--weights", str(hed_path), "--layer", "block1_conv1",
               "--filters", "0:4", "--size", "20", "--steps", "2", "--seed", "3",
               "--cols", "2", "--out", str(tmp_path)])
    assert rc == 0
    raw = np.asarray(Image.open(tmp_path / "atlas_block1_conv1.png"))
    pats = jcv.filter_patterns(hed_params, "block1_conv1", range(4),
                               key=jax.random.key(3), steps=2, size=20)
    np.testing.assert_array_equal(raw, jcv.atlas_grid(pats, n_cols=2))
    assert (tmp_path / "atlas_block1_conv1_figure.png").is_file()
    assert "atlas_block1_conv1.png" in capsys.readouterr().out


@pytest.mark.hed
@pytest.mark.parametrize("args,msg", [
    (["--layer", "block9_conv1"], "--layer must be one of block1_conv1, "),
    ([], "--layer is required; one of block1_conv1"),
    (["--layer", "block1_conv1", "--filters", "0,70"], "out of range: [70]"),
    (["--layer", "block5_conv1", "--size", "8"], "at least 16 px"),
    (["--layer", "block1_conv1", "--steps", "0"], "--steps must be >= 1"),
])
def test_cli_atlas_bad_arguments_exit_2(hed_path, tmp_path, capsys, args, msg):
    rc = main(["atlas", "--weights", str(hed_path), "--out", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.png"))


# ----------------------------------------------------------- Keras oracle
@pytest.mark.keras
@pytest.mark.hed
@pytest.mark.parametrize("channel_only", [True, False])
@pytest.mark.slow
def test_one_ascent_step_matches_keras_book_code(keras, hed_params, channel_only):
    """The notes' listing 5.32-5.36 in Keras 3 (JAX backend) vs ours, float32,
    computing only the filter's channel of the layer or all of it."""
    kmodel = keras_vgg16(keras, hed_params, input_shape=(40, 40, 3))
    layer_name, filter_index = "block3_conv1", 5
    probe = keras.Model(kmodel.inputs, kmodel.get_layer(layer_name).output)

    def loss_fn(x):  # loss = K.mean(layer_output[:, :, :, filter_index])
        return keras.ops.mean(probe(x)[:, :, :, filter_index])

    x0 = (np.random.default_rng(0).random((1, 40, 40, 3)) * 20 + 128
          ).astype(np.float32)
    with jax.default_matmul_precision("float32"):
        loss, grads = jax.value_and_grad(loss_fn)(jnp.asarray(x0))
        grads = np.asarray(grads, np.float64)
        grads /= np.sqrt(np.mean(np.square(grads))) + 1e-5  # listing 5.34
        want = x0 + grads * 1.0  # listing 5.36, step = 1
        with backend(channel_only=channel_only):
            got = jcv.filter_patterns(hed_params, layer_name, [filter_index],
                                      init=x0, steps=1, size=40,
                                      style=jcv.Book(pre_activation=False))
        act = jcv.filter_activation(hed_params, x0, layer_name, [filter_index])
    np.testing.assert_allclose(act[0], float(loss), rtol=1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-4)
    np.testing.assert_allclose(np.asarray(got) - x0, want - x0, rtol=1e-3,
                               atol=2e-4)


# ------------------------------------------------------- pre-ReLU objective
def test_pre_activation_revives_a_dead_filter(key):
    """Bias -1e4: the ReLU output is 0 everywhere, so the book's objective has
    a zero gradient and the start image never moves; the pre-ReLU objective's
    gradient is the (position-summed) kernel, so one step moves every pixel
    by the RMS-normalised gradient, computed here by hand."""
    model = one_conv_model(features=1)
    params = one_conv_params(features=1, bias=[-1e4])
    init = jnp.full((1, 6, 6, 3), 128.0)
    dead = jcv.filter_patterns(params, "conv", [0], init=init, steps=1,
                               size=6, model=model,
                               style=jcv.Book(pre_activation=False))
    np.testing.assert_array_equal(dead, init)
    moved = jcv.filter_patterns(params, "conv", [0], init=init, steps=1, size=6,
                                model=model, style=jcv.Book(pre_activation=True))
    # d mean(z) / d x[p, c] = sum of kernel taps that see pixel p, / 36
    k = np.asarray(params["conv"]["kernel"], np.float64)[..., 0]  # (3, 3, 3)
    g = np.zeros((6, 6, 3))
    for i, j in itertools.product(range(6), range(6)):
        for a, b in itertools.product(range(3), range(3)):
            y, x = i + a - 1, j + b - 1
            if 0 <= y < 6 and 0 <= x < 6:
                g[y, x] += k[a, b] / 36
    step = g / (np.sqrt((g ** 2).mean()) + 1e-5)
    np.testing.assert_allclose(moved[0], 128.0 + step, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_pre_activation_equals_book_where_the_relu_is_open(key):
    model = one_conv_model(features=1)
    params = one_conv_params(features=1, bias=[1e4])  # always positive
    a = jcv.filter_patterns(params, "conv", [0], key=key, steps=3, size=6,
                            model=model, style=jcv.Book(pre_activation=False))
    b = jcv.filter_patterns(params, "conv", [0], key=key, steps=3, size=6,
                            model=model, style=jcv.Book(pre_activation=True))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="pre_activation must be True or False"):
        jcv.Book(pre_activation="yes")


def test_cli_pre_activation_flag(hed_path, tmp_path, capsys):
    rc = main(["atlas", "--layer", "block1_conv1", "--filters", "0:2", "--size",
               "16", "--steps", "2", "--pre-activation", "--weights",
               str(hed_path), "--out", str(tmp_path)])
    assert rc == 0 and (tmp_path / "atlas_block1_conv1.png").is_file()


@pytest.mark.slow
def test_atlas_pre_activation_equals_filter_patterns(key):
    model = one_conv_model(features=3)
    params = one_conv_params(features=3, bias=[-1e4, 0.0, 1e4])
    want = jcv.filter_patterns(params, "conv", [0, 1, 2], key=key, steps=2,
                               size=6, model=model,
                               style=jcv.Book(pre_activation=True))
    got = jcv.filter_atlas(params, layers=["conv"], size=6, steps=2, key=key,
                           model=model, style=jcv.Book(pre_activation=True))["conv"]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert not np.allclose(got[0], jcv.filter_atlas(
        params, layers=["conv"], size=6, steps=2, key=key, model=model,
        style=jcv.Book(pre_activation=False))["conv"][0])
    # the default is the pre-ReLU objective (the book's is pre_activation=False)
    np.testing.assert_array_equal(got, jcv.filter_atlas(
        params, layers=["conv"], size=6, steps=2, key=key, model=model)["conv"])


# ----------------------------------------------------- dead filters stop early
def _kill(params, layer, filters):
    """``params`` with ``filters`` of ``layer`` silent everywhere (kernel
    column 0, bias -1: the pre-activation is -1 at every position)."""
    p = dict(params)
    f = jnp.asarray(filters)
    p[layer] = {"kernel": p[layer]["kernel"].at[..., f].set(0.0),
                "bias": p[layer]["bias"].at[f].set(-1.0)}
    return p


def _record_plans(monkeypatch):
    seen = []
    real = R.dispatch

    def spy(run_chunk, finish, plan, ids):
        seen.append((plan.layer, plan.n_filters))
        return real(run_chunk, finish, plan, ids)

    monkeypatch.setattr(R, "dispatch", spy)
    return seen


@pytest.mark.parametrize("loop", ["python", "fori"])
def test_dead_filters_stop_after_one_step_same_result(monkeypatch, tiny_model,
                                                      tiny_params, loop):
    """Book style, post-ReLU: the dead filters run one step, the others all
    of them, re-packed; the result equals the run without stopping (float32
    summation order aside) and the dead rows are their start images."""
    params = _kill(tiny_params, "block3_conv1", [1, 4, 6])
    kw = dict(key=jax.random.key(3), steps=4, size=32, model=tiny_model,
              style=jcv.Book(pre_activation=False), run=Run(batch_size=4))
    filters = list(range(8))
    # filter 7 is silent on the start images with these random weights too
    with pytest.warns(jcv.DeadFilterWarning, match=r"4 of 8 .*\[1, 4, 6, 7\]"), \
            backend(loop=loop, stop_dead=False):
        full = jcv.filter_patterns(params, "block3_conv1", filters, **kw)
    seen = _record_plans(monkeypatch)
    with pytest.warns(jcv.DeadFilterWarning, match=r"\[1, 4, 6, 7\]"), \
            backend(loop=loop):
        fast = jcv.filter_patterns(params, "block3_conv1", filters, **kw)
    assert seen == [("block3_conv1", 8), ("block3_conv1", 4)]  # 8 x 1 + 4 x 3 steps
    np.testing.assert_allclose(np.asarray(fast), np.asarray(full), rtol=1e-6,
                               atol=1e-4)
    # dead rows: bit for bit the book's start images of their own filters
    x0 = book_start_images_jit(kw["key"], jnp.asarray([1, 4, 6, 7]), size=32,
                               channels=3)
    np.testing.assert_array_equal(np.asarray(fast)[[1, 4, 6, 7]], np.asarray(x0))


def test_atlas_stops_dead_filters_with_the_same_atlas(monkeypatch, tiny_model,
                                                      tiny_params):
    params = _kill(_kill(tiny_params, "block3_conv2", [0, 2]), "block4_conv1",
                   list(range(8)))  # a whole chunk dead in block4_conv1
    kw = dict(layers=["block3_conv2", "block4_conv1"], filters_per_layer=8,
              size=32, steps=3, key=jax.random.key(1), model=tiny_model,
              style=jcv.Book(pre_activation=False), run=Run(batch_size=4))
    with pytest.warns(jcv.DeadFilterWarning), backend(stop_dead=False):
        full = jcv.filter_atlas(params, **kw)
    seen = _record_plans(monkeypatch)
    with pytest.warns(jcv.DeadFilterWarning):
        fast = jcv.filter_atlas(params, **kw)
    x0 = np.asarray(book_start_images_jit(kw["key"], jnp.arange(8), size=32,
                                          channels=3))
    alive = int(np.any(full["block3_conv2"] != x0, axis=(1, 2, 3)).sum())
    assert 0 < alive <= 6 and not np.any(full["block4_conv1"] != x0)
    # block4_conv1 is all dead: its rest is never dispatched
    assert seen == [("block3_conv2", 8), ("block3_conv2", alive), ("block4_conv1", 8)]
    for layer in kw["layers"]:
        np.testing.assert_allclose(fast[layer], full[layer], rtol=1e-6, atol=1e-4)
    # pre_activation=True (the default): no stop, one pass per layer
    seen.clear()
    jcv.filter_atlas(params, **{**kw, "style": jcv.Book(pre_activation=True)})
    assert seen == [("block3_conv2", 8), ("block4_conv1", 8)]


def test_stop_dead_must_be_a_bool():
    with pytest.raises(ValueError, match=r"stop_dead must be one of 'auto', True, "
                       r"False; got 'yes'"):
        Backend(stop_dead="yes")


# -------------------------------------------- bfloat16 image storage (opt-in)
def test_bf16_image_storage_is_one_rounding_per_step(tiny_model, tiny_params):
    """A step with ``image_dtype="bfloat16"`` is the float32 step from the
    same stored image, rounded once: bit for bit."""
    rng = np.random.default_rng(0)
    x0 = jnp.asarray(rng.uniform(118, 138, (4, 32, 32, 3)), jnp.float32)
    x0 = x0.astype(jnp.bfloat16).astype(jnp.float32)  # representable start
    kw = dict(size=32, model=tiny_model, init=x0, steps=1)
    f32 = jcv.filter_patterns(tiny_params, "block3_conv1", range(4), **kw)
    b16 = jcv.filter_patterns(tiny_params, "block3_conv1", range(4),
                              style=jcv.Book(image_dtype="bfloat16"), **kw)
    assert b16.dtype == jnp.float32
    np.testing.assert_array_equal(
        np.asarray(b16), np.asarray(f32.astype(jnp.bfloat16).astype(jnp.float32)))
    assert not np.array_equal(np.asarray(b16), np.asarray(f32))  # it did round


@pytest.mark.slow
def test_bf16_image_storage_reaches_the_float32_activation(tiny_model, tiny_params):
    """20 steps: the activation reached with bfloat16 storage is within 10% of
    float32 storage's (ascent is chaotic: compared by the
    objective, not by pixels); the atlas gives the same as filter_patterns."""
    kw = dict(key=jax.random.key(5), size=32, model=tiny_model, steps=20)
    idx = list(range(8))
    f32 = jcv.filter_patterns(tiny_params, "block3_conv1", idx, **kw)
    b16 = jcv.filter_patterns(tiny_params, "block3_conv1", idx,
                              style=jcv.Book(image_dtype="bfloat16"), **kw)
    a32, a16 = (np.asarray(jcv.filter_activation(tiny_params, x, "block3_conv1",
                                                 idx, model=tiny_model))
                for x in (f32, b16))
    # within 10% of each filter's value, or of the layer's median for the
    # weak filters (~1 against a median of ~65 here)
    tol = 0.1 * np.maximum(np.abs(a32), np.median(np.abs(a32)))
    assert np.all(np.abs(a16 - a32) <= tol), (a32, a16)
    # stored values are bfloat16 numbers
    np.testing.assert_array_equal(np.asarray(b16), np.asarray(
        jnp.asarray(b16).astype(jnp.bfloat16).astype(jnp.float32)))
    atlas = jcv.filter_atlas(tiny_params, layers=["block3_conv1"],
                             filters_per_layer=8,
                             style=jcv.Book(image_dtype="bfloat16"),
                             run=Run(batch_size=4), **kw)
    np.testing.assert_allclose(atlas["block3_conv1"], np.asarray(b16), atol=1.0)


def test_image_dtype_errors():
    with pytest.raises(ValueError, match=r"image_dtype must be one of float32, "
                       r"bfloat16; got 'float16'"):
        jcv.Book(image_dtype="float16")
    with pytest.raises(TypeError, match="image_dtype"):  # a Book option only
        jcv.Lucid(image_dtype="bfloat16")
