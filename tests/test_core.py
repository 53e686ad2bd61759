"""Pre/post-processing, the layered net and its split forward, labels, predict."""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.models.convnet import ConvNet, Layer
from jaxconvviz.models.vgg import vgg_from_params

from .conftest import CAT, ELEPHANT


# ------------------------------------------------------------ preprocessing
def test_preprocess_input_hand_computed():
    x = np.array([[[[10.0, 20.0, 30.0]]]], np.float32)
    y = np.asarray(jcv.preprocess_input(x))
    np.testing.assert_allclose(y[0, 0, 0], [-73.939, -96.779, -113.68], rtol=0,
                               atol=1e-5)
    assert x[0, 0, 0, 0] == 10.0  # the caller's array is untouched


def test_preprocess_input_uint8_does_not_wrap():
    x = np.full((1, 2, 2, 3), 255, np.uint8)
    y = np.asarray(jcv.preprocess_input(x))
    np.testing.assert_allclose(y[0, 0, 0], [255 - 103.939, 255 - 116.779,
                                            255 - 123.68], atol=1e-4)


def test_caffe_roundtrip(key):
    x = jax.random.uniform(key, (2, 5, 4, 3)) * 255
    np.testing.assert_allclose(jcv.caffe_to_rgb(jcv.preprocess_input(x)), x,
                               atol=1e-4)


def test_preprocess_input_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"3 channels.*\(2, 2, 4\)"):
        jcv.preprocess_input(np.zeros((2, 2, 4)))


