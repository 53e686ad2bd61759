"""``jaxconvviz examples`` and the dataset views: one-line errors (exit 2),
the figures, the statistics CSV, the report's dataset sections, and (with
the dataset pass) the command end to end with --resume."""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from pathlib import Path

import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.cli import main
from jaxconvviz.report import dataset_pages

LAYERS = ("block1_conv1", "block3_conv1")


# ------------------------------------------------------------ a small fake
@dataclasses.dataclass
class _Layer:
    """A LayerExamples-like record (the interface the views read)."""

    value: np.ndarray
    index: np.ndarray
    position: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    max: np.ndarray
    frac_pos: np.ndarray

    def selectivity(self):
        v = np.where(self.index >= 0, self.value, 0.0)
        top = v.sum(1) / np.maximum((self.index >= 0).sum(1), 1)
        return np.where(self.std > 0, (top - self.mean) / np.where(
            self.std > 0, self.std, 1), 0.0).astype(np.float32)

    def dead(self):
        return np.flatnonzero(~(self.frac_pos > 0))


@dataclasses.dataclass
class _Result:
    layers: dict
    names: list
    bad: list
    input_hw: tuple = (32, 32)
    k: int = 3
    model_name: str = "vgg16"
    saved: list = dataclasses.field(default_factory=list)

    def save(self, folder):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "examples.json").write_text("{}")
        self.saved.append(folder)


def _fake_result(model, layers=LAYERS, *, k=3, n_images=7, seed=0) -> _Result:
    """Random but consistent examples: unit u of each layer is dead when
    u % 5 == 4, has fewer than k examples when u % 5 == 3."""
    rng = np.random.default_rng(seed)
    out = {}
    for layer in layers:
        C = model.channels(layer)
        value = -np.sort(-rng.random((C, k)).astype(np.float32) * 10, axis=1)
        index = np.stack([rng.permutation(n_images)[:k] for _ in range(C)]).astype(
            np.int32)
        frac = rng.random(C).astype(np.float32) * 0.5 + 0.1
        for u in range(C):
            if u % 5 == 4:
                value[u], index[u], frac[u] = np.nan, -1, 0.0
            elif u % 5 == 3:
                value[u, 1:], index[u, 1:] = np.nan, -1
        out[layer] = _Layer(value, index, np.zeros((C, k, 2), np.int32),
                            rng.random(C).astype(np.float32),
                            rng.random(C).astype(np.float32) + 0.5,
                            np.nan_to_num(value[:, 0]), frac)
    names = [f"/data/set/img_{i:03d}.jpg" for i in range(n_images)]
    names.append("/data/set/broken.png")  # global index n_images: skipped
    return _Result(out, names, [(n_images, "/data/set/broken.png", "0 bytes")],
                   k=k)


@pytest.fixture
def fake_crops(monkeypatch):
    """example_crops/example_boxes for the fake: crop r of unit u is a flat
    colour that encodes (u, r)."""
    def crops(result, layer, unit, *, size):
        idx = result.layers[layer].index[unit]
        out = np.zeros((len(idx), size, size, 3), np.uint8)
        for r, i in enumerate(idx):
            if i >= 0:
                out[r] = (40 + 10 * (unit % 20), 30 * r, 200)
        return out

    def boxes(result, layer, unit):
        ex = result.layers[layer]
        return [(result.names[i], (r, r + 10, 2 * r, 2 * r + 10), float(v))
                for r, (i, v) in enumerate(zip(ex.index[unit], ex.value[unit],
                                               strict=True)) if i >= 0]

    monkeypatch.setattr(dataset_pages, "example_crops", crops)
    monkeypatch.setattr(dataset_pages, "example_boxes", boxes)


def _png(path):
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"))
    assert a.shape[0] > 100 and a.shape[1] > 100 and a.std() > 5
    return a


