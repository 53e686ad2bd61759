"""Hostile and odd inputs (issue 29), part 2: bounded ``.keras`` reading
through ``load_keras_model``, Keras configs validated field by field, the
pixel-range warning at every technique's entry point, and dead-filter advice
that matches the layer's kind."""

from __future__ import annotations

import json
import tracemalloc
import zipfile

import h5py
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.errors import InputError
from jaxconvviz.models import weights as W


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCONVVIZ_HOME", str(tmp_path / "store"))
    monkeypatch.delenv("JAXCONVVIZ_MAX_WEIGHT_BYTES", raising=False)


@pytest.fixture(scope="module")
def saved(tiny_model, tiny_params, tmp_path_factory):
    """(config dict, model.weights.h5 bytes) of the tiny VGG16 as a .keras."""
    from jaxconvviz.models.keras_export import save_keras_model

    p = tmp_path_factory.mktemp("k") / "tiny.keras"
    save_keras_model(tiny_params, p, model=tiny_model)
    with zipfile.ZipFile(p) as zf:
        return json.loads(zf.read("config.json")), zf.read("model.weights.h5")


def _keras(path, config, weights: bytes, *, stored: bool = False):
    mode = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w", mode) as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", weights)
    return path


def _one_line(call, pattern, label):
    with pytest.raises(InputError, match=pattern) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(label)), msg
    return msg


def test_keras_roundtrip_still_loads(tmp_path, saved, tiny_model, tiny_params):
    p = _keras(tmp_path / "ok.keras", *saved)
    model, params = jcv.load_keras_model(p)
    assert model.layer_names == tiny_model.layer_names
    np.testing.assert_array_equal(params["block1_conv1"]["kernel"],
                                  tiny_params["block1_conv1"]["kernel"])


