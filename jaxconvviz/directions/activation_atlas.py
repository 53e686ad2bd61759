"""Activation atlases (Carter et al., Distill 2019), batched.

:func:`activation_atlas` samples spatial activation vectors of one layer
over a dataset (a fixed-size reservoir, reproducible from ``key`` and
independent of batching: :mod:`jaxconvviz.directions._sample`), lays them
out in 2-D with UMAP (cosine metric; the optional extra
``jaxconvviz[atlas]``), bins the layout into a ``grid x grid`` layout, keeps
the cells with at least ``min_count`` vectors, averages each cell's vectors
(weighted by their attribution to ``class_index``'s logit for a
class-filtered atlas) and renders every cell's direction in one batched lucid
program (:func:`~jaxconvviz.directions._render.render_directions`). The
result composes the atlas image (:meth:`ActivationAtlas.compose`).

Imports jax and numpy (UMAP lazily).
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings

import jax
import numpy as np

from jaxconvviz._types import Params, PRNGKey
from jaxconvviz.directions import _render, _sample
from jaxconvviz.directions._source import open_images
from jaxconvviz.errors import InputError
from jaxconvviz.featureviz.progress import format_seconds
from jaxconvviz.featureviz.styles import Lucid
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.vgg import resolve_model
from jaxconvviz.run import Run

EXTRA = 'the optional extra: pip install "jaxconvviz[atlas]" (umap-learn, scikit-learn)'


def require(module: str, what: str):
    """Import ``module`` (umap, sklearn) or raise an InputError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise InputError(f"{what} needs {module.split('.')[0]} ({e}); install "
                         f"{EXTRA}.") from None


@dataclasses.dataclass(frozen=True)
class ActivationAtlas:
    """An activation atlas of one layer.

    Attributes:
      layer: the layer.
      grid: cells per side.
      vectors: float32 ``(N, C)``, the sampled activation vectors.
      image_index: int32 ``(N,)``, each vector's global image index.
      position: int32 ``(N, 2)``, its ``(row, col)`` in the layer's map.
      weight: float32 ``(N,)``: 1, or the attribution to ``class_index``.
      coords: float32 ``(N, 2)``, the UMAP layout scaled to ``[0, 1]``
        (``x``, ``y``).
      cell_of: int32 ``(N,)``, the kept cell each vector fell in, or -1.
      cells: int32 ``(K, 2)``, ``(row, col)`` of each kept cell.
      counts: int32 ``(K,)``, vectors per kept cell (``>= min_count``).
      directions: float32 ``(K, C)``, each cell's (weighted) mean vector.
      images: float32 ``(K, s, s, 3)`` RGB [0, 255], each cell's
        rendering, or None (``render=False``).
      patches: int32 ``(K, top, 3)``: ``(image index, row, col)`` of the
        cell's vectors most similar (cosine) to its direction, -1 padded.
      names: image names (paths or ``"array[i]"``).
      class_index: the class of a class-filtered atlas, or None.
      map_hw: the layer's map size ``(h', w')`` at the sampling size.
      input_size: the side images were resized to for sampling.
    """

    layer: str
    grid: int
    vectors: np.ndarray
    image_index: np.ndarray
    position: np.ndarray
    weight: np.ndarray
    coords: np.ndarray
    cell_of: np.ndarray
    cells: np.ndarray
    counts: np.ndarray
    directions: np.ndarray
    images: np.ndarray | None
    patches: np.ndarray
    names: list
    class_index: int | None
    map_hw: tuple
    input_size: int

    def compose(self, *, cell_px: int | None = None, by: str = "opacity",
                background: float = 255.0) -> np.ndarray:
        """The atlas image: uint8 ``(grid * cell_px, grid * cell_px, 3)``.

        Each kept cell's rendering at its grid position; ``by="opacity"``
        blends it over ``background`` with opacity ``sqrt(count / max)``
        (at least 0.4), ``"size"`` shrinks it about its centre to
        ``sqrt(count / max)`` of the cell, ``"none"`` draws every cell fully.
        """
        return compose(self.images, self.cells, self.counts, self.grid,
                       cell_px=cell_px, by=by, background=background)