def test_deprocess_image_book_formula_and_constant_image():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, (6, 7, 3)).astype(np.float32)
    before = x.copy()
    y = jcv.deprocess_image(x)
    ref = (x - x.mean()) / (x.std() + 1e-5) * 0.1 + 0.5
    ref = (np.clip(ref, 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(x, before)
    flat = jcv.deprocess_image(np.full((4, 4, 3), 7.0))
    assert flat.dtype == np.uint8 and (flat == 127).all()


def test_deprocess_image_is_per_image_in_a_batch():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, (2, 5, 5, 3))
    a[1] *= 100
    both = jcv.deprocess_image(a)
    np.testing.assert_array_equal(both[1], jcv.deprocess_image(a[1]))


# ------------------------------------------------------------------ nets
def _one_conv_model(padding="same", features=2):
    return ConvNet(
        layers=(Layer.make("c", "conv", features=features, kernel_size=3,
                           padding=padding, activation="relu"),),
        input_shape=(5, 5, 1), preprocessing="none")


def test_ones_conv_closed_form():
    m = _one_conv_model()
    params = {"c": {"kernel": jnp.ones((3, 3, 1, 2)), "bias": jnp.array([0.0, -5.0])}}
    y = np.asarray(m.forward(params, jnp.ones((1, 5, 5, 1))))
    # interior: 9 ones; corners: 4; edges: 6 (zero 'same' padding). relu(x-5).
    np.testing.assert_allclose(y[0, 2, 2], [9.0, 4.0])
    np.testing.assert_allclose(y[0, 0, 0], [4.0, 0.0])
    np.testing.assert_allclose(y[0, 0, 2], [6.0, 1.0])


@pytest.mark.slow
def test_split_forward_composes(tiny_model, tiny_params, key):
    x = jax.random.normal(key, (2, 32, 32, 3)) * 50
    full = tiny_model.forward(tiny_params, x)
    for cut in ("block1_pool", "block3_conv2", "block5_pool", "fc1"):
        mid = tiny_model.forward(tiny_params, x, stop=cut)
        rest = tiny_model.forward(tiny_params, mid, start=cut)
        np.testing.assert_allclose(rest, full, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(full.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        jax.nn.softmax(tiny_model.logits(tiny_params, x)), full, rtol=1e-5,
        atol=1e-7)


@pytest.mark.slow
def test_output_shape_matches_forward(tiny_model, tiny_params):
    x = jnp.zeros((1, 32, 32, 3))
    for name in tiny_model.layer_names:
        got = tiny_model.forward(tiny_params, x, stop=name).shape[1:]
        assert tiny_model.output_shape(name, (32, 32)) == tuple(got), name
    m = jcv.VGG16(include_top=False)
    assert m.output_shape("block3_conv1", (150, 150)) == (37, 37, 256)
    assert m.min_input_size("block5_pool") == 32
    assert m.min_input_size("block1_conv1") == 1


def test_forward_bad_layer_names(tiny_model, tiny_params):
    with pytest.raises(ValueError, match="stop must be one of .*block1_conv1"):
        tiny_model.forward(tiny_params, jnp.zeros((1, 32, 32, 3)), stop="conv9")
    with pytest.raises(ValueError, match="start must come before stop"):
        tiny_model.forward(tiny_params, jnp.zeros((1, 32, 32, 3)),
                           start="block2_conv1", stop="block1_conv1")


def test_layer_names_are_keras():
    assert jcv.LAYER_NAMES[:3] == ("block1_conv1", "block1_conv2", "block1_pool")
    assert jcv.LAYER_NAMES[-4:] == ("flatten", "fc1", "fc2", "predictions")
    assert len(jcv.LAYER_NAMES) == 22 and len(jcv.CONV_LAYERS) == 13
    assert jcv.VGG16(include_top=False).layer_names == jcv.LAYER_NAMES[:18]


def test_vgg16_param_count_equals_keras():
    # keras.applications.VGG16 count_params(): 138,357,544 / 14,714,688.
    for top, n in ((True, 138_357_544), (False, 14_714_688)):
        shapes = jax.eval_shape(lambda t=top: jcv.VGG16(t).init_params(
            jax.random.key(0)))
        assert sum(np.prod(s.shape) for s in jax.tree.leaves(shapes)) == n


def test_vgg_from_params_and_check_params(tiny_model, tiny_params,
                                          tiny_params_notop):
    assert vgg_from_params(tiny_params) == tiny_model
    assert vgg_from_params(tiny_params_notop) == jcv.tiny_vgg16(include_top=False)
    bad = dict(tiny_params)
    bad["block2_conv1"] = {"kernel": jnp.zeros((3, 3, 4, 5)), "bias": jnp.zeros(5)}
    with pytest.raises(ValueError, match=r"'block2_conv1' kernel has shape "
                       r"\(3, 3, 4, 5\); expected \(3, 3, 4, 4\)"):
        tiny_model.check_params(bad, source="x.h5")
    with pytest.raises(ValueError, match="do not look like VGG16"):
        vgg_from_params({"dense": {}})


# ---------------------------------------------------------------- labels
def test_class_index_is_keras_file():
    data = (jcv.models.labels.CLASS_INDEX_PATH).read_bytes()
    assert hashlib.md5(data).hexdigest() == "c2c37ea517e94d9795004a39431a14cb"
    idx = jcv.load_class_index()
    assert idx[386] == ("n02504458", "African_elephant") and idx[281][1] == "tabby"


def test_decode_predictions_hand_made():
    p = np.zeros((2, 1000), np.float32)
    p[0, [386, 101, 385]] = [0.7, 0.2, 0.1]
    p[1, 281] = 1.0
    out = jcv.decode_predictions(p, top=3)
    assert [t[:2] for t in out[0]] == [("n02504458", "African_elephant"),
                                       ("n01871265", "tusker"),
                                       ("n02504013", "Indian_elephant")]
    np.testing.assert_allclose([t[2] for t in out[0]], [0.7, 0.2, 0.1])
    assert out[1][0][1] == "tabby" and len(out[1]) == 3
    with pytest.raises(ValueError, match=r"shape \(n, 1000\); got shape \(1000,\)"):
        jcv.decode_predictions(p[0])
    with pytest.raises(ValueError, match="top must be an integer in 1..1000; got 0"):
        jcv.decode_predictions(p, top=0)


# --------------------------------------------------------------- predict
@pytest.mark.slow
def test_predict_and_activations(tiny_params, key):
    x = jax.random.uniform(key, (3, 32, 32, 3)) * 255
    probs = jcv.predict(tiny_params, x)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    one = jcv.predict(tiny_params, x[1:2])
    np.testing.assert_allclose(one[0], probs[1], rtol=1e-5, atol=1e-8)
    acts = jcv.activations(tiny_params, x, layers=("block2_pool", "block1_conv1"))
    ref = jcv.forward(tiny_params, jcv.preprocess_input(x), stop="block2_pool")
    np.testing.assert_allclose(acts["block2_pool"], ref, rtol=1e-6)
    assert set(acts) == {"block1_conv1", "block2_pool"}


def test_activations_in_chunks_equal_one_call(tiny_params, key):
    from jaxconvviz.models.predict import _activations

    x = jax.random.uniform(key, (5, 32, 32, 3)) * 255
    whole = jcv.activations(tiny_params, x, layers="block2_conv1")
    before = _activations._cache_size()
    chunked = jcv.activations(tiny_params, x, layers="block2_conv1",
                              run=jcv.Run(batch_size=2))
    np.testing.assert_allclose(chunked["block2_conv1"], whole["block2_conv1"],
                               rtol=1e-6, atol=1e-6)
    assert _activations._cache_size() == before + 1  # 2+2+(1 padded to 2)
    with pytest.raises(ValueError, match="Run.batch_size must be None or a positive"):
        jcv.activations(tiny_params, x, layers="block2_conv1",
                        run=jcv.Run(batch_size=0))


def test_predict_errors(tiny_params, tiny_params_notop):
    with pytest.raises(ValueError, match="classifier top"):
        jcv.predict(tiny_params_notop, np.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="must be 32x32"):
        jcv.predict(tiny_params, np.zeros((1, 40, 40, 3)))
    with pytest.raises(ValueError, match=r"add a batch axis"):
        jcv.predict(tiny_params, np.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="NaN or inf"):
        jcv.predict(tiny_params, np.full((1, 32, 32, 3), np.nan))
    with pytest.raises(ValueError, match="too small for layer 'block5_pool'"):
        jcv.activations(tiny_params, np.zeros((1, 16, 16, 3)), layers="block5_pool")
    with pytest.raises(ValueError, match="layers must be one of"):
        jcv.activations(tiny_params, np.zeros((1, 32, 32, 3)), layers=["nope"])


# ----------------------------------------------------------------- images
def test_load_img_rgb_float_and_nearest_resize():
    img = jcv.load_img(CAT)
    assert img.dtype == np.float32 and img.shape == (300, 451, 3)
    small = jcv.load_img(CAT, target_size=(150, 225))
    # nearest: every output pixel is some input pixel
    assert small.shape == (150, 225, 3)
    assert set(map(tuple, small.reshape(-1, 3)[:50])) <= set(
        map(tuple, img.reshape(-1, 3)))


def test_load_img_matches_keras(keras):
    for path in (CAT, ELEPHANT):
        ref = keras.utils.img_to_array(
            keras.utils.load_img(path, target_size=(224, 224)))
        np.testing.assert_array_equal(jcv.load_img(path, target_size=(224, 224)),
                                      ref)


def test_load_img_grayscale_is_pillow_luma(tmp_path):
    from PIL import Image

    path = tmp_path / "rgb.png"
    Image.fromarray(np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]],
                             np.uint8)).save(path)
    grey = jcv.load_img(path, color_mode="grayscale")
    # ITU-R 601 luma, as Pillow's "L" and Keras' color_mode="grayscale"
    np.testing.assert_array_equal(grey[..., 0], [[76, 150, 29]])
    assert grey.shape == (1, 3, 1)


def test_load_img_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        jcv.load_img(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        jcv.load_img(bad)
    with pytest.raises(ValueError, match=r"target_size must be \(h, w\)"):
        jcv.load_img(CAT, target_size=(0, 5))
    with pytest.raises(ValueError, match="interpolation must be one of"):
        jcv.load_img(CAT, interpolation="cubic-ish")
    with pytest.raises(ValueError, match="color_mode must be one of"):
        jcv.load_img(CAT, color_mode="cmyk")


def test_misspelt_layer_suggests_the_nearest(tiny_model):
    with pytest.raises(ValueError, match=r"got 'block3_conv9'; did you mean "
                       r"'block3_conv\d'\?"):
        tiny_model.check_layer("block3_conv9", tiny_model.conv_layers)
    many = tuple(f"layer_{i}" for i in range(100))
    with pytest.raises(ValueError, match=r"layer_59, \.\.\. \(100 in all\); got "
                       r"'layer_7x'; did you mean 'layer_7'\?"):
        tiny_model.check_layer("layer_7x", many)
