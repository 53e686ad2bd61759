"""Bring-your-own Keras CNN: load_keras_model / save_keras_model vs the Keras oracle.

Keras 3 (JAX backend) builds and saves each architecture in both formats
(``.h5`` legacy full model, ``.keras`` archive) with random weights; the
imported ConvNet must reproduce the output of EVERY Keras layer at float32
tolerance, and the split forward must agree layer by layer. Then every
technique runs on an imported model, and exported files load back in both
jaxconvviz and real Keras.
"""

from __future__ import annotations

import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.attribution.gradcam import grad_cam_with_scores
from jaxconvviz.models.convnet import ConvNet, Layer
from jaxconvviz.models.keras_export import keras_config, save_keras_model
from jaxconvviz.models.keras_import import (
    convnet_from_keras_config,
    keras3_group_names,
    load_keras_model,
)

RTOL = ATOL = 1e-5
FORMATS = ("h5", "keras")
# Weights are overwritten by _randomize; zero initialisers keep Keras from
# compiling a random initialiser per weight shape (seconds on a small CPU).
Z = {"kernel_initializer": "zeros"}


# ---------------------------------------------------------------- builders
def _randomize(model, seed: int) -> None:
    """Non-trivial random weights (BN: positive variances, scales ~1)."""
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        shape, path = tuple(w.shape), w.path
        if path.endswith("moving_variance"):
            v = rng.uniform(0.3, 2.0, shape)
        elif path.endswith("gamma"):
            v = rng.uniform(0.5, 1.5, shape)
        elif path.endswith(("beta", "moving_mean", "bias")):
            v = rng.normal(0.0, 0.3, shape)
        else:  # kernels: He-scaled so activations stay O(1) through the chain
            fan_in = int(np.prod(shape[:-1]))
            v = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        values.append(v.astype(np.float32))
    model.set_weights(values)


def cats_dogs(keras, size: int = 64):
    """DLwP 5.2 cats-vs-dogs convnet (150x150 in the book; smaller here)."""
    L = keras.layers
    return keras.Sequential([
        keras.Input((size, size, 3)),
        L.Conv2D(32, (3, 3), activation="relu", **Z),
        L.MaxPooling2D((2, 2)),
        L.Conv2D(64, (3, 3), activation="relu", **Z),
        L.MaxPooling2D((2, 2)),
        L.Conv2D(128, (3, 3), activation="relu", **Z),
        L.MaxPooling2D((2, 2)),
        L.Conv2D(128, (3, 3), activation="relu", **Z),
        L.MaxPooling2D((2, 2)),
        L.Flatten(),
        L.Dropout(0.5),
        L.Dense(512, activation="relu", **Z),
        L.Dense(1, activation="sigmoid", **Z),
    ], name="cats_dogs")


def fashion(keras):
    """The Fashion-MNIST CNN of the chap 8-3 note (hg-mldl 8-2)."""
    L = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(32, kernel_size=3, activation="relu", padding="same", **Z),
        L.MaxPooling2D(2),
        L.Conv2D(64, kernel_size=(3, 3), activation="relu", padding="same",
                 **Z),
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(100, activation="relu", **Z),
        L.Dropout(0.4),
        L.Dense(10, activation="softmax", **Z),
    ], name="fashion")


def bn_strides(keras):
    """Rescaling (per channel), strided valid conv without bias, BN, ReLU
    layers, dilation, Activation, same-padded average pooling, GMP."""
    L = keras.layers
    return keras.Sequential([
        keras.Input((21, 19, 3)),
        L.Rescaling([1 / 127.5, 1 / 100.0, 1 / 60.0], offset=[-1.0, -0.5, 0.2]),
        L.Conv2D(8, 3, strides=2, padding="valid", use_bias=False, **Z),
        L.BatchNormalization(epsilon=1e-3),
        L.ReLU(),
        L.Conv2D(8, 3, dilation_rate=2, padding="same", activation="elu", **Z),
        L.Activation("tanh"),
        L.AveragePooling2D(3, strides=2, padding="same"),
        L.Conv2D(6, (1, 2), strides=(1, 2), padding="same", **Z),
        L.ReLU(max_value=6.0),
        L.GlobalMaxPooling2D(),
        L.Dense(4, activation="softmax", **Z),
    ], name="bn_strides")


def functional_chain(keras):
    """A linear functional model: odd kernels/strides, BN without centre,
    Rescaling, GAP, a linear head."""
    L = keras.layers
    x = inp = keras.Input((24, 22, 3), name="img")
    x = L.Rescaling(1 / 255.0, name="scale")(x)
    x = L.Conv2D(6, (3, 5), strides=(1, 2), padding="same", activation="gelu",
                 name="c1", **Z)(x)
    x = L.MaxPooling2D((3, 3), strides=(2, 2), padding="same", name="p1")(x)
    x = L.BatchNormalization(center=False, epsilon=1e-2, name="bn")(x)
    x = L.Conv2D(5, 3, padding="valid", activation="swish", name="c2", **Z)(x)
    x = L.AveragePooling2D(2, name="p2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(0.2, name="drop")(x)
    out = L.Dense(3, name="logits", **Z)(x)
    return keras.Model(inp, out, name="chain")


ARCHS = {
    "cats_dogs": (cats_dogs, 255.0),
    "fashion": (fashion, 1.0),
    "bn_strides": (bn_strides, 255.0),
    "functional": (functional_chain, 255.0),
}


@pytest.fixture(scope="module")
def saved(keras, tmp_path_factory):
    """{arch: (keras_model, {fmt: path}, input scale)} with random weights."""
    d = tmp_path_factory.mktemp("keras_models")
    out = {}
    for i, (name, (build, scale)) in enumerate(ARCHS.items()):
        km = build(keras)
        _randomize(km, seed=i)
        paths = {}
        for fmt in FORMATS:
            paths[fmt] = d / f"{name}.{fmt}"
            km.save(paths[fmt])
        out[name] = (km, paths, scale)
    return out


def _inputs(km, scale, n=2, seed=0):
    _, h, w, c = km.inputs[0].shape
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 1, (n, h, w, c)) * scale).astype(np.float32)