def compose(images, cells, counts, grid: int, *, cell_px: int | None = None,
            by: str = "opacity", background: float = 255.0) -> np.ndarray:
    """The atlas image (see :meth:`ActivationAtlas.compose`)."""
    if images is None:
        raise InputError("this atlas has no renderings (render=False); render "
                         "it first.")
    if by not in ("opacity", "size", "none"):
        raise InputError(f"by must be 'opacity', 'size' or 'none'; got {by!r}.")
    images = np.asarray(images, np.float32)
    s = images.shape[1] if cell_px is None else int(cell_px)
    if images.shape[1] != s:
        images = np.asarray(jax.image.resize(images, (images.shape[0], s, s, 3),
                                             "bilinear"))
    out = np.full((grid * s, grid * s, 3), background, np.float32)
    frac = np.sqrt(np.asarray(counts, np.float32) / max(int(np.max(counts)), 1))
    for (r, c), im, f in zip(np.asarray(cells), images, frac, strict=True):
        y0, x0 = int(r) * s, int(c) * s
        if by == "size":
            m = max(int(round(s * f)), 2)
            small = np.asarray(jax.image.resize(im, (m, m, 3), "bilinear"))
            o = (s - m) // 2
            out[y0 + o:y0 + o + m, x0 + o:x0 + o + m] = small
        else:
            a = 1.0 if by == "none" else max(float(f), 0.4)
            out[y0:y0 + s, x0:x0 + s] = a * im + (1 - a) * background
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def umap_layout(vectors, *, key: PRNGKey, n_neighbors: int = 15,
                min_dist: float = 0.01) -> np.ndarray:
    """float32 ``(N, 2)``: UMAP of ``vectors`` (cosine metric), each axis
    scaled to ``[0, 1]``. ``random_state`` comes from ``key``, so the layout
    is reproducible (UMAP then runs single-threaded)."""
    umap = require("umap", "the activation atlas layout")
    v = np.asarray(vectors, np.float32)
    if v.shape[0] < 4:
        raise InputError(f"UMAP needs at least 4 vectors; got {v.shape[0]} (more "
                         "images, or a larger samples=).")
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        emb = umap.UMAP(n_components=2, metric="cosine", random_state=seed,
                        n_neighbors=min(n_neighbors, v.shape[0] - 1),
                        min_dist=min_dist).fit_transform(v)
    emb = np.asarray(emb, np.float64)
    lo, hi = emb.min(0), emb.max(0)
    return ((emb - lo) / np.where(hi > lo, hi - lo, 1.0)).astype(np.float32)


