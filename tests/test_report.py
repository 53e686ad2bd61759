"""``jaxconvviz report``: an end-to-end report of the tiny preset, checked file
by file, value by value, and in headless Chromium; interruption and
--overwrite leave no half report."""

from __future__ import annotations

import html.parser
import io
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.cli import main
from jaxconvviz.models.receptive import receptive_field, top_units

LAYERS = ("block1_conv1", "block3_conv1")
N_FILTERS = 3
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")
INSTALL = ("headless Chromium is needed for the browser test: install Debian's "
           "package with `apt-get install -y chromium` (.ci/run does it)")


@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory, tiny_model, tiny_params):
    """The tiny VGG16 preset with its classifier top, seeded random weights, as
    a .keras file (the report's --model input)."""
    path = tmp_path_factory.mktemp("model") / "tiny_vgg16.keras"
    jcv.save_keras_model(tiny_params, path, model=tiny_model)
    return path


def _argv(model_path, out, *extra):
    return ["report", "--model", str(model_path), "--preprocess", "caffe",
            "--out", str(out), "--layers", *LAYERS, "--filters-per-layer",
            str(N_FILTERS), "--size", "32", "--steps", "2", "--style", "book",
            "--cams", "gradcam", "--top-k", "3", *extra]


@pytest.fixture(scope="module")
def report(tmp_path_factory, tiny_keras):
    out = tmp_path_factory.mktemp("report") / "tiny_report"
    t0 = time.perf_counter()
    assert main(_argv(tiny_keras, out)) == 0
    return out, time.perf_counter() - t0


class _Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.imgs, self.title, self._in_title = [], [], "", False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("href", "src"):
            if a.get(k):
                self.refs.append(a[k])
        if tag == "img":
            self.imgs.append(a)
        # the page's <title>, not the <title> tooltips inside inline SVG
        self._in_title = tag == "title" and not self.title

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag):
        self._in_title = False


def _parse(path: Path) -> _Refs:
    p = _Refs()
    p.feed(path.read_text(encoding="utf-8"))
    return p


@pytest.mark.slow
def test_report_files_links_and_values(report, tiny_model, tiny_params):
    out, _ = report
    pages = sorted(out.rglob("*.html"))
    rel = {str(p.relative_to(out)) for p in pages}
    units = {f"units/{layer}/{k}.html" for layer in LAYERS for k in range(N_FILTERS)}
    assert rel == {"index.html", "images.html"} | {f"layers/{x}.html" for x in
                                                   LAYERS} | units
    # every href/src resolves to a file inside the folder; nothing external
    n_refs = 0
    for page in pages:
        parsed = _parse(page)
        assert parsed.title.endswith("jaxconvviz report")
        for ref in parsed.refs:
            u = urlsplit(ref)
            assert not u.scheme and not u.netloc, f"{page}: external {ref!r}"
            target = (page.parent / unquote(u.path)).resolve()
            assert target.is_file(), f"{page.relative_to(out)} -> {ref!r}"
            assert out.resolve() in target.parents
            n_refs += 1
        for im in parsed.imgs:
            assert im.get("alt"), f"{page}: <img> without alt"
    assert n_refs > 100
    # no temporary folder left beside the report
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]

    # values: the images the model saw, their activations and predictions
    from jaxconvviz.commands.common import load_image_for

    x = np.stack([load_image_for(p, tiny_model) for p in (jcv.CAT_PHOTO,
                                                          jcv.ELEPHANT_PHOTO)])
    acts = jcv.activations(tiny_params, x, layers=LAYERS, model=tiny_model)
    for layer in LAYERS:
        a = np.asarray(acts[layer])
        dead = int((a.max(axis=(0, 1, 2)) <= 0).sum())
        text = (out / "layers" / f"{layer}.html").read_text()
        assert f"<b>{dead} of {a.shape[-1]}</b> filters are dead" in text
        rf = receptive_field(tiny_model, layer, (32, 32))
        for k in range(N_FILTERS):
            unit = (out / "units" / layer / f"{k}.html").read_text()
            md = tuple(max(1, math.ceil(s / j / 2)) for s, j in zip(
                rf.size, rf.jump, strict=True))  # at most one per half field
            best = [u for u in top_units(a[..., k], 3, min_distance=md) if u[3] > 0]
            caps = re.findall(r'<figcaption title="([^:"]+): unit \((\d+), (\d+)\), '
                              r"input px y (-?\d+)\.\.(-?\d+), x (-?\d+)\.\.(-?\d+)"
                              r'"><b>([-0-9.e+]+)</b>', unit)
            assert len(caps) == len(best)
            names = ("chelsea.png", "african_elephants.jpg")
            for (name, i, j, y0, y1, x0, x1, v), (n, bi, bj, bv) in zip(
                    caps, best, strict=True):
                assert float(v) == pytest.approx(bv, rel=2e-3)
                assert (name, int(i), int(j)) == (names[n], bi, bj)
                by0, by1, bx0, bx1 = rf.box(bi, bj)
                assert (int(y0), int(y1), int(x0), int(x1)) == (by0, by1 - 1, bx0,
                                                                bx1 - 1)
            # the activation table: max over positions per image
            for n, name in enumerate(("chelsea.png", "african_elephants.jpg")):
                assert (f"<td>{name}</td><td class=\"num\">"
                        f"{a[n, ..., k].max():.3g}</td>") in unit
            # prev/next links
            assert ('rel="prev"' in unit) == (k > 0)
            assert ('rel="next"' in unit) == (k < N_FILTERS - 1)
    probs = np.asarray(jcv.predict(tiny_params, x, model=tiny_model))
    top = jcv.decode_predictions(probs, top=5)
    page = (out / "images.html").read_text()
    for row in top:
        assert f"<td>{row[0][1]}</td><td class=\"num\">{row[0][2]:.4f}</td>" in page
    # index: the parameter count and every conv layer with its output shape
    total = sum(int(np.size(v)) for e in tiny_params.values() for v in e.values())
    index = (out / "index.html").read_text()
    assert f"<b>{total:,}</b>" in index
    assert "<td>(16, 16, 4)</td>" in index  # block1_pool on the 32x32 input
    assert "<td>6x6</td>" in index  # block1_pool's receptive field


