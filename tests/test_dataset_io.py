"""Dataset IO: sources (order, refusals), decode (Keras' pixels, transforms),
iterate (bad files, shards, resume) and atomic checkpoints."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxconvviz._atomic import atomic_write
from jaxconvviz.dataset import checkpoint
from jaxconvviz.dataset.loader import (
    BadImageWarning,
    default_workers,
    iterate,
    shard_positions,
)
from jaxconvviz.dataset.sources import (
    DEMO_PHOTOS,
    BadImage,
    Transform,
    decode,
    open_source,
    probe,
)
from jaxconvviz.errors import InputError, InputTypeError, InputWarning
from jaxconvviz.images import CAT_PHOTO, load_img

from ._dataset_fixtures import make_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs"))


def _collect(ds, **kw):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        batches = list(iterate(ds, **kw))
    return batches, [x for x in w if issubclass(x.category, BadImageWarning)]


# ------------------------------------------------------------------ sources
def test_folder_order_is_sorted_recursive_and_skips_non_images(folder):
    ds = open_source(folder.root)
    assert ds.paths == folder.files
    assert len(ds) == len(folder.files) == 24 + 6 + 8 + 4
    assert [ds.name(i) for i in range(len(ds))] == folder.files
    names = [Path(p).relative_to(folder.root).as_posix() for p in ds.paths]
    assert names[3] == "003_empty.jpg" and names[9] == "009_truncated.jpg"
    assert names[-6:] == sorted(names[-6:]) and all(n.startswith("sub/")
                                                    for n in names[-6:])
    assert not any(".hidden" in n or n.endswith(".txt") or ".cache" in n for n in names)
    assert folder.bad_indices == [3, 9, 14, 20]
    # str, Path and the same folder again: the same order and fingerprint.
    assert open_source(str(folder.root)).fingerprint() == ds.fingerprint()


def test_glob_list_txt_and_single_file(folder, tmp_path):
    pngs = open_source(str(folder.root / "*.png"))
    assert pngs.paths == sorted(p for p in folder.files
                                if p.endswith(".png") and "/sub/" not in p)
    deep = open_source(str(folder.root / "**" / "*blob*"))
    assert deep.paths == [p for p in folder.files if "/sub/" in p]
    order = [folder.files[5], folder.files[0], folder.files[2]]
    assert open_source(order).paths == order  # a list keeps its order
    assert open_source(tuple(Path(p) for p in order)).paths == order
    lst = tmp_path / "list.txt"
    rel = os.path.relpath(folder.files[1], tmp_path)
    lst.write_text(f"# comment\n{folder.files[4]}\n\n  {rel}  \n")
    ds = open_source(lst)
    assert [os.path.realpath(p) for p in ds.paths] == [
        os.path.realpath(folder.files[4]), os.path.realpath(folder.files[1])]
    one = open_source(CAT_PHOTO)
    assert one.paths == [str(CAT_PHOTO)] and len(one) == 1


def test_refused_before_any_compute(tmp_path, folder):
    (tmp_path / "empty").mkdir()
    (tmp_path / "noimg").mkdir()
    (tmp_path / "noimg" / "a.txt").write_text("x")
    with pytest.raises(InputError, match="no images in folder"):
        open_source(tmp_path / "empty", what="SOURCE")
    with pytest.raises(InputError, match=r"^SOURCE: no images"):
        open_source(tmp_path / "noimg", what="SOURCE")
    with pytest.raises(InputError, match="does not exist"):
        open_source(tmp_path / "nope")
    with pytest.raises(InputError, match="no file matches"):
        open_source(str(tmp_path / "*.jpg"))
    with pytest.raises(InputError, match=r"1 of 2 listed paths are not files: "
                                         r"'.*missing.jpg'"):
        open_source([folder.files[0], str(tmp_path / "missing.jpg")])
    with pytest.raises(InputError, match="no images in the empty list"):
        open_source([])
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(InputError, match="no images in list file"):
        open_source(tmp_path / "empty.txt")
    with pytest.raises(InputError, match=r"\(n, h, w, 3\).*\(4, 8, 8\)"):
        open_source(np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(InputError, match="dtype complex64"):
        open_source(np.zeros((1, 8, 8, 3), np.complex64))
    with pytest.raises(InputError, match="no images"):
        open_source(np.zeros((0, 8, 8, 3), np.uint8))
    with pytest.raises(InputTypeError, match="got int"):
        open_source(3)
    with pytest.raises(InputTypeError, match="type int"):
        open_source([folder.files[0], 5])
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        (locked / "a.jpg").write_bytes(b"")
        locked.chmod(0)
        try:
            with pytest.raises(InputError, match="cannot read folder"):
                open_source(locked)
        finally:
            locked.chmod(0o755)


def test_unreadable_subfolder_warns_and_unreadable_root_refuses(tmp_path, monkeypatch):
    from jaxconvviz.dataset import sources

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    real = os.walk

    def walk(top, onerror=None, **kw):
        onerror(PermissionError(13, "Permission denied", str(tmp_path / "sub")))
        yield from real(top, onerror=onerror, **kw)

    monkeypatch.setattr(sources.os, "walk", walk)
    with pytest.warns(InputWarning, match=r"1 folder\(s\) under .* cannot be read "
                                          r"\('.*sub': Permission denied\)"):
        assert len(open_source(tmp_path)) == 1
    (tmp_path / "a.png").unlink()
    with pytest.raises(InputError, match="cannot read folder '.*sub': Permission"):
        open_source(tmp_path)


def test_probe_refuses_a_source_of_only_unreadable_files(tmp_path, folder):
    for k in range(5):
        (tmp_path / f"{k}.jpg").write_text("not a jpeg")
    ds = open_source(tmp_path, what="SOURCE")
    with pytest.raises(InputError, match=r"^SOURCE: none of the 4 images tried can be "
                                         r"read \(of 5\): .*0.jpg: .*cannot identify"):
        probe(ds)
    probe(open_source(folder.root))  # bad files among good ones: fine
    probe(open_source([folder.files[3], folder.files[4]]))  # the 2nd decodes


def test_odd_file_names(tmp_path):
    """Spaces, non-ASCII, a newline and bytes that are not UTF-8 in names:
    listed, fingerprinted, decoded; a bad one warns on one line."""
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "a b.png")
    Image.new("RGB", (8, 8), (4, 5, 6)).save(tmp_path / "é.png")
    (tmp_path / "new\nline.jpg").write_bytes(b"")
    fd = os.open(os.fsencode(str(tmp_path)) + b"/\xff.png", os.O_WRONLY | os.O_CREAT)
    os.close(fd)
    ds = open_source(tmp_path)
    assert len(ds) == 4 and len(ds.fingerprint()) == 64
    batches, warned = _collect(ds, size=8, batch_size=4, workers=2)
    assert [ds.name(i).rsplit("/", 1)[1] for i in batches[0].index if i >= 0] == [
        "a b.png", "é.png"]
    assert batches[0].images[0, 0, 0].tolist() == [1, 2, 3]
    assert len(warned) == 2 and all("\n" not in str(w.message) for w in warned)


def test_fingerprint_tracks_names_and_sizes(tmp_path):
    for k in range(3):
        Image.new("RGB", (8, 8), (k, 0, 0)).save(tmp_path / f"{k}.png")
    f0 = open_source(tmp_path).fingerprint()
    assert open_source(tmp_path).fingerprint() == f0
    Image.new("RGB", (9, 8)).save(tmp_path / "1.png")  # same name, new size
    f1 = open_source(tmp_path).fingerprint()
    Image.new("RGB", (8, 8)).save(tmp_path / "3.png")
    f2 = open_source(tmp_path).fingerprint()
    assert len({f0, f1, f2}) == 3
    x = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    y = x.copy()
    y[1, 2, 3, 0] += 1
    assert open_source(x).fingerprint() == open_source(x.copy()).fingerprint()
    assert open_source(x).fingerprint() != open_source(y).fingerprint()
    assert open_source(x).paths is None and open_source(x).name(1) == "array[1]"
    assert open_source(tmp_path).root == str(tmp_path)


def test_demo_photos_are_small_licensed_and_all_decode():
    ds = open_source(DEMO_PHOTOS)
    assert len(ds) == 37
    notes = (DEMO_PHOTOS.parent / "LICENSE-NOTES.md").read_text()
    stems = {Path(p).stem.rsplit("_", 1)[0] for p in ds.paths}
    assert len(stems) == 10 and all(f"`{s}_0" in notes for s in stems)
    assert sum(os.path.getsize(p) for p in ds.paths) < 400_000
    means = []
    for i in range(len(ds)):
        assert os.path.getsize(ds.name(i)) <= 20_000
        a, t = decode(ds, i, size=224)
        assert t.orig_hw == (160, 160)
        means.append(a.reshape(-1, 3).mean(0))
    assert np.ptp(np.array(means), axis=0).min() > 60  # varied photos, not one


# ------------------------------------------------------------------- decode
@pytest.mark.parametrize("size", [64, 224])
def test_decode_equals_keras_load_img(folder, keras, size):
    """Every good file, every format: the pixels of Keras' ``load_img(path,
    target_size=(size, size))`` + ``img_to_array`` (16-bit: jcv's load_img,
    which scales where Pillow's convert clips)."""
    ds = open_source(folder.root)
    for i in folder.good_indices:
        a, t = decode(ds, i, size=size)
        path = ds.name(i)
        assert a.dtype == np.uint8 and a.shape == (size, size, 3)
        if "grey16" in path:
            want = load_img(path, target_size=(size, size))
        else:
            want = keras.utils.img_to_array(
                keras.utils.load_img(path, target_size=(size, size)))
        np.testing.assert_array_equal(a, want, err_msg=path)
        with Image.open(path) as im:
            assert t.orig_hw == (im.height, im.width)
        assert t.scale == (im.height / size, im.width / size)


def test_decode_special_formats_by_value(folder):
    ds = open_source(folder.root)
    by_note = {note: folder.files.index(p) for p, note in folder.special.items()}
    # 16-bit grey: 0..65535 along the image -> 0..255 (scaled, not clipped).
    a, t = decode(ds, by_note["16-bit grey PNG"], size=90)
    g16 = np.linspace(0, 65535, 90 * 70).reshape(70, 90).astype(np.uint16)
    rows = np.floor((np.arange(90) + 0.5) * 70 / 90).astype(int)
    want = np.rint(g16[rows].astype(np.float64) * 255 / 65535).astype(np.uint8)
    np.testing.assert_array_equal(a[..., 0], want)
    assert t.orig_hw == (70, 90) and a[0, 0, 0] == 0 and a[-1, -1, 0] == 255
    # GIF: the first frame, not the second (255 - first).
    a, _ = decode(ds, by_note["GIF (2 frames)"], size=120)
    with Image.open(CAT_PHOTO) as im:
        base = np.asarray(im.convert("RGB"))[:120, :160]
    first = np.asarray(Image.fromarray(base).resize((120, 120), Image.NEAREST))
    assert np.abs(a.astype(int) - first).mean() < 12  # GIF palette quantisation
    assert np.abs(a.astype(int) - (255 - first)).mean() > 60
    # BMP is lossless: exactly the crop, resized by the nearest rule.
    a, _ = decode(ds, by_note["BMP"], size=120)
    np.testing.assert_array_equal(a, first)


def test_decode_bad_files_raise_badimage_with_reason(folder):
    ds = open_source(folder.root)
    expect = {"empty": "cannot identify image file", "truncated": "truncated",
              "text": "cannot identify image file",
              "huge": "100000x100000 = 10,000,000,000 pixels, over the limit"}
    for i in folder.bad_indices:
        kind = folder.bad[ds.name(i)]
        t0 = time.perf_counter()
        with pytest.raises(BadImage) as e:
            decode(ds, i, size=64)
        assert time.perf_counter() - t0 < 1.0  # the bomb is refused from its header
        assert isinstance(e.value, ValueError) and expect[kind] in e.value.reason
        assert "\n" not in e.value.reason


def test_fuzzed_files_are_decoded_or_bad_never_an_error(tmp_path):
    """Random byte flips and cuts of every format: decode returns an image or
    raises BadImage, and iterate accounts for every index exactly once."""
    rng = np.random.default_rng(7)
    with Image.open(CAT_PHOTO) as im:
        base = im.convert("RGB").crop((100, 50, 164, 98))
    blobs = {}
    for fmt, ext in [("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif"),
                     ("WEBP", "webp"), ("BMP", "bmp")]:
        buf = __import__("io").BytesIO()
        base.save(buf, format=fmt)
        blobs[ext] = buf.getvalue()
    k = 0
    for ext, data in blobs.items():
        for _ in range(12):
            b = bytearray(data)
            if rng.random() < 0.5:
                b = b[: int(rng.integers(1, len(b)))]
            else:
                where = rng.integers(min(8, len(b) - 1), len(b), size=8)
                b_arr = np.frombuffer(bytes(b), np.uint8).copy()
                b_arr[where] = rng.integers(0, 256, size=8)
                b = bytearray(b_arr.tobytes())
            (tmp_path / f"{k:03d}.{ext}").write_bytes(bytes(b))
            k += 1
    ds = open_source(tmp_path)
    assert len(ds) == 60
    outcome = {}
    for i in range(len(ds)):
        try:
            a, _ = decode(ds, i, size=24)
            assert a.shape == (24, 24, 3) and a.dtype == np.uint8
            outcome[i] = "ok"
        except BadImage as e:
            assert e.reason and "\n" not in e.reason
            outcome[i] = "bad"
    assert "bad" in outcome.values()
    batches, warned = _collect(ds, size=24, batch_size=7, workers=2)
    index = np.concatenate([b.index for b in batches])
    bad = [i for b in batches for i, _, _ in b.bad]
    assert sorted(index[index >= 0].tolist() + bad) == list(range(len(ds)))
    assert bad == [i for i, v in outcome.items() if v == "bad"]
    assert len(warned) == len(bad)


def test_decode_respects_pixel_limit_env(monkeypatch, folder):
    ds = open_source(folder.root)
    i = folder.good_indices[0]
    monkeypatch.setenv("JAXCONVVIZ_MAX_IMAGE_PIXELS", "100")
    with pytest.raises(BadImage, match="over the limit of 100"):
        decode(ds, i, size=8)


def test_decoding_threads_leave_warnings_and_pillow_state_alone(folder, monkeypatch):
    """Pillow's own bomb limit (a global, here 1,000 pixels) is neither used
    nor changed, nothing touches the process-wide warning filters from a
    worker thread, and the only warnings are the bad files'."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        batches = list(iterate(folder.root, size=16, batch_size=3, workers=4))
    assert Image.MAX_IMAGE_PIXELS == 1000 and warnings.filters == filters
    assert [type(x.message) for x in w] == [BadImageWarning] * 4
    index = np.concatenate([b.index for b in batches])
    assert (index >= 0).sum() == len(folder.good_indices)


def test_transform_maps_boxes_to_original_pixels():
    """Chelsea (300 x 451) at 224: hand-computed boxes, and every model-input
    pixel is the original pixel Pillow's nearest filter sampled, which lies
    in ``to_original`` of that pixel's 1x1 box."""
    ds = open_source(CAT_PHOTO)
    a, t = decode(ds, 0, size=224)
    assert t == Transform((300, 451), (300 / 224, 451 / 224), (0.0, 0.0))
    # y: 0 -> 0, 10 * 300/224 = 13.39 -> 14; x: 100 * 451/224 = 201.3 -> 201,
    # 112 * 451/224 = 225.5 -> 226.
    assert t.to_original(0, 10, 100, 112) == (0, 14, 201, 226)
    # Reaching past the input (a receptive field): clipped to the image.
    assert t.to_original(-5, 3, 220, 240) == (0, 5, 442, 451)
    assert t.to_original(-20, -10, 0, 224) == (0, 0, 0, 451)  # empty in y
    assert t.to_original(0, 224, 0, 224) == (0, 300, 0, 451)
    orig = np.asarray(Image.open(CAT_PHOTO).convert("RGB"))
    for y in range(0, 224, 7):
        for x in range(0, 224, 5):
            y0, y1, x0, x1 = t.to_original(y, y + 1, x, x + 1)
            sy, sx = int((y + 0.5) * 300 / 224), int((x + 0.5) * 451 / 224)
            assert y0 <= sy < y1 and x0 <= sx < x1
            np.testing.assert_array_equal(a[y, x], orig[sy, sx])
    row = t.as_array()
    assert row.dtype == np.float32 and row.shape == (6,)
    back = Transform.from_array(row)
    assert back.orig_hw == (300, 451)
    assert back.to_original(0, 10, 100, 112) == (0, 14, 201, 226)
    assert back.to_original(-5, 3, 220, 240) == (0, 5, 442, 451)
    # Storing as float32 loses nothing for the Keras rule, whatever the sizes.
    rng = np.random.default_rng(3)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 5000, 2))
        size = int(rng.choice([32, 64, 96, 224, 299, 331, 512]))
        t = Transform.resize((h, w), size)
        assert Transform.from_array(t.as_array()) == t
        y0, x0 = rng.integers(-50, size, 2)
        assert t.to_original(y0, y0 + 17, x0, x0 + 33)[1] <= h
    odd = Transform((10, 20), (0.5, 0.25), (3.0, 1.0))  # a non-Keras transform
    assert Transform.from_array(odd.as_array()) == odd
    assert odd.to_original(0, 4, 0, 8) == (3, 5, 1, 3)


