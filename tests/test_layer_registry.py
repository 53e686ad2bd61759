"""The layer-kind registry: a kind added from this file (no library edit)
imports from a Keras config, runs, exports and round-trips.

Two kinds are registered here: ``scale`` (a custom Keras ``Scale`` layer with
one per-channel weight ``gamma`` and an ``offset`` option: ``x * gamma +
offset``) and ``leaky`` (Keras 3's ``LeakyReLU``, checked against the Keras
oracle).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxconvviz.models.convnet import ConvNet, Layer
from jaxconvviz.models.keras_export import keras_config, save_keras_model
from jaxconvviz.models.keras_import import (
    SUPPORTED_LAYERS,
    convnet_from_keras_config,
    load_keras_model,
    params_from_keras_weights,
)
from jaxconvviz.models.kinds import (
    LayerKind,
    layer_kind,
    layer_params,
    register_layer_kind,
    unregister_layer_kind,
)
from jaxconvviz.models.kinds.common import bcast
from jaxconvviz.models.layers import LAYER_KINDS
from jaxconvviz.models.shapes import SHAPES, receptive_fields


# ------------------------------------------------------------ the two kinds
def _scale(net, spec, xs):
    (x,) = xs
    gamma = layer_params(spec, x)["gamma"]  # created under the layer's name
    return x * bcast(gamma, x) + jnp.asarray(spec.opt("offset"), x.dtype)


def _scale_from_keras(k):
    offset = k.get("offset", 0.0)
    if isinstance(offset, bool) or not isinstance(offset, int | float):
        raise k.error(f"has offset {offset!r}; expected a number.")
    return k.layer(offset=float(offset))


SCALE = LayerKind(
    "scale", _scale,
    params=lambda spec: ("gamma",),
    param_shapes=lambda spec, in_shape: {"gamma": ((in_shape[-1],), "ones")},
    keras=("Scale",), from_keras=_scale_from_keras,
    keras_class="Scale", to_keras=lambda spec: {"offset": spec.opt("offset")},
    doc="a custom Scale layer: x * gamma + offset")


def _leaky_from_keras(k):
    slope = k.get("negative_slope", k.get("alpha", 0.3))  # Keras 3 / tf.keras 2
    return k.layer(slope=float(slope))


LEAKY = LayerKind(
    "leaky", lambda net, spec, xs: jax.nn.leaky_relu(xs[0], spec.opt("slope")),
    keras=("LeakyReLU",), from_keras=_leaky_from_keras, keras_class="LeakyReLU",
    to_keras=lambda spec: {"negative_slope": spec.opt("slope")},
    doc="LeakyReLU")


@pytest.fixture(scope="module", autouse=True)
def kinds():
    for record in (SCALE, LEAKY):
        register_layer_kind(record)
    yield
    for record in (SCALE, LEAKY):
        unregister_layer_kind(record.kind)


# ---------------------------------------------------------------- helpers
def _entry(cls: str, **config) -> dict:
    return {"class_name": cls, "config": config}


def _config(offset=0.5) -> dict:
    """Input (4, 5, 3) -> Scale -> LeakyReLU(0.1) -> Conv2D 1x1 (2) -> GMP."""
    return {"class_name": "Sequential", "config": {"name": "custom", "layers": [
        _entry("InputLayer", name="img", batch_shape=[None, 4, 5, 3]),
        _entry("Scale", name="scale", offset=offset),
        _entry("LeakyReLU", name="leaky", negative_slope=0.1),
        _entry("Conv2D", name="conv", filters=2, kernel_size=[1, 1],
               padding="valid", activation="linear"),
        _entry("GlobalMaxPooling2D", name="gmp"),
    ]}}


def _weights() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return {"scale": [rng.uniform(0.5, 2.0, (3,)).astype(np.float32)],
            "conv": [rng.normal(0, 1, (1, 1, 3, 2)).astype(np.float32),
                     rng.normal(0, 1, (2,)).astype(np.float32)]}


def _by_hand(x, w, offset=0.5, slope=0.1):
    y = x * w["scale"][0] + offset
    y = np.where(y >= 0, y, slope * y)
    y = np.einsum("nhwc,cd->nhwd", y, w["conv"][0][0, 0]) + w["conv"][1]
    return y.max(axis=(1, 2))


def _x(n=2):
    return np.random.default_rng(1).normal(0, 2, (n, 4, 5, 3)).astype(np.float32)


# ------------------------------------------------------------------ tests
def test_a_registered_kind_is_a_layer_kind_everywhere():
    assert "scale" in LAYER_KINDS and "leaky" in LAYER_KINDS
    assert SUPPORTED_LAYERS["Scale"] == "scale"
    assert SUPPORTED_LAYERS["LeakyReLU"] == "leaky"
    assert layer_kind("scale") is SCALE
    spec = Layer.make("s", "scale", offset=1.0)
    assert spec.param_names == ("gamma",)
    assert SHAPES["scale"](spec, ((4, 5, 3),)) == (4, 5, 3)
    model = ConvNet(layers=(spec, Layer.make("g", "gap")), input_shape=(4, 5, 3),
                    preprocessing="none")
    assert model.param_shapes() == {"s": {"gamma": (3,)}}
    params = model.init_params(jax.random.key(0))
    np.testing.assert_array_equal(params["s"]["gamma"], np.ones(3, np.float32))
    # pointwise: the receptive field of one pixel
    assert receptive_fields(model.layers, model.sources, (0,)) == {
        0: ((1, 1), (1, 1))}


def test_registration_errors():
    with pytest.raises(ValueError, match="'scale' is registered already"):
        register_layer_kind(SCALE)
    with pytest.raises(ValueError, match=r"Keras classes \{'Conv2D': 'conv'\}"):
        register_layer_kind(LayerKind("conv2", lambda net, spec, xs: xs[0],
                                      keras=("Conv2D",),
                                      from_keras=lambda k: k.layer()))
    with pytest.raises(ValueError, match="names params but has no param_shapes"):
        LayerKind("w", lambda net, spec, xs: xs[0], params=lambda s: ("w",))
    with pytest.raises(ValueError, match="are read by the importer itself"):
        LayerKind("inp", lambda net, spec, xs: xs[0], keras=("InputLayer",),
                  from_keras=lambda k: k.layer())
    with pytest.raises(ValueError, match="kind must be one of"):
        Layer.make("x", "no_such_kind")
    # replace=True swaps a record (and its Keras classes) in place
    other = LayerKind("leaky", LEAKY.apply, keras=("LeakyReLU",),
                      from_keras=LEAKY.from_keras)
    try:
        assert register_layer_kind(other, replace=True) is layer_kind("leaky")
    finally:
        register_layer_kind(LEAKY, replace=True)
    assert layer_kind("leaky") is LEAKY


def test_import_forward_export_round_trip(tmp_path):
    """Keras config -> ConvNet: values by hand; export (.keras and .h5) ->
    import gives the same layers, params and outputs, and is a fixed point."""
    model = convnet_from_keras_config(_config(), source="custom.json")
    assert [s.kind for s in model.layers] == ["scale", "leaky", "conv", "gmp"]
    assert model.layer("scale").opt("offset") == 0.5
    assert model.layer("leaky").opt("slope") == pytest.approx(0.1)
    w = _weights()
    params = params_from_keras_weights(model, w)
    x = _x()
    want = _by_hand(x, w)
    np.testing.assert_allclose(np.asarray(model.forward(params, x)), want,
                               rtol=1e-5, atol=1e-5)
    cfg = keras_config(model)["config"]["layers"]
    assert [e["class_name"] for e in cfg] == ["InputLayer", "Scale", "LeakyReLU",
                                              "Conv2D", "GlobalMaxPooling2D"]
    assert cfg[1]["config"]["offset"] == 0.5
    for fmt in ("keras", "h5"):
        path = save_keras_model(params, tmp_path / f"m.{fmt}", model=model)
        m2, p2 = load_keras_model(path)
        assert m2.layers == model.layers and m2.input_shape == model.input_shape
        assert jax.tree.structure(p2) == jax.tree.structure(params)
        for name, leaves in params.items():
            for pname, value in leaves.items():
                np.testing.assert_array_equal(p2[name][pname], value)
        np.testing.assert_array_equal(np.asarray(m2.forward(p2, x)),
                                      np.asarray(model.forward(params, x)))
        save_keras_model(p2, tmp_path / f"again.{fmt}", model=m2)
        m3, p3 = load_keras_model(tmp_path / f"again.{fmt}")
        assert m3 == m2
        np.testing.assert_array_equal(p3["scale"]["gamma"], w["scale"][0])


def test_a_kind_checks_its_keras_fields():
    with pytest.raises(ValueError, match=r"custom\.json: layer 'scale' \(Scale\) "
                                         r"has offset 'big'; expected a number\."):
        convnet_from_keras_config(_config(offset="big"), source="custom.json")
    unregister_layer_kind("scale")
    try:
        with pytest.raises(ValueError, match=r"layer 'scale' \(Scale\) is not "
                                             r"supported; supported layers: .*"):
            convnet_from_keras_config(_config(), source="custom.json")
    finally:
        register_layer_kind(SCALE)


@pytest.mark.keras
@pytest.mark.slow
def test_leaky_relu_kind_matches_keras_and_exports_to_keras(keras, tmp_path):
    """The test kind ``leaky`` equals Keras' LeakyReLU on a Keras-saved model,
    and the file save_keras_model writes loads in Keras with the same values."""
    L = keras.layers
    km = keras.Sequential([keras.Input((6, 6, 3)),
                           L.Conv2D(4, 3, padding="same", name="conv"),
                           L.LeakyReLU(negative_slope=0.15, name="leaky"),
                           L.GlobalAveragePooling2D(name="gap")], name="leaky_net")
    rng = np.random.default_rng(3)
    km.set_weights([rng.normal(0, 1, w.shape).astype(np.float32)
                    for w in km.weights])
    km.save(tmp_path / "k.keras")
    model, params = load_keras_model(tmp_path / "k.keras")
    assert model.layer("leaky").kind == "leaky"
    x = rng.normal(0, 1, (2, 6, 6, 3)).astype(np.float32)
    with jax.default_matmul_precision("float32"):
        np.testing.assert_allclose(np.asarray(model.forward(params, x)),
                                   np.asarray(km(x)), rtol=1e-5, atol=1e-5)
        path = save_keras_model(params, tmp_path / "ours.keras", model=model)
        back = keras.models.load_model(path)
        np.testing.assert_allclose(np.asarray(back(x)),
                                   np.asarray(model.forward(params, x)),
                                   rtol=1e-5, atol=1e-5)