def test_keras_zip_bomb_member_streamed_and_refused(tmp_path, saved):
    config, _ = saved
    p = _keras(tmp_path / "bomb.keras", config, b"\0" * (64 << 20))
    assert p.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        # the architecture's cap (1.7 MiB for the tiny VGG16) refuses it
        # first; without a model the zip-bomb ratio does (test_hostile.py)
        msg = _one_line(lambda: jcv.load_keras_model(p),
                        r"archive member 'model.weights.h5' declares 64.0 MiB, "
                        r"over the cap of", p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "architecture" in msg
    assert peak < 2 * p.stat().st_size + (4 << 20), peak


def test_keras_member_over_the_ceiling_override(tmp_path, saved, monkeypatch):
    config, _ = saved
    p = _keras(tmp_path / "big.keras", config, b"\0" * (2 << 20), stored=True)
    monkeypatch.setenv(W.MAX_BYTES_ENV, "1M")
    tracemalloc.start()
    try:
        msg = _one_line(lambda: jcv.load_keras_model(p),
                        r"archive member '(config.json|model.weights.h5)' declares "
                        r"2.0 MiB, over the ceiling of 1.0 MiB", p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "JAXCONVVIZ_MAX_WEIGHT_BYTES" in msg and peak < 1 << 20, peak


def test_keras_weights_member_capped_by_the_architecture(tmp_path, saved, tiny_model):
    """The tiny VGG16 needs ~0.2 MiB of weights: a ``model.weights.h5`` member
    declaring 24 MiB (the real file padded, compression ratio ~ 1, so no
    zip-bomb rule fires, far under the 4 GiB ceiling) is refused from its
    header against what the architecture needs, before any byte is
    inflated; the absolute ceiling still bounds it when lower."""
    config, blob = saved
    pad = np.random.default_rng(0).bytes(24 << 20)  # incompressible
    p = _keras(tmp_path / "padded.keras", config, blob + pad)
    tracemalloc.start()
    try:
        _one_line(lambda: jcv.load_keras_model(p),
                        r"archive member 'model.weights.h5' declares 24\.\d MiB, "
                        r"over the cap of \d\.\d MiB \(what the model's architecture "
                        r"needs plus a margin\)", p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak
    shapes = [s for e in W.expected_shapes(tiny_model).values() for s in e.values()]
    cap, why = W.limits.member_cap(shapes)
    assert cap < 4 << 20 and "architecture" in why
    # the absolute ceiling wins when it is the lower one, and says how to raise it
    cap, why = W.limits.member_cap(shapes, max_bytes=1 << 16)
    assert cap == 1 << 16 and W.MAX_BYTES_ENV in why
    assert W.limits.member_cap(None)[0] == W.MAX_WEIGHT_BYTES


def test_keras_huge_declared_dataset_refused_by_the_models_shape(tmp_path, saved):
    config, blob = saved
    h5 = tmp_path / "w.h5"
    h5.write_bytes(blob)
    with h5py.File(h5, "a") as f:
        g = f["layers/conv2d/vars"]
        assert g.attrs["name"] == "block1_conv1"
        del g["0"]
        g.create_dataset("0", shape=(3, 3, 3, 10**6), dtype="f4")  # 108 MB, sparse
    p = _keras(tmp_path / "huge.keras", config, h5.read_bytes())
    tracemalloc.start()
    try:
        _one_line(lambda: jcv.load_keras_model(p),
                  r"layer 'block1_conv1' kernel has shape \(3, 3, 3, 1000000\); "
                  r"expected \(3, 3, 3, 4\)", p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak


def _conv_entry(config, name="block1_conv1"):
    return next(e for e in config["config"]["layers"]
                if e["config"]["name"] == name)["config"]


CONFIG_CASES = {
    "filters_string": (lambda c: c.__setitem__("filters", "abc"),
                       r"layer 'block1_conv1' \(Conv2D\) has 'filters': 'abc'; "
                       r"expected an int >= 1"),
    "filters_missing": (lambda c: c.pop("filters"),
                        r"layer 'block1_conv1' \(Conv2D\) has no 'filters'"),
    "filters_null": (lambda c: c.__setitem__("filters", None),
                     r"layer 'block1_conv1' \(Conv2D\) has 'filters': None"),
    "kernel_size_missing": (lambda c: c.pop("kernel_size"),
                            r"layer 'block1_conv1' \(Conv2D\) has no 'kernel_size'"),
    "kernel_size_string": (lambda c: c.__setitem__("kernel_size", "abc"),
                           r"layer 'block1_conv1' \(Conv2D\) has 'kernel_size': 'abc'"),
    "strides_zero": (lambda c: c.__setitem__("strides", [0, 0]),
                     r"layer 'block1_conv1' \(Conv2D\) has 'strides': \[0, 0\]"),
    "use_bias_string": (lambda c: c.__setitem__("use_bias", "false"),
                        r"layer 'block1_conv1' \(Conv2D\) has 'use_bias': 'false'; "
                        r"expected true or false"),
    "groups_string": (lambda c: c.__setitem__("groups", "abc"),
                      r"layer 'block1_conv1' \(Conv2D\) has 'groups': 'abc'"),
    "pool_size_float": (lambda c: None, None),  # filled below (another layer)
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_keras_config_mistyped_fields_are_one_line(tmp_path, saved, case):
    import copy

    config, blob = saved
    config = copy.deepcopy(config)
    edit, pattern = CONFIG_CASES[case]
    if case == "pool_size_float":
        _conv_entry(config, "block1_pool")["pool_size"] = 1.5
        pattern = r"layer 'block1_pool' \(MaxPooling2D\) has 'pool_size': 1.5"
    else:
        edit(_conv_entry(config))
    p = _keras(tmp_path / f"{case}.keras", config, blob)
    _one_line(lambda: jcv.load_keras_model(p), pattern, p)


@pytest.mark.parametrize("entry, pattern", [
    ({"class_name": "Dense", "config": {"name": "d", "units": "10"}},
     r"layer 'd' \(Dense\) has 'units': '10'; expected an int >= 1"),
    ({"class_name": "Dropout", "config": {"name": "d", "rate": "x"}},
     r"layer 'd' \(Dropout\) has 'rate': 'x'; expected a number in \[0.0, 1.0\]"),
    ({"class_name": "BatchNormalization", "config": {"name": "b", "epsilon": -1}},
     r"layer 'b' \(BatchNormalization\) has 'epsilon': -1; expected a number "
     r"in \[0.0, inf\]"),
    ({"class_name": "ZeroPadding2D", "config": {"name": "z", "padding": [1, 2, 3]}},
     r"layer 'z' \(ZeroPadding2D\) has 'padding': \[1, 2, 3\]"),
    ({"class_name": "Reshape", "config": {"name": "r", "target_shape": 5}},
     r"layer 'r' \(Reshape\) has 'target_shape': 5"),
    ({"class_name": "Cropping2D", "config": {"name": "c", "cropping": 40}},
     r"layer 'c' \(Cropping2D\) would output shape \(-48, -48, 3\)"),
    ({"class_name": "ReLU", "config": {"name": "r", "max_value": "six"}},
     r"layer 'r' \(ReLU\) has 'max_value': 'six'"),
    ({"class_name": "Rescaling", "config": {"name": "r", "scale": {}}},
     r"layer 'r' \(Rescaling\) has 'scale': \{\}"),
])
def test_keras_config_fields_checked_per_kind(entry, pattern):
    from jaxconvviz.models.keras_import import convnet_from_keras_config

    config = {"class_name": "Sequential", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer",
         "config": {"name": "in", "batch_shape": [None, 32, 32, 3]}}, entry]}}
    _one_line(lambda: convnet_from_keras_config(config, source="m.keras"),
              pattern, "m.keras")


@pytest.mark.parametrize("shape", [[None, "a", 32, 3], 7, [None, 32, 32, -3]])
def test_keras_config_bad_input_shape(shape):
    from jaxconvviz.models.keras_import import convnet_from_keras_config

    config = {"class_name": "Sequential", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "config": {"name": "in", "batch_shape": shape}},
        {"class_name": "Flatten", "config": {"name": "f"}}]}}
    _one_line(lambda: convnet_from_keras_config(config, source="m.keras"),
              r"model input has batch shape .*; expected images", "m.keras")