def test_array_and_grain_sources_decode_by_the_same_rule(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (3, 40, 30, 3)).astype(np.uint8)
    ds = open_source(x.astype(np.float32) + 0.2)  # float: rounded to uint8
    a, t = decode(ds, 1, size=16)
    want = np.asarray(Image.fromarray(x[1]).resize((16, 16), Image.NEAREST))
    np.testing.assert_array_equal(a, want)
    assert t.orig_hw == (40, 30)
    a, _ = decode(open_source(x), 2, size=40)  # (40, 30) is not square: resized
    np.testing.assert_array_equal(
        a, np.asarray(Image.fromarray(x[2]).resize((40, 40), Image.NEAREST)))
    with pytest.warns(Warning, match=r"\[0, 1\]"):
        open_source(x / 255.0)

    import grain.sources

    path = tmp_path / "a.png"
    Image.fromarray(x[0]).save(path)

    class Src(grain.sources.RandomAccessDataSource):
        items = [x[0], str(path), np.zeros((5,), np.uint8), None, x[1][..., 0]]

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            if self.items[i] is None:
                raise KeyError(f"record {i} is gone")
            return self.items[i]

    ds = open_source(Src())
    assert len(ds) == 5 and ds.paths is None and ds.name(3) == "array[3]"
    np.testing.assert_array_equal(decode(ds, 0, size=40)[0],
                                  decode(ds, 1, size=40)[0])
    with pytest.raises(BadImage, match=r"shape \(5,\)"):
        decode(ds, 2, size=8)
    with pytest.raises(BadImage, match="record 3 is gone"):
        decode(ds, 3, size=8)
    grey = decode(ds, 4, size=40)[0]  # (h, w) grey -> RGB
    np.testing.assert_array_equal(grey[..., 2], np.asarray(
        Image.fromarray(x[1][..., 0]).resize((40, 40), Image.NEAREST)))