# ------------------------------------------------------------ figures
def test_figures_show_crops_values_names_and_dead_units(tmp_path):
    from jaxconvviz.plotting import (
        plot_layer_examples,
        plot_unit_examples,
        plot_unit_lists,
    )

    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (9, 48, 48, 3), dtype=np.uint8)
    vals = np.linspace(9, 1, 9)
    vals[-1] = np.nan  # fewer than k examples: an empty cell
    fig = plot_unit_examples(crops, vals, [f"a/b/photo_{i}.jpg" for i in range(9)],
                             layer="block3_conv1", unit=5)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "9" in texts and "#1" in texts and "photo_0.jpg" in texts
    assert "no example" in texts and len(fig.axes) == 9
    assert "block3_conv1 unit 5: top 9 dataset examples" in fig.texts[0].get_text()
    fig.savefig(tmp_path / "unit.png")
    _png(tmp_path / "unit.png")

    dead = np.zeros(20, bool)
    dead[[3, 7]] = True
    fig = plot_layer_examples(crops[np.arange(20) % 9], np.arange(20.0), layer="L",
                              dead=dead, n_cols=8)
    assert "20 units, 2 dead" in fig.texts[0].get_text()
    assert sum(t.get_text() == "dead" for t in fig.axes[0].texts) == 2
    fig.savefig(tmp_path / "layer.png")
    _png(tmp_path / "layer.png")

    sel = np.arange(20.0)
    fig = plot_unit_lists(sel, [3, 7], layer="L", top_crops_u8=crops[np.arange(20) % 9],
                          n=5)
    bars = fig.axes[0]
    assert [t.get_text() for t in bars.get_yticklabels()] == [
        f"unit {u}" for u in (19, 18, 17, 16, 15)]  # most selective first
    assert "dead over the dataset: 2 of 20" in fig.axes[-1].get_title() or any(
        "dead over the dataset: 2 of 20" in ax.get_title() for ax in fig.axes)
    assert any(t.get_text() == "dead: 3, 7" for t in fig.texts)
    fig.savefig(tmp_path / "lists.png")
    _png(tmp_path / "lists.png")

    with pytest.raises(ValueError, match="crops_u8 must be uint8"):
        plot_unit_examples(crops.astype(np.float32), vals, ["x"] * 9, layer="L",
                           unit=0)
    with pytest.raises(ValueError, match="names must have one entry per crop"):
        plot_unit_examples(crops, vals, ["x"], layer="L", unit=0)
    with pytest.raises(ValueError, match="dead ids must be in 0..19"):
        plot_unit_lists(sel, [25], layer="L")


