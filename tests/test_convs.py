"""The convolution algorithms of jaxconvviz.backend (matrix products, Winograd,
depthwise slices, custom VJPs) against XLA's and by hand, and their choice by
a model's backend."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.backend import Backend, bind, depthwise, matmul, resolve, winograd
from jaxconvviz.models.convnet import ConvNet, Layer

DN = ("NHWC", "HWIO", "NHWC")


def _xla(x, w, padding, strides=(1, 1), **kw):
    return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DN,
                                        **kw)


def _mm(x, w, padding, strides=(1, 1), **kw):
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, DN)
    return matmul.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn,
                                      **kw)


CASES = [  # (n, h, w, c, k, kh, kw, padding)
    (2, 9, 7, 16, 5, 3, 3, "SAME"),
    (1, 8, 8, 32, 6, 1, 1, "SAME"),
    (2, 10, 9, 8, 3, 3, 5, "VALID"),
    (1, 6, 6, 12, 2, 5, 3, ((1, 2), (0, 2))),
    (3, 4, 4, 16, 8, 2, 2, "SAME"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[5]}x{c[6]}-{c[7]}")
@pytest.mark.slow
def test_values_and_both_gradients_equal_xla(case):
    n, h, w, c, k, kh, kw, pad = case
    ks = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(ks[0], (n, h, w, c))
    wt = jax.random.normal(ks[1], (kh, kw, c, k))
    # the matrix-product path is taken (custom VJP), not the XLA pass-through
    assert "custom_vjp_call" in str(jax.make_jaxpr(lambda x, w: _mm(x, w, pad))(x, wt))
    y0, y1 = _xla(x, wt, pad), _mm(x, wt, pad)
    assert y1.shape == y0.shape and y1.dtype == jnp.float32
    scale = float(jnp.abs(y0).max())
    np.testing.assert_allclose(y1, y0, atol=2e-6 * scale, rtol=0)
    ct = jax.random.normal(ks[2], y0.shape)

    def loss(f):
        return lambda x, w: (f(x, w, pad) * ct).sum()

    g0 = jax.jit(jax.grad(loss(_xla), argnums=(0, 1)))(x, wt)
    g1 = jax.jit(jax.grad(loss(_mm), argnums=(0, 1)))(x, wt)
    for a, b in zip(g1, g0, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-6 * float(jnp.abs(b).max()), rtol=0)


def test_one_hot_kernel_is_a_shift_by_hand():
    # kernel 1 at (row 0, col 2, in 3, out 1): y[:, i, j, 1] = x[:, i-1, j+1, 3]
    x = jnp.arange(1 * 5 * 6 * 16, dtype=jnp.float32).reshape(1, 5, 6, 16)
    w = jnp.zeros((3, 3, 16, 2)).at[0, 2, 3, 1].set(1.0)
    y = np.asarray(_mm(x, w, "SAME"))
    want = np.zeros((1, 5, 6))
    want[:, 1:, :5] = np.asarray(x)[:, :4, 1:, 3]
    np.testing.assert_array_equal(y[..., 1], want)
    np.testing.assert_array_equal(y[..., 0], 0)
    # its input gradient puts the cotangent back where it came from
    g = np.asarray(jax.grad(lambda x: _mm(x, w, "SAME")[..., 1].sum())(x))
    want_g = np.zeros((1, 5, 6, 16))
    want_g[:, :4, 1:, 3] = 1.0
    np.testing.assert_array_equal(g, want_g)


@pytest.mark.slow
def test_bfloat16_accumulates_in_float32():
    ks = jax.random.split(jax.random.key(2), 2)
    x = jax.random.normal(ks[0], (2, 8, 8, 64)).astype(jnp.bfloat16)
    w = (jax.random.normal(ks[1], (3, 3, 64, 32)) * 0.1).astype(jnp.bfloat16)
    y = _mm(x, w, "SAME")
    assert y.dtype == jnp.bfloat16
    # exact products of the bf16 operands, summed in float64
    ref = _xla(x.astype(jnp.float32), w.astype(jnp.float32), "SAME",
               precision=jax.lax.Precision.HIGHEST)
    err = np.abs(np.asarray(y, np.float32) - np.asarray(ref))
    # only the final rounding to bf16 (8 bits): |err| <= 2^-8 |y| (+ tiny)
    assert (err <= 2.0 ** -8 * np.abs(np.asarray(ref)) + 1e-3).all()
    g = jax.jit(jax.grad(lambda x: _mm(x, w, "SAME").astype(jnp.float32).sum()))(x)
    assert g.dtype == jnp.bfloat16
    g_ref = jax.jit(jax.grad(lambda x: _xla(x, w.astype(jnp.float32), "SAME",
                                    precision="highest").sum()))(x.astype(jnp.float32))
    np.testing.assert_allclose(np.asarray(g, np.float32), g_ref, rtol=2 ** -7,
                               atol=1e-3)


@pytest.mark.parametrize("kw", [
    dict(strides=(2, 2)),
    dict(rhs_dilation=(2, 2)),
    dict(feature_group_count=2),
], ids=["stride", "dilation", "groups"])
def test_other_configurations_are_xla_bitwise(kw):
    x = jax.random.normal(jax.random.key(3), (1, 9, 9, 16))
    w = jax.random.normal(jax.random.key(4), (3, 3, 16 // kw.get(
        "feature_group_count", 1), 8))
    np.testing.assert_array_equal(_mm(x, w, "SAME", **kw), _xla(x, w, "SAME", **kw))


@pytest.mark.slow
def test_thin_contraction_goes_to_xla_bitwise():
    # kw * c_in = 9 < MIN_CONTRACTION (the RGB first layer)
    x = jax.random.normal(jax.random.key(5), (1, 8, 8, 3))
    w = jax.random.normal(jax.random.key(6), (3, 3, 3, 8))
    assert 3 * 3 < matmul.MIN_CONTRACTION
    np.testing.assert_array_equal(_mm(x, w, "SAME"), _xla(x, w, "SAME"))


def test_conv_auto_resolves_to_matmul_for_bf16_gradients_on_a_bf16_cpu():
    cpu = jax.default_backend() == "cpu"
    from jaxconvviz.backend.cpu import cpu_has_bf16

    def conv(dtype, library_gradients=True, **fields):
        return resolve(Backend(**fields), dtype=dtype,
                       library_gradients=library_gradients).conv

    # matmul only where the CPU has bf16 dot instructions, in the library's
    # own (reverse-mode) gradient programs
    assert conv(jnp.bfloat16) == ("matmul" if cpu and cpu_has_bf16() else "xla")
    assert conv(jnp.bfloat16, library_gradients=False) == "xla"
    assert conv(jnp.float32) == "xla"
    assert conv(jnp.float32, conv="matmul") == "matmul"
    with pytest.raises(ValueError, match=r"Backend.conv must be one of 'auto', "
                       r"'xla', 'matmul'; got 'fast'"):
        Backend(conv="fast")


def _wide_net():
    """A small VGG-like net wide enough (16-32 channels) for the matmul path."""
    return ConvNet(layers=(
        Layer.make("c1", "conv", features=16, kernel_size=3, activation="relu"),
        Layer.make("c2", "conv", features=16, kernel_size=3, activation="relu"),
        Layer.make("p1", "maxpool", pool_size=2),
        Layer.make("c3", "conv", features=32, kernel_size=3, activation="relu"),
        Layer.make("c4", "conv", features=32, kernel_size=(1, 3), padding="valid",
                   activation="relu"),
    ), input_shape=(None, None, 3), preprocessing="none")


@pytest.mark.slow
def test_convnet_matmul_forward_and_gradient_equal_xla():
    model = _wide_net()
    params = model.init_params(jax.random.key(7), hw=(16, 16))
    x = jax.random.uniform(jax.random.key(8), (2, 16, 16, 3)) * 20 + 128
    mm = model.with_backend(conv="matmul")
    assert mm.backend.conv == "matmul" and model.backend.conv == "auto"
    a0, a1 = (jax.jit(m.forward)(params, x) for m in (model, mm))
    np.testing.assert_allclose(a1, a0, rtol=0, atol=1e-5 * float(jnp.abs(a0).max()))

    def g(m):
        return jax.jit(jax.grad(
            lambda x: m.forward(params, x, stop="c4")[..., 3].mean()))(x)

    g0, g1 = g(model), g(mm)
    np.testing.assert_allclose(g1, g0, rtol=0, atol=1e-5 * float(jnp.abs(g0).max()))


def _patterns(params, layer, filters, *, conv, dtype="float32", batch_size=None,
              pre_activation=True, atlas=False, **kw):
    """filter_patterns (or, with ``atlas``, filter_atlas) with ``Backend.conv``
    set for the call and ``Run(dtype=, batch_size=)``."""
    style = jcv.Book(pre_activation=pre_activation)
    run = jcv.Run(dtype=dtype, batch_size=batch_size)
    with jcv.backend(conv=conv):
        if atlas:
            return jcv.filter_atlas(params, layers=layer, filters_per_layer=filters,
                                    style=style, run=run, **kw)
        return jcv.filter_patterns(params, layer, filters, style=style, run=run, **kw)


@pytest.mark.slow
def test_filter_patterns_conv_impl_single_step_and_activation():
    model = _wide_net()
    params = model.init_params(jax.random.key(9), hw=(16, 16))
    key = jax.random.key(0)
    kw = dict(key=key, size=16, model=model, steps=1, pre_activation=False)
    x0 = _patterns(params, "c4", range(6), conv="xla", **kw)
    x1 = _patterns(params, "c4", range(6), conv="matmul", **kw)
    # one normalised step of size 1 from the same start: pixels agree closely
    np.testing.assert_allclose(x1, x0, rtol=0, atol=1e-4)
    # bf16 with the matmul path reaches (nearly) the activation of float32
    kw["steps"] = 10
    a32 = jcv.filter_activation(params, _patterns(
        params, "c4", range(6), conv="xla", **kw), "c4", range(6), model=model)
    p16 = _patterns(params, "c4", range(6), conv="matmul", dtype="bfloat16", **kw)
    a16 = jcv.filter_activation(params, p16, "c4", range(6), model=model)
    assert p16.dtype == jnp.float32
    rel = np.abs(np.asarray(a16) - np.asarray(a32)) / np.asarray(a32)
    assert (np.asarray(a32) > 1.0).all()  # every filter live, so rel is defined
    assert np.median(rel) < 0.03 and rel.max() < 0.15, rel


def test_bad_conv_impl_is_a_value_error_before_compute():
    with pytest.raises(ValueError, match="Backend.conv must be one of"):
        jcv.Backend(conv="cudnn")
    with pytest.raises(ValueError, match="Backend.conv must be one of"):
        with jcv.backend(conv="cudnn"):
            pass


@pytest.mark.hed
@pytest.mark.slow
def test_vgg16_one_step_and_bf16_ascent_match_xla(hed_params):
    """Real VGG16 weights: one float32 step through the matmul convs equals
    the XLA-conv step (which the Keras oracle checks in test_filters), and a
    bf16 ascent through them reaches the activation of the XLA bf16 one."""
    kw = dict(key=jax.random.key(0), size=40)
    x0 = _patterns(hed_params, "block3_conv1", range(4), steps=1, conv="xla", **kw)
    x1 = _patterns(hed_params, "block3_conv1", range(4), steps=1, conv="matmul",
                   **kw)
    np.testing.assert_allclose(x1, x0, rtol=0, atol=2e-4)
    acts = {}
    for impl in ("xla", "matmul"):
        p = _patterns(hed_params, "block3_conv1", range(8), steps=8,
                      dtype="bfloat16", conv=impl, **kw)
        acts[impl] = np.asarray(jcv.filter_activation(hed_params, p, "block3_conv1",
                                                      range(8)))
    live = acts["xla"] > 1.0
    assert live.sum() >= 4
    rel = np.abs(acts["matmul"] - acts["xla"])[live] / acts["xla"][live]
    assert np.median(rel) < 0.03, rel


@pytest.mark.slow
def test_cli_atlas_conv_impl(tmp_path, monkeypatch):
    from jaxconvviz.cli import main
    from jaxconvviz.commands import atlas as cmd

    from .conftest import decode_png

    model = _wide_net()
    params = model.init_params(jax.random.key(3), hw=(16, 16))
    monkeypatch.setattr(cmd, "load_model_and_params",
                        lambda args, include_top: (model, params, "wide net"))
    argv = ["atlas", "--layer", "c4", "--filters", "0:4", "--size", "16",
            "--steps", "2", "--cols", "2", "--dtype", "bfloat16",
            "--conv-impl", "matmul", "--out", str(tmp_path)]
    assert main(argv) == 0
    pats = _patterns(params, "c4", range(4), key=jax.random.key(0), size=16,
                     steps=2, model=model, dtype="bfloat16", conv="matmul")
    np.testing.assert_array_equal(decode_png(tmp_path / "atlas_c4.png"),
                                  jcv.atlas_grid(pats, n_cols=2))
    with pytest.raises(SystemExit) as e:
        main(argv[:-4] + ["--conv-impl", "cudnn"])
    assert e.value.code == 2


@pytest.mark.slow
def test_filter_atlas_bf16_matmul_equals_filter_patterns():
    """The atlas engine (chunks, sharding) runs the matmul path exactly as
    filter_patterns does: the same pixels for every layer."""
    model = _wide_net()
    params = model.init_params(jax.random.key(11), hw=(16, 16))
    kw = dict(key=jax.random.key(2), size=16, steps=3, model=model,
              dtype="bfloat16", conv="matmul", batch_size=5)
    atlas = _patterns(params, ["c2", "c4"], 5, atlas=True, **kw)
    for layer in ("c2", "c4"):
        pats = _patterns(params, layer, range(5), **kw)
        np.testing.assert_array_equal(atlas[layer], np.asarray(pats))


DW_CASES = [  # (h, w, c, m, kh, kw, strides, padding, dilation)
    (9, 7, 5, 1, 3, 3, (1, 1), "SAME", (1, 1)),
    (9, 8, 4, 1, 3, 3, (2, 2), "SAME", (1, 1)),  # MobileNet's stride-2 blocks
    (10, 9, 3, 2, 5, 3, (2, 1), "valid", (1, 1)),  # depth multiplier 2
    (11, 11, 4, 1, 3, 3, (1, 1), "SAME", (2, 2)),  # dilated
    (8, 8, 6, 1, 7, 7, (1, 1), "SAME", (1, 1)),  # ConvNeXt's 7x7
]


@pytest.mark.parametrize("gather", [False, True], ids=["jax_vjp", "gather_vjp"])
@pytest.mark.parametrize("case", DW_CASES,
                         ids=lambda c: f"{c[4]}x{c[5]}-s{c[6][0]}-m{c[3]}")
def test_depthwise_sum_of_slices_equals_grouped_conv(case, gather):
    # Keras' depthwise conv (output channel c * m + j) as the jax backend
    # computes it: one group per input channel; values, input gradient
    # (what every technique differentiates; JAX's transpose, or the gather
    # form by a custom VJP) and kernel gradient.
    h, w, c, m, kh, kw, strides, pad, dil = case
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, h, w, c)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(kh, kw, c, m)), jnp.float32)

    def grouped(x, k):
        return _xla(x, k.reshape(kh, kw, 1, c * m), pad.upper(), strides,
                    rhs_dilation=dil, feature_group_count=c)

    def ours(x, k):
        return depthwise.depthwise_conv2d(x, k, strides, pad, dil, gather_vjp=gather)

    want, got = jax.jit(grouped)(x, k), jax.jit(ours)(x, k)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    g = jnp.asarray(rng.normal(size=want.shape), jnp.float32)
    gw = jax.jit(jax.grad(lambda x: jnp.vdot(grouped(x, k), g)))(x)
    go = jax.jit(jax.grad(lambda x: jnp.vdot(ours(x, k), g)))(x)
    np.testing.assert_allclose(go, gw, rtol=1e-4, atol=1e-4)
    # the kernel gradient too (the gather VJP writes it out by hand)
    kw_ = jax.jit(jax.grad(lambda k: jnp.vdot(grouped(x, k), g)))(k)
    ko = jax.jit(jax.grad(lambda k: jnp.vdot(ours(x, k), g)))(k)
    np.testing.assert_allclose(ko, kw_, rtol=1e-4, atol=1e-4)
    # by hand: one output pixel of the first channel of a stride-1 SAME case
    if strides == (1, 1) and pad == "SAME" and dil == (1, 1) and m == 1:
        y, xx = h // 2, w // 2
        patch = x[0, y - kh // 2:y + kh // 2 + 1, xx - kw // 2:xx + kw // 2 + 1, 0]
        np.testing.assert_allclose(got[0, y, xx, 0], jnp.sum(patch * k[:, :, 0, 0]),
                                   rtol=1e-5)


def test_depthwise_rejects_bad_padding_and_channels():
    x = jnp.zeros((1, 4, 4, 3))
    with pytest.raises(ValueError,
                       match="padding must be 'SAME' or 'VALID'; got 'full'"):
        depthwise.depthwise_conv2d(x, jnp.zeros((3, 3, 3, 1)), padding="full")
    with pytest.raises(ValueError, match="kernel must have 3 input channels"):
        depthwise.depthwise_conv2d(x, jnp.zeros((3, 3, 4, 1)))


@pytest.mark.parametrize("field,cpu,other,explicit,bad", [
    ("depthwise", "slices", "grouped", "grouped", "'auto', 'slices', 'grouped'"),
    ("pointwise", "dot", "conv", "dot", "'auto', 'dot', 'conv'"),
    ("conv3x3", "conv", "conv", "winograd",
     "'auto', 'conv', 'winograd', 'by_shape'"),
])
def test_fields_resolve_per_platform_and_reject_unknown(field, cpu, other,
                                                        explicit, bad):
    def get(**kw):
        return getattr(resolve(Backend(**kw)), field)

    assert get() == (cpu if jax.default_backend() == "cpu" else other)
    assert get(platform="cpu") == cpu and get(platform="gpu") == other
    assert get(**{field: explicit}) == explicit
    assert get(**{field: explicit, "platform": "tpu"}) == explicit
    with pytest.raises(ValueError, match=f"Backend.{field} must be one of {bad}; "
                       "got 'fast'"):
        Backend(**{field: "fast"})


# ------------------------------------------------------------ 1x1 as products
def _prims(fn, *args) -> list[str]:
    return [e.primitive.name for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns]


@pytest.mark.parametrize("shape,strides,padding", [
    ((2, 9, 7, 16), (1, 1), "SAME"),
    ((2, 9, 7, 16), (2, 2), "SAME"),   # odd sizes: ceil(9/2) x ceil(7/2)
    ((1, 8, 6, 8), (2, 1), "VALID"),
    ((1, 8, 6, 8), (1, 1), ((0, 0), (0, 0))),
])
def test_pointwise_conv_equals_xla_and_its_input_gradient(shape, strides, padding):
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(1, 1, shape[-1], 5)), jnp.float32)
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, DN)

    def ours(x):
        return matmul.pointwise_conv(x, w, strides, padding, dimension_numbers=dn)

    want = _xla(x, w, padding, strides)
    got = ours(x)
    assert "dot_general" in _prims(ours, x)
    assert "conv_general_dilated" not in _prims(ours, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # by hand: output (i, j) is input (i * s, j * s) times the kernel matrix
    np.testing.assert_allclose(got[0, 1, 1], x[0, strides[0], strides[1]] @ w[0, 0],
                               rtol=1e-5)
    g = jnp.asarray(rng.normal(size=want.shape), jnp.float32)
    gx = jax.grad(lambda x: jnp.vdot(_xla(x, w, padding, strides), g))(x)
    go = jax.grad(lambda x: jnp.vdot(ours(x), g))(x)
    np.testing.assert_allclose(go, gx, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kh,groups,padding,lhs_dil", [
    (3, 1, "SAME", None),               # not 1x1
    (1, 2, "SAME", None),               # grouped
    (1, 1, ((1, 1), (0, 0)), None),     # padded
    (1, 1, ((0, 0), (0, 0)), (2, 2)),   # input dilation
])
def test_pointwise_conv_falls_back_to_the_convolution(kh, groups, padding, lhs_dil):
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.normal(size=(1, 6, 6, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kh, kh, 4 // groups, 4)), jnp.float32)
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, DN)
    kw = dict(dimension_numbers=dn, feature_group_count=groups, lhs_dilation=lhs_dil)

    def ours(x):
        return matmul.pointwise_conv(x, w, (1, 1), padding, **kw)

    assert "conv_general_dilated" in _prims(ours, x)
    np.testing.assert_array_equal(
        ours(x), jax.lax.conv_general_dilated(x, w, (1, 1), padding, **kw))


def test_pointwise_impl_in_a_convnet():
    layers = (Layer("c3", "conv", (("features", 6), ("kernel_size", 3))),
              Layer("c1", "conv", (("features", 4), ("kernel_size", 1),
                                   ("strides", 2))))
    dot = ConvNet(layers, input_shape=(8, 8, 3), preprocessing="none",
                  backend=Backend(pointwise="dot"))
    conv = dot.with_backend(pointwise="conv")
    p = dot.init_params(jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(7).normal(size=(2, 8, 8, 3)), jnp.float32)
    assert _prims(lambda x: dot.forward(p, x), x).count("conv_general_dilated") == 1
    assert _prims(lambda x: conv.forward(p, x), x).count("conv_general_dilated") == 2
    np.testing.assert_allclose(dot.forward(p, x), conv.forward(p, x),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="Backend.pointwise must be one of"):
        dot.with_backend(pointwise="fast")


# ------------------------------------------------------------ 3x3 Winograd
def _winograd(x, w, padding, **kw):
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, DN)
    return winograd.winograd_conv(x, w, (1, 1), padding, dimension_numbers=dn,
                               by_shape=False, **kw)


@pytest.mark.parametrize("stacked", [0, 10**9], ids=["16-products", "batched"])
@pytest.mark.parametrize("shape,padding", [
    ((2, 7, 9, 5), "SAME"),             # odd sizes: a last half tile
    ((1, 6, 6, 3), "VALID"),
    ((2, 5, 8, 4), ((2, 0), (1, 2))),   # asymmetric explicit pads
    ((1, 3, 3, 2), ((0, 0), (0, 0))),   # one output pixel
])
def test_winograd_conv_equals_xla_and_both_gradients(shape, padding, stacked):
    """Both forms of the products (16 separate ones; one batched, which
    ``stacked_max_tiles`` picks below its tile count), values and both
    gradients (the input gradient is Winograd of the same form)."""
    rng = np.random.default_rng(8)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, shape[-1], 3)), jnp.float32)
    want = _xla(x, w, padding)
    got = jax.jit(lambda x, w: _winograd(x, w, padding,  # not op by op
                                         stacked_max_tiles=stacked))(x, w)
    text = str(jax.make_jaxpr(lambda x: _winograd(x, w, padding,
                                                  stacked_max_tiles=stacked))(x))
    # G g G^T is one product; then 16 separate ones or one batched
    assert "conv_general_dilated" not in text
    assert text.count("dot_general") == (2 if stacked else 17)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # by hand: output (1, 1) is the 3x3 window of the padded input there
    pads = ((1, 1), (1, 1)) if padding == "SAME" else (
        ((0, 0), (0, 0)) if padding == "VALID" else padding)
    xp = np.pad(np.asarray(x), ((0, 0), *pads, (0, 0)))
    if got.shape[1] > 1 and got.shape[2] > 1:
        hand = np.einsum("ijc,ijck->k", xp[0, 1:4, 1:4], np.asarray(w))
        np.testing.assert_allclose(got[0, 1, 1], hand, rtol=1e-5, atol=1e-5)
    g = jnp.asarray(rng.normal(size=want.shape), jnp.float32)
    gx, gw = jax.grad(lambda x, w: jnp.vdot(_xla(x, w, padding), g), (0, 1))(x, w)
    ox, ow = jax.jit(jax.grad(lambda x, w: jnp.vdot(
        _winograd(x, w, padding, stacked_max_tiles=stacked), g), (0, 1)))(x, w)
    np.testing.assert_allclose(ox, gx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ow, gw, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kh,stride,groups,padding,rhs_dil,dtype", [
    (5, 1, 1, "SAME", None, jnp.float32),      # not 3x3
    (3, 2, 1, "SAME", None, jnp.float32),      # strided
    (3, 1, 2, "SAME", None, jnp.float32),      # grouped
    (3, 1, 1, "SAME", (2, 2), jnp.float32),    # dilated kernel
    (3, 1, 1, ((3, 0), (0, 0)), None, jnp.float32),  # pad beyond 2
    (3, 1, 1, "SAME", None, jnp.bfloat16),     # not float32
])
def test_winograd_conv_falls_back_to_the_convolution(kh, stride, groups, padding,
                                                     rhs_dil, dtype):
    rng = np.random.default_rng(9)
    x = jnp.asarray(rng.normal(size=(1, 8, 8, 4)), dtype)
    w = jnp.asarray(rng.normal(size=(kh, kh, 4 // groups, 4)), dtype)
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, DN)
    kw = dict(dimension_numbers=dn, feature_group_count=groups, rhs_dilation=rhs_dil)

    def ours(x):
        return winograd.winograd_conv(x, w, (stride, stride), padding, by_shape=False,
                                   **kw)

    assert "conv_general_dilated" in _prims(ours, x)
    np.testing.assert_array_equal(
        ours(x), jax.lax.conv_general_dilated(x, w, (stride, stride), padding, **kw))


def test_winograd_pays_only_for_big_products_that_fit_the_cache():
    assert winograd.winograd_pays(4, 28, 28, 512, 512)       # VGG16 block4, 4 images
    assert winograd.winograd_pays(4, 56, 56, 128, 256)       # block3_conv1
    assert not winograd.winograd_pays(1, 14, 14, 512, 512)   # 49 tiles: thin products
    assert not winograd.winograd_pays(4, 56, 56, 64, 64)     # 64 channels
    assert not winograd.winograd_pays(4, 112, 112, 128, 128)  # 25.7 MB input
    assert not winograd.winograd_pays(16, 56, 56, 128, 256)   # ... with 128 channels
    assert winograd.winograd_pays(16, 28, 28, 512, 512)       # fine with 512
    # by_shape: a small layer stays a convolution, a big one does not
    x, w = jnp.zeros((1, 8, 8, 4)), jnp.zeros((3, 3, 4, 4))
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, DN)
    assert "conv_general_dilated" in _prims(
        lambda x: winograd.winograd_conv(x, w, (1, 1), "SAME", dimension_numbers=dn), x)
    xb, wb = jnp.zeros((1, 32, 32, 128)), jnp.zeros((3, 3, 128, 128))
    assert winograd.winograd_pays(1, 32, 32, 128, 128)
    assert "conv_general_dilated" not in str(jax.make_jaxpr(
        lambda x: winograd.winograd_conv(x, wb, (1, 1), "SAME",
                                         dimension_numbers=dn))(xb))


def test_conv3x3_impl_in_a_convnet():
    layers = (Layer("c1", "conv", (("features", 6), ("kernel_size", 3))),
              Layer("c2", "conv", (("features", 4), ("kernel_size", 3))),
              Layer("c3", "conv", (("features", 4), ("kernel_size", 3),
                                   ("strides", 2))))
    wino = ConvNet(layers, input_shape=(9, 9, 3), preprocessing="none",
                   backend=Backend(conv3x3="winograd"))
    conv = wino.with_backend(conv3x3="conv")
    auto = wino.with_backend(conv3x3="by_shape")
    p = wino.init_params(jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(10).normal(size=(2, 9, 9, 3)), jnp.float32)
    # the strided layer stays a convolution; the tiny layers are not worth it
    assert _prims(lambda x: wino.forward(p, x), x).count("conv_general_dilated") == 1
    assert _prims(lambda x: conv.forward(p, x), x).count("conv_general_dilated") == 3
    assert _prims(lambda x: auto.forward(p, x), x).count("conv_general_dilated") == 3
    # compiled: op by op, each of a Winograd layer's ~100 operations would
    # be compiled on its own
    np.testing.assert_allclose(jax.jit(wino.forward)(p, x),
                               jax.jit(conv.forward)(p, x), rtol=1e-5, atol=1e-5)
    # an ascent-style input gradient through the Winograd layers
    gw = jax.jit(jax.grad(lambda x: wino.forward(p, x, stop="c2")[..., 1].mean()))(x)
    gc = jax.jit(jax.grad(lambda x: conv.forward(p, x, stop="c2")[..., 1].mean()))(x)
    np.testing.assert_allclose(gw, gc, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="Backend.conv3x3 must be one of"):
        wino.with_backend(conv3x3="fast")


# ------------------------------------------------- the custom input gradients
HWIO_CASES = [  # (kh, kw, padding)
    (3, 3, "SAME"), (3, 3, "VALID"), (5, 3, ((2, 1), (0, 2))), (7, 7, "SAME"),
    (2, 2, "SAME"),
]


@pytest.mark.parametrize("case", HWIO_CASES, ids=lambda c: f"{c[0]}x{c[1]}-{c[2]}")
def test_hwio_vjp_equals_jax_transpose(case):
    """Values, input gradient and kernel gradient of hwio_vjp_conv equal
    lax.conv_general_dilated's (JAX's own transpose rule), jitted and inside
    a fori_loop (where the rule matters)."""
    kh, kw, pad = case
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 9, 8, 5)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kh, kw, 5, 6)), jnp.float32)

    def ours(x, w):
        return matmul.hwio_vjp_conv(x, w, (1, 1), pad, dimension_numbers=DN)

    y, yr = jax.jit(ours)(x, w), jax.jit(lambda x, w: _xla(x, w, pad))(x, w)
    np.testing.assert_allclose(y, yr, rtol=1e-5, atol=1e-5)
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    a = jax.jit(jax.vjp(ours, x, w)[1])(g)
    b = jax.jit(jax.vjp(lambda x, w: _xla(x, w, pad), x, w)[1])(g)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-4, atol=1e-4)

    def looped(conv):
        def body(i, acc):
            xi = x * (1.0 + i)
            return acc + jax.grad(lambda z: jnp.vdot(conv(z, w), g))(xi)
        return jax.jit(lambda: jax.lax.fori_loop(0, 2, body, jnp.zeros_like(x)))()

    np.testing.assert_allclose(looped(ours), looped(lambda x, w: _xla(x, w, pad)),
                               rtol=1e-4, atol=1e-4)


def test_hwio_vjp_falls_back_and_is_chosen_for_loops():
    """Strided, 1x1 and grouped convolutions go to the fallback unchanged;
    bind(library_gradients=True) picks "custom" on XLA:CPU only for
    conv_vjp="auto"; a bad conv_vjp is a ValueError naming it; the default
    model keeps
    forward mode (jax.jvp) for the user's own programs, depthwise layers
    included."""
    calls = []

    def spy(*a, **k):
        calls.append(a[2])
        return jax.lax.conv_general_dilated(*a, **k)

    x = jnp.ones((1, 6, 6, 4))
    for w, strides, groups in ((jnp.ones((3, 3, 4, 2)), (2, 2), 1),
                               (jnp.ones((1, 1, 4, 2)), (1, 1), 1),
                               (jnp.ones((3, 3, 2, 2)), (1, 1), 2)):
        matmul.hwio_vjp_conv(x, w, strides, "SAME", dimension_numbers=DN,
                            feature_group_count=groups, fallback=spy)
    assert calls == [(2, 2), (1, 1), (1, 1)]
    m = jcv.tiny_vgg16()
    assert m.backend.conv_vjp == "auto"
    assert bind(m, library_gradients=True).backend.conv_vjp == (
        "custom" if jax.default_backend() == "cpu" else "jax")
    assert bind(m, library_gradients=False).backend.conv_vjp == "jax"
    for vjp in ("jax", "custom"):
        kept = bind(m.with_backend(conv_vjp=vjp), library_gradients=True)
        assert kept.backend.conv_vjp == vjp
        assert bind(kept, library_gradients=True) is kept
    dw = ConvNet(layers=(
        Layer.make("c", "conv", features=3, kernel_size=3, padding="same"),
        Layer.make("d", "depthwise_conv", kernel_size=3, padding="same",
                   activation="relu6")), preprocessing="none")
    p = dw.init_params(jax.random.key(0), hw=(6, 6))
    xs = jnp.ones((1, 6, 6, 3))
    _, tangent = jax.jvp(lambda z: dw.forward(p, z), (xs,), (xs,))
    assert np.isfinite(np.asarray(tangent)).all()
    with pytest.raises(ValueError, match=r"Backend.conv_vjp must be one of "
                       r"'auto', 'jax', 'custom'; got 'fast'"):
        m.with_backend(conv_vjp="fast")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA:CPU layout")
def test_integrated_gradients_loop_has_no_transposed_kernel_convolution():
    """The IG program's lax.scan body convolves with HWIO kernels only (no
    01oi-labelled convolution, XLA:CPU's slow path inside loops), and its
    maps equal those of a model that keeps JAX's rule."""
    from jaxconvviz.attribution.gradients import attribution_batch

    m = jcv.tiny_vgg16()
    params = m.init_params(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (1, 32, 32, 3)) * 255
    kw = dict(method="integrated_gradients", base="saliency", use_top1=True,
              steps=3, samples=1, layer=None)
    args = (params, x, jnp.zeros((1,), jnp.int32), jnp.zeros_like(x),
            jax.random.key(0), 0.0)
    counts = [attribution_batch.lower(*args, model=model, **kw).compile(
    ).as_text().count("_01oi->") for model in (
        bind(m, library_gradients=True), m.with_backend(conv_vjp="jax"))]
    assert counts[0] == 0 and counts[1] >= 9, counts  # 10 convs below block5_conv3
    ours = jcv.attribution(params, x, method="integrated_gradients", steps=3, model=m)
    ref = jcv.attribution(params, x, method="integrated_gradients", steps=3,
                          model=m.with_backend(conv_vjp="jax"))
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * float(
        np.abs(ref).max()))
