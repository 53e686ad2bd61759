"""Only the target channel: ``ConvNet.channel_forward`` equals the whole
layer's channel (values and input gradients, every conv option, both batch
forms), and the ascent built on it equals the whole-layer ascent."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.backend import Backend, backend
from jaxconvviz.featureviz import _plan as pl
from jaxconvviz.models.convnet import ConvNet, Layer
from jaxconvviz.models.shapes import conv_macs


def _net(**conv):
    """conv(4) -> maxpool -> conv 'target' with the given options."""
    opts = dict(features=6, kernel_size=3, padding="same", activation="relu")
    opts.update(conv)
    return ConvNet(layers=(
        Layer.make("c1", "conv", features=4, kernel_size=3, padding="same",
                   activation="relu"),
        Layer.make("pool", "maxpool", pool_size=2),
        Layer.make("target", "conv", **opts),
    ), input_shape=(None, None, 3), preprocessing="none", name_="net")


CONVS = {
    "same": {},
    "valid_stride2": dict(padding="valid", strides=2),
    "dilated": dict(dilation=2, kernel_size=(3, 2)),
    "no_bias_tanh": dict(use_bias=False, activation="tanh"),
    "1x1": dict(kernel_size=1),
}


@pytest.mark.parametrize("n", [1, 3, 20], ids=["one", "unrolled", "grouped"])
@pytest.mark.parametrize("name", list(CONVS))
@pytest.mark.slow
def test_channel_forward_equals_the_layers_channel(name, n):
    model = _net(**CONVS[name])
    params = model.init_params(jax.random.key(0), hw=(18, 18))
    x = jax.random.normal(jax.random.key(1), (n, 18, 18, 3)) * 3
    ch = jnp.asarray(np.random.default_rng(n).integers(0, 6, n), jnp.int32)

    def whole(x):
        return jnp.take_along_axis(model.forward(params, x, stop="target"),
                                   ch[:, None, None, None], axis=-1)[..., 0]

    def only(x):
        return model.channel_forward(params, x, "target", ch)

    @jax.jit
    def both(x, ct):  # one compiled program: values and input gradients
        out = []
        for fn in (whole, only):
            y, vjp = jax.vjp(fn, x)
            out += [y, vjp(ct)[0]]
        return out

    ct = jax.random.normal(jax.random.key(2), (n,) + model.output_shape(
        "target", (18, 18))[:2])
    with jax.default_matmul_precision("float32"):
        want, g_want, got, g_got = both(x, ct)
    assert got.shape == want.shape and float(jnp.abs(want).max()) > 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g_got, g_want, rtol=1e-5, atol=1e-5)


def test_channel_forward_first_layer_by_hand():
    """The first layer: a 1x1 conv is a per-pixel dot with the kernel column."""
    model = ConvNet(layers=(Layer.make("c", "conv", features=3, kernel_size=1,
                                       activation="relu"),),
                    preprocessing="none")
    k = jnp.asarray(np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3) - 2.5)
    b = jnp.asarray([0.5, -1.0, 2.0])
    x = jnp.asarray(np.random.default_rng(0).normal(0, 1, (2, 3, 3, 2)),
                    jnp.float32)
    got = model.channel_forward({"c": {"kernel": k, "bias": b}}, x, "c",
                                jnp.asarray([2, 0]))
    for i, c in enumerate([2, 0]):
        want = np.maximum(np.einsum("hwc,c->hw", x[i], k[0, 0, :, c]) + b[c], 0)
        np.testing.assert_allclose(got[i], want, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_channel_forward_bf16_and_images_are_independent():
    model = _net().with_dtype(jnp.bfloat16)
    params = model.init_params(jax.random.key(0), hw=(16, 16))
    x = jax.random.normal(jax.random.key(1), (3, 16, 16, 3))
    ch = jnp.asarray([5, 0, 5], jnp.int32)
    got = jax.jit(model.channel_forward, static_argnums=2)(params, x, "target", ch)
    assert got.dtype == jnp.bfloat16
    want = jax.jit(model.forward, static_argnames="stop")(params, x, stop="target")
    np.testing.assert_allclose(np.float32(got[1]), np.float32(want[1, ..., 0]),
                               rtol=0.02, atol=0.02)
    # image 2 alone gives bitwise its value in the batch (one call per image)
    alone = jax.jit(model.channel_forward, static_argnums=2)(params, x[2:],
                                                             "target", ch[2:])
    np.testing.assert_array_equal(np.float32(alone[0]), np.float32(got[2]))


@pytest.mark.slow
def test_channel_forward_rejects_non_conv_layers():
    model = _net()
    params = model.init_params(jax.random.key(0), hw=(8, 8))
    with pytest.raises(ValueError, match="layer must be a conv layer .*'pool'"):
        model.channel_forward(params, jnp.zeros((1, 8, 8, 3)), "pool",
                              jnp.asarray([0]))


@pytest.fixture(scope="module")
def tiny(tiny_params_notop):
    return jcv.tiny_vgg16(include_top=False), tiny_params_notop


@pytest.mark.parametrize("layer", ["block1_conv2", "block3_conv1"])
def test_one_step_equals_the_whole_layer_step(tiny, layer):
    model, params = tiny
    init = (np.random.default_rng(0).uniform(0, 20, (4, 16, 16, 3)) + 118
            ).astype(np.float32)
    kw = dict(init=init, steps=1, size=16, model=model)
    with jax.default_matmul_precision("float32"):
        with backend(channel_only=True):
            a = jcv.filter_patterns(params, layer, [0, 1, 2, 3], **kw)
        with backend(channel_only=False):
            b = jcv.filter_patterns(params, layer, [0, 1, 2, 3], **kw)
    assert float(np.abs(np.asarray(a) - init).max()) > 0.1  # it moved
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-4)


@pytest.mark.slow
def test_ascent_reaches_the_same_activation(tiny, key):
    model, params = tiny
    kw = dict(key=key, steps=10, size=16, model=model)
    acts = []
    for c in (True, False):
        with backend(channel_only=c):
            x = jcv.filter_patterns(params, "block3_conv2", range(6), **kw)
        acts.append(np.asarray(jcv.filter_activation(params, x, "block3_conv2",
                                                     range(6), model=model)))
    np.testing.assert_allclose(acts[0], acts[1], rtol=1e-3, atol=1e-3)
    assert acts[0].max() > 0


def test_default_by_backend_and_layer_kind(tiny):
    model, _ = tiny
    here = jax.default_backend()
    assert pl.resolve_channel_only("auto", model, "block2_conv1", here) is (
        here == "cpu")
    # "auto" resolves for a named platform, whichever one runs
    assert pl.resolve_channel_only("auto", model, "block2_conv1", "cpu") is True
    assert pl.resolve_channel_only("auto", model, "block2_conv1", "gpu") is False
    assert pl.resolve_channel_only("auto", model, "block2_pool", "cpu") is False
    assert pl.resolve_channel_only(False, model, "block2_conv1", "cpu") is False
    assert pl.resolve_channel_only(True, model, "block2_conv1", "gpu") is True
    # ... and through the model's backend / the process default
    params = jcv.tiny_vgg16(include_top=False).init_params(jax.random.key(0))
    for platform, want in (("cpu", True), ("gpu", False)):
        with backend(platform=platform):
            (plan,) = jcv.atlas_plan(params, layers=["block2_conv1"], size=16,
                                     model=model)
        assert plan.channel_only is want


def test_bad_channel_only(tiny, key):
    model, params = tiny
    msg = ("Backend.channel_only=True needs a conv layer; 'block2_pool' is a "
           "maxpool layer")
    with backend(channel_only=True):
        with pytest.raises(ValueError, match=msg):
            jcv.filter_patterns(params, "block2_pool", [0], key=key, size=16,
                                model=model)
        with pytest.raises(ValueError, match=msg):
            jcv.filter_atlas(params, layers=["block2_pool"], key=key, size=16,
                             model=model)
    with pytest.raises(ValueError, match=r"channel_only must be one of 'auto', "
                       r"True, False; got 'yes'"):
        Backend(channel_only="yes")


@pytest.mark.slow
def test_macs_plan_and_atlas(tiny, key):
    vgg = jcv.VGG16(include_top=False)
    # block1_conv2 at 64 px: block1_conv1 whole (27 * 64 per pixel), then
    # one output channel of block1_conv2 (576 per pixel)
    assert conv_macs(vgg, "block1_conv2", 64, channel_only=True) == \
        64 * 64 * (27 * 64 + 576)
    assert conv_macs(vgg, "block1_pool", 64, channel_only=True) == \
        conv_macs(vgg, "block1_pool", 64)  # ends in a pool: nothing to cut
    model, params = tiny
    plans = jcv.atlas_plan(params, layers=["block1_conv2", "block1_pool"],
                           size=16, model=model)
    cpu = jax.default_backend() == "cpu"
    assert [p.channel_only for p in plans] == [cpu, False]
    with backend(channel_only=True):
        got = jcv.filter_atlas(params, layers=["block1_conv2"], size=16, steps=2,
                               key=key, model=model)
        want = jcv.filter_patterns(params, "block1_conv2", range(4), size=16,
                                   steps=2, key=key, model=model)
    np.testing.assert_allclose(got["block1_conv2"], want, rtol=0, atol=1e-5)
