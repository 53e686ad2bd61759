"""VGG16 parity with the Keras oracle (keras.applications.VGG16, JAX backend).

Same weights on both sides: the real HED conv stack (ImageNet-initialised VGG16
fine-tuned for edges) plus a seeded random classifier top, written to disk in
the released ``keras.applications`` layout and loaded by both libraries.
"""

from __future__ import annotations

import json

import h5py
import jax
import numpy as np
import pytest

import jaxconvviz as jcv

from .conftest import CAT, ELEPHANT, keras_vgg16

pytestmark = [pytest.mark.keras, pytest.mark.hed, pytest.mark.slow]


def write_released_layout(path, layers: dict[str, list[np.ndarray]],
                          order: tuple[str, ...]) -> None:
    """Write ``layers`` as keras.applications' v0.1 files do (KERAS-WEIGHTS §1.3)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in order])
        for name in order:
            g = f.create_group(name)
            arrays = layers.get(name, [])
            names = [f"{name}_{s}_1:0".encode() for s in "Wb"[: len(arrays)]]
            g.attrs["weight_names"] = np.array(names) if names else np.zeros((0,))
            for n, a in zip(names, arrays, strict=True):
                g.create_dataset(n.decode(), data=a)


@pytest.fixture(scope="module")
def top_file(tmp_path_factory, hed_params):
    """HED convs + seeded He-normal top (fc1 25088x4096 ...), released layout."""
    rng = np.random.default_rng(1234)
    layers = {k: [np.asarray(v["kernel"]), np.asarray(v["bias"])]
              for k, v in hed_params.items()}
    for name, (fan_in, fan_out) in {"fc1": (25088, 4096), "fc2": (4096, 4096),
                                    "predictions": (4096, 1000)}.items():
        w = rng.standard_normal((fan_in, fan_out), dtype=np.float32)
        w *= np.float32(np.sqrt(2.0 / fan_in))
        layers[name] = [w, rng.normal(0, 0.01, fan_out).astype(np.float32)]
    path = tmp_path_factory.mktemp("w") / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    write_released_layout(path, layers, jcv.LAYER_NAMES)
    return path


@pytest.fixture(scope="module")
def photos():
    return np.stack([jcv.load_img(p, target_size=(224, 224)) for p in (CAT, ELEPHANT)])


def test_every_activation_and_logits_match_keras(keras, top_file, photos):
    from jaxconvviz.models.weights import load_vgg16

    params = load_vgg16(str(top_file), include_top=True)
    kmodel = keras.applications.VGG16(weights=None, include_top=True,
                                      classifier_activation=None)
    kmodel.load_weights(str(top_file))  # Keras' own legacy loader, by topology
    names = [layer.name for layer in kmodel.layers[1:]]
    assert tuple(names) == jcv.LAYER_NAMES
    probe = keras.Model(kmodel.inputs, [kmodel.get_layer(n).output for n in names])
    x_caffe_keras = keras.applications.vgg16.preprocess_input(photos.copy())
    with jax.default_matmul_precision("float32"):
        ref = dict(zip(names, (np.asarray(a) for a in probe([x_caffe_keras])),
                       strict=True))
        x = jcv.preprocess_input(photos)
        np.testing.assert_array_equal(np.asarray(x), x_caffe_keras)
        ours = jcv.activations(params, photos, layers=jcv.LAYER_NAMES[:-1])
        logits = jcv.VGG16().logits(params, x)
        probs = jcv.predict(params, photos)
    for name in names[:-1]:
        scale = float(np.abs(ref[name]).max()) or 1.0
        np.testing.assert_allclose(ours[name], ref[name], rtol=1e-4,
                                   atol=2e-5 * scale, err_msg=name)
    np.testing.assert_allclose(logits, ref["predictions"], rtol=1e-4,
                               atol=2e-5 * float(np.abs(ref["predictions"]).max()))
    kprobs = np.asarray(jax.nn.softmax(ref["predictions"], axis=-1))
    np.testing.assert_allclose(probs, kprobs, rtol=1e-3, atol=1e-6)

    # decode_predictions: same classes, same order, same scores as Keras'.
    from keras.src.applications import imagenet_utils

    imagenet_utils.CLASS_INDEX = json.loads(
        jcv.models.labels.CLASS_INDEX_PATH.read_text())  # no download
    kdec = keras.applications.vgg16.decode_predictions(kprobs, top=5)
    ours_dec = jcv.decode_predictions(kprobs, top=5)
    assert [[t[:2] for t in row] for row in ours_dec] == [
        [t[:2] for t in row] for row in kdec]
    np.testing.assert_array_equal([[t[2] for t in r] for r in ours_dec],
                                  [[t[2] for t in r] for r in kdec])


def test_notop_at_other_sizes_matches_keras(keras, hed_params, photos):
    """Without the top VGG16 takes any size >= 32; check a non-square one."""
    kmodel = keras_vgg16(keras, hed_params, input_shape=(96, 160, 3))
    img = np.stack([jcv.load_img(CAT, target_size=(96, 160))])
    with jax.default_matmul_precision("float32"):
        ref = np.asarray(kmodel(keras.applications.vgg16.preprocess_input(
            img.copy())))
        ours = jcv.activations(hed_params, img, layers="block5_pool")["block5_pool"]
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=2e-5 * np.abs(ref).max())
