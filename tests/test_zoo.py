"""The model zoo: shipped configs, official files, loopback downloads, CLI.

No test touches the internet: the download base URL points at a dead local
port unless a test serves files from ``http.server`` on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import re
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.cli import main
from jaxconvviz.commands import common
from jaxconvviz.models import weights as W
from jaxconvviz.models import zoo

from ._h5fixtures import write_released

DEAD_URL = "http://127.0.0.1:9/"  # discard port: connection refused at once
KERAS_SRC = None
_spec = importlib.util.find_spec("keras")
if _spec is not None and _spec.submodule_search_locations:
    KERAS_SRC = Path(list(_spec.submodule_search_locations)[0]) / "src" / "applications"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Private store and Keras cache, dead download URL, fresh hash cache."""
    (tmp_path / "keras" / "models").mkdir(parents=True)
    monkeypatch.setenv("JAXCONVVIZ_HOME", str(tmp_path / "store"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("JAXCONVVIZ_WEIGHTS_URL", DEAD_URL)
    W.clear_hash_cache()


def _md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------- official files
def test_vgg16_md5_and_size_are_the_published_ones():
    top, notop = W.IMAGENET_FILES[True], W.IMAGENET_FILES[False]
    assert (top.md5, notop.md5) == ("64373286793e3c8b2b4e3219cbf3544b",
                                    "6d6bbae143d832006294945121d1f1fc")
    # Sizes from Keras' own download logs of these URLs (KERAS-WEIGHTS.md).
    assert (top.size, notop.size) == (553_467_096, 58_889_256)
    assert top.describe_size() == "553,467,096 bytes (527.8 MiB)"
    assert notop.describe_size() == "58,889,256 bytes (56.2 MiB)"
    assert W.KERAS_FILES["vgg16"] is W.IMAGENET_FILES
    if KERAS_SRC is None:
        pytest.skip("keras not installed: the sources cannot be compared")
    src = (KERAS_SRC / "vgg16.py").read_text()
    assert re.findall(r'file_hash="([0-9a-f]+)"', src) == [top.md5, notop.md5]


def _inline_hashes(path: Path) -> dict[str, str]:
    """``{fname: file_hash}`` of the ``get_file("fname", URL, ...,
    file_hash="...")`` calls of a Keras applications source file."""
    text = path.read_text()
    return dict(re.findall(r'get_file\(\s*"([^"]+\.h5)",\s*\w+,\s*'
                           r'cache_subdir="models",\s*file_hash="([0-9a-f]+)"',
                           text))


def test_keras_files_are_the_ones_keras_downloads(keras):
    """Every URL and hash equals Keras 3's sources (keras/src/applications)."""
    from keras.src.applications import (
        convnext,
        densenet,
        efficientnet,
        inception_v3,
        mobilenet_v2,
        mobilenet_v3,
        resnet,
        vgg16,
        vgg19,
        xception,
    )

    F = W.KERAS_FILES
    assert set(F) == set(zoo.APPLICATIONS)

    def urls(name):
        return F[name][True].url or W.BASE_URL + F[name][True].fname, (
            F[name][False].url or W.BASE_URL + F[name][False].fname)

    for name in ("resnet50", "resnet50v2"):
        for top, i in ((True, 0), (False, 1)):
            spec = F[name][top]
            assert spec.md5 == resnet.WEIGHTS_HASHES[name][i]
            suffix = "" if top else "_notop"
            assert spec.fname == f"{name}_weights_tf_dim_ordering_tf_kernels{suffix}.h5"
            assert spec.url == resnet.BASE_WEIGHTS_PATH + spec.fname
    mb2 = F["mobilenet_v2"]
    assert mb2[True].url == mobilenet_v2.BASE_WEIGHT_PATH + (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5")
    assert mb2[False].url == mobilenet_v2.BASE_WEIGHT_PATH + (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
    # Keras publishes no hash for MobileNetV2: none is invented here.
    assert "file_hash" not in Path(mobilenet_v2.__file__).read_text()
    assert mb2[True].digest is None and mb2[False].digest is None
    mb3 = F["mobilenet_v3_small"]
    assert (mb3[True].md5, mb3[False].md5) == mobilenet_v3.WEIGHTS_HASHES[
        "small_224_1.0_float"]
    assert mb3[True].url == mobilenet_v3.BASE_WEIGHT_PATH + (
        "weights_mobilenet_v3_small_224_1.0_float.h5")
    assert mb3[False].url == mobilenet_v3.BASE_WEIGHT_PATH + (
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5")
    eff = F["efficientnet_b0"]
    assert (eff[True].md5, eff[False].md5) == efficientnet.WEIGHTS_HASHES["b0"]
    assert urls("efficientnet_b0") == (
        efficientnet.BASE_WEIGHTS_PATH + "efficientnetb0.h5",
        efficientnet.BASE_WEIGHTS_PATH + "efficientnetb0_notop.h5")
    cnx = F["convnext_tiny"]
    assert (cnx[True].sha256, cnx[False].sha256) == convnext.WEIGHTS_HASHES[
        "convnext_tiny"]
    assert cnx[True].digest[0] == "sha256" and cnx[True].md5 is None
    assert urls("convnext_tiny") == (
        convnext.BASE_WEIGHTS_PATH + "convnext_tiny.h5",
        convnext.BASE_WEIGHTS_PATH + "convnext_tiny_notop.h5")
    assert urls("densenet121") == (densenet.DENSENET121_WEIGHT_PATH,
                                   densenet.DENSENET121_WEIGHT_PATH_NO_TOP)
    for name, mod in (("xception", xception), ("inception_v3", inception_v3),
                      ("vgg16", vgg16), ("vgg19", vgg19)):
        assert urls(name) == (mod.WEIGHTS_PATH, mod.WEIGHTS_PATH_NO_TOP), name
    for name, mod in (("densenet121", densenet), ("xception", xception),
                      ("inception_v3", inception_v3), ("vgg16", vgg16),
                      ("vgg19", vgg19)):
        hashes = _inline_hashes(Path(mod.__file__))
        for top in (True, False):
            assert hashes[F[name][top].fname] == F[name][top].md5, (name, top)


# ------------------------------------------------------------- configs
def test_shipped_configs_are_the_keras_architectures():
    expected_last = {"convnext_tiny": "convnext_tiny_head_dense"}
    for name, app in zoo.APPLICATIONS.items():
        for top in (True, False):
            cfg = zoo.application_config(name, top)
            assert cfg["class_name"] == "Functional"
            assert cfg["keras_version"] == "3.15.1"
            layers = cfg["config"]["layers"]
            assert layers[0]["class_name"] == "InputLayer"
            shape = layers[0]["config"]["batch_shape"]
            if top and not app.top_any_size:
                assert shape == [None, app.default_size, app.default_size, 3], name
                assert layers[-1]["config"]["name"] == expected_last.get(
                    name, "predictions"), name
            else:
                assert shape == [None, None, None, 3], (name, top)
            names = [la["config"]["name"] for la in layers]
            assert len(names) == len(set(names)), name
            if not top:  # the notop graph is the top graph minus its head
                top_names = [la["config"]["name"] for la in
                             zoo.application_config(name, True)["config"]["layers"]]
                # ConvNeXt without top ends in an auto-named LayerNormalization
                extra = set(names) - set(top_names)
                assert extra == ({"layer_normalization"} if name == "convnext_tiny"
                                 else set()), name
    # EfficientNet as built for ImageNet weights: the extra Rescaling by
    # 1/sqrt(stddev) (Keras adds it only when weights="imagenet").
    layers = zoo.application_config("efficientnet_b0")["config"]["layers"]
    scales = [la["config"]["scale"] for la in layers[:4]
              if la["class_name"] == "Rescaling"]
    np.testing.assert_allclose(scales[1], [1 / np.sqrt(s) for s in
                                           (0.229, 0.224, 0.225)], rtol=1e-6)


@pytest.mark.slow
def test_configs_regenerate_unchanged_from_keras(keras):
    """scripts/gen_zoo_configs.py rebuilds the shipped configs byte for byte
    (VGG16 here; ``python scripts/gen_zoo_configs.py --check`` does all 22)."""
    shipped_version = zoo.application_config("vgg16")["keras_version"]
    if keras.__version__ != shipped_version:
        pytest.skip(f"the configs come from Keras {shipped_version}, this is "
                    f"{keras.__version__}: rerun scripts/gen_zoo_configs.py")
    gen = _load_script("gen_zoo_configs")
    for top in (True, False):
        fresh = gzip.decompress(gen.encode(gen.config_for("vgg16", top)))
        shipped = gzip.decompress(zoo.config_path("vgg16", top).read_bytes())
        assert fresh == shipped, top
    assert gen.CONFIG_DIR == zoo.CONFIG_DIR
    assert set(gen.CONSTRUCTORS) == set(zoo.APPLICATIONS)
    assert {k: a.keras_name for k, a in zoo.APPLICATIONS.items()} == gen.CONSTRUCTORS


def _load_script(name: str):
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.hed
@pytest.mark.slow
def test_zoo_vgg16_is_the_builtin_vgg16(hed_params):
    model = zoo.build_application("vgg16", include_top=False, input_size=32)
    params = hed_params
    assert model.preprocessing == "caffe"
    assert [s.name for s in model.layers] == list(jcv.VGG16(False).layer_names)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    with jax.default_matmul_precision("float32"):
        ours = np.asarray(model.forward(params, model.preprocess(x)))
        ref = np.asarray(jcv.VGG16(False).forward(params, jcv.preprocess_input(x)))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    assert ref.std() > 0


# ------------------------------------------------------- argument checks
def test_bad_arguments_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"got 'resnet5'; did you mean 'resnet50'\?"):
        jcv.load_application("resnet5")
    with pytest.raises(ValueError, match=r"got 'imagnet'; did you mean 'imagenet'"):
        jcv.load_application("vgg16", weights="imagnet")
    with pytest.raises(ValueError, match=r"'\.' is a directory, not a weights file"):
        jcv.load_application("vgg16", weights=".")
    with pytest.raises(FileNotFoundError, match=r"nope\.h5"):
        jcv.load_application("vgg16", weights=str(tmp_path / "nope.h5"))
    with pytest.raises(TypeError, match="weights must be 'imagenet', None or a path"):
        jcv.load_application("vgg16", weights=3)
    with pytest.raises(ValueError, match=r"input_size must be 299 for xception with "
                       r"include_top=True"):
        jcv.load_application("xception", input_size=224)
    with pytest.raises(ValueError, match=r"at least 75 for inception_v3"):
        jcv.load_application("inception_v3", include_top=False, input_size=64)
    with pytest.raises(TypeError, match=r"input_size must be an int or"):
        jcv.load_application("vgg16", include_top=False, input_size=(32, 32, 3))
    assert jcv.APPLICATIONS["densenet121"].preprocessing == "torch"
    assert [a.preprocessing for a in jcv.APPLICATIONS.values()] == [
        "caffe", "tf", "tf", "none", "none", "torch", "tf", "tf", "caffe", "caffe",
        "none"]


def test_missing_weights_say_the_command_that_fetches_them():
    with pytest.raises(FileNotFoundError) as e:
        jcv.load_application("resnet50", download=False)
    msg = str(e.value)
    assert "`jaxconvviz weights fetch resnet50`" in msg
    assert "resnet50_weights_tf_dim_ordering_tf_kernels.h5, 102,967,424 bytes " \
        "(98.2 MiB)" in msg
    assert "download=True" in msg
    with pytest.raises(FileNotFoundError, match=r"fetch mobilenet_v2 --notop"):
        jcv.load_application("mobilenet_v2", include_top=False, download=False)
    # Online attempt with no network: the error says how to get the file.
    with pytest.raises(OSError, match=r"cannot download .*weights fetch densenet121"
                       r"`, or copy the official densenet121_weights"):
        jcv.load_application("densenet121", progress=False)
    assert not W.store_dir().exists() or not any(W.store_dir().iterdir())
    cli = W.missing_weights_message("imagenet", True, download_flag="--download")
    assert "`jaxconvviz weights fetch imagenet --top`" in cli
    assert "553,467,096 bytes (527.8 MiB)" in cli and cli.endswith(
        "or pass --download to download them now.")


# ------------------------------------------------------------ loopback
@pytest.fixture
def server(loopback_http, monkeypatch):
    srv = loopback_http
    monkeypatch.setenv("JAXCONVVIZ_WEIGHTS_URL",
                       f"http://127.0.0.1:{srv.server_address[1]}/mirror")
    srv.serve = lambda data, name, mode="ok": srv.routes.__setitem__(
        "mirror/" + name, (data, mode))
    return srv


def _loopback_app() -> tuple[str, int]:
    """The application the loopback tests download: MobileNetV3Small (4 MB
    of weights) once graph import supports it, else VGG19 (a chain)."""
    try:
        zoo.build_application("mobilenet_v3_small", include_top=False, input_size=32)
        return "mobilenet_v3_small", 32
    except ValueError:
        return "vgg19", 32


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """(name, size, path, {layer: [arrays]}): a random-weights file of one
    application in the layout of the official files (tf.keras 2
    ``save_weights``: root ``layer_names``, ``<layer>/<layer>/kernel:0``),
    named as the official notop file."""
    name, size = _loopback_app()
    model = zoo.build_application(name, include_top=False, input_size=size)
    shapes = jax.eval_shape(model.init_params, jax.random.key(0))
    rng = np.random.default_rng(5)
    lists = {}
    for spec in model.layers:
        if spec.param_names:
            lists[spec.name] = [
                rng.normal(0, 0.2, shapes[spec.name][p].shape).astype(np.float32)
                + (1.0 if p == "moving_variance" else 0.0)
                for p in spec.param_names]
    fname = W.KERAS_FILES[name][False].fname
    path = tmp_path_factory.mktemp("official") / fname
    write_released(path, lists, [s.name for s in model.layers], style="tf2")
    return name, size, path, lists


@pytest.fixture
def patched(official, monkeypatch):
    """KERAS_FILES expects the synthetic file (its MD5 and size)."""
    name, size, path, lists = official
    spec = W.KERAS_FILES[name][False]
    monkeypatch.setitem(W.KERAS_FILES[name], False, W.KerasFile(
        spec.fname, _md5(path), path.stat().st_size, spec.url))
    return official


def _check_params(params, lists):
    assert sorted(params) == sorted(lists)
    for layer, arrays in lists.items():
        for a, b in zip(params[layer].values(), arrays, strict=True):
            np.testing.assert_array_equal(np.asarray(a), b, err_msg=layer)


def test_loopback_download_then_offline_and_keras_cache(patched, server, tmp_path,
                                                        capsys):
    name, size, path, lists = patched
    spec = W.KERAS_FILES[name][False]
    server.serve(path.read_bytes(), spec.fname)
    with pytest.raises(FileNotFoundError, match=f"weights fetch {name} --notop"):
        jcv.load_application(name, include_top=False, input_size=size,
                             download=False)
    assert server.hits == []
    model, params = jcv.load_application(name, include_top=False, input_size=size,
                                         progress=False)
    assert server.hits == [f"/mirror/{spec.fname}"]
    _check_params(params, lists)
    stored = W.store_dir() / spec.fname
    assert sorted(p.name for p in W.store_dir().iterdir()) == [spec.fname]
    assert _md5(stored) == spec.md5
    # Again: no network (the store copy, size then MD5 checked).
    W.clear_hash_cache()
    assert W.application_available(name, False) == stored
    _check_params(jcv.load_application(name, include_top=False,
                                       input_size=size)[1], lists)
    assert len(server.hits) == 1
    # The CLI lists it and fetching again downloads nothing.
    assert main(["weights", "fetch", name, "--notop", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"ImageNet {name} weights (without classifier): {stored}")
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert f"  {name} notop: {stored}\n" in out
    assert "  resnet50 top: not downloaded (jaxconvviz weights fetch resnet50; " \
        "102,967,424 bytes (98.2 MiB))" in out
    assert len(server.hits) == 1
    # A file in the Keras cache wins and is used in place (no copy).
    stored.unlink()
    cached = tmp_path / "keras" / "models" / spec.fname
    cached.symlink_to(path)
    W.clear_hash_cache()
    assert W.application_available(name, False) == cached
    _check_params(jcv.load_application(name, include_top=False,
                                       input_size=size)[1], lists)
    assert len(server.hits) == 1 and not stored.exists()


@pytest.mark.parametrize("damage, pattern", [
    ("flip", r"MD5 [0-9a-f]{32} does not match the published"),
    ("nolength", r"got [0-9,]+ bytes, but the official .* has [0-9,]+ bytes"),
    ("extra", r"the server announces [0-9,]+ bytes, but the official"),
])
def test_damaged_downloads_are_rejected_and_leave_nothing(patched, server, damage,
                                                          pattern, tmp_path):
    name, size, path, lists = patched
    spec = W.KERAS_FILES[name][False]
    data = bytearray(path.read_bytes())
    mode = "ok"
    if damage == "flip":  # same size, one byte changed: only the hash sees it
        data[len(data) // 2] ^= 0xFF
    elif damage == "nolength":  # no Content-Length, cut in half
        mode = "nolength"
    else:
        data += b"\0" * 16
    server.serve(bytes(data), spec.fname, mode)
    with pytest.raises(ValueError, match=pattern):
        W.fetch_application(name, False, progress=False)
    store = W.store_dir()
    assert not store.exists() or list(store.iterdir()) == []
    # A damaged copy in the Keras cache is not used either (size, then hash).
    bad = tmp_path / "keras" / "models" / spec.fname
    bad.write_bytes(bytes(data[: len(data) // 2]) if damage == "nolength"
                    else bytes(data))
    assert W.application_available(name, False) is None
    with pytest.raises(FileNotFoundError, match=f"weights fetch {name} --notop"):
        jcv.load_application(name, include_top=False, input_size=size,
                             download=False)


def test_notop_model_uses_a_local_file_with_the_classifier(official, monkeypatch,
                                                           tmp_path):
    """Without a notop file, a local top file serves include_top=False (it
    holds every convolutional layer); nothing is downloaded."""
    name, size, path, lists = official
    top = W.KERAS_FILES[name][True]
    monkeypatch.setitem(W.KERAS_FILES[name], True, W.KerasFile(
        top.fname, _md5(path), path.stat().st_size, top.url))
    (tmp_path / "keras" / "models" / top.fname).symlink_to(path)
    assert W.application_available(name, False) is None
    model, params = jcv.load_application(name, include_top=False, input_size=size,
                                         download=False)
    _check_params(params, lists)


def test_official_files_with_other_layer_names_load_in_keras_order(official,
                                                                   tmp_path):
    """Keras loads .h5 weight files by order; so does the zoo when the names
    differ (and only when every shape then fits)."""
    name, size, path, lists = official
    model = zoo.build_application(name, include_top=False, input_size=size)
    renamed = {f"old_{i}": v for i, v in enumerate(lists.values())}
    p = tmp_path / "renamed.h5"
    write_released(p, renamed, list(renamed), style="tf2")
    params = zoo.params_from_file(model, p)
    _check_params(params, lists)
    # One array short, or a shape that does not fit: the by-name error.
    short = dict(renamed)
    short.popitem()
    write_released(p, short, list(short), style="tf2")
    with pytest.raises(ValueError, match=r"no weights for layer"):
        zoo.params_from_file(model, p)
    first = next(iter(renamed))
    bad = dict(renamed, **{first: [a[..., :1] for a in renamed[first]]})
    write_released(p, bad, list(bad), style="tf2")
    with pytest.raises(ValueError, match=r"no weights for layer"):
        zoo.params_from_file(model, p)


def test_no_published_hash_records_the_download(server, monkeypatch, tmp_path):
    """MobileNetV2's files have no published hash: the size is checked, the
    SHA-256 of the download is recorded and checked on later use."""
    body = b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4
    spec = W.KerasFile("mbv2.h5", None, len(body), "https://x/mbv2.h5")
    monkeypatch.setitem(W.KERAS_FILES["mobilenet_v2"], False, spec)
    server.serve(body, "mbv2.h5")
    got = W.fetch_application("mobilenet_v2", False, progress=False)
    record = W.read_sidecar(got)
    assert record["sha256"] == hashlib.sha256(body).hexdigest()
    assert record["published_hash"] is None
    assert W.application_available("mobilenet_v2", False) == got
    got.write_bytes(body[:-1] + b"\1")  # same size, other bytes
    W.clear_hash_cache()
    assert W.application_available("mobilenet_v2", False) is None


# ------------------------------------------------------------------ CLI
def _model_args(argv):
    p = argparse.ArgumentParser()
    common.add_model_args(p)
    return p.parse_args(argv)


@pytest.mark.slow
def test_cli_model_flag_takes_application_names(patched, server, capsys, tmp_path):
    name, size, path, lists = patched
    spec = W.KERAS_FILES[name][False]
    server.serve(path.read_bytes(), spec.fname)
    with pytest.raises(common.CLIError, match=rf"`jaxconvviz weights fetch {name} "
                       r"--notop`.*or pass --download to download them now\."):
        common.load_model_and_params(_model_args(["--model", name]),
                                     include_top=False)
    assert server.hits == []
    with pytest.raises(common.CLIError, match=r"got 'resnet5'; did you mean "
                       r"'resnet50'\?"):
        common.load_model_and_params(_model_args(["--model", "resnet5"]),
                                     include_top=False)
    with pytest.raises(common.CLIError, match=r"fetch imagenet --top`"):
        common.load_model_and_params(_model_args(["--weights", "imagenet"]),
                                     include_top=True)
    model, params, desc = common.load_model_and_params(
        _model_args(["--model", name, "--download"]), include_top=False)
    assert server.hits == [f"/mirror/{spec.fname}"]
    assert desc == f"{name} with ImageNet weights (without classifier)"
    assert model.preprocessing == zoo.APPLICATIONS[name].preprocessing
    _check_params(params, lists)
    # A real subcommand with --model NAME (the weights are local now).
    out = tmp_path / "k"
    assert main(["kernels", "--model", name, "--out", str(out)]) == 0
    capsys.readouterr()
    first = model.conv_layers[0]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert any(first in p for p in pngs), pngs
    assert main(["weights", "fetch", "resnet5"]) == 2
    assert "did you mean 'resnet50'?" in capsys.readouterr().err
    assert main(["weights", "fetch", "imagnet"]) == 2
    assert "did you mean 'imagenet'?" in capsys.readouterr().err


def test_lazy_exports():
    assert jcv.load_application is zoo.load_application
    assert jcv.APPLICATIONS is zoo.APPLICATIONS
    assert json.loads(json.dumps(list(jcv.APPLICATIONS))) == list(W.KERAS_FILES)