def _keras_layer_outputs(keras, km, x):
    """{layer name: output} of every Keras layer (one multi-output model)."""
    layers = [layer for layer in km.layers if type(layer).__name__ != "InputLayer"]
    probe = keras.Model(km.inputs, [layer.output for layer in layers])
    outs = probe([x])
    return {layer.name: np.asarray(o) for layer, o in zip(layers, outs, strict=True)}


# ------------------------------------------------------------------ parity
@pytest.mark.keras
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.slow
def test_every_layer_matches_keras(keras, saved, arch, fmt):
    """Each Keras layer's output == model.forward(stop=layer), both formats."""
    km, paths, scale = saved[arch]
    model, params = load_keras_model(paths[fmt])
    want_names = [lay.name for lay in km.layers
                  if type(lay).__name__ != "InputLayer"]
    assert list(model.layer_names) == want_names
    assert model.input_shape == tuple(km.inputs[0].shape[1:])
    x = _inputs(km, scale, n=3)
    ref = _keras_layer_outputs(keras, km, x)
    with jax.default_matmul_precision("float32"):
        for name in model.layer_names:
            got = np.asarray(model.forward(params, x, stop=name))
            np.testing.assert_allclose(got, ref[name], rtol=RTOL, atol=ATOL,
                                       err_msg=f"{arch}.{fmt} layer {name}")
        # the split contract: forward(start=a, stop=b) on a's Keras output
        names = model.layer_names
        for a, b in zip(names[:-1], names[1:], strict=True):
            got = np.asarray(model.forward(params, ref[a], start=a, stop=b))
            np.testing.assert_allclose(got, ref[b], rtol=RTOL, atol=ATOL,
                                       err_msg=f"{arch}.{fmt} {a}->{b}")
    # the final output is also what Keras' predict gives
    np.testing.assert_allclose(np.asarray(model.forward(params, x)),
                               km.predict(x, verbose=0), rtol=RTOL, atol=ATOL)


@pytest.mark.keras
def test_weights_are_the_keras_arrays(saved):
    """Params hold exactly the Keras variables (BN stats included), float32."""
    km, paths, _ = saved["bn_strides"]
    for fmt in FORMATS:
        _, params = load_keras_model(paths[fmt])
        bn = km.layers[2]
        g, b, mean, var = (np.asarray(v) for v in bn.weights)
        np.testing.assert_array_equal(params[bn.name]["gamma"], g)
        np.testing.assert_array_equal(params[bn.name]["beta"], b)
        np.testing.assert_array_equal(params[bn.name]["moving_mean"], mean)
        np.testing.assert_array_equal(params[bn.name]["moving_variance"], var)
        conv = km.layers[1]
        assert set(params[conv.name]) == {"kernel"}  # use_bias=False
        np.testing.assert_array_equal(params[conv.name]["kernel"],
                                      np.asarray(conv.kernel))
        assert all(a.dtype == jnp.float32 for p in params.values()
                   for a in p.values())


@pytest.mark.keras
def test_translated_options(saved):
    """The ConvNet layer specs carry the Keras options (strides, dilation, ...)."""
    km, paths, _ = saved["functional"]
    model, _ = load_keras_model(paths["keras"])
    assert model.name_ == "chain" and model.preprocessing == "none"
    c1 = model.layer("c1")
    assert (c1.kind, c1.opt("kernel_size"), c1.opt("strides"), c1.opt("padding"),
            c1.opt("activation")) == ("conv", (3, 5), (1, 2), "same", "gelu")
    assert model.layer("p1").opt("pool_size") == (3, 3)
    bn = model.layer("bn")
    assert (bn.opt("features"), bn.opt("center"), bn.opt("epsilon")) == (6, False,
                                                                          1e-2)
    assert model.layer("scale").opt("scale") == pytest.approx(1 / 255.0)
    assert model.layer("drop").kind == "dropout"
    assert model.layer("logits").opt("activation") == "linear"
    km2, paths2, _ = saved["bn_strides"]
    m2, _ = load_keras_model(paths2["h5"])
    names = [lay.name for lay in km2.layers]  # Keras numbers names globally
    assert m2.layer(names[3]).opt("activation") == "relu"
    assert m2.layer(names[8]).opt("activation") == "relu6"
    assert m2.layer(names[4]).opt("dilation") == (2, 2)
    assert m2.layer(names[0]).opt("scale") == pytest.approx((1 / 127.5, 0.01,
                                                             1 / 60.0))


@pytest.mark.keras
def test_preprocessing_option(saved):
    km, paths, _ = saved["fashion"]
    model, params = load_keras_model(paths["h5"], preprocessing="scale01")
    assert model.preprocessing == "scale01"
    x = _inputs(km, 255.0, n=2)
    np.testing.assert_allclose(np.asarray(jcv.predict(params, x, model=model)),
                               km.predict(x / 255.0, verbose=0), rtol=RTOL,
                               atol=ATOL)
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        load_keras_model(paths["h5"], preprocessing="imagenet")


def test_keras3_group_names_follow_keras():
    """Class-based group names with per-class counters, as Keras 3 writes."""
    assert keras3_group_names(["Conv2D", "MaxPooling2D", "Conv2D", "Dense",
                               "BatchNormalization", "Dense", "Conv2D"]) == [
        "conv2d", "max_pooling2d", "conv2d_1", "dense", "batch_normalization",
        "dense_1", "conv2d_2"]
    assert keras3_group_names(["GlobalAveragePooling2D", "ReLU"]) == [
        "global_average_pooling2d", "re_lu"]


