"""Hostile and odd inputs (issue 29): bounded reads, one-line errors, no
silent wrong pixels. Every malformed file is built here, small and cheap."""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.errors import InputError
from jaxconvviz.models import weights as W

from ._h5fixtures import keras_lists, write_keras3, write_released


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCONVVIZ_HOME", str(tmp_path / "store"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("JAXCONVVIZ_WEIGHTS_URL", "http://127.0.0.1:9/")
    monkeypatch.delenv("JAXCONVVIZ_MAX_WEIGHT_BYTES", raising=False)
    W.clear_hash_cache()


@pytest.fixture(scope="module")
def lists(tiny_model, tiny_params):
    return keras_lists(tiny_params, tiny_model)


def _released(path, model, lists):
    write_released(path, lists, model.layer_names)
    return path


def _replace(path, name, **create):
    with h5py.File(path, "a") as f:
        del f[name]
        f.create_dataset(name, **create)


# a declared shape of 256 MB that the file does not hold (3 kB on disk)
SPARSE = dict(shape=(1024, 1024, 64), dtype="f4")
# 10^9 filters of a 3x3x4 conv: 144 GB declared
HUGE = dict(shape=(3, 3, 4, 10**9), dtype="f4")

BAD_H5 = {
    # case: (dataset to replace or a custom edit, create kwargs, message pattern)
    "string": ("block1_conv1/block1_conv1_b_1:0",
               dict(data=np.array([b"abc"] * 4)),
               r"layer 'block1_conv1' weight 'block1_conv1_b_1:0' is a string dataset"),
    "huge": ("block1_conv1/block1_conv1_W_1:0", HUGE,
             r"layer 'block1_conv1' weight 'block1_conv1_W_1:0' \(shape "
             r"\(3, 3, 4, 1000000000\)\) declares 134\.1 GiB, .* past the ceiling"),
    "sparse": ("block2_conv1/block2_conv1_W_1:0", SPARSE,
               r"layer 'block2_conv1' weight 'block2_conv1_W_1:0' declares "
               r"268,435,456 bytes .* stores 0: a sparse"),
    "int": ("block1_conv1/block1_conv1_b_1:0", dict(data=np.arange(4)),
            r"layer 'block1_conv1' weight 'block1_conv1_b_1:0' has dtype int64"),
    "bomb": ("block2_conv1/block2_conv1_W_1:0",
             dict(data=np.zeros((1024, 1024, 16), np.float32), compression="gzip",
                  chunks=(256, 256, 16)),
             r"layer 'block2_conv1' weight 'block2_conv1_W_1:0' expands from"),
}


def _bad_h5(tmp_path, case, model, lists):
    p = _released(tmp_path / f"{case}.h5", model, lists)
    name, create, pattern = BAD_H5[case]
    _replace(p, name, **create)
    return p, pattern


def _one_line_error(call, pattern, label):
    with pytest.raises(InputError, match=pattern) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(label)), msg
    return msg