def test_report_images_are_compressed(report):
    out, _ = report
    kinds = {p.suffix for p in (out / "img").rglob("*")
             if p.is_file()}
    assert kinds <= {".jpg", ".png", ".webp"}
    assert {p.suffix for p in (out / "img" / "photos").iterdir()} == {".jpg"}
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert total < 2_000_000
    # thumbnails below the first screen are lazy
    layer = (out / "layers" / f"{LAYERS[0]}.html").read_text()
    assert 'loading="lazy"' in layer


@pytest.mark.slow
def test_report_refuses_existing_dir_then_overwrites(tmp_path, tiny_keras, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert main(_argv(tiny_keras, out)) == 2
    err = capsys.readouterr().err
    assert "already exists; pass --overwrite" in err
    assert (out / "old.txt").read_text() == "old"
    assert main(["report", "--out", str(tmp_path / "x"), "--model",
                 str(tiny_keras), "--layers", "fc1"]) == 2
    assert "--layers must name conv layers" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(_argv(tiny_keras, out, "--overwrite", "--layers",
                      "block1_conv1")) == 0
    assert not (out / "old.txt").exists() and (out / "index.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _browser(args, timeout=120):
    exe = _chromium()
    if exe is None:
        if os.environ.get("JAXCONVVIZ_REQUIRE_ORACLE") == "1":
            pytest.fail(INSTALL)
        pytest.skip(INSTALL)
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                               *args], capture_output=True, text=True,
                              timeout=timeout)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report, tmp_path):
    out, _ = report
    for page, title, n_min in (
            ("index.html", "vgg16 - jaxconvviz report", 2 * N_FILTERS),
            (f"units/{LAYERS[1]}/1.html",
             f"{LAYERS[1]} filter 1 - jaxconvviz report", 2)):
        url = (out / page).resolve().as_uri()
        r = _browser(["--virtual-time-budget=10000", "--dump-dom",
                      url + "#selftest"])
        assert r.returncode == 0, r.stderr[-2000:]
        dom = r.stdout
        assert f"<title>{title}</title>" in dom
        body = re.search(r"<body([^>]*)>", dom).group(1)
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body))
        assert attrs.get("data-selftest") == "done", body
        n_img = len(_parse(out / page).imgs)
        assert int(attrs["data-images"]) == n_img >= n_min
        assert attrs["data-broken"] == "0"
        shot = tmp_path / (page.replace("/", "_") + ".png")
        r = _browser(["--window-size=1280,900", f"--screenshot={shot}", url])
        assert shot.is_file(), r.stderr[-2000:]
        from PIL import Image

        with Image.open(shot) as im:
            a = np.asarray(im.convert("RGB"))
        assert a.shape == (900, 1280, 3) and a.std() > 10  # not a blank page


@pytest.fixture(scope="module")
def dataset_report(tmp_path_factory, tiny_keras):
    """The report with --dataset: a small image folder with bad files in it."""
    from tests._dataset_fixtures import make_image_folder

    photos = make_image_folder(tmp_path_factory.mktemp("dataset"), n_photos=6,
                               n_blobs=2)
    out = tmp_path_factory.mktemp("dsreport") / "tiny_report"
    assert main(_argv(tiny_keras, out, "--dataset", str(photos.root))) == 0
    return out, photos