@pytest.mark.keras
def test_keras3_file_without_name_attrs(saved, tmp_path):
    """Early Keras 3 files have no ``vars@name``: groups map by class order."""
    km, paths, _ = saved["bn_strides"]
    src = tmp_path / "noname.keras"
    with zipfile.ZipFile(paths["keras"]) as zin, zipfile.ZipFile(src, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "model.weights.h5":
                data = _strip_name_attrs(data)
            zout.writestr(item, data)
    model, params = load_keras_model(src)
    ref, _ = load_keras_model(paths["keras"])
    assert model.layer_names == ref.layer_names
    x = _inputs(km, 255.0)
    np.testing.assert_allclose(np.asarray(model.forward(params, x)),
                               km.predict(x, verbose=0), rtol=RTOL, atol=ATOL)


def _strip_name_attrs(blob: bytes) -> bytes:
    import io

    import h5py

    buf = io.BytesIO(blob)
    with h5py.File(buf, "r+") as f:
        def strip(name, obj):
            if name.endswith("vars") and "name" in obj.attrs:
                del obj.attrs["name"]
        f.visititems(strip)
    return buf.getvalue()


@pytest.mark.keras
def test_tf_keras2_h5_layout(keras, saved, tmp_path):
    """A tf.keras 2 full-model .h5 (the note's best-cnn-model.h5 layout):
    ``batch_input_shape``, bytes ``layer_names``, ``kernel:0`` names."""
    import h5py

    km, _, _ = saved["fashion"]
    layers = [{"class_name": "InputLayer", "config": {
        "batch_input_shape": [None, 28, 28, 1], "dtype": "float32",
        "sparse": False, "ragged": False, "name": "conv2d_input"}}]
    for layer in km.layers:
        cfg = {k: v for k, v in layer.get_config().items() if k != "dtype"}
        cfg["dtype"] = "float32"
        layers.append({"class_name": type(layer).__name__, "config": cfg})
    config = {"class_name": "Sequential",
              "config": {"name": "sequential", "layers": layers}}
    path = tmp_path / "best-cnn-model.h5"
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.8.0"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(config).encode()
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.array([lay.name.encode() for lay in km.layers])
        for layer in km.layers:
            g = mw.create_group(layer.name)
            names = [f"{layer.name}/{w.path.split('/')[-1]}:0" for w in layer.weights]
            g.attrs["weight_names"] = np.array([n.encode() for n in names])
            for n, w in zip(names, layer.weights, strict=True):
                g.create_dataset(n, data=np.asarray(w))
    model, params = load_keras_model(path, preprocessing="scale01")
    assert model.name_ == "sequential" and model.input_shape == (28, 28, 1)
    x = _inputs(km, 1.0)
    np.testing.assert_allclose(np.asarray(model.forward(params, x)),
                               km.predict(x, verbose=0), rtol=RTOL, atol=ATOL)


def test_tf_keras2_functional_config():
    """tf.keras 2 functional configs (``inbound_nodes`` as nested lists)."""
    def node(src):
        return [[[src, 0, 0, {}]]]

    config = {"class_name": "Functional", "config": {
        "name": "model", "layers": [
            {"class_name": "InputLayer", "name": "input_1", "inbound_nodes": [],
             "config": {"batch_input_shape": [None, 8, 8, 3], "name": "input_1"}},
            {"class_name": "Conv2D", "name": "conv", "inbound_nodes": node("input_1"),
             "config": {"name": "conv", "filters": 2, "kernel_size": [3, 3],
                        "strides": [1, 1], "padding": "valid",
                        "data_format": "channels_last", "dilation_rate": [1, 1],
                        "activation": "relu", "use_bias": True}},
            {"class_name": "Flatten", "name": "flat", "inbound_nodes": node("conv"),
             "config": {"name": "flat", "data_format": "channels_last"}},
            {"class_name": "Dense", "name": "out", "inbound_nodes": node("flat"),
             "config": {"name": "out", "units": 1, "activation": "sigmoid",
                        "use_bias": True}},
        ],
        "input_layers": [["input_1", 0, 0]], "output_layers": [["out", 0, 0]]}}
    model = convnet_from_keras_config(config)
    assert model.layer_names == ("conv", "flat", "out")
    assert model.output_shape("flat", (8, 8)) == (72,)
    # closed form: all-ones kernels on an all-ones image -> 27 + bias per unit
    params = {"conv": {"kernel": jnp.ones((3, 3, 3, 2)), "bias": jnp.full((2,), .5)},
              "out": {"kernel": jnp.full((72, 1), 1e-3), "bias": jnp.zeros((1,))}}
    model.check_params(params)
    acts = model.forward(params, jnp.ones((1, 8, 8, 3)), stop="conv")
    np.testing.assert_allclose(np.asarray(acts), 27.5)
    logit = 72 * 27.5 * 1e-3
    np.testing.assert_allclose(np.asarray(model.logits(params, jnp.ones((1, 8, 8, 3)))),
                               [[logit]], rtol=1e-6)


# ------------------------------------------------------------------ errors
@pytest.mark.keras
def test_unsupported_layer(keras, tmp_path):
    L = keras.layers
    km = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3, **Z),
                           L.Conv2DTranspose(2, 3, name="up", **Z), L.Flatten()])
    for fmt in FORMATS:
        km.save(tmp_path / f"m.{fmt}")
        with pytest.raises(ValueError, match=rf"m\.{fmt}.*'up' \(Conv2DTranspose\) is "
                           r"not supported.*Conv2D"):
            load_keras_model(tmp_path / f"m.{fmt}")


@pytest.mark.keras
def test_unsupported_activation(keras, tmp_path):
    L = keras.layers
    km = keras.Sequential([keras.Input((8, 8, 3)), L.Flatten(),
                           L.Dense(2, activation="mish", name="head", **Z)])
    km.save(tmp_path / "m.keras")
    with pytest.raises(ValueError, match=r"'head' \(Dense\) has activation "
                       r"'mish'; supported activations: .*relu"):
        load_keras_model(tmp_path / "m.keras")


@pytest.mark.keras
def test_residual_model_imports_as_a_graph(keras, tmp_path):
    """A residual Add (once rejected as "only linear chains") imports as a
    graph in both formats and matches Keras."""
    L = keras.layers
    inp = keras.Input((8, 8, 3))
    y = L.Conv2D(4, 3, padding="same", name="c1", **Z)(inp)
    z = L.Conv2D(4, 3, padding="same", name="c2", **Z)(y)
    out = L.Add(name="add")([y, z])
    km = keras.Model(inp, out)
    _randomize(km, 5)
    x = _inputs(km, 1.0)
    for fmt in FORMATS:
        km.save(tmp_path / f"res.{fmt}")
        model, params = load_keras_model(tmp_path / f"res.{fmt}")
        assert model.layer("add").inputs == ("c1", "c2")
        np.testing.assert_allclose(np.asarray(model.forward(params, x)),
                                   km.predict(x, verbose=0), rtol=RTOL, atol=ATOL)