# ------------------------------------------------------------------ iterate
@pytest.mark.parametrize("workers", [0, 3])
def test_iterate_skips_bad_files_once_and_keeps_indices(folder, workers):
    ds = open_source(folder.root)
    n = len(ds)
    batches, warned = _collect(ds, size=32, batch_size=5, workers=workers)
    assert len(batches) == -(-n // 5)
    index = np.concatenate([b.index for b in batches])
    want = np.array([-1 if i in folder.bad_indices else i for i in range(n)]
                    + [-1] * (5 * len(batches) - n))
    np.testing.assert_array_equal(index, want)
    bad = [x for b in batches for x in b.bad]
    assert [(i, name) for i, name, _ in bad] == [
        (i, folder.files[i]) for i in folder.bad_indices]
    assert [b.end for b in batches] == [min(5 * (s + 1), n)
                                        for s in range(len(batches))]
    # One warning per bad file, one line each, naming index and file.
    assert len(warned) == 4
    for (i, name, reason), w in zip(bad, warned, strict=True):
        msg = str(w.message)
        assert "\n" not in msg and f"image {i} " in msg
        assert repr(name) in msg and reason in msg
    images = np.concatenate([b.images for b in batches])
    transforms = np.concatenate([b.transforms for b in batches])
    for i in range(len(index)):
        if index[i] >= 0:
            a, t = decode(ds, i, size=32)
            np.testing.assert_array_equal(images[i], a)
            np.testing.assert_array_equal(transforms[i], t.as_array())
        else:
            assert not images[i].any() and not transforms[i].any()


@pytest.mark.parametrize("count,batch_size,start", [
    (1, 4, 0), (2, 4, 0), (3, 7, 5), (2, 1, 3), (4, 5, 0), (3, 16, 0)])
def test_iterate_shards_cover_every_index_exactly_once(count, batch_size, start):
    n = 37
    x = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3),
                                                                     np.uint8)
    per_rank = [list(iterate(x, size=4, batch_size=batch_size, start=start,
                             shard=(r, count), workers=2)) for r in range(count)]
    steps = {len(b) for b in per_rank}
    assert steps == {-(-(n - start) // (batch_size * count))}  # same on every rank
    seen = []
    for r, batches in enumerate(per_rank):
        for s, b in enumerate(batches):
            p = start + s * batch_size * count + r * batch_size
            want = np.arange(p, p + batch_size)
            np.testing.assert_array_equal(b.index, np.where(want < n, want, -1))
            assert b.end == min(start + (s + 1) * batch_size * count, n)
            ok = b.index >= 0
            # the pixels are the image's own index: nothing mixed up
            np.testing.assert_array_equal(b.images[ok][:, 0, 0, 0], b.index[ok])
            assert not b.images[~ok].any()
            seen.extend(b.index[ok].tolist())
    assert sorted(seen) == list(range(start, n))  # every index exactly once
    pos = shard_positions(n, batch_size=batch_size, start=start, shard=(0, count))
    np.testing.assert_array_equal(pos[:, 0], [start + s * batch_size * count
                                              for s in range(len(pos))])


def test_iterate_decodes_ahead_while_the_consumer_computes():
    """A source whose reads take 50 ms (I/O: the GIL is free) and a consumer
    that 'computes' 200 ms per batch of 4: serial, 16 images cost 0.8 s of
    reading + 0.8 s of compute; grain's threads read ahead during compute."""
    x = np.arange(16, dtype=np.uint8)[:, None, None, None] * np.ones((1, 8, 8, 3),
                                                                     np.uint8)

    class Slow:
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            time.sleep(0.05)
            return x[i]

    def run(workers):
        t = time.perf_counter()
        seen = []
        for b in iterate(Slow(), size=8, batch_size=4, workers=workers, prefetch=2):
            time.sleep(0.2)
            seen.extend(b.index.tolist())
        assert seen == list(range(16))
        return time.perf_counter() - t

    import grain  # noqa: F401 -- imported once, outside the timing

    serial, overlapped = run(0), run(4)
    assert serial >= 1.6
    assert overlapped < 0.75 * serial, (serial, overlapped)


def test_iterate_stops_its_threads_when_the_consumer_stops(folder):
    import threading

    def grain_threads():
        return [t for t in threading.enumerate() if t.name.startswith("grain")]

    it = iterate(folder.root, size=16, batch_size=2, workers=3)
    first = next(it)
    assert first.index.tolist() == [0, 1]
    it.close()  # what a break, an exception or Ctrl-C in the loop does
    deadline = time.monotonic() + 5
    while grain_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert grain_threads() == []


def test_iterate_resumes_at_end(folder):
    ds = open_source(folder.root)
    full, _ = _collect(ds, size=16, batch_size=4, shard=(1, 2), workers=2)
    k = 2
    rest, warned = _collect(ds, size=16, batch_size=4, shard=(1, 2),
                            start=full[k - 1].end, workers=1)
    assert len(rest) == len(full) - k
    for a, b in zip(full[k:], rest, strict=True):
        np.testing.assert_array_equal(a.index, b.index)
        np.testing.assert_array_equal(a.images, b.images)
        assert a.bad == b.bad and a.end == b.end
    assert len(warned) == sum(len(b.bad) for b in rest)
    assert list(iterate(ds, size=16, batch_size=4, start=len(ds))) == []


def test_iterate_argument_errors(folder):
    x = np.zeros((3, 4, 4, 3), np.uint8)
    for kw, pat in [({"size": 0}, "size must be a positive int"),
                    ({"batch_size": 2.0}, "batch_size must be"),
                    ({"shard": (2, 2)}, r"shard must be \(rank, count\)"),
                    ({"start": 4}, r"start must be in \[0, 3\]"),
                    ({"workers": -1}, "workers must be a non-negative int")]:
        args = {"size": 4, "batch_size": 2, **kw}
        with pytest.raises(InputError, match=pat):
            iterate(x, **args)
    with pytest.raises(InputError, match="no images"):
        iterate(np.zeros((0, 4, 4, 3), np.uint8), size=4, batch_size=2)
    assert default_workers() == min(32, len(os.sched_getaffinity(0)))


# --------------------------------------------------------------- checkpoint
def _state():
    rng = np.random.default_rng(0)
    return {"top": rng.standard_normal((3, 9)).astype(np.float32),
            "index": np.arange(27, dtype=np.int32).reshape(3, 9),
            "count": np.int64(12345), "flag": np.array([True, False])}


def test_checkpoint_roundtrip(tmp_path):
    assert checkpoint.load(tmp_path / "none") is None
    assert checkpoint.load(tmp_path) is None
    meta = {"end": 40, "fingerprint": "abc", "layers": ["c1", "c2"], "k": 9}
    checkpoint.save(tmp_path / "ck", _state(), meta)
    state, got = checkpoint.load(tmp_path / "ck")
    assert got == meta and set(state) == set(_state())
    for k, v in _state().items():
        assert state[k].dtype == np.asarray(v).dtype
        np.testing.assert_array_equal(state[k], v)
    s2 = {k: np.asarray(v) + 1 for k, v in _state().items() if k != "flag"}
    checkpoint.save(tmp_path / "ck", s2, {**meta, "end": 80})
    state, got = checkpoint.load(tmp_path / "ck")
    assert got["end"] == 80 and set(state) == set(s2)
    np.testing.assert_array_equal(state["index"], s2["index"])
    assert len(list((tmp_path / "ck").glob("state-*.npz"))) == 1  # old one removed


def test_checkpoint_crash_keeps_previous(tmp_path, monkeypatch):
    ck = tmp_path / "ck"
    checkpoint.save(ck, _state(), {"end": 10})

    def dying(dst, write, **kw):
        if Path(dst).name == checkpoint.INDEX:  # die before the commit point
            raise KeyboardInterrupt
        return atomic_write(dst, write, **kw)

    monkeypatch.setattr(checkpoint, "atomic_write", dying)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(ck, {"top": np.zeros(3)}, {"end": 20})
    monkeypatch.undo()
    state, meta = checkpoint.load(ck)
    assert meta == {"end": 10}
    np.testing.assert_array_equal(state["top"], _state()["top"])
    # A half-written (or swapped) state file is never taken for a checkpoint.
    npz = next(p for p in ck.glob("state-*.npz")
               if p.name in (ck / checkpoint.INDEX).read_text())
    npz.write_bytes(npz.read_bytes()[:100])
    with pytest.warns(InputWarning, match="does not match its SHA-256"):
        assert checkpoint.load(ck) is None
    (ck / checkpoint.INDEX).write_text('{"format": "jaxconvviz-dat')
    with pytest.warns(InputWarning, match="incomplete checkpoint"):
        assert checkpoint.load(ck) is None


@pytest.mark.slow
def test_checkpoint_survives_sigkill_mid_save(tmp_path):
    """A process saving checkpoints in a loop is SIGKILLed at three moments:
    every time, load gives a complete pair whose arrays match its meta."""
    import signal
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from jaxconvviz.dataset import checkpoint\n"
        "k = 0\n"
        "while True:\n"
        "    checkpoint.save(sys.argv[1], {'x': np.full(200_000, k, np.int64),"
        " 'y': np.arange(k % 7)}, {'k': k})\n"
        "    k += 1\n"
        "    if k == 3: print('go', flush=True)\n")
    for delay in (0.05, 0.21, 0.43):
        ck = tmp_path / f"ck{delay}"
        proc = subprocess.Popen([sys.executable, "-c", code, str(ck)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "go"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state, meta = checkpoint.load(ck)
        assert meta["k"] >= 2
        np.testing.assert_array_equal(state["x"], np.full(200_000, meta["k"]))
        np.testing.assert_array_equal(state["y"], np.arange(meta["k"] % 7))
        checkpoint.save(ck, state, {"k": -1})  # a new save clears what was left
        assert sorted(p.name for p in ck.iterdir())[0] == checkpoint.INDEX
        assert len(list(ck.iterdir())) == 2


def test_checkpoint_refuses_bad_input_before_writing(tmp_path):
    with pytest.raises(InputError, match="JSON"):
        checkpoint.save(tmp_path / "a", _state(), {"x": object()})
    with pytest.raises(InputError, match="dtype object"):
        checkpoint.save(tmp_path / "a", {"x": np.array([None])}, {})
    with pytest.raises(InputTypeError, match="dict of str"):
        checkpoint.save(tmp_path / "a", {1: np.zeros(1)}, {})
    assert not (tmp_path / "a").exists()
