"""Gradient attributions: saliency == jax.grad of the class logit, guided
backprop == the hand-derived rule on a two-ReLU net, Integrated Gradients'
completeness and its closed form on a linear net, SmoothGrad == the mean over
the key's noise, guided Grad-CAM's product, batched == one at a time."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.attribution.gradients import (
    ATTRIBUTION_METHODS,
    guided,
    guided_relu,
)
from jaxconvviz.models.convnet import ConvNet, Layer


@pytest.fixture(autouse=True)
def _full_float32():
    with jax.default_matmul_precision("float32"):
        yield


def two_relu_model(act="relu"):
    """1x1 conv(4, relu) -> 1x1 conv(3, relu) -> GAP -> dense(2)."""
    return ConvNet(layers=(
        Layer.make("c1", "conv", features=4, kernel_size=1, activation=act),
        Layer.make("c2", "conv", features=3, kernel_size=1, activation=act),
        Layer.make("gap", "gap"),
        Layer.make("d", "dense", features=2, activation="softmax"),
    ), input_shape=(5, 5, 3), preprocessing="none")


@pytest.fixture(scope="module")
def two_relu():
    rng = np.random.default_rng(3)
    params = {
        "c1": {"kernel": rng.normal(0, 1, (1, 1, 3, 4)), "bias": rng.normal(0, 20, 4)},
        "c2": {"kernel": rng.normal(0, 1, (1, 1, 4, 3)), "bias": rng.normal(0, 20, 3)},
        "d": {"kernel": rng.normal(0, 1, (3, 2)), "bias": rng.normal(0, 1, 2)},
    }
    params = {k: {n: np.asarray(a, np.float32) for n, a in v.items()}
              for k, v in params.items()}
    x = rng.uniform(0, 100, (3, 5, 5, 3)).astype(np.float32)
    return params, x


def hand_guided(params, x, k):
    """Guided backprop by hand: at each ReLU keep g where z > 0 and g > 0."""
    k1, b1 = params["c1"]["kernel"][0, 0].astype(np.float64), params["c1"]["bias"]
    k2, b2 = params["c2"]["kernel"][0, 0].astype(np.float64), params["c2"]["bias"]
    z1 = x.astype(np.float64) @ k1 + b1
    h1 = np.maximum(z1, 0)
    z2 = h1 @ k2 + b2
    hw = x.shape[1] * x.shape[2]
    g = np.broadcast_to(params["d"]["kernel"][:, k].T[:, None, None, :] / hw,
                        z2.shape)
    g = np.where((z2 > 0) & (g > 0), g, 0.0)
    g = g @ k2.T
    g = np.where((z1 > 0) & (g > 0), g, 0.0)
    return g @ k1.T


def test_guided_backprop_equals_hand_rule(two_relu):
    params, x = two_relu
    k = np.array([0, 1, 1])
    ours = np.asarray(jcv.attribution(params, x, method="guided_backprop",
                                      class_index=k, model=two_relu_model()))
    ref = hand_guided(params, x, k)
    assert np.abs(ref).max() > 0
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)
    sal = np.asarray(jcv.attribution(params, x, method="saliency", class_index=k,
                                     model=two_relu_model()))
    assert np.abs(sal - ours).max() > 1e-3  # a different rule than plain grads


def test_guided_backprop_without_relu_warns_and_is_saliency(two_relu):
    """ReLU6 is not guided (as in Captum): the user is told, and the two maps
    are equal; a ReLU model gives no warning."""
    import warnings

    params, x = two_relu
    m6 = two_relu_model("relu6")
    with pytest.warns(UserWarning, match=r"has no ReLU \(its activations: relu6, "
                      r"softmax\), so guided backprop equals saliency"):
        gb = jcv.attribution(params, x, method="smoothgrad", base="guided_backprop",
                             key=jax.random.key(0), samples=2, model=m6)
    sal = jcv.attribution(params, x, method="smoothgrad", base="saliency",
                          key=jax.random.key(0), samples=2, model=m6)
    np.testing.assert_array_equal(gb, sal)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jcv.attribution(params, x, method="guided_backprop", model=two_relu_model())


def test_guided_relu_rule_and_transform():
    x = jnp.array([-1.0, 2.0, 3.0, 0.5])
    g = jax.vjp(guided_relu, x)[1](jnp.array([5.0, -2.0, 4.0, 1.0]))[0]
    np.testing.assert_array_equal(np.asarray(g), [0.0, 0.0, 4.0, 1.0])

    def f(w, x):
        return jnp.sum(jax.nn.relu(x * w) * jnp.array([1.0, -1.0, 2.0, 1.0]))

    w = jnp.array([1.0, 1.0, -1.0, 2.0])
    assert float(guided(f)(w, x)) == float(f(w, x))  # same forward values
    gx = jax.grad(lambda x: guided(f)(w, x))(x)
    # relu inputs x*w = [-1, 2, -3, 1]; upstream [1, -1, 2, 1] -> keep idx 3
    np.testing.assert_array_equal(np.asarray(gx), [0.0, 0.0, 0.0, 2.0])
    # nothing global changed: plain jax.grad still has the ordinary rule
    np.testing.assert_array_equal(np.asarray(jax.grad(lambda x: f(w, x))(x)),
                                  [0.0, -1.0, 0.0, 2.0])


@pytest.mark.slow
def test_saliency_equals_jax_grad_of_the_logit(tiny_model, tiny_params):
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    ours = np.asarray(jcv.attribution(tiny_params, x, method="saliency",
                                      class_index=[3, 7]))

    def logit(xi, k):
        return tiny_model.logits(tiny_params, jcv.preprocess_input(xi[None]))[0, k]

    grad = jax.jit(jax.grad(logit), static_argnums=1)
    for i, k in enumerate([3, 7]):
        ref = np.asarray(grad(jnp.asarray(x[i]), k))
        np.testing.assert_allclose(ours[i], ref, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_integrated_gradients_completeness_tiny_vgg(tiny_model, tiny_params):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    base = np.full((32, 32, 3), 128.0, np.float32)
    attr = np.asarray(jcv.attribution(tiny_params, x, method="integrated_gradients",
                                      class_index=[5, 9], steps=256, baseline=base))
    lg = np.asarray(tiny_model.logits(tiny_params, jcv.preprocess_input(
        jnp.asarray(np.concatenate([x, base[None]])))))
    want = lg[[0, 1], [5, 9]] - lg[2, [5, 9]]
    got = attr.reshape(2, -1).sum(-1)
    assert np.all(np.abs(want) > 1e-3)
    np.testing.assert_allclose(got, want, rtol=0.01)


def test_integrated_gradients_closed_form_on_linear_net(two_relu):
    params, x = two_relu
    model = two_relu_model(act="linear")
    attr = np.asarray(jcv.attribution(params, x, method="integrated_gradients",
                                      class_index=1, model=model, steps=4,
                                      baseline=10.0))
    sal = np.asarray(jcv.attribution(params, x, method="saliency", class_index=1,
                                     model=model))
    np.testing.assert_allclose(attr, (x - 10.0) * sal, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_smoothgrad_is_the_mean_over_the_keys_noise(two_relu):
    params, x = two_relu
    model = two_relu_model()
    key = jax.random.key(7)
    ours = np.asarray(jcv.attribution(params, x, method="smoothgrad", key=key,
                                      samples=6, noise_level=0.1, class_index=0,
                                      model=model))
    eps = np.asarray(jax.random.normal(key, (6, 5, 5, 3)))
    sigma = 0.1 * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    ref = np.mean([np.asarray(jcv.attribution(
        params, x + sigma[:, None, None, None] * e, method="saliency",
        class_index=0, model=model)) for e in eps], axis=0)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)
    # base= any other method; no noise = the base method itself
    gb = np.asarray(jcv.attribution(params, x, method="guided_backprop",
                                    class_index=0, model=model))
    quiet = np.asarray(jcv.attribution(params, x, method="smoothgrad", key=key,
                                       base="guided_backprop", noise_level=0.0,
                                       samples=2, class_index=0, model=model))
    np.testing.assert_allclose(quiet, gb, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_guided_gradcam_is_the_product(tiny_params):
    from jaxconvviz.attribution._cam_common import resize_matrix

    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    gg = np.asarray(jcv.attribution(tiny_params, x, method="guided_gradcam",
                                    layer="block4_conv3"))
    gb = np.asarray(jcv.attribution(tiny_params, x, method="guided_backprop"))
    cam = np.asarray(jcv.cam(tiny_params, x, layer="block4_conv3"))
    r = resize_matrix(4, 32, align_corners=False)
    up = np.einsum("Hh,nhw,Ww->nHW", r, cam, r)
    np.testing.assert_allclose(gg, gb * up[..., None], rtol=1e-4, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("method", ATTRIBUTION_METHODS)
def test_batched_equals_one_at_a_time(tiny_params, method):
    x = np.random.default_rng(4).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    kw = dict(method=method, key=jax.random.key(1))
    if method == "smoothgrad":
        kw.update(samples=3)
    if method == "integrated_gradients":
        kw.update(steps=8)
    full = np.asarray(jcv.attribution(tiny_params, x, **kw))
    assert full.shape == (3, 32, 32, 3) and full.dtype == np.float32
    assert np.abs(full).max() > 0
    for i in range(3):
        one = np.asarray(jcv.attribution(tiny_params, x[i:i + 1], **kw))
        np.testing.assert_allclose(one[0], full[i], rtol=1e-4,
                                   atol=1e-5 * np.abs(full[i]).max())


def test_run_chunks_and_target_callable(tiny_params):
    """run=Run(batch_size=2) chunks the images (same values); the logit of
    class 7 as a target callable gives the class_index=7 saliency."""
    from jaxconvviz.run import Run

    x = np.random.default_rng(6).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    full = np.asarray(jcv.attribution(tiny_params, x, class_index=7))
    chunked = np.asarray(jcv.attribution(tiny_params, x, class_index=7,
                                         run=Run(batch_size=2)))
    np.testing.assert_allclose(chunked, full, rtol=1e-5,
                               atol=1e-6 * np.abs(full).max())
    by_target = np.asarray(jcv.attribution(tiny_params, x,
                                           class_index=jcv.objectives.ClassLogit(7)))
    np.testing.assert_allclose(by_target, full, rtol=1e-6,
                               atol=1e-7 * np.abs(full).max())


def test_errors(tiny_params):
    x = np.zeros((1, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match=r"method must be one of saliency, "
                                         r"guided_backprop.*got 'gradients'"):
        jcv.attribution(tiny_params, x, method="gradients")
    with pytest.raises(ValueError, match="smoothgrad needs key="):
        jcv.attribution(tiny_params, x, method="smoothgrad")
    with pytest.raises(ValueError, match=r"base must be one of .*got 'smoothgrad'"):
        jcv.attribution(tiny_params, x, method="smoothgrad", base="smoothgrad",
                        key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"takes the options steps, baseline; "
                                         r"got samples"):
        jcv.attribution(tiny_params, x, method="integrated_gradients", samples=3)
    with pytest.raises(ValueError, match="steps must be an int >= 1; got 0"):
        jcv.attribution(tiny_params, x, method="integrated_gradients", steps=0)
    with pytest.raises(ValueError, match="baseline must be None, a number"):
        jcv.attribution(tiny_params, x, method="integrated_gradients",
                        baseline=np.zeros((7, 3)))
    with pytest.raises(ValueError, match="noise_level must be a number >= 0"):
        jcv.attribution(tiny_params, x, method="smoothgrad", noise_level=-1,
                        key=jax.random.key(0))