@pytest.mark.keras
def test_several_outputs_are_rejected(keras, tmp_path):
    L = keras.layers
    inp = keras.Input((8, 8, 3))
    y = L.Conv2D(4, 3, name="trunk", **Z)(inp)
    a = L.GlobalAveragePooling2D(name="gap")(y)
    b = L.GlobalMaxPooling2D(name="gmp")(y)
    keras.Model(inp, [a, b]).save(tmp_path / "two.keras")
    with pytest.raises(ValueError, match=r"2 output\(s\).*single-input, "
                       "single-output"):
        load_keras_model(tmp_path / "two.keras")
    # one output with a merged branch (Concatenate) imports
    c = L.Concatenate(name="cat")([a, b])
    keras.Model(inp, c).save(tmp_path / "cat.keras")
    model, _ = load_keras_model(tmp_path / "cat.keras")
    assert model.layer("cat").inputs == ("gap", "gmp")
    assert model.output_shape("cat", (8, 8)) == (8,)


@pytest.mark.keras
def test_channels_first_is_rejected(saved):
    import h5py

    _, paths, _ = saved["fashion"]
    with h5py.File(paths["h5"]) as f:
        config = json.loads(f.attrs["model_config"])
    config["config"]["layers"][1]["config"]["data_format"] = "channels_first"
    with pytest.raises(ValueError, match=r"m\.h5: layer 'conv2d\w*' \(Conv2D\) uses "
                       r"data_format='channels_first'; only channels_last"):
        convnet_from_keras_config(config, source="m.h5")


@pytest.mark.keras
@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_file(saved, tmp_path, fmt):
    _, paths, _ = saved["fashion"]
    data = paths[fmt].read_bytes()
    bad = tmp_path / f"cut.{fmt}"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"cut\.{fmt}: .*(truncated|corrupt)"):
        load_keras_model(bad)


def test_not_a_model_file(tmp_path):
    from jaxconvviz.images import CAT_PHOTO as CAT

    with pytest.raises(ValueError, match=r"chelsea\.png: not a readable Keras "
                       r"model: neither a \.keras zip archive nor an HDF5"):
        load_keras_model(CAT)
    z = tmp_path / "notes.keras"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match=r"notes\.keras: a zip archive without "
                       r"config.json"):
        load_keras_model(z)
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        load_keras_model(tmp_path / "missing.h5")
    with pytest.raises(ValueError, match="is a directory"):
        load_keras_model(tmp_path)


def test_weights_only_and_config_free_h5(tmp_path):
    import h5py

    w = tmp_path / "m.weights.h5"
    with h5py.File(w, "w") as f:
        f.create_group("layers/conv2d/vars").attrs["name"] = "conv2d"
    with pytest.raises(ValueError, match=r"m\.weights\.h5: holds weights only, "
                       "no architecture"):
        load_keras_model(w)
    e = tmp_path / "empty.h5"
    with h5py.File(e, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ValueError, match=r"empty\.h5: HDF5 file without a Keras "
                       "'model_config'"):
        load_keras_model(e)
    j = tmp_path / "badjson.h5"
    with h5py.File(j, "w") as f:
        f.attrs["model_config"] = "{not json"
    with pytest.raises(ValueError, match=r"badjson\.h5: model_config is not valid "
                       "JSON"):
        load_keras_model(j)


@pytest.mark.keras
def test_missing_and_misshapen_weights(saved, tmp_path):
    import h5py

    km, paths, _ = saved["fashion"]
    head = km.layers[-1].name
    bad = tmp_path / "bad.h5"
    bad.write_bytes(paths["h5"].read_bytes())
    with h5py.File(bad, "r+") as f:
        g = f[f"model_weights/{head}"]
        name = [n for n in g.attrs["weight_names"] if n.endswith("kernel")][0]
        del g[name]
        g.create_dataset(name, data=np.zeros((99, 10), np.float32))
    with pytest.raises(ValueError, match=rf"bad\.h5: layer '{head}' kernel has "
                       r"shape \(99, 10\); expected \(100, 10\)"):
        load_keras_model(bad)


def test_non_image_input_and_subclassed_model():
    config = {"class_name": "Sequential", "config": {"name": "mlp", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 784],
                                                "name": "in"}},
        {"class_name": "Dense", "config": {"name": "d", "units": 3}}]}}
    with pytest.raises(ValueError, match=r"batch shape \[None, 784\]; expected "
                       "images"):
        convnet_from_keras_config(config)
    with pytest.raises(ValueError, match="model class 'MyModel' is not supported"):
        convnet_from_keras_config({"class_name": "MyModel", "config": {}})