# ------------------------------------------------------------- pixel range
ENTRY_POINTS = {
    "cam": lambda p, x, m: jcv.cam(p, x, model=m),
    "cam_with_scores": lambda p, x, m: jcv.cam_with_scores(p, x, model=m,
                                                           method="gradcam++"),
    "grad_cam": lambda p, x, m: jcv.grad_cam(p, x, model=m),
    "attribution": lambda p, x, m: jcv.attribution(p, x, model=m),
    "activations": lambda p, x, m: jcv.activations(p, x, layers="block1_conv1",
                                                   model=m),
    "predict": lambda p, x, m: jcv.predict(p, x, model=m),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_entry_points_warn_once_on_a_0_1_image(entry, tiny_model, tiny_params):
    import warnings

    from jaxconvviz.pixels import PixelRangeWarning

    call = ENTRY_POINTS[entry]
    x = np.random.default_rng(3).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        call(tiny_params, x, tiny_model)
    pixel = [w for w in got if issubclass(w.category, PixelRangeWarning)]
    assert len(pixel) == 1, [str(w.message) for w in got]
    assert "images_rgb has values in" in str(pixel[0].message)
    assert "expects RGB [0, 255] (pass x * 255)" in str(pixel[0].message)
    assert pixel[0].filename == __file__  # the user's line, not the library's
    with warnings.catch_warnings():
        warnings.simplefilter("error", PixelRangeWarning)
        call(tiny_params, x * 255, tiny_model)


# ------------------------------------------------------- dead-filter advice
@pytest.fixture(scope="module")
def silent_conv3(tiny_params):
    """The tiny VGG16 with filters 0-3 of block3_conv3 silent on any image
    (bias -1e4): block3_pool's channels 0-3 are zero, with no gradient."""
    b = tiny_params["block3_conv3"]
    return dict(tiny_params, block3_conv3=dict(b, bias=b["bias"].at[:4].set(-1e4)))


def test_dead_filter_advice_on_a_pooling_layer(tiny_model, silent_conv3):
    import jax

    from jaxconvviz.featureviz.progress import DeadFilterWarning

    with pytest.warns(DeadFilterWarning) as got:
        jcv.render(silent_conv3, "block3_pool", list(range(8)),
                   key=jax.random.key(0), style=jcv.Book(size=32, steps=3),
                   model=tiny_model)
    (msg,) = [str(w.message) for w in got if w.category is DeadFilterWarning]
    assert "4 of 8 filters of block3_pool" in msg and "[0, 1, 2, 3]" in msg, msg
    assert ("block3_pool is a pooling layer, with no pre-ReLU objective of its own: "
            "its response is the max of the ReLU output of 'block3_conv3', so "
            "filters silent on the start image stay silent; visualise "
            "'block3_conv3' instead") in msg, msg
    assert "pre-activation response has no gradient" not in msg, msg
    assert "other weights" not in msg, msg
    assert got[0].filename == __file__


def test_dead_filter_advice_kept_for_conv_layers(tiny_model):
    from jaxconvviz.featureviz.progress import dead_filter_hint

    hint = dead_filter_hint(tiny_model, "block3_conv3", pre_activation=True)
    assert "pre-activation response has no gradient" in hint
    assert "pre_activation=True (the default) revives them" in dead_filter_hint(
        tiny_model, "block3_conv3", pre_activation=False)
    assert "the mean of the ReLU output of 'block5_conv3'" in dead_filter_hint(
        _avg_tiny(), "block5_pool", pre_activation=True)


def _avg_tiny():
    import dataclasses

    m = jcv.tiny_vgg16(include_top=False)
    layers = tuple(dataclasses.replace(s, kind="avgpool") if s.kind == "maxpool"
                   else s for s in m.layers)
    return dataclasses.replace(m, layers=layers)


def test_cli_atlas_dead_pool_filters_line(tmp_path, capsys, tiny_model, silent_conv3):
    from jaxconvviz.cli import main
    from jaxconvviz.models.keras_export import save_keras_model

    p = save_keras_model(silent_conv3, tmp_path / "silent.keras", model=tiny_model)
    code = main(["atlas", "--model", str(p), "--layer", "block3_pool",
                 "--filters", "0:8", "--size", "32", "--steps", "3",
                 "--out", str(tmp_path / "out")])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 0, text
    assert "pre-ReLU response rose" not in text, text
    assert "block3_pool: 4 of 8 filters end with zero response; block3_pool is a " \
        "pooling layer" in " ".join(text.split()), text


@pytest.mark.parametrize("case", ["filters_string", "strides_zero"])
def test_cli_keras_config_error_is_one_line_exit_2(tmp_path, capsys, saved, case):
    import copy

    from jaxconvviz.cli import main

    config, blob = saved
    config = copy.deepcopy(config)
    CONFIG_CASES[case][0](_conv_entry(config))
    p = _keras(tmp_path / f"{case}.keras", config, blob)
    code = main(["kernels", "--model", str(p), "--layer", "block1_conv1",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{p}: layer 'block1_conv1' (Conv2D) has '" in err, err
    assert "--filters" not in err and "--strides" not in err, err