def bin_cells(coords, vectors, grid: int, *, min_count: int = 1, weight=None):
    """Bin a ``[0, 1]`` layout into ``grid x grid`` cells.

    Returns ``(cell_of (N,), cells (K, 2), counts (K,), directions (K, C))``:
    kept cells (at least ``min_count`` vectors) in row-major order, each
    vector's kept cell (-1: dropped) and each cell's mean vector, weighted
    by ``weight`` when given.
    """
    xy = np.asarray(coords, np.float32)
    v = np.asarray(vectors, np.float32)
    w = np.ones(v.shape[0], np.float32) if weight is None else np.asarray(weight,
                                                                         np.float32)
    col = np.clip((xy[:, 0] * grid).astype(np.int64), 0, grid - 1)
    row = np.clip(((1.0 - xy[:, 1]) * grid).astype(np.int64), 0, grid - 1)
    flat = row * grid + col
    counts = np.bincount(flat, minlength=grid * grid)
    kept = np.flatnonzero(counts >= max(int(min_count), 1))
    remap = np.full(grid * grid, -1, np.int64)
    remap[kept] = np.arange(kept.size)
    cell_of = remap[flat].astype(np.int32)
    dirs = np.zeros((kept.size, v.shape[1]), np.float64)
    wsum = np.zeros(kept.size, np.float64)
    ok = cell_of >= 0
    np.add.at(dirs, cell_of[ok], v[ok] * w[ok, None])
    np.add.at(wsum, cell_of[ok], w[ok])
    dirs = (dirs / np.maximum(wsum, 1e-12)[:, None]).astype(np.float32)
    cells = np.stack([kept // grid, kept % grid], 1).astype(np.int32)
    return cell_of, cells, counts[kept].astype(np.int32), dirs


def top_patches(vectors, cell_of, directions, image_index, position, *, top: int
                ) -> np.ndarray:
    """int32 ``(K, top, 3)``: per cell, ``(image, row, col)`` of its vectors
    most similar (cosine) to the cell's direction, at most one per image, -1
    padded."""
    v = np.asarray(vectors, np.float32)
    d = np.asarray(directions, np.float32)
    out = np.full((d.shape[0], top, 3), -1, np.int32)
    vn = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    dn = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    for k in range(d.shape[0]):
        members = np.flatnonzero(cell_of == k)
        sims = vn[members] @ dn[k]
        seen, j = set(), 0
        for m in members[np.argsort(-sims, kind="stable")]:
            i = int(image_index[m])
            if i in seen:
                continue
            seen.add(i)
            out[k, j] = (i, *position[m])
            j += 1
            if j == top:
                break
    return out


def estimate_render_seconds(model: ConvNet, layer: str, n: int, *,
                            style: Lucid | None = None, size: int | None = None,
                            steps: int | None = None) -> float:
    """XLA:CPU seconds estimated for rendering ``n`` directions of ``layer``
    (the library's CPU time model, as the feature-visualization runs)."""
    return _render.render_seconds(model, layer, n, style=style, size=size,
                                  steps=steps)


def _progress(run: Run, desc: str):
    p = run.progress
    if not p:
        return None
    if callable(p) and p is not True:
        return lambda done, total, el: p(done, total)

    def say(done, total, el):
        left = el / done * (total - done) if done else float("nan")
        print(f"{desc}: {done}/{total} images, {format_seconds(el)} elapsed, "
              f"~{format_seconds(left)} left", file=sys.stderr, flush=True)

    return say


def activation_atlas(
    params: Params,
    source,
    layer: str,
    *,
    key: PRNGKey,
    grid: int = 20,
    samples: int = 100_000,
    min_count: int = 3,
    model: ConvNet | None = None,
    class_index: int | None = None,
    size: int | None = None,
    border: int = 0,
    render: bool = True,
    style: Lucid | None = None,
    render_size: int | None = None,
    steps: int | None = None,
    cossim_pow: float = 4.0,
    top: int = 8,
    n_neighbors: int = 15,
    min_dist: float = 0.01,
    run: Run | None = None,
) -> ActivationAtlas:
    """The activation atlas of ``layer`` over the images of ``source``.

    Args:
      params: model weights.
      source: the dataset: an array ``(n, h, w, 3)`` RGB [0, 255] (uint8 or
        float), a list of ``(h, w, 3)`` arrays, or (with the dataset reader)
        a folder, glob, path list or grain source.
      layer: a spatial layer of the model.
      key: PRNG key: the reservoir's priorities (``fold_in(key, 0)``), the
        UMAP seed (``fold_in(key, 1)``) and the renders (``fold_in(key, 2)``).
      grid: cells per side of the layout.
      samples: reservoir size (activation vectors kept).
      min_count: cells with fewer vectors are dropped.
      model: the network; None infers the VGG16 preset from ``params``.
      class_index: a class of the model's classifier: a class-filtered atlas
        (vectors drawn and averaged with weight = their attribution
        ``a . d logit / d a`` to that class's logit, clipped at 0).
      size: the side images are resized to for sampling; None: the model's
        fixed input size, else a square array's own size, else 224.
      border: positions within ``border`` rows/columns of the layer map's
        edge are never sampled (0: all positions, as the paper; their
        receptive fields reach into the zero padding, which makes their
        vectors unlike the interior's).
      render: render each cell (False: layout only, ``images`` None).
      style: a :class:`~jaxconvviz.Lucid` (None: ``Lucid()``): transforms,
        parameterization, steps, size; ``render_size``/``steps`` override
        its size/steps.
      cossim_pow: the power of the cosine term of the objective
        (:class:`~jaxconvviz.objectives.CosineDirection`).
      top: dataset patches kept per cell.
      n_neighbors, min_dist: UMAP's parameters.
      run: execution options (batch size of the sampling pass and of the
        render, devices, progress with ETA on both phases).

    Returns:
      An :class:`ActivationAtlas`.

    Raises:
      InputError: bad arguments (before any compute), or umap-learn /
        scikit-learn missing (naming the ``jaxconvviz[atlas]`` extra).
    """
    require("umap", "activation_atlas")
    model = resolve_model(params, model=model)
    model.check_layer(layer, model.spatial_layers)
    run = Run() if run is None else run
    if not isinstance(run, Run):
        raise InputError(f"run must be None or a jcv.Run(...); got {run!r:.80}.")
    for name, v, lo in (("grid", grid, 1), ("samples", samples, 4),
                        ("border", border, 0), ("min_count", min_count, 1),
                        ("top", top, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise InputError(f"{name} must be an int >= {lo}; got {v!r}.")
    if class_index is not None:
        if not model.has_top:
            raise InputError("class_index needs a model with a classifier top; "
                             "these params have none.")
        n_cls = model.num_outputs
        if not (0 <= int(class_index) < n_cls):
            raise InputError(f"class_index must be in [0, {n_cls}); got "
                             f"{class_index!r}.")
        class_index = int(class_index)
    src = open_images(source)
    fixed = model.input_shape[0]
    if size is None:
        size = fixed or src.size or 224
    if class_index is not None and fixed is not None and size != fixed:
        raise InputError(f"size must be {fixed} for the classifier top; got {size}.")
    bs = run.batch_size or 16
    vec, img, pos, w, hw = _sample.sample_vectors(
        params, src, layer, key=jax.random.fold_in(key, 0), samples=int(samples),
        model=model, size=int(size), batch_size=bs, class_index=class_index,
        border=int(border), progress=_progress(run, f"atlas sample {layer}"))
    if vec is None or vec.shape[0] < 4:
        raise InputError(f"the dataset gave {0 if vec is None else vec.shape[0]} "
                         f"activation vectors at {layer!r}; the atlas needs at "
                         "least 4.")
    t0 = time.perf_counter()
    if run.progress:
        print(f"atlas layout {layer}: UMAP of {vec.shape[0]:,} vectors x "
              f"{vec.shape[1]} (cosine; single-threaded for a reproducible "
              f"layout)", file=sys.stderr, flush=True)
    coords = umap_layout(vec, key=jax.random.fold_in(key, 1), n_neighbors=n_neighbors,
                         min_dist=min_dist)
    if run.progress:
        print(f"atlas layout {layer}: {format_seconds(time.perf_counter() - t0)}",
              file=sys.stderr, flush=True)
    cell_of, cells, counts, dirs = bin_cells(
        coords, vec, int(grid), min_count=min_count,
        weight=None if class_index is None else w)
    if dirs.shape[0] == 0:
        raise InputError(f"no cell holds min_count={min_count} vectors; lower it "
                         f"or the grid ({grid}).")
    patches = top_patches(vec, cell_of, dirs, img, pos, top=int(top))
    images = None
    if render:
        # the renderer states its CPU time estimate first (Run.progress)
        images = _render.render_directions(
            params, layer, dirs, key=jax.random.fold_in(key, 2), model=model,
            style=style, size=render_size, steps=steps, cossim_pow=cossim_pow,
            run=run)
    return ActivationAtlas(layer, int(grid), vec, img, pos, w, coords, cell_of, cells,
                           counts, dirs, images, patches, list(src.names), class_index,
                           tuple(hw), int(size))


__all__ = ["ActivationAtlas", "activation_atlas", "umap_layout", "bin_cells",
           "estimate_render_seconds", "open_images",
           "top_patches", "compose", "require", "EXTRA"]