# ------------------------------------------------------------ CLI errors
@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory, tiny_model, tiny_params):
    path = tmp_path_factory.mktemp("model") / "tiny_vgg16.keras"
    jcv.save_keras_model(tiny_params, path, model=tiny_model)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A small image folder (tests/_dataset_fixtures.py): photo variants,
    blobs, odd formats and bad files in the middle."""
    from tests._dataset_fixtures import make_image_folder

    return make_image_folder(tmp_path_factory.mktemp("photos"), n_photos=8,
                             n_blobs=2)


def _one_line(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.parametrize("extra, needle", [
    (["--k", "0"], "--k must be >= 1; got 0."),
    (["--batch-size", "0"], "--batch-size must be >= 1; got 0."),
    (["--unit-figures", "-1"], "--unit-figures must be >= 0"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be >= 1"),
    (["--layers", "block3_conv9"], "got 'block3_conv9'; did you mean"),
    (["--layers", "fc1"], "--layers must name layers with a spatial map"),
])
def test_bad_arguments_are_one_line_exit_2(extra, needle, tiny_keras, photos,
                                           tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["examples", str(photos.root), "--model", str(tiny_keras), "--out", str(out),
            *extra]
    assert main(argv) == 2
    _one_line(capsys, "jaxconvviz examples: error:", needle)
    assert not out.exists()


def test_empty_source_and_stale_checkpoint_are_refused(tiny_keras, tmp_path,
                                                        capsys):
    assert main(["examples", " ", "--model", str(tiny_keras), "--out",
                 str(tmp_path / "o")]) == 2
    _one_line(capsys, "SOURCE must name a folder")
    (tmp_path / "o" / "checkpoint").mkdir(parents=True)
    assert main(["examples", str(tmp_path), "--model", str(tiny_keras), "--out",
                 str(tmp_path / "o")]) == 2
    _one_line(capsys, "holds an unfinished run; pass --resume")


# ------------------------------------------------------------ outputs
def test_write_outputs_csv_and_figures(tmp_path, tiny_model, fake_crops, capsys):
    from jaxconvviz.commands.examples import CSV_COLUMNS, write_outputs

    res = _fake_result(tiny_model)
    write_outputs(res, tmp_path, desc="tiny", unit_figures=2, crop_size=32)
    assert res.saved == [tmp_path / "result"]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "stats.csv").read_text())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == sum(tiny_model.channels(x) for x in LAYERS)
    for r in rows:
        ex = res.layers[r["layer"]]
        u = int(r["unit"])
        for f in ("mean", "std", "max", "frac_pos"):
            assert float(r[f]) == pytest.approx(float(getattr(ex, f)[u]), rel=1e-6)
        assert float(r["selectivity"]) == pytest.approx(float(ex.selectivity()[u]),
                                                       rel=1e-6, abs=1e-7)
        assert r["dead"] == str(int(u % 5 == 4))
    for layer in LAYERS:
        _png(tmp_path / f"{layer}_units.png")
        _png(tmp_path / f"{layer}_lists.png")
        order = dataset_pages.by_selectivity(res.layers[layer])
        figs = sorted((tmp_path / "units").glob(f"{layer}_*.png"))
        assert {p.stem for p in figs} == {f"{layer}_{u}" for u in order[:2]}
    out = capsys.readouterr().out
    assert "skipped 1 unreadable file(s)" in out and "broken.png: 0 bytes" in out


def test_by_selectivity_leaves_out_dead_units_and_breaks_ties_by_id(tiny_model):
    ex = _fake_result(tiny_model).layers["block3_conv1"]
    order = dataset_pages.by_selectivity(ex)
    s = ex.selectivity()
    assert not set(order.tolist()) & set(ex.dead().tolist())
    assert len(order) + len(ex.dead()) == len(s)
    keys = [(-s[u], u) for u in order]
    assert keys == sorted(keys)


# ------------------------------------------------------------ report sections
@pytest.mark.slow
def test_report_pages_show_dataset_examples(tmp_path, tiny_model, tiny_params,
                                            fake_crops):
    from jaxconvviz.report import ReportImage, build_report

    res = _fake_result(tiny_model)
    x = np.asarray(jcv.load_img(jcv.CAT_PHOTO, target_size=(32, 32)))
    build_report(tmp_path, tiny_params, model=tiny_model,
                 images=[ReportImage("cat", x)], key=__import__("jax").random.key(0),
                 layers=LAYERS, filters_per_layer=6, size=32, steps=1,
                 style="book", cam_methods=["gradcam"], top_k=2,
                 examples=res, examples_source="photos/")
    index = (tmp_path / "index.html").read_text()
    assert "Dataset examples: top 3 of 7 image(s) from photos/" in index
    assert "1 unreadable file(s) skipped" in index
    for layer in LAYERS:
        ex = res.layers[layer]
        for u in range(min(6, len(ex.mean))):
            page = (tmp_path / "units" / layer / f"{u}.html").read_text()
            caps = re.findall(r'<figcaption title="([^"]*)"><b>([-0-9.e+]+)</b><br>'
                              r"([^<]*)</figcaption>", page)
            ok = ex.index[u] >= 0
            if u % 5 == 4:
                assert caps == [] and "dead over the dataset" in page
                continue
            assert len(caps) == int(ok.sum())
            for r, (title, v, base) in enumerate(caps):
                name = res.names[ex.index[u, r]]
                assert title == f"{name}, original px y {r}..{r + 9}, x {2 * r}.." \
                    f"{2 * r + 9}"
                assert float(v) == pytest.approx(float(ex.value[u, r]), rel=1e-3)
                assert base == Path(name).name
            strip = tmp_path / "img" / "dataset" / layer / f"{u}.jpg"
            from PIL import Image

            with Image.open(strip) as im:
                assert im.size == (dataset_pages.CROP_PX * int(ok.sum()),
                                   dataset_pages.CROP_PX)
            # the dataset figure sits beside the patterns, in the same row
            pair = page.split('<div class="pair">', 1)[1].split("<h2>", 1)[0]
            assert "book pattern" in pair and 'class="dsx"' in pair
        layer_page = (tmp_path / "layers" / f"{layer}.html").read_text()
        order = dataset_pages.by_selectivity(ex)
        listed = [int(u) for u in re.findall(
            r"<tr><td>(?:<a [^>]*>)?unit (\d+)(?:</a>)?</td>", layer_page)]
        assert listed == order.tolist()
        dead = ex.dead()
        assert (f"<b>{len(dead)} of {len(ex.mean)}</b> units are dead over the "
                "dataset" in layer_page) == bool(len(dead))
        assert ("No unit is dead over the dataset" in layer_page) == (not len(dead))
        # dead units with a page (the first 6) link to it, the others not
        want = ", ".join(f'<a href="../units/{layer}/{u}.html">{u}</a>' if u < 6
                         else str(u) for u in dead)
        assert (f'<span class="dead-units">{want}</span>' in layer_page) == bool(
            len(dead))


def test_report_refuses_examples_of_another_model(tmp_path, tiny_model, tiny_params,
                                                  fake_crops):
    from jaxconvviz.report import ReportImage, build_report

    res = _fake_result(tiny_model, layers=("block1_conv1",))
    x = np.asarray(jcv.load_img(jcv.CAT_PHOTO, target_size=(32, 32)))
    with pytest.raises(ValueError, match="examples must hold layer 'block3_conv1'"):
        build_report(tmp_path, tiny_params, model=tiny_model,
                     images=[ReportImage("cat", x)],
                     key=__import__("jax").random.key(0), layers=LAYERS,
                     filters_per_layer=2, size=32, steps=1, style="book",
                     cam_methods=["gradcam"], examples=res)
    res.layers["block3_conv1"] = res.layers["block1_conv1"]  # 4 units, not 16
    with pytest.raises(ValueError, match="have 4 units but the model's layer has"):
        build_report(tmp_path, tiny_params, model=tiny_model,
                     images=[ReportImage("cat", x)],
                     key=__import__("jax").random.key(0), layers=LAYERS,
                     filters_per_layer=2, size=32, steps=1, style="book",
                     cam_methods=["gradcam"], examples=res)


# ------------------------------------------------------------ end to end
def _run_examples(tiny_keras, photos, out, *extra):
    return main(["examples", str(photos.root), "--model", str(tiny_keras),
                 "--preprocess", "caffe", "--layers", *LAYERS, "--k", "4",
                 "--out", str(out), "--batch-size", "4", "--unit-figures", "2",
                 "--crop-size", "32", *extra])


@pytest.fixture(scope="module")
def examples_run(tmp_path_factory, tiny_keras, photos):
    out = tmp_path_factory.mktemp("ex") / "out"
    assert _run_examples(tiny_keras, photos, out) == 0
    return out


@pytest.mark.slow
def test_examples_end_to_end(examples_run, photos, tiny_keras, tiny_model,
                             tiny_params):
    from jaxconvviz.dataset import DatasetExamples

    out = examples_run
    assert not (out / "checkpoint").exists()
    res = DatasetExamples.load(out / "result")
    assert list(res.layers) == list(LAYERS) and res.k == 4
    assert sorted(b[1] for b in res.bad) == sorted(photos.bad)
    assert [b[0] for b in res.bad] == photos.bad_indices
    # the same pass through the library gives the same examples
    model = jcv.load_keras_model(tiny_keras)[0].clone(preprocessing="caffe",
                                                      parent=None)
    with pytest.warns(Warning, match="skipped image"):
        ref = jcv.dataset_examples(jcv.load_keras_model(tiny_keras)[1],
                                   str(photos.root), layers=LAYERS, k=4, model=model)
    for layer in LAYERS:
        a, b = res.layers[layer], ref.layers[layer]
        np.testing.assert_array_equal(a.index, b.index)
        np.testing.assert_allclose(a.value, b.value, rtol=1e-5)
    rows = list(csv.DictReader(io.StringIO((out / "stats.csv").read_text())))
    assert len(rows) == sum(tiny_model.channels(x) for x in LAYERS)
    for r in rows:
        ex = res.layers[r["layer"]]
        u = int(r["unit"])
        for f in ("mean", "std", "max", "frac_pos"):
            assert float(r[f]) == pytest.approx(float(getattr(ex, f)[u]), rel=1e-6,
                                                abs=1e-12)
        assert float(r["selectivity"]) == pytest.approx(
            float(ex.selectivity()[u]), rel=1e-6, abs=1e-7)
        assert r["dead"] == str(int(u in ex.dead()))
    for layer in LAYERS:
        _png(out / f"{layer}_units.png")
        _png(out / f"{layer}_lists.png")
        want = dataset_pages.by_selectivity(res.layers[layer])[:2]
        assert {p.stem for p in (out / "units").glob(f"{layer}_*.png")} == {
            f"{layer}_{u}" for u in want}


@pytest.mark.slow
def test_examples_interrupted_then_resumed(tmp_path, tiny_keras, photos,
                                           examples_run, monkeypatch, capsys):
    """Ctrl-C mid-way leaves a checkpoint; a plain rerun refuses it, --resume
    finishes with the uninterrupted result and removes it."""
    from jaxconvviz.dataset import DatasetExamples, stream

    calls = {"n": 0}
    real = stream.update

    def interrupt_third(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    out = tmp_path / "out"
    monkeypatch.setattr(stream, "update", interrupt_third)
    assert _run_examples(tiny_keras, photos, out, "--checkpoint-every", "4") == 130
    monkeypatch.setattr(stream, "update", real)
    cap = capsys.readouterr()
    # the interrupt is one line: what was kept and how to continue
    line = cap.err.strip().splitlines()[-1]  # after the per-file warnings
    assert line.startswith("jaxconvviz examples: interrupted (the checkpoint in "), cap
    assert "lets `--resume` continue)" in line
    assert (out / "checkpoint").is_dir() and not (out / "result").exists()
    assert _run_examples(tiny_keras, photos, out) == 2
    _one_line(capsys, "holds an unfinished run; pass --resume")
    assert _run_examples(tiny_keras, photos, out, "--resume") == 0
    assert "(resuming)" in capsys.readouterr().out
    assert not (out / "checkpoint").exists()
    a = DatasetExamples.load(out / "result")
    b = DatasetExamples.load(examples_run / "result")
    for layer in LAYERS:
        np.testing.assert_array_equal(a.layers[layer].index, b.layers[layer].index)
        np.testing.assert_array_equal(a.layers[layer].value, b.layers[layer].value)
    assert (out / "stats.csv").read_text() == (examples_run / "stats.csv").read_text()


@pytest.mark.slow
def test_report_from_a_finished_examples_run(examples_run, tiny_keras, tmp_path,
                                             capsys):
    out = tmp_path / "rep"
    argv = ["report", "--model", str(tiny_keras), "--preprocess", "caffe",
            "--out", str(out), "--filters-per-layer", "3", "--size", "32",
            "--steps", "1", "--style", "book", "--cams", "gradcam", "--top-k", "2"]
    assert main([*argv, "--examples", str(examples_run)]) == 0
    # --layers defaults to the examples' layers
    assert sorted(p.stem for p in (out / "layers").glob("*.html")) == sorted(LAYERS)
    unit = (out / "units" / LAYERS[1] / "0.html").read_text()
    assert 'class="dsx"' in unit and "dataset examples</b>" in unit
    assert main([*argv, "--out", str(tmp_path / "x"), "--examples",
                 str(tmp_path)]) == 2
    _one_line(capsys, "--examples", "holds no finished result")
    assert main([*argv, "--out", str(tmp_path / "x"), "--examples",
                 str(examples_run), "--layers", "block2_conv1"]) == 2
    _one_line(capsys, "examples must hold layer 'block2_conv1'")
    assert main([*argv, "--out", str(tmp_path / "x"), "--examples",
                 str(examples_run), "--dataset", "x"]) == 2
    _one_line(capsys, "use --dataset or --examples, not both")
    (tmp_path / "empty").mkdir()
    assert main([*argv, "--out", str(tmp_path / "x"), "--dataset",
                 str(tmp_path / "empty")]) == 2
    _one_line(capsys, "--dataset: no images in folder")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_two_processes_write_once_the_single_process_result(tmp_path, tiny_keras,
                                                             photos, examples_run):
    """``--distributed`` over 2 processes (jax.distributed on 127.0.0.1): each
    reads its shard, process 0 writes, and the result is the 1-process one."""
    import os
    import subprocess
    import sys

    from jaxconvviz.dataset import DatasetExamples
    from tests._procs import communicate_all, free_port

    port = free_port()
    out = tmp_path / "out"
    root = Path(__file__).resolve().parents[1]
    procs = []
    for pid in (0, 1):
        env = {**os.environ, "PYTHONPATH": str(root), "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": "", "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
               "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(pid)}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "jaxconvviz", "--cpu-devices", "1", "examples",
             str(photos.root), "--model", str(tiny_keras), "--preprocess", "caffe",
             "--layers", *LAYERS, "--k", "4", "--out", str(out), "--batch-size",
             "2", "--unit-figures", "2", "--crop-size", "32", "--distributed"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = communicate_all(procs)
    assert "wrote" in outs[0][0] and "wrote" not in outs[1][0]
    a = DatasetExamples.load(out / "result")
    b = DatasetExamples.load(examples_run / "result")
    for layer in LAYERS:
        np.testing.assert_array_equal(a.layers[layer].index, b.layers[layer].index)
        np.testing.assert_allclose(a.layers[layer].value, b.layers[layer].value,
                                   rtol=1e-5)
    assert not (out / "checkpoint").exists()
    assert sorted(p.name for p in (out / "units").iterdir()) == sorted(
        p.name for p in (examples_run / "units").iterdir())
