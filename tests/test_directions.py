"""Activation atlases and activation factorization (jaxconvviz.directions).

A small random VGG (widths 8/16/16/16/16) on synthetic data: images of four
labelled kinds (two flat colours, stripes, a two-colour checkerboard) for
the atlas; a red disk and a blue square on grey for the factorization.
"""

from __future__ import annotations

import builtins

import jax
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.directions import _render, _sample, activation_atlas
from jaxconvviz.directions._source import open_images
from jaxconvviz.directions.factorize import factorize_activations, nmf
from jaxconvviz.errors import InputError

LAYER = "block2_conv1"


def _kind(k: int, rng) -> np.ndarray:
    yy, xx = np.mgrid[:32, :32]
    if k == 0:
        im = np.zeros((32, 32, 3)) + [220, 30, 30]
    elif k == 1:
        im = np.zeros((32, 32, 3)) + [30, 60, 220]
    elif k == 2:
        im = np.where(((yy // 2) % 2 == 0)[..., None], [240, 240, 240], [20, 20, 20])
    else:
        im = np.where((((yy // 3) + (xx // 3)) % 2 == 0)[..., None], [40, 200, 40],
                      [230, 220, 40])
    return np.clip(im + rng.randn(32, 32, 3) * 8, 0, 255)


@pytest.fixture(scope="module")
def small():
    model = jcv.VGG16(include_top=False, block_widths=(8, 16, 16, 16, 16),
                      input_size=None)
    return model, model.init_params(jax.random.key(1), hw=(32, 32))


@pytest.fixture(scope="module")
def kinds():
    rng = np.random.RandomState(0)
    labels = np.arange(24) % 4
    return np.stack([_kind(k, rng) for k in labels]).astype(np.float32), labels


@pytest.fixture(scope="module")
def atlas(small, kinds):
    pytest.importorskip("umap")
    model, params = small
    return activation_atlas(params, kinds[0], LAYER, key=jax.random.key(0), grid=6,
                            samples=600, min_count=3, model=model, border=1,
                            render_size=32, steps=48)


def _objective(params, model, images, directions, *, pow_=4.0):
    """The CosineDirection value of each image (post-ReLU, centre position)."""
    a = np.asarray(jcv.activations(params, images, layers=LAYER, model=model)[LAYER])
    v = a[:, a.shape[1] // 2, a.shape[2] // 2]
    d = np.asarray(directions)
    dot = (v * d).sum(1)
    mag = np.linalg.norm(v, axis=1) * np.linalg.norm(d, axis=1)
    cos = np.maximum(dot / (mag + 1e-4), 0.1)
    return dot * cos ** pow_


@pytest.mark.slow
def test_atlas_separates_kinds(atlas, kinds):
    labels = kinds[1][atlas.image_index]
    pur = [np.bincount(labels[atlas.cell_of == k]).max() / atlas.counts[k]
           for k in range(len(atlas.counts))]
    assert len(pur) >= 4
    assert np.mean(pur) >= 0.9, pur
    assert (atlas.counts >= 3).all()
    assert atlas.counts.sum() == (atlas.cell_of >= 0).sum()
    # every cell's direction is the mean of its vectors
    k = int(np.argmax(atlas.counts))
    np.testing.assert_allclose(atlas.directions[k],
                               atlas.vectors[atlas.cell_of == k].mean(0), rtol=1e-4)
    # patches: images and positions of the cell's own vectors
    for k in range(len(atlas.counts)):
        own = {(int(i), int(r), int(c)) for i, (r, c) in zip(
            atlas.image_index[atlas.cell_of == k], atlas.position[atlas.cell_of == k],
            strict=True)}
        got = [tuple(p) for p in atlas.patches[k].tolist() if p[0] >= 0]
        assert got and set(got) <= own
        assert len({g[0] for g in got}) == len(got)


@pytest.mark.slow
def test_atlas_cells_render_their_direction(atlas, small):
    model, params = small
    imgs = atlas.images
    assert imgs.shape == (len(atlas.counts), 32, 32, 3)
    assert imgs.min() >= 0 and imgs.max() <= 255
    rendered = _objective(params, model, imgs, atlas.directions)
    # "a random image": the renderer's own random start (lucid's Fourier noise,
    # the same key), i.e. the images before any step. (Full-range uniform
    # noise is not the comparison: on this random-weight net it drives every
    # unit of block2 harder than 48 steps of a 32 px render do.)
    start = _render.render_directions(
        params, LAYER, atlas.directions, key=jax.random.fold_in(jax.random.key(0), 2),
        model=model, size=32, steps=1, style=jcv.Lucid(learning_rate=1e-9))
    rand = _objective(params, model, start, atlas.directions)
    assert np.median(rendered) > 0
    assert np.median(rendered / np.maximum(rand, 1e-3)) > 5, (rendered, rand)
    assert (rendered > 2 * rand).mean() >= 0.9
    img = atlas.compose()
    assert img.shape == (6 * 32, 6 * 32, 3) and img.dtype == np.uint8
    assert atlas.compose(by="size", cell_px=16).shape == (96, 96, 3)


@pytest.mark.slow
def test_atlas_reproducible_from_key(atlas, small, kinds):
    model, params = small
    again = activation_atlas(params, kinds[0], LAYER, key=jax.random.key(0), grid=6,
                             samples=600, min_count=3, model=model, border=1,
                             render=False)
    np.testing.assert_array_equal(again.image_index, atlas.image_index)
    np.testing.assert_array_equal(again.cells, atlas.cells)
    np.testing.assert_allclose(again.coords, atlas.coords)
    other = activation_atlas(params, kinds[0], LAYER, key=jax.random.key(7), grid=6,
                             samples=600, min_count=3, model=model, border=1,
                             render=False)
    assert not np.array_equal(np.sort(other.image_index * 1000 + other.position[:, 0]),
                              np.sort(atlas.image_index * 1000 + atlas.position[:, 0]))


def test_reservoir_independent_of_batching(small, kinds):
    model, params = small
    src = open_images(kinds[0][:10])
    outs = [_sample.sample_vectors(params, src, LAYER, key=jax.random.key(5),
                                   samples=150, model=model, size=32, batch_size=bs,
                                   class_index=None)
            for bs in (3, 10, 4)]
    for o in outs[1:]:
        np.testing.assert_array_equal(o[1], outs[0][1])
        np.testing.assert_array_equal(o[2], outs[0][2])
        np.testing.assert_allclose(o[0], outs[0][0], rtol=1e-5, atol=1e-4)
    assert outs[0][0].shape == (150, 16)
    # a reservoir larger than the dataset holds every drawable position once,
    # with its own vector
    vec, img, pos, w, hw = _sample.sample_vectors(
        params, src, LAYER, key=jax.random.key(5), samples=5000, model=model, size=32,
        batch_size=4, class_index=None, border=1)
    assert hw == (16, 16) and vec.shape[0] == 10 * 14 * 14
    assert len({(i, r, c) for i, (r, c) in zip(img, pos, strict=True)}) == vec.shape[0]
    assert pos.min() == 1 and pos.max() == 14 and (w == 1).all()
    a = np.asarray(jcv.activations(params, kinds[0][:10], layers=LAYER,
                                   model=model)[LAYER])
    np.testing.assert_allclose(vec, a[img, pos[:, 0], pos[:, 1]], rtol=1e-5, atol=1e-4)


def test_same_cell_same_image_in_any_batch(small):
    model, params = small
    dirs = np.abs(np.asarray(jax.random.normal(jax.random.key(2), (5, 16))))
    kw = dict(key=jax.random.key(0), model=model, size=24, steps=8)
    all5 = _render.render_directions(params, LAYER, dirs, **kw)
    pair = _render.render_directions(params, LAYER, dirs, ids=[3, 1], **kw)
    trio = _render.render_directions(params, LAYER, dirs, ids=[1, 4, 3], **kw,
                                     run=jcv.Run(batch_size=2))
    np.testing.assert_allclose(pair[0], all5[3], atol=0.05)
    np.testing.assert_allclose(pair[1], all5[1], atol=0.05)
    np.testing.assert_allclose(trio[2], all5[3], atol=0.05)
    np.testing.assert_allclose(trio[1], all5[4], atol=0.05)
    assert np.abs(all5[1] - all5[3]).max() > 1


def _two_objects():
    img = np.full((64, 64, 3), 128, np.float32)
    yy, xx = np.mgrid[:64, :64]
    disk = (yy - 20) ** 2 + (xx - 18) ** 2 < 12 ** 2
    sq = (yy >= 30) & (yy < 58) & (xx >= 34) & (xx < 60)
    img[disk] = [220, 30, 30]
    img[sq] = [30, 60, 220]
    return img, disk, sq


def test_factorization_separates_objects(small):
    pytest.importorskip("sklearn")
    model, params = small
    img, disk, sq = _two_objects()
    f = factorize_activations(params, img, "block2_conv2", key=jax.random.key(0),
                              n_groups=3, model=model, render=True, steps=16,
                              render_size=24)
    g, h, w = f.maps.shape
    assert (g, h, w) == (3, 32, 32) and f.images.shape == (3, 24, 24, 3)
    groups = f.masks(0.5)  # each group: where its map reaches half its peak
    best = []
    for mask in (disk, sq):
        m = mask.reshape(h, 2, w, 2).mean((1, 3)) > 0.5
        ious = [(groups[k] & m).sum() / (groups[k] | m).sum() for k in range(g)]
        assert max(ious) >= 0.5, ious
        best.append(int(np.argmax(ious)))
    assert best[0] != best[1]
    np.testing.assert_allclose(np.linalg.norm(f.directions, axis=1), 1, rtol=1e-5)
    err = np.linalg.norm(f.activations - f.reconstruction())
    assert err == pytest.approx(f.reconstruction_error, rel=1e-3)
    again = factorize_activations(params, img, "block2_conv2", key=jax.random.key(0),
                                  n_groups=3, model=model, render=False)
    np.testing.assert_array_equal(again.maps, f.maps)


def test_nmf_matches_scikit_learn():
    dec = pytest.importorskip("sklearn.decomposition")
    a = np.abs(np.random.RandomState(0).randn(60, 12)) ** 2
    w, h, err = nmf(a, 4, seed=3)
    ref = dec.NMF(n_components=4, init="nndsvda", random_state=3, max_iter=1000)
    w2 = ref.fit_transform(a)
    np.testing.assert_allclose(w @ h, w2 @ ref.components_, rtol=1e-6, atol=1e-8)
    assert err == pytest.approx(ref.reconstruction_err_)


def test_class_attribution(tiny_model, tiny_params):
    pytest.importorskip("sklearn")
    img = np.asarray(jax.random.uniform(jax.random.key(0), (32, 32, 3), maxval=255))
    f = factorize_activations(tiny_params, img, "block3_conv3", key=jax.random.key(0),
                              n_groups=2, model=tiny_model, class_index=5, render=False)
    assert f.attribution.shape == (2,) and np.isfinite(f.attribution).all()
    # the groups' attributions sum to the attribution of the reconstruction
    x = jax.numpy.asarray(img[None])

    def logit(delta):
        out, _ = tiny_model.forward_with(tiny_params, tiny_model.preprocess(x),
                                         perturb={"block3_conv3": delta}, logits=True)
        return out[0, 5]

    g = np.asarray(jax.grad(logit)(jax.numpy.zeros((1, *f.activations.shape))))[0]
    assert f.attribution.sum() == pytest.approx(float((f.reconstruction() * g).sum()),
                                                rel=1e-3, abs=1e-5)
    with pytest.raises(InputError, match="class_index"):
        factorize_activations(tiny_params, img, "block3_conv3", key=jax.random.key(0),
                              model=tiny_model, class_index=5000, render=False)


def test_bad_inputs(small, kinds):
    model, params = small
    with pytest.raises(InputError, match="grid"):
        activation_atlas(params, kinds[0], LAYER, key=jax.random.key(0), grid=0,
                         model=model)
    with pytest.raises(InputError, match="source"):
        activation_atlas(params, np.zeros((0, 32, 32, 3)), LAYER,
                         key=jax.random.key(0), model=model)
    with pytest.raises(InputError, match="n_groups"):
        factorize_activations(params, kinds[0][0], LAYER, key=jax.random.key(0),
                              n_groups=17, model=model)
    with pytest.raises(InputError, match="class_index"):
        activation_atlas(params, kinds[0], LAYER, key=jax.random.key(0),
                         model=model, class_index=1)


def test_missing_extra_names_it(monkeypatch, small, kinds):
    model, params = small
    real = builtins.__import__

    def fake(name, *a, **k):
        if name.split(".")[0] in ("umap", "sklearn"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    import importlib

    monkeypatch.setattr(importlib, "import_module",
                        lambda n, *a: fake(n) if n.split(".")[0] in ("umap", "sklearn")
                        else real(n))
    with pytest.raises(InputError, match=r"jaxconvviz\[atlas\]"):
        activation_atlas(params, kinds[0], LAYER, key=jax.random.key(0), model=model)
    with pytest.raises(InputError, match=r"jaxconvviz\[atlas\]"):
        factorize_activations(params, kinds[0][0], LAYER, key=jax.random.key(0),
                              model=model)


@pytest.mark.slow
def test_class_filtered_atlas(tiny_model, tiny_params):
    pytest.importorskip("umap")
    rng = np.random.RandomState(1)
    imgs = np.stack([_kind(k, rng) for k in np.arange(8) % 4]).astype(np.float32)
    at = activation_atlas(tiny_params, imgs, "block3_conv3", key=jax.random.key(0),
                          grid=3, samples=200, min_count=2, model=tiny_model,
                          class_index=3, render=False)
    assert at.class_index == 3 and (at.weight > 0).all()
    k = int(np.argmax(at.counts))
    m = at.cell_of == k
    want = (at.vectors[m] * at.weight[m, None]).sum(0) / at.weight[m].sum()
    np.testing.assert_allclose(at.directions[k], want, rtol=1e-4, atol=1e-6)
    # drawn only where the class logit gains from the vector
    plain = activation_atlas(tiny_params, imgs, "block3_conv3", key=jax.random.key(0),
                             grid=3, samples=200, min_count=2, model=tiny_model,
                             render=False)
    assert (plain.weight == 1).all()