@pytest.mark.slow
def test_dataset_pages_link_and_render_in_headless_chromium(dataset_report):
    """Unit pages show the top-k dataset crops beside the pattern (values and
    file names), layer pages the units by selectivity and the dead ones; every
    link resolves and every image loads in Chromium."""
    out, photos = dataset_report
    index = (out / "index.html").read_text()
    n_good = len(photos.files) - len(photos.bad)
    assert f"Dataset examples: top 3 of {n_good} image(s)" in index
    assert f"{len(photos.bad)} unreadable file(s) skipped" in index
    for page in out.rglob("*.html"):
        for ref in _parse(page).refs:
            target = (page.parent / unquote(urlsplit(ref).path)).resolve()
            assert target.is_file(), f"{page.relative_to(out)} -> {ref!r}"
    names = {Path(f).name for f in photos.files} - {Path(f).name for f in photos.bad}
    unit = (out / "units" / LAYERS[1] / "1.html").read_text()
    caps = re.findall(r'<figcaption title="[^"]*, original px y \d+\.\.\d+, x '
                      r'\d+\.\.\d+"><b>([-0-9.e+]+)</b><br>([^<]*)</figcaption>',
                      unit)
    assert 1 <= len(caps) <= 3 and all(n in names for _, n in caps), caps
    values = [float(v) for v, _ in caps]
    assert values == sorted(values, reverse=True)
    layer = (out / "layers" / f"{LAYERS[1]}.html").read_text()
    assert "Dataset: units by selectivity" in layer
    assert "units are dead over the dataset" in layer or "No unit is dead" in layer
    for page, n_min in ((f"units/{LAYERS[1]}/1.html", 3 + len(caps)),
                        (f"layers/{LAYERS[1]}.html", N_FILTERS)):
        r = _browser(["--virtual-time-budget=10000", "--dump-dom",
                      (out / page).resolve().as_uri() + "#selftest"])
        assert r.returncode == 0, r.stderr[-2000:]
        body = re.search(r"<body([^>]*)>", r.stdout).group(1)
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body))
        assert attrs.get("data-selftest") == "done", body
        assert int(attrs["data-images"]) == len(_parse(out / page).imgs) >= n_min
        assert attrs["data-broken"] == "0"


@pytest.mark.slow
def test_sigint_leaves_no_report_and_no_temp_folder(tmp_path, tiny_keras):
    out = tmp_path / "interrupted"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "jaxconvviz", "report", "--model", str(tiny_keras),
           "--preprocess", "caffe", "--out", str(out), "--size", "32", "--steps",
           "40", "--style", "book", "--cams", "gradcam"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        # interrupt once the report is being written (first layer done)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[1/"):
                break
        assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir()), lines
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_estimate_printed_before_work(report, capsys, tiny_keras, tmp_path):
    out = tmp_path / "e"
    assert main(_argv(tiny_keras, out, "--layers", "block1_conv1")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.match(r"report of .*1 layer\(s\), 3 filter\(s\) at 32 px, 2 image\(s\); "
                    r"estimated \d+ s on this CPU", lines[0])
    assert lines[-1].startswith(f"wrote {out / 'index.html'}")
    assert any(line.startswith("[1/1] block1_conv1: 3 filter(s)") for line in lines)



def test_svg_histogram_bar_heights():
    from jaxconvviz.report.html import svg_histogram

    svg = svg_histogram(np.array([0, 3, 10, 5]), np.linspace(-1.0, 3.0, 5),
                        width=416, height=146, label="w")
    # plot area: x from 8, width 400 (4 bars of 100), y from 16, height 100
    bars = re.findall(r"M([\d.]+) 116v(-[\d.]+)h([\d.]+)v([\d.]+)z", svg)
    assert [(float(x), -float(up), float(w)) for x, up, w, _ in bars] == [
        (108.0, 30.0, 99.0), (208.0, 100.0, 99.0), (308.0, 50.0, 99.0)]
    assert ">-1</text>" in svg and ">3</text>" in svg and "max count 10" in svg


def test_tile_encoding_picks_the_smaller_lossless_or_webp():
    from jaxconvviz.report import encode

    checker = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    checker = np.repeat(checker[..., None], 3, -1)  # sharp, two colours: PNG wins
    data, ext = encode.tile(checker)
    assert ext == "png" and data[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), checker)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data, ext = encode.tile(noise)
    assert ext == "webp" and data[8:12] == b"WEBP"
    assert len(data) < len(encode.png(noise))
    with pytest.raises(ValueError, match="image must be uint8"):
        encode.jpeg(np.zeros((4, 4, 3), np.float32))