@pytest.mark.keras
def test_nested_augmentation_sequential(keras, tmp_path):
    """DLwP 2nd ed. style: a data_augmentation Sequential inside the model is
    identity at inference; other nested models are rejected."""
    L = keras.layers
    aug = keras.Sequential([L.RandomFlip("horizontal"), L.RandomRotation(0.1)],
                           name="data_augmentation")
    inp = keras.Input((16, 16, 3))
    x = aug(inp)
    x = L.Rescaling(1 / 255.0)(x)
    x = L.Conv2D(4, 3, activation="relu", name="conv", **Z)(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(1, activation="sigmoid", name="head", **Z)(x)
    km = keras.Model(inp, out)
    _randomize(km, 3)
    km.save(tmp_path / "aug.keras")
    model, params = load_keras_model(tmp_path / "aug.keras")
    assert model.layer("data_augmentation").kind == "dropout"
    x = _inputs(km, 255.0)
    np.testing.assert_allclose(np.asarray(model.forward(params, x)),
                               km.predict(x, verbose=0), rtol=RTOL, atol=ATOL)
    # other nested models are inlined under their layers' names
    inner = keras.Sequential([L.Conv2D(3, 1, name="inner_conv", **Z)],
                             name="block")
    km2 = keras.Model(inp, L.Flatten(name="flat")(inner(inp)))
    _randomize(km2, 4)
    km2.save(tmp_path / "nested.keras")
    model2, params2 = load_keras_model(tmp_path / "nested.keras")
    assert model2.layer_names == ("inner_conv", "block", "flat")
    assert model2.layer("block").kind == "identity"
    np.testing.assert_allclose(np.asarray(model2.forward(params2, x)),
                               km2.predict(x, verbose=0), rtol=RTOL, atol=ATOL)


@pytest.mark.keras
def test_transfer_learning_h5_with_a_partly_frozen_nested_base(keras, tmp_path):
    """The usual fine-tuning model (a functional base inside a model, its
    first layers frozen) saved as a legacy full-model ``.h5``: the base's
    weights are one entry of ``model_weights`` whose names are
    "<inner layer>/<var>" with the trainable ones first (found in a real
    MobileNetV2 fine-tune); every inner layer gets its own arrays in Keras'
    order, and the prediction equals Keras'. ``layer=None`` passes over the
    base's identity output node for the conv that computes it."""
    L = keras.layers
    bin_ = keras.Input((12, 12, 3))
    y = L.Conv2D(4, 3, use_bias=False, name="stem", **Z)(bin_)
    y = L.BatchNormalization(name="stem_bn")(y)
    y = L.ReLU(name="stem_relu")(y)
    y = L.Conv2D(5, 3, name="top_conv", **Z)(y)
    y = L.BatchNormalization(name="top_bn")(y)
    base = keras.Model(bin_, L.ReLU(name="out_relu")(y), name="base_net")
    for layer in base.layers[:3]:  # frozen stem: its BN is all non-trainable
        layer.trainable = False
    inp = keras.Input((12, 12, 3))
    out = L.Dense(3, activation="softmax", name="head", **Z)(
        L.GlobalAveragePooling2D(name="gap")(base(inp)))
    km = keras.Model(inp, out)
    _randomize(km, 11)
    km.save(tmp_path / "tl.h5")
    model, params = load_keras_model(tmp_path / "tl.h5")
    for name in ("stem_bn", "top_bn"):  # frozen and trainable
        want = km.get_layer("base_net").get_layer(name).get_weights()
        for k, w in zip(("gamma", "beta", "moving_mean", "moving_variance"), want,
                        strict=True):
            np.testing.assert_array_equal(np.asarray(params[name][k]), w)
    x = _inputs(km, 255.0)
    np.testing.assert_allclose(np.asarray(model.forward(params, x)),
                               km.predict(x, verbose=0), rtol=RTOL, atol=ATOL)
    assert model.default_layer == "out_relu"


# ---------------------------------------------------------------- export
def _exported_model():
    mk = Layer.make
    layers = (
        mk("rescale", "rescaling", scale=(1 / 255.0, 1 / 128.0), offset=(0.0, -1.0)),
        mk("conv2d", "conv", features=6, kernel_size=3, padding="same",
           activation="relu"),
        mk("bn", "batchnorm", features=6, epsilon=1e-3),
        mk("pool", "maxpool", pool_size=2, strides=2, padding="valid"),
        mk("conv2d_1", "conv", features=5, kernel_size=(3, 2), strides=(2, 1),
           padding="valid", dilation=1, use_bias=False, activation="selu"),
        mk("act", "activation", activation="softplus"),
        mk("avg", "avgpool", pool_size=2, strides=1, padding="same"),
        mk("flatten", "flatten"),
        mk("dense", "dense", features=7, activation="relu"),
        mk("dropout", "dropout", rate=0.3),
        mk("dense_1", "dense", features=3, activation="softmax"),
    )
    model = ConvNet(layers=layers, input_shape=(16, 12, 2), preprocessing="none",
                    name_="exported")
    return model, _random_params(model, seed=0)


def _exported_windows():
    """The other exportable kinds: pads, depthwise/separable convs, layer
    norm, cropping, identity, reshape."""
    mk = Layer.make
    layers = (
        mk("pad", "zeropad", padding=((1, 0), (0, 2))),
        mk("dw", "depthwise_conv", kernel_size=3, depth_multiplier=2,
           padding="valid", activation="relu"),
        mk("sep", "separable_conv", features=4, kernel_size=(3, 2), strides=(2, 1),
           padding="same", use_bias=False),
        mk("ln", "layernorm", epsilon=1e-3),
        mk("crop", "cropping", cropping=((1, 1), (0, 1))),
        mk("same", "identity"),
        mk("flat", "reshape", target_shape=(-1,)),
        mk("out", "dense", features=3, activation="softmax"),
    )
    model = ConvNet(layers=layers, input_shape=(10, 9, 3), preprocessing="none",
                    name_="exported")
    return model, _random_params(model, seed=1)


_EXPORTED = {"chain": _exported_model, "windows": _exported_windows}


def _random_params(model: ConvNet, *, seed: int):
    """Random params of the model's shapes (numpy; no eager Flax init)."""
    shapes = jax.eval_shape(model.init_params, jax.random.key(0))
    rng = np.random.default_rng(seed)
    params = {}
    for lname, leaves in shapes.items():
        params[lname] = {}
        for pname, spec in leaves.items():
            if pname in ("gamma", "moving_variance"):
                v = rng.uniform(0.5, 1.5, spec.shape)
            elif pname == "kernel":
                v = rng.normal(0, np.sqrt(2 / np.prod(spec.shape[:-1])), spec.shape)
            else:
                v = rng.normal(0, 0.3, spec.shape)
            params[lname][pname] = jnp.asarray(v, jnp.float32)
    return params


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("build", list(_EXPORTED))
@pytest.mark.slow
def test_export_round_trip(tmp_path, fmt, build):
    """save_keras_model -> load_keras_model: same layers, same outputs; the
    imported model is a fixed point of a second export."""
    model, params = _EXPORTED[build]()
    x = np.random.default_rng(1).uniform(0, 255, (2, *model.input_shape)
                                         ).astype(np.float32)
    path = save_keras_model(params, tmp_path / f"e.{fmt}", model=model)
    m2, p2 = load_keras_model(path)
    assert m2.layer_names == model.layer_names and m2.name_ == "exported"
    assert [s.kind for s in m2.layers] == [s.kind for s in model.layers]
    for name in model.layer_names:
        np.testing.assert_allclose(np.asarray(m2.forward(p2, x, stop=name)),
                                   np.asarray(model.forward(params, x, stop=name)),
                                   rtol=RTOL, atol=ATOL)
    for lname, leaves in params.items():
        for pname, value in leaves.items():
            np.testing.assert_array_equal(p2[lname][pname], value)
    save_keras_model(p2, tmp_path / f"f.{fmt}", model=m2)
    m3, _ = load_keras_model(tmp_path / f"f.{fmt}")
    assert m3 == m2


@pytest.mark.keras
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("build", list(_EXPORTED))
@pytest.mark.slow
def test_exported_file_loads_in_keras(keras, tmp_path, fmt, build, monkeypatch):
    # Keras initialises each layer before loading the weights; zeros instead
    # of Glorot saves compiling a random initialiser per shape.
    monkeypatch.setattr(keras.initializers.GlorotUniform, "__call__",
                        lambda self, shape, dtype=None: keras.ops.zeros(shape, dtype))
    model, params = _EXPORTED[build]()
    path = save_keras_model(params, tmp_path / f"e.{fmt}", model=model)
    km = keras.models.load_model(path)
    assert [lay.name for lay in km.layers] == list(model.layer_names)
    x = np.random.default_rng(2).uniform(0, 255, (3, *model.input_shape)
                                         ).astype(np.float32)
    ref = _keras_layer_outputs(keras, km, x)
    with jax.default_matmul_precision("float32"):
        for name in model.layer_names:
            np.testing.assert_allclose(
                np.asarray(model.forward(params, x, stop=name)), ref[name],
                rtol=RTOL, atol=ATOL, err_msg=name)


def test_export_config_is_keras_shaped():
    model, _ = _exported_model()
    cfg = keras_config(model)
    assert cfg["class_name"] == "Sequential"
    layers = cfg["config"]["layers"]
    assert layers[0]["class_name"] == "InputLayer"
    assert layers[0]["config"]["batch_shape"] == [None, 16, 12, 2]
    assert [e["config"]["name"] for e in layers[1:]] == list(model.layer_names)
    assert layers[5]["config"]["strides"] == [2, 1]
    assert layers[5]["config"]["use_bias"] is False


def test_export_errors(tmp_path):
    model, params = _exported_model()
    with pytest.raises(ValueError, match=r"path must end in \.keras .* got "):
        save_keras_model(params, tmp_path / "m.npz", model=model)
    bad = dict(params)
    bad.pop("dense")
    with pytest.raises(ValueError, match="layer 'dense' is missing"):
        save_keras_model(bad, tmp_path / "m.keras", model=model)
    with pytest.raises(TypeError, match="model must be a jaxconvviz ConvNet"):
        save_keras_model(params, tmp_path / "m.keras", model=object())
    assert not list(tmp_path.iterdir())  # nothing written on error


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_export_mode_follows_the_umask_and_is_fsynced(tmp_path, monkeypatch, umask):
    """A saved model gets the mode a plain open() gives (0o666 & ~umask), not
    mkstemp's 0600, and its bytes are fsynced before the rename."""
    import os

    model, params = _exported_model()
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    old = os.umask(umask)
    try:
        for fmt in FORMATS:
            path = save_keras_model(params, tmp_path / f"m.{fmt}", model=model)
            assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    finally:
        os.umask(old)
    assert len(synced) == len(FORMATS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.h5", "m.keras"]


# ------------------------------------------- every technique takes the model
def _rgb(h, w, n=2, seed=5):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (n, h, w, 3)).astype(np.float32)


@pytest.mark.keras
def test_predict_and_activations_on_imported_model(keras, saved):
    """jcv.predict gives the sigmoid probability, jcv.activations the Keras
    layer outputs, on the cats-vs-dogs convnet imported with scale01."""
    km, paths, _ = saved["cats_dogs"]
    model, params = load_keras_model(paths["keras"], preprocessing="scale01")
    x = _rgb(64, 64, n=3)
    probs = np.asarray(jcv.predict(params, x, model=model))
    assert probs.shape == (3, 1) and ((probs > 0) & (probs < 1)).all()
    np.testing.assert_allclose(probs, km.predict(x / 255.0, verbose=0),
                               rtol=RTOL, atol=ATOL)
    ref = _keras_layer_outputs(keras, km, x / 255.0)
    layers = model.layer_names[::3]
    acts = jcv.activations(params, x, layers=layers, model=model)
    for name in layers:
        np.testing.assert_allclose(np.asarray(acts[name]), ref[name], rtol=RTOL,
                                   atol=ATOL, err_msg=name)
    with pytest.raises(ValueError, match="images_rgb must be 64x64"):
        jcv.predict(params, _rgb(32, 32), model=model)


@pytest.mark.keras
def test_grad_cam_sigmoid_head_closed_form(keras, tmp_path):
    """conv -> GAP -> Dense(1, sigmoid): Grad-CAM of the LOGIT is
    relu(sum_c w_c A_c) / max (alpha_c = w_c / (h w), the 1/(h w) cancels)."""
    L = keras.layers
    km = keras.Sequential([keras.Input((12, 10, 3)),
                           L.Conv2D(5, 3, activation="relu", name="conv", **Z),
                           L.GlobalAveragePooling2D(name="gap"),
                           L.Dense(1, activation="sigmoid", name="head", **Z)])
    _randomize(km, 7)
    head = km.get_layer("head")  # mostly positive class weights: non-zero maps
    head.set_weights([np.array([[1.0], [-0.5], [0.8], [0.3], [-0.2]], np.float32),
                      np.array([-1.0], np.float32)])
    km.save(tmp_path / "gap.h5")
    model, params = load_keras_model(tmp_path / "gap.h5")
    x = _rgb(12, 10, n=3)
    cams, logits, used = grad_cam_with_scores(
        params, x, layer="conv", model=model)
    acts = _keras_layer_outputs(keras, km, x)["conv"]  # (n, 10, 8, 5)
    w = np.asarray(km.get_layer("head").kernel)[:, 0]
    ref = np.maximum(acts @ w, 0.0)
    peak = ref.max(axis=(1, 2), keepdims=True)
    assert (peak > 0).all()
    ref = np.where(peak > 0, ref / np.where(peak > 0, peak, 1.0), 0.0)
    np.testing.assert_allclose(np.asarray(cams), ref, rtol=1e-5, atol=1e-6)
    # the score is the logit: sigmoid(logit) is Keras' probability
    p = km.predict(x, verbose=0)
    np.testing.assert_allclose(np.asarray(logits), np.log(p / (1 - p)),
                               rtol=1e-4, atol=1e-4)
    assert np.asarray(used).tolist() == [0, 0, 0]


@pytest.mark.keras
def test_grad_cam_on_cats_dogs(saved):
    km, paths, _ = saved["cats_dogs"]
    model, params = load_keras_model(paths["h5"], preprocessing="scale01")
    last_conv = model.conv_layers[-1]
    x = _rgb(64, 64, n=2)
    cams = np.asarray(jcv.grad_cam(params, x, layer=last_conv, model=model))
    assert cams.shape == (2, 4, 4)
    assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1
    one = np.asarray(jcv.grad_cam(params, x[1:], layer=last_conv, model=model))
    np.testing.assert_allclose(cams[1:], one, rtol=1e-5, atol=1e-6)


@pytest.mark.keras
def test_filter_patterns_on_imported_model(keras, saved):
    """Gradient ascent on a 1-channel imported model raises the filter's mean
    activation, which Keras confirms on the returned patterns."""
    km, paths, _ = saved["fashion"]
    model, params = load_keras_model(paths["keras"], preprocessing="scale01")
    layer = model.conv_layers[1]
    init = np.random.default_rng(0).uniform(0, 1, (2, 28, 28, 1)).astype(np.float32)
    pats = jcv.filter_patterns(params, layer, [0, 3], init=init, size=28, steps=8,
                               style=jcv.Book(step_size=0.05), model=model)
    assert pats.shape == (2, 28, 28, 1)
    before = np.asarray(jcv.filter_activation(params, init, layer, [0, 3],
                                              model=model))
    after = np.asarray(jcv.filter_activation(params, pats, layer, [0, 3],
                                             model=model))
    assert (after > before).all()
    ref = _keras_layer_outputs(keras, km, np.asarray(pats))[layer]
    np.testing.assert_allclose(after, [ref[0, ..., 0].mean(), ref[1, ..., 3].mean()],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.keras
def test_kernel_views_on_imported_model(saved):
    km, paths, _ = saved["fashion"]
    model, params = load_keras_model(paths["h5"])
    conv1 = model.conv_layers[0]
    k = np.asarray(km.get_layer(conv1).kernel)  # (3, 3, 1, 32)
    kg = jcv.kernel_grid(params, conv1, model=model, channel=0, limit=0.5)
    np.testing.assert_array_equal(np.asarray(kg.kernels),
                                  np.transpose(k[:, :, 0, :], (2, 0, 1)))
    hist = jcv.weight_histogram(params, conv1, model=model)
    counts, _ = np.histogram(k.ravel().astype(np.float64), bins=10)
    np.testing.assert_array_equal(hist.counts, counts)
    assert hist.mean == pytest.approx(float(k.astype(np.float64).mean()))


@pytest.mark.keras
@pytest.mark.slow
def test_activation_grids_on_imported_model(keras, saved):
    from jaxconvviz.views.activation_grids import (
        activation_grid,
        layer_activation_grids,
    )

    km, paths, _ = saved["cats_dogs"]
    model, params = load_keras_model(paths["keras"], preprocessing="scale01")
    image = _rgb(64, 64, n=1)[0]
    grids = layer_activation_grids(params, image, model=model)
    assert tuple(grids) == model.spatial_layers[:8]
    ref = _keras_layer_outputs(keras, km, image[None] / 255.0)
    for name in (model.spatial_layers[0], model.spatial_layers[5]):
        want = np.asarray(activation_grid(jnp.asarray(ref[name][0])))
        np.testing.assert_allclose(np.asarray(grids[name]), want, rtol=1e-4,
                                   atol=1e-3)


# ------------------------------------------------------------------- CLI
@pytest.mark.keras
@pytest.mark.slow
def test_cli_subcommands_take_model(saved, tmp_path, capsys):
    """activations / kernels / atlas / gradcam with --model PATH."""
    from jaxconvviz.cli import main
    from jaxconvviz.images import CAT_PHOTO

    km, paths, _ = saved["cats_dogs"]
    model, _ = load_keras_model(paths["keras"])
    conv1, last = model.conv_layers[0], model.conv_layers[-1]
    m = ["--model", str(paths["keras"]), "--preprocess", "scale01"]
    out = tmp_path / "out"
    runs = [
        ["activations", str(CAT_PHOTO), "--layers", conv1, last, "--out", str(out)],
        ["kernels", "--layer", conv1, "--out", str(out)],
        ["atlas", "--layer", conv1, "--filters", "0:4", "--size", "16",
         "--steps", "2", "--out", str(out)],
        ["gradcam", str(CAT_PHOTO), "--layer", last, "--out", str(out)],
    ]
    for argv in runs:
        assert main(argv + m) == 0, (argv, capsys.readouterr())
    text = capsys.readouterr().out
    assert "sigmoid probability" in text  # gradcam reports the sigmoid head
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert f"activations_{conv1}.png" in pngs and "gradcam_chelsea.png" in pngs
    assert len(pngs) >= 5
    # a bad layer name is one stderr line and exit 2
    assert main(["kernels", "--layer", "block1_conv1", "--out", str(out)] + m) == 2
    err = capsys.readouterr().err
    assert conv1 in err and err.count("\n") == 1
    # a non-model file is one stderr line naming it
    assert main(["kernels", "--model", str(CAT_PHOTO), "--out", str(out)]) == 2
    assert "chelsea.png" in capsys.readouterr().err


# ------------------------------------------------- scripts/train_fashion_cnn
@pytest.fixture(scope="module")
def trainer():
    import sys
    from pathlib import Path

    scripts = str(Path(__file__).resolve().parents[1] / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    import train_fashion_cnn

    return train_fashion_cnn


def _write_idx(path, array: np.ndarray) -> None:
    import gzip
    import struct

    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_fashion_idx_reader(trainer, tmp_path):
    """The four idx files round-trip (values, shapes, label order)."""
    rng = np.random.default_rng(0)
    xtr = rng.integers(0, 256, (7, 28, 28))
    ytr = rng.integers(0, 10, 7)
    xte = rng.integers(0, 256, (3, 28, 28))
    yte = rng.integers(0, 10, 3)
    for name, arr in zip(trainer.FASHION_FILES, (xtr, ytr, xte, yte), strict=True):
        _write_idx(tmp_path / name, arr)
    (a, b), (c, d) = trainer.load_fashion(tmp_path)
    for got, want in ((a, xtr), (b, ytr), (c, xte), (d, yte)):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.uint8
    name = "t10k-labels-idx1-ubyte.gz"
    raw = (tmp_path / name).read_bytes()
    import gzip

    data = gzip.decompress(raw)
    (tmp_path / name).write_bytes(gzip.compress(data[:-1]))
    with pytest.raises(ValueError, match="truncated"):
        trainer.load_fashion(tmp_path)
    (tmp_path / name).unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz"):
        trainer.load_fashion(tmp_path)
    assert trainer.FASHION_FILES["train-images-idx3-ubyte.gz"] == (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d")


@pytest.mark.slow
def test_early_stopping_restores_best(trainer):
    """lr=0: the validation loss never improves after epoch 1, so training
    stops after 1 + patience epochs and returns the epoch-1 weights."""
    from fashion_figures import fashion_note_model

    model = fashion_note_model()
    params = _random_params(model, seed=3)
    (xtr, ytr), (xva, yva) = trainer.synthetic_shapes(64, 32, seed=0)
    best, history, best_epoch, _ = trainer.train(
        model, params, (xtr, ytr), (xva, yva), key=jax.random.key(0), epochs=10,
        batch_size=32, patience=2, lr=0.0, dropout_rate=0.4, log=lambda *a: None)
    assert len(history) == 3 and best_epoch == 0
    assert history[1]["val_loss"] == history[0]["val_loss"]
    for lname, leaves in params.items():
        for pname, v in leaves.items():
            np.testing.assert_array_equal(best[lname][pname], v)


@pytest.mark.keras
@pytest.mark.slow
def test_train_script_exports_keras_loadable_model(keras, trainer, tmp_path,
                                                   capsys, monkeypatch):
    """A short synthetic run: the exported .keras/.h5 load in jaxconvviz and
    in real Keras with the same predictions, and metrics.json's test accuracy
    is what the exported model scores."""
    monkeypatch.setattr(keras.initializers.GlorotUniform, "__call__",
                        lambda self, shape, dtype=None: keras.ops.zeros(shape, dtype))
    out = tmp_path / "fashion"
    argv = ["--synthetic", "--n-train", "400", "--n-test", "96", "--epochs", "2",
            "--out", str(out), "--seed", "1"]
    assert trainer.main(argv) == 0
    text = capsys.readouterr().out
    assert "SYNTHETIC" in text and "test accuracy" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == "synthetic shapes" and metrics["epochs_run"] == 2
    for name in ("weights_hist_conv2d", "kernels_conv2d_trained",
                 "kernels_conv2d_untrained", "feature_maps_conv2d",
                 "feature_maps_conv2d_1"):
        assert (out / f"note_{name}.png").stat().st_size > 1000
    _, (x_test, y_test) = trainer.synthetic_shapes(400, 96, seed=1)
    x = x_test[..., None].astype(np.float32)
    model, params = load_keras_model(out / "fashion_cnn.keras",
                                     preprocessing="scale01")
    assert model.layer_names == ("conv2d", "max_pooling2d", "conv2d_1",
                                 "max_pooling2d_1", "flatten", "dense", "dropout",
                                 "dense_1")
    probs = np.asarray(jcv.predict(params, x, model=model))
    acc = float((probs.argmax(-1) == y_test).mean())
    assert acc == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    km = keras.models.load_model(out / "fashion_cnn.h5")
    np.testing.assert_allclose(km.predict(x / 255.0, verbose=0), probs, rtol=1e-5,
                               atol=1e-6)
    npz_params = jcv.load_params(out / "fashion_cnn.npz", model=model)
    np.testing.assert_array_equal(npz_params["dense_1"]["kernel"],
                                  params["dense_1"]["kernel"])


def test_lazy_exports_and_build_input_shape():
    """jcv exports the loaders lazily; a Sequential config without an
    InputLayer takes its input from ``build_input_shape``."""
    import jaxconvviz.models.keras_export as ke
    import jaxconvviz.models.keras_import as ki

    assert jcv.load_keras_model is ki.load_keras_model
    assert jcv.save_keras_model is ke.save_keras_model
    config = {"class_name": "Sequential", "config": {
        "name": "s", "build_input_shape": [None, None, None, 2], "layers": [
            {"class_name": "Conv2D", "config": {
                "name": "c", "filters": 3, "kernel_size": [1, 1], "padding": "same",
                "activation": "relu"}},
            {"class_name": "GlobalMaxPooling2D", "config": {"name": "g"}}]}}
    model = convnet_from_keras_config(config, preprocessing="scale01")
    assert model.input_shape == (None, None, 2) and model.preprocessing == "scale01"
    params = {"c": {"kernel": jnp.asarray([[[[1.0, -1.0, 0.5], [0.0, 1.0, 0.0]]]]),
                    "bias": jnp.zeros((3,))}}
    x = jnp.asarray(np.arange(2 * 3 * 5 * 2, dtype=np.float32).reshape(2, 3, 5, 2))
    got = np.asarray(model.forward(params, x))
    xn = np.asarray(x)
    want = np.maximum(np.einsum("nhwc,cd->nhwd", xn, np.asarray(
        params["c"]["kernel"])[0, 0]), 0).max(axis=(1, 2))
    np.testing.assert_allclose(got, want, rtol=1e-6)