@pytest.mark.parametrize("case", sorted(BAD_H5))
@pytest.mark.parametrize("with_model", [True, False])
def test_bad_datasets_refused_before_reading(tmp_path, tiny_model, lists, case,
                                             with_model):
    if case == "int" and not with_model:
        pytest.skip("integer arrays are numbers; only a model says they must be floats")
    p, pattern = _bad_h5(tmp_path, case, tiny_model, lists)
    legit = _released(tmp_path / "legit.h5", tiny_model, lists).stat().st_size
    if with_model:  # the shape check comes first where the model knows better
        pattern = {"huge": r"kernel has shape \(3, 3, 4, 1000000000\); expected "
                           r"\(3, 3, 3, 4\)",
                   "sparse": r"kernel has shape \(1024, 1024, 64\); expected",
                   "bomb": r"kernel has shape \(1024, 1024, 16\); expected",
                   "int": r"has dtype int64; the model expects floats",
                   }.get(case, pattern)
        call = lambda: W.load_params(p, model=tiny_model)  # noqa: E731
    else:
        call = lambda: W.read_keras_weights(p)  # noqa: E731
    tracemalloc.start()
    try:
        _one_line_error(call, pattern, p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * legit, (peak, legit)


def test_huge_declared_dataset_through_load_vgg16(tmp_path, tiny_model, lists):
    p, _ = _bad_h5(tmp_path, "huge", tiny_model, lists)
    _one_line_error(lambda: jcv.load_vgg16(p), r"block1_conv1.* has shape "
                    r"\(3, 3, 4, 1000000000\); expected \(3, 3, 3, 64\)", p)


def test_architecture_cap_and_ceiling(tmp_path, tiny_model, lists, monkeypatch):
    p = _released(tmp_path / "w.h5", tiny_model, lists)
    # an extra layer the model does not have is not read at all
    with h5py.File(p, "a") as f:
        f.attrs["layer_names"] = np.append(f.attrs["layer_names"], b"extra")
        g = f.create_group("extra")
        g.attrs["weight_names"] = np.array([b"extra_W:0"])
        g.create_dataset("extra_W:0", **SPARSE)
    got = W.load_params(p, model=tiny_model)
    assert sorted(got) == sorted(lists)
    with pytest.raises(InputError, match="extra_W:0.* a sparse"):
        W.read_keras_weights(p)
    # the absolute ceiling: environment and keyword, named in the message
    monkeypatch.setenv(W.MAX_BYTES_ENV, "1K")
    msg = _one_line_error(lambda: W.read_keras_weights(p), r"over|past", p)
    assert "JAXCONVVIZ_MAX_WEIGHT_BYTES" in msg and "1.0 KiB" in msg
    monkeypatch.delenv(W.MAX_BYTES_ENV)
    assert W.weight_ceiling() == W.MAX_WEIGHT_BYTES == 4 << 30
    with pytest.raises(InputError, match="max_bytes must be"):
        W.read_keras_weights(p, max_bytes=0)
    got = W.load_params(p, model=tiny_model, max_bytes=1 << 20)
    assert sorted(got) == sorted(lists)
    monkeypatch.setenv(W.MAX_BYTES_ENV, "lots")
    with pytest.raises(InputError, match=r"\$JAXCONVVIZ_MAX_WEIGHT_BYTES must be"):
        W.read_keras_weights(p)


@pytest.mark.parametrize("case, edit, pattern", [
    ("layer_names_numbers", lambda f: f.attrs.__setitem__("layer_names", np.arange(3)),
     r"group '/': attribute 'layer_names' must be a list of strings; got int64"),
    ("weight_names_numbers",
     lambda f: f["block1_conv1"].attrs.__setitem__("weight_names", np.ones(2)),
     r"group '/block1_conv1': attribute 'weight_names' must be a list of strings"),
    ("missing_kernel", lambda f: f["block1_conv1"].__delitem__("block1_conv1_W_1:0"),
     r"layer 'block1_conv1' lists weight 'block1_conv1_W_1:0' but the file has no"),
    ("external", lambda f: (f["block1_conv1"].__delitem__("block1_conv1_b_1:0"),
                            f["block1_conv1"].create_dataset(
                                "block1_conv1_b_1:0", shape=(4,), dtype="f4",
                                external=[("/etc/hostname", 0, 16)])),
     r"weight 'block1_conv1_b_1:0' keeps its data outside this file \(external"),
])
def test_missing_and_mistyped_fields(tmp_path, tiny_model, lists, case, edit, pattern):
    p = _released(tmp_path / f"{case}.h5", tiny_model, lists)
    with h5py.File(p, "a") as f:
        edit(f)
    _one_line_error(lambda: W.read_keras_weights(p), pattern, p)
    _one_line_error(lambda: W.load_params(p, model=tiny_model), pattern, p)


def test_keras3_mistyped_name_and_string_dataset(tmp_path, tiny_model, lists):
    p = tmp_path / "k3.weights.h5"
    write_keras3(p, lists, tiny_model.layer_names)
    with h5py.File(p, "a") as f:
        f["layers/conv2d/vars"].attrs["name"] = 7
    _one_line_error(lambda: W.read_keras_weights(p),
                    r"group '/layers/conv2d/vars': attribute 'name' must be a "
                    r"string", p)
    write_keras3(p, lists, tiny_model.layer_names)
    _replace(p, "layers/conv2d/vars/1", data=np.array(["x"] * 4, dtype=object),
             dtype=h5py.string_dtype())
    _one_line_error(lambda: W.load_params(p, model=tiny_model),
                    r"layer 'block1_conv1' weight '/layers/conv2d/vars/1' is a "
                    r"string dataset", p)


def test_keras_archive_member_bomb(tmp_path):
    p = tmp_path / "bomb.keras"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("model.weights.h5", b"\0" * (64 << 20))
    assert p.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        msg = _one_line_error(lambda: W.read_keras_weights(p),
                              r"archive member 'model.weights.h5' expands", p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "zip bomb" in msg and peak < 2 * p.stat().st_size + (1 << 20), peak
    with zipfile.ZipFile(p) as zf:
        with pytest.raises(InputError, match="over the ceiling of 1.0 MiB"):
            W.read_zip_member(zf, "model.weights.h5", str(p), max_bytes=1 << 20)


def _npz(path, entries: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in entries.items():
            zf.writestr(k + ".npy", v)
    return path


def _npy(a, *, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=allow_pickle)
    return buf.getvalue()


def test_npz_pickle_is_refused_for_safety_not_damaged(tmp_path, tiny_model):
    p = _npz(tmp_path / "p.npz", {
        "block1_conv1/kernel": _npy(np.array([{"x": 1}], dtype=object),
                                    allow_pickle=True)})
    msg = _one_line_error(lambda: W.load_params(p, model=tiny_model),
                          r"entry 'block1_conv1/kernel' is a pickled object array",
                          p)
    assert "refused for safety" in msg and "damaged" not in msg


def test_npz_header_declaring_more_than_it_holds(tmp_path, tiny_model):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": (10**9,)})
    p = _npz(tmp_path / "h.npz", {"block1_conv1/bias": buf.getvalue() + b"\0" * 64})
    tracemalloc.start()
    try:
        _one_line_error(lambda: W.read_any(p), r"entry 'block1_conv1/bias' declares "
                        r"4,000,000,000 bytes .* holds", p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    _one_line_error(lambda: W.load_params(p, model=tiny_model),
                    r"entry 'block1_conv1/bias' has shape \(1000000000,\); the model "
                    r"expects \(4,\)", p)


# ------------------------------------------------------------------ images
def _png(w: int, h: int, *, depth: int = 8, color: int = 0, rows: bytes | None = None):
    """A PNG by hand: any declared size for a few bytes (rows=None: one row of
    data only, enough for the header to be read)."""
    import struct
    import zlib

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0)
    data = rows if rows is not None else b"\0" * (1 + w * depth // 8)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [20000, 12000, 8000])
def test_huge_image_refused_with_size_and_limit(tmp_path, side, recwarn):
    from PIL import Image

    p = tmp_path / f"huge{side}.png"
    p.write_bytes(_png(side, side))
    limit_before = Image.MAX_IMAGE_PIXELS
    tracemalloc.start()
    try:
        msg = _one_line_error(lambda: jcv.load_img(p), rf"is {side}x{side} = "
                              rf"{side * side:,} pixels, over the limit of 50,000,000",
                              repr(str(p)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "JAXCONVVIZ_MAX_IMAGE_PIXELS" in msg and "max_pixels=" in msg
    assert peak < 1 << 20 and Image.MAX_IMAGE_PIXELS == limit_before
    assert [str(w.message) for w in recwarn] == []  # no PIL DecompressionBombWarning



def test_image_limit_is_the_callers(tmp_path, monkeypatch):
    from PIL import Image

    p = tmp_path / "small.png"
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(p)
    with pytest.raises(InputError, match=r"is 50x40 = 2,000 pixels, over the limit "
                       r"of 1,999"):
        jcv.load_img(p, max_pixels=1999)
    monkeypatch.setenv("JAXCONVVIZ_MAX_IMAGE_PIXELS", "1999")
    with pytest.raises(InputError, match="over the limit of 1,999"):
        jcv.load_img(p)
    assert jcv.load_img(p, max_pixels=2000).shape == (40, 50, 3)


def test_16bit_png_scaled_not_clipped(tmp_path):
    from PIL import Image

    ramp = (np.arange(64 * 64, dtype=np.uint32) * 16).astype(np.uint16).reshape(64, 64)
    p = tmp_path / "grey16.png"
    Image.fromarray(ramp).save(p)
    assert Image.open(p).mode == "I;16"
    got = jcv.load_img(p)
    np.testing.assert_array_equal(got[..., 0], np.rint(ramp / 257.0))
    assert (got == 255).mean() < 0.01
    assert np.all(got[..., 0] == got[..., 2])
    # 16-bit RGB: high byte (Pillow's own scaling)
    rgb = np.zeros((32, 32, 3), ">u2")
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 0x8000, 0xFFFF, 0x0101
    rows = b"".join(b"\0" + rgb[i].tobytes() for i in range(32))
    q = tmp_path / "rgb16.png"
    q.write_bytes(_png(32, 32, depth=16, color=2, rows=rows))
    np.testing.assert_array_equal(jcv.load_img(q)[0, 0], [128, 255, 1])


def test_tiny_image_warns_before_upsampling(tmp_path):
    from PIL import Image

    p = tmp_path / "one.png"
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(p)
    with pytest.warns(jcv.errors.InputWarning, match=r"is only 1x1 px .* upsampled "
                      r"to 224x224"):
        a = jcv.load_img(p, target_size=(224, 224))
    assert a.shape == (224, 224, 3) and np.all(a == 200)
    with pytest.warns(jcv.errors.InputWarning, match="very few pixels"):
        jcv.load_img(p)
    import warnings

    q = tmp_path / "ok.png"
    Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(q)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jcv.load_img(q, target_size=(64, 64))


def test_pixel_range_check():
    import warnings

    from jaxconvviz.pixels import PixelRangeWarning, check_pixel_range

    x = np.random.default_rng(0).uniform(0, 1, (8, 8, 3)).astype(np.float32)
    with pytest.warns(PixelRangeWarning, match=r"looks scaled to \[0, 1\]; jaxconvviz "
                      r"expects RGB \[0, 255\] \(pass x \* 255\)"):
        check_pixel_range(x, name="images")
    with pytest.warns(PixelRangeWarning, match=r"scaled to \[-1, 1\]"):
        check_pixel_range(x * 2 - 1)
    import jax
    import jax.numpy as jnp

    with pytest.warns(PixelRangeWarning):
        check_pixel_range(jnp.asarray(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_pixel_range(x * 255)
        check_pixel_range(np.zeros((4, 4, 3)))  # a black image is not [0, 1]
        check_pixel_range(x - 123.0)  # caffe-preprocessed
        jax.jit(lambda a: (check_pixel_range(a), a)[1])(jnp.asarray(x))


# ----------------------------------------------------------- command line


def _vgg_skeleton(path, replace=None, attrs=None):
    """A VGG16 weights-only .h5 with every dataset declared at its true shape
    and none allocated (a few kB); ``replace``: {layer: create kwargs} for the
    kernel."""
    model = jcv.VGG16(include_top=False)
    shapes = model.param_shapes()
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in shapes])
        for layer, params in shapes.items():
            g = f.create_group(layer)
            names = [f"{layer}_{t}_1:0" for t in ("W", "b")]
            g.attrs["weight_names"] = np.array([n.encode() for n in names])
            for n, shape in zip(names, (params["kernel"], params["bias"]),
                                strict=True):
                kw = dict(shape=shape, dtype="f4")
                if replace and layer in replace and n.endswith("_W_1:0"):
                    kw = replace[layer]
                g.create_dataset(n, **kw)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
    return path


def _cli(argv, capsys):
    import time

    from jaxconvviz.cli import main

    t0 = time.perf_counter()
    code = main(argv)
    took = time.perf_counter() - t0
    out = capsys.readouterr()
    return code, out.err, out.out, took


def _assert_one_line(code, err, *needles):
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("jaxconvviz ") and ": error: " in err, err
    for n in needles:
        assert n in err, err


BAD_WEIGHTS = {
    "sparse": (dict(), r"weight 'block1_conv1_W_1:0' declares 6,912 bytes"),
    "string": (dict(replace={"block1_conv1": dict(data=np.full((3, 3, 3, 64), b"x"))}),
               "weight 'block1_conv1_W_1:0' is a string dataset"),
    "huge": (dict(replace={"block1_conv1": dict(shape=(3, 3, 3, 10**9), dtype="f4")}),
             "layer 'block1_conv1' kernel has shape (3, 3, 3, 1000000000); expected "
             "(3, 3, 3, 64)"),
    "mistyped": (dict(attrs={"backend": b"x", "layer_names": np.arange(3.0)}),
                 "attribute 'layer_names' must be a list of strings; got float64"),
}


@pytest.mark.parametrize("case", sorted(BAD_WEIGHTS))
def test_cli_malformed_weights_one_line(tmp_path, capsys, case):
    kwargs, needle = BAD_WEIGHTS[case]
    p = _vgg_skeleton(tmp_path / f"{case}.h5", **kwargs)
    out = tmp_path / "o"
    code, err, _, took = _cli(["kernels", "--weights", str(p), "--out", str(out)],
                              capsys)
    _assert_one_line(code, err, needle, str(p))
    assert "--weights must" not in err  # prose, not a flag
    assert not out.exists() and took < 30


def test_cli_pickle_npz_one_line(tmp_path, capsys):
    p = _npz(tmp_path / "p.npz", {
        "block1_conv1/kernel": _npy(np.array([1, "x"], dtype=object),
                                    allow_pickle=True)})
    code, err, _, _ = _cli(["kernels", "--weights", str(p), "--out",
                            str(tmp_path / "o")], capsys)
    _assert_one_line(code, err, "pickled object array", "refused for safety")


@pytest.fixture
def hed_env(monkeypatch, hed_path):
    monkeypatch.setenv("JAXCONVVIZ_HED_WEIGHTS", str(hed_path))


@pytest.mark.parametrize("case", ["text", "huge", "truncated"])
def test_cli_bad_images_one_line(tmp_path, capsys, hed_env, case):
    p = tmp_path / f"{case}.png"
    p.write_bytes({"text": b"not an image\n", "huge": _png(20000, 20000),
                   "truncated": _png(64, 64)[:40]}[case])
    out = tmp_path / "o" / "deeper"
    code, err, _, took = _cli(["activations", str(p), "--layers", "block1_conv1",
                               "--size", "32", "--out", str(out)], capsys)
    needle = {"text": "is not a readable image", "truncated": "is not a readable image",
              "huge": "is 20000x20000 = 400,000,000 pixels, over the limit of "
                      "50,000,000"}[case]
    _assert_one_line(code, err, needle)
    assert not (tmp_path / "o").exists() and took < 60


def test_cli_out_empty_string_refused(capsys, hed_env):
    code, err, _, _ = _cli(["kernels", "--out", ""], capsys)
    _assert_one_line(code, err, "--out must name a folder; got an empty string")


def _enospc_under(monkeypatch, folder):
    """fsync of any file under ``folder`` fails as on a full disk."""
    import errno
    import os

    real = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def test_cli_disk_full_after_compute_keeps_the_result(tmp_path, capsys, hed_env,
                                                       monkeypatch):
    from PIL import Image

    out = tmp_path / "new" / "out"
    _enospc_under(monkeypatch, tmp_path / "new")
    code, err, stdout, _ = _cli(["kernels", "--layer", "block1_conv1", "--out",
                                 str(out)], capsys)
    _assert_one_line(code, err, "could not write 2 files to", "No space left on device",
                     "the results are kept in")
    kept = err.rsplit("kept in '", 1)[1].split("'")[0]
    files = sorted(p.name for p in Path(kept).iterdir())
    assert files == ["kernels_block1_conv1.png", "weights_hist_block1_conv1.png"]
    for f in files:
        assert Image.open(Path(kept) / f).size[0] > 100
        assert f"wrote {kept}/{f}" in stdout
    assert not (tmp_path / "new").exists()  # no empty --out left behind


def test_cli_unwritable_file_in_a_writable_folder(tmp_path, capsys, hed_env):
    (tmp_path / "kernels_block1_conv1.png").mkdir()  # passes the folder probe
    code, err, _, _ = _cli(["kernels", "--layer", "block1_conv1", "--out",
                            str(tmp_path)], capsys)
    _assert_one_line(code, err, "could not write 1 file to", "Is a directory")
    assert (tmp_path / "weights_hist_block1_conv1.png").is_file()
    kept = Path(err.rsplit("kept in '", 1)[1].split("'")[0])
    assert (kept / "kernels_block1_conv1.png").is_file()


def test_cli_environment_oserror_is_one_line(tmp_path, capsys, hed_env, monkeypatch):
    import errno

    from jaxconvviz.commands import kernels

    def boom(args):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "x"))
    monkeypatch.setattr(kernels, "run", boom)  # main() builds its parser per call
    code, err, _, _ = _cli(["kernels", "--out", str(tmp_path / "o")], capsys)
    _assert_one_line(code, err, "Read-only file system")


def test_cli_warnings_are_one_plain_line(tmp_path, capsys, hed_env):
    from PIL import Image

    p = tmp_path / "dot.png"
    Image.fromarray(np.full((2, 2, 3), 90, np.uint8)).save(p)
    code, err, _, _ = _cli(["activations", str(p), "--layers", "block1_conv1",
                            "--size", "32", "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if "warning" in ln.lower()]
    assert lines == [f"jaxconvviz activations: warning: {str(p)!r} is only 2x2 px "
                     f"(under 32 on a side): upsampled to 32x32; the result shows "
                     f"the interpolation more than the image."], err
    assert ".py:" not in err and "InputWarning" not in err


# ------------------------------------------------------------- smaller items
def test_activation_figure_numbers_channels_and_counts_solid_tiles():
    from jaxconvviz.plotting import plot_activation_grid, solid_channels

    rng = np.random.default_rng(3)
    a = rng.uniform(0, 5, size=(6, 4, 20)).astype(np.float32)
    a[..., [2, 7, 19]] = 0.0  # channels that are zero on this image
    g = np.asarray(jcv.activation_grid(a))
    assert solid_channels(g, (6, 4), 20) == [2, 7, 19]
    fig = plot_activation_grid(g, layer="block2_conv2", tile_hw=(6, 4), n_channels=20)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "16"]
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"+{c}" for c in range(16)]
    assert ax.get_xlabel() == ("channel = row label + column; 3 of 20 tiles are "
                               "solid: channels that are zero (constant) on this "
                               "image")
    # row 1 column 3 is channel 19: its tile is flat
    tile = np.asarray(ax.images[0].get_array())[6:12, 12:16]
    assert tile.min() == tile.max()


def test_fetch_vgg16_offline_names_its_own_command(capsys, tmp_path):
    from jaxconvviz.cli import main

    assert main(["weights", "fetch", "vgg16", "--no-progress"]) == 2
    err = capsys.readouterr().err
    _assert_one_line(2, err, "Fetch it when online with `jaxconvviz weights fetch "
                     "vgg16`")
    assert main(["weights", "fetch", "vgg16", "--notop", "--no-progress"]) == 2
    assert "`jaxconvviz weights fetch vgg16 --notop`" in capsys.readouterr().err
    assert main(["weights", "fetch", "imagenet", "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert "note: 'imagenet' fetches VGG16 without the classifier, as `jaxconvviz " \
        "weights fetch vgg16 --notop`" in out
    assert "`jaxconvviz weights fetch imagenet`" in err  # the name the user typed


def test_fetch_help_says_what_each_name_fetches(capsys):
    from jaxconvviz.cli import main

    with pytest.raises(SystemExit):
        main(["weights", "fetch", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "'imagenet' is the older name of `vgg16 --notop`" in text


def test_activation_grids_warn_on_a_0_1_image(tiny_model, tiny_params):
    from jaxconvviz.pixels import PixelRangeWarning
    from jaxconvviz.views.activation_grids import layer_activation_grids

    x = np.random.default_rng(1).uniform(0, 1, (32, 32, 3)).astype(np.float32)
    with pytest.warns(PixelRangeWarning, match=r"image_rgb has values in .* expects "
                      r"RGB \[0, 255\]"):
        layer_activation_grids(tiny_params, x, layers=["block1_conv1"],
                               model=tiny_model)


def test_report_disk_full_keeps_the_pages_written(tmp_path, capsys, hed_env,
                                                  monkeypatch):
    import errno

    import jaxconvviz.report as report_pkg

    def build_report(out, *args, **kwargs):
        (Path(out) / "index.html").write_text("<html>half</html>")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(report_pkg, "build_report", build_report)
    dest = tmp_path / "rep"
    code, err, _, _ = _cli(["report", "--out", str(dest), "--layers", "block1_conv1",
                            "--filters-per-layer", "1", "--size", "32"], capsys)
    _assert_one_line(code, err, "could not write the report to",
                     "No space left on device", "the 1 file written so far is "
                     "kept in")
    kept = Path(err.rsplit("kept in '", 1)[1].split("'")[0])
    assert (kept / "index.html").read_text() == "<html>half</html>"
    assert not dest.exists()
