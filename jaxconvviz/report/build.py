"""Build the report's pages and images into a folder (the command makes that
folder a temporary one and renames it into place).

Compute goes through the library's public functions (filter patterns,
activations, kernels, predictions, Grad-CAM / the CAM family, and the
lucid-style renderer :func:`jaxconvviz.render`); this module only arranges
their results as HTML pages and compressed images.

Layout of a report folder::

    index.html            model: layer table, weights source and hash, one
                          row per visualised layer with its first patterns
    images.html           each image: top-5 predictions and CAM overlays
                          (models with a classifier top)
    layers/<layer>.html   atlas, activation grids, kernels, weight histogram
    units/<layer>/<k>.html  one filter: patterns, top patches, distribution
    img/...               the images; style.css, report.js
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from jaxconvviz.errors import InputError
from jaxconvviz.featureviz.filters import filter_activation
from jaxconvviz.featureviz.render import filter_patterns, render
from jaxconvviz.featureviz.styles import Book, Lucid
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.labels import decode_predictions
from jaxconvviz.models.predict import activations, predict
from jaxconvviz.models.preprocess import deprocess_image
from jaxconvviz.models.receptive import crop_patch, receptive_field, top_units
from jaxconvviz.report import encode
from jaxconvviz.report import html as H
from jaxconvviz.views.activation_grids import activation_grid
from jaxconvviz.views.kernels import kernel_grid, weight_histogram

#: Side of a top-k patch on unit pages (css and file pixels).
PATCH_PX = 96
#: Widest activation grid image (pixels); wider grids are shrunk.
GRID_MAX_WIDTH = 1280
#: Filters in each layer's strip on the index page.
STRIP = 8


@dataclasses.dataclass(frozen=True)
class ReportImage:
    """One input image: its display name and RGB float32 pixels in [0, 255],
    ``(h, w, c)`` already at the model's input size."""

    name: str
    rgb: np.ndarray


@dataclasses.dataclass
class ReportStats:
    """What a build wrote: file count, bytes, per-kind bytes, seconds."""

    files: int = 0
    bytes: int = 0
    by_kind: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    filters: int = 0


def ascent_macs(model: ConvNet, layers: Sequence[str], n_filters: Mapping[str, int],
                size: int, steps: int) -> int:
    """Multiply-adds of the book-style ascent of ``n_filters[layer]`` filters
    per layer (forward + backward counted as 3 forwards)."""
    from jaxconvviz.models.shapes import conv_macs

    return sum(3 * steps * n_filters[layer] * conv_macs(model, layer, size)
               for layer in layers)


def estimate_seconds(model: ConvNet, layers: Sequence[str],
                     n_filters: Mapping[str, int], size: int, steps: int, *,
                     lucid_steps: int = 0) -> float:
    """Rough CPU time of a report: the book ascent (and ``lucid_steps`` of the
    lucid style) by the library's one CPU time model
    (:func:`jaxconvviz.featureviz.atlas.estimate_seconds`), plus ~1.5 s per
    layer (compilation) and ~0.02 s per unit page."""
    from jaxconvviz.featureviz.atlas import estimate_seconds as ascent_seconds

    n = {layer: n_filters[layer] for layer in layers}
    est = ascent_seconds(model, n, style=Book(size=size, steps=steps))
    if lucid_steps:
        est += ascent_seconds(model, n, style=Lucid(size=size, steps=lucid_steps))
    return est + 1.5 * len(layers) + 0.02 * sum(n.values())


class _Writer:
    def __init__(self, root: Path):
        self.root = root
        self.stats = ReportStats()

    def put(self, rel: str, data: bytes | str, kind: str) -> str:
        if isinstance(data, str):
            data = data.encode("utf-8")
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as fh:
            fh.write(data)
        self.stats.files += 1
        self.stats.bytes += len(data)
        self.stats.by_kind[kind] = self.stats.by_kind.get(kind, 0) + len(data)
        return rel


def _check(model: ConvNet, layers, images, size, filters_per_layer, top_k, steps):
    convs = model.conv_layers
    for layer in layers:
        model.check_layer(layer, convs, name="layers")
        need = model.min_input_size(layer)
        if size < need:
            raise InputError(f"size must be at least {need} px for layer {layer!r}; "
                             f"got {size}.")
    if not layers:
        raise InputError("layers must name at least one conv layer; got none.")
    if not images:
        raise InputError("images must hold at least one image; got none.")
    shapes = {im.rgb.shape for im in images}
    if len(shapes) != 1:
        raise InputError(f"images must all have one shape (resize them to the "
                         f"model's input); got {sorted(shapes)}.")
    (shape,) = shapes
    if len(shape) != 3 or shape[-1] != model.input_shape[2]:
        raise InputError(f"images must be (h, w, {model.input_shape[2]}); got "
                         f"{shape}.")
    for layer in layers:
        if min(model.output_shape(layer, shape[:2])[:2]) < 1:
            raise InputError(f"images of {shape[0]}x{shape[1]} px are too small for "
                             f"layer {layer!r}.")
    for name, v, lo in (("filters_per_layer", filters_per_layer, 1),
                        ("top_k", top_k, 1), ("steps", steps, 1)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)
                              or v < lo):
            raise InputError(f"{name} must be an integer >= {lo}; got {v!r}.")


def _u8_rgb(a) -> np.ndarray:
    a = np.clip(np.rint(np.asarray(a, np.float32)), 0, 255).astype(np.uint8)
    return np.repeat(a, 3, axis=-1) if a.ndim == 3 and a.shape[-1] == 1 else a


def _diverging(k: np.ndarray, lim: float) -> np.ndarray:
    """Weights -> RGB: blue (-lim), white (0), red (+lim)."""
    t = np.clip(np.asarray(k, np.float32) / max(lim, 1e-12), -1.0, 1.0)[..., None]
    white = np.ones(3, np.float32)
    red, blue = np.array([0.8, 0.1, 0.1], np.float32), np.array([0.1, 0.3, 0.8],
                                                                np.float32)
    rgb = np.where(t >= 0, white + t * (red - white), white - t * (blue - white))
    return (rgb * 255.0).round().astype(np.uint8)


def _kernel_image(kg, *, px: int = 24, cols: int = 32, gap: int = 2) -> np.ndarray:
    """Tile a KernelGrid's kernels into one RGB image (nearest upscaling)."""
    from jaxconvviz.views.grids import tile_grid

    k = np.asarray(kg.kernels, np.float32)
    tiles = ((k * 255.0).round().astype(np.uint8) if kg.rgb
             else _diverging(k, float(kg.vmax)))
    tiles = np.stack([encode.resize(t, (px, px), smooth=False) for t in tiles])
    return tile_grid(tiles, n_cols=min(cols, len(tiles)), margin=gap)


def available_cam_methods() -> tuple[str, ...]:
    """The registered CAM methods (:func:`jaxconvviz.cam_methods`), in
    display order."""
    from jaxconvviz.attribution.cam_registry import cam_methods

    return cam_methods()


def _cam_fns(model: ConvNet, methods: Sequence[str]) -> list[tuple[str, Callable]]:
    """``[(label, fn(params, images) -> (n, h, w) in [0, 1])]`` per method."""
    from jaxconvviz.attribution.cam_registry import cam_method
    from jaxconvviz.attribution.cams import cam

    return [(cam_method(m).label, lambda p, x, m=m: cam(p, x, method=m, model=model))
            for m in methods]


def build_report(
    dest: str | Path,
    params,
    *,
    model: ConvNet,
    images: Sequence[ReportImage],
    key,
    layers: Sequence[str] | None = None,
    filters_per_layer: int | None = None,
    size: int = 64,
    steps: int = 40,
    style: str = "auto",
    lucid_steps: int = 512,
    cam_methods: Sequence[str] | None = None,
    pre_activation: bool = True,
    top_k: int = 6,
    source: str = "",
    source_hash: str | None = None,
    log: Callable[[str], None] | None = None,
    examples=None,
    examples_source: str = "",
) -> ReportStats:
    """Write a whole report into the existing folder ``dest``.

    Args:
      dest: an existing (normally empty, temporary) folder.
      params: the model's weights.
      model: the network (:class:`~jaxconvviz.ConvNet`).
      images: the images for activations, patches and attribution, RGB
        [0, 255] at one size the model accepts.
      key: PRNG key of the pattern start images (filter ``k`` of every layer
        starts from ``fold_in(key, k)``, as in :func:`~jaxconvviz.filter_patterns`).
      layers: conv layers to visualise (None: all of ``model.conv_layers``).
      filters_per_layer: the first ``n`` filters of each layer (None: all).
      size: pattern side in pixels.
      steps: book-style ascent steps.
      style: ``"book"`` (gradient ascent, DLwP) or ``"lucid"`` /
        ``"auto"`` (lucid's style too, :func:`jaxconvviz.render`; the book
        patterns are shown beside).
      lucid_steps: optimisation steps of the lucid style (lucid: 512).
      cam_methods: CAM methods on the images page (models with a top); None:
        every one of :func:`available_cam_methods`.
      pre_activation: maximise the pre-ReLU response (filters silent on the
        grey start image still get a pattern); False: the book's objective.
      top_k: image patches per unit page.
      source: a description of the weights, shown on the index.
      source_hash: SHA-256 of the weights file, shown on the index.
      log: called with one progress line per layer (and a few more).
      examples: a :class:`~jaxconvviz.DatasetExamples` holding every layer,
        or None: its top-k dataset crops on the unit pages, units by
        selectivity and dead units on the layer pages
        (:mod:`jaxconvviz.report.dataset_pages`).
      examples_source: where ``examples`` came from (shown on the index).

    Returns:
      :class:`ReportStats`.
    """
    import jax

    t0 = time.perf_counter()
    say = log or (lambda _msg: None)
    dest = Path(dest)
    layers = tuple(model.conv_layers if layers is None else layers)
    if style not in ("auto", "book", "lucid"):
        raise InputError(f"style must be 'auto', 'book' or 'lucid'; got {style!r}.")
    use_lucid = style != "book"
    _check(model, layers, images, size, filters_per_layer, top_k, steps)
    methods = available_cam_methods() if cam_methods is None else tuple(cam_methods)
    bad = [m for m in methods if m not in available_cam_methods()]
    if bad or not methods:
        raise InputError(f"cam_methods must be some of "
                         f"{', '.join(available_cam_methods())}; got {methods!r}.")
    if (isinstance(lucid_steps, bool) or not isinstance(lucid_steps, int)
            or lucid_steps < 1):
        raise InputError(f"lucid_steps must be an integer >= 1; got {lucid_steps!r}.")
    out = _Writer(dest)
    dsp = None
    if examples is not None:
        from jaxconvviz.report.dataset_pages import DatasetPages, check_examples

        check_examples(examples, model, layers)
        dsp = DatasetPages(out, examples, source=examples_source)
    out.put("style.css", H.CSS, "html")
    out.put("report.js", H.JS, "html")
    x = np.stack([np.asarray(im.rgb, np.float32) for im in images])
    hw = tuple(int(v) for v in x.shape[1:3])
    names = [im.name for im in images]
    sel = {layer: list(range(min(model.channels(layer), filters_per_layer
                                 or model.channels(layer)))) for layer in layers}

    # ---- activations of every visualised layer, one forward pass
    acts = {k: np.asarray(v) for k, v in activations(
        params, x, layers=layers, model=model).items()}
    photos = []
    for i, im in enumerate(images):
        photos.append(out.put(f"img/photos/{i}.jpg", encode.jpeg(_u8_rgb(im.rgb)),
                              "photos"))
    _images_page(out, params, model, x, names, photos, methods)
    say(f"images page: {len(images)} image(s) at {hw[0]}x{hw[1]} px"
        + ("" if model.has_top else " (no classifier top: no predictions/CAM)"))

    # ---- one layer at a time
    layer_rows = []
    per_layer = {layer: ascent_macs(model, (layer,), {layer: len(sel[layer])}, size,
                                    steps) for layer in layers}
    done_macs, total_macs = 0, sum(per_layer.values())
    for li, layer in enumerate(layers):
        tl = time.perf_counter()
        idx = sel[layer]
        pats = np.asarray(filter_patterns(
            params, layer, idx, key=key, model=model,
            style=Book(steps=steps, size=size, preprocess=True,
                           pre_activation=pre_activation)))
        reached = np.asarray(filter_activation(params, pats, layer, idx,
                                                   preprocess=True, model=model))
        book = deprocess_image(pats)
        book = np.repeat(book, 3, -1) if book.shape[-1] == 1 else book
        lucid = None
        if use_lucid:
            # the Lucid style's results are RGB [0, 255] floats
            lucid = _u8_rgb(render(params, layer, idx, key=key, model=model,
                                       style=Lucid(size=size, steps=lucid_steps)))
        tiles, lucid_tiles = [], []
        for j, k in enumerate(idx):
            data, ext = encode.tile(book[j])
            tiles.append(out.put(f"img/tiles/{layer}/{k}.{ext}", data, "tiles"))
            if lucid is not None:
                data, ext = encode.tile(lucid[j])
                lucid_tiles.append(out.put(f"img/tiles/{layer}/{k}_lucid.{ext}", data,
                                           "tiles"))
        a = acts[layer]  # (n, h', w', c)
        ever_on = (a > 0).any(axis=(0, 1, 2))
        rf = receptive_field(model, layer, hw)
        ds_units = {k: dsp.unit_html(layer, k) if dsp else "" for k in idx}
        _layer_page(out, params, model, layer, idx, tiles, a, names, ever_on, rf,
                    size, pre_activation, layers,
                    extra=dsp.layer_html(layer, idx) if dsp else "")
        for j, k in enumerate(idx):
            _unit_page(out, layer, k, idx, j, tiles[j],
                       lucid_tiles[j] if lucid_tiles else None, a[..., k], x, names,
                       rf, top_k, float(reached[j]), pre_activation,
                       model.channels(layer), extra=ds_units[k])
        dead = int((~ever_on).sum())
        layer_rows.append((layer, idx, tiles, dead, rf))
        dt, total_t = time.perf_counter() - tl, time.perf_counter() - t0
        done_macs += per_layer[layer]
        eta = (f", ~{(total_macs - done_macs) * total_t / done_macs:.0f} s left"
               if li + 1 < len(layers) and done_macs > 0.05 * total_macs else "")
        say(f"[{li + 1}/{len(layers)}] {layer}: {len(idx)} filter(s), {dead} of "
            f"{model.channels(layer)} dead on the images, {dt:.1f} s "
            f"(total {total_t:.0f} s{eta}, {out.stats.bytes / 1e6:.1f} MB)")
    out.stats.filters = sum(len(v) for v in sel.values())
    _index_page(out, params, model, hw, layer_rows, source, source_hash, size, steps,
                pre_activation, use_lucid, len(images), jax.default_backend(),
                extra=dsp.index_html() if dsp else "")
    out.stats.seconds = time.perf_counter() - t0
    return out.stats


# ------------------------------------------------------------------ pages
def _images_page(out: _Writer, params, model: ConvNet, x, names, photos,
                 methods) -> None:
    from jaxconvviz.views.heatmaps import overlay

    parts = ["<h1>Images</h1>"]
    if not model.has_top:
        parts.append('<p class="note">This model has no classifier top, so there '
                     "are no predictions and no class activation maps. A report of "
                     "<code>--weights imagenet</code> (with its top, fetched once by "
                     "<code>jaxconvviz weights fetch imagenet --top</code>) has "
                     "them.</p>")
    preds, cams = None, []
    if model.has_top:
        probs = np.asarray(predict(params, x, model=model))
        if probs.shape[1] == 1000:
            preds = [[(name, float(p)) for _, name, p in row]
                     for row in decode_predictions(probs, top=5)]
        else:
            top = np.argsort(-probs, axis=1, kind="stable")[:, :5]
            preds = [[(f"class {c}", float(probs[i, c])) for c in row]
                     for i, row in enumerate(top)]
        for label, fn in _cam_fns(model, methods):
            heat = np.asarray(fn(params, x), np.float32)
            over = overlay(_u8_rgb(x), heat)
            cams.append((label, [out.put(
                f"img/cam/{_slug(label)}_{i}.jpg", encode.jpeg(o), "cam")
                for i, o in enumerate(over)]))
    for i, name in enumerate(names):
        figs = [f'<figure>{H.img(photos[i], name, cls="photo", lazy=i > 1)}'
                f"<figcaption>{H.esc(name)} (as the model sees it)</figcaption>"
                "</figure>"]
        for label, paths in cams:
            figs.append(f'<figure>{H.img(paths[i], label, cls="photo")}'
                        f"<figcaption>{H.esc(label)}, top-1 class</figcaption>"
                        "</figure>")
        parts.append(f"<h2>{H.esc(name)}</h2>")
        if preds is not None:
            parts.append(H.table(["class", "probability"],
                                 [[H.esc(c), f"{p:.4f}"] for c, p in preds[i]],
                                 numeric=(1,)))
        parts.append(f'<div class="pair">{"".join(figs)}</div>')
    out.put("images.html", H.page("Images - jaxconvviz report", "\n".join(parts),
                                  root=""), "html")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


def _layer_nav(layers, layer, root: str) -> str:
    i = layers.index(layer)
    prev = (f'<a rel="prev" href="{root}layers/{layers[i - 1]}.html">&larr; '
            f"{layers[i - 1]}</a>" if i else "")
    nxt = (f'<a rel="next" href="{root}layers/{layers[i + 1]}.html">'
           f"{layers[i + 1]} &rarr;</a>" if i + 1 < len(layers) else "")
    return f'<div class="pager">{prev}{nxt}</div>'


def _layer_page(out: _Writer, params, model, layer, idx, tiles, a, names, ever_on,
                rf, size, pre_activation, layers, *, extra: str = "") -> None:
    c = model.channels(layer)
    dead = int((~ever_on).sum())
    cells = []
    for j, k in enumerate(idx):
        cls = "" if ever_on[k] else ' class="dead"'
        cells.append(f'<a{cls} href="../units/{layer}/{k}.html">'
                     f'{H.img("../" + tiles[j], f"filter {k}", lazy=j >= 24)}'
                     f"{k}</a>")
    grids = []
    for i, name in enumerate(names):
        g = np.asarray(activation_grid(a[i], images_per_row=16))
        g = encode.fit_width(_u8_rgb(g[..., None]), GRID_MAX_WIDTH)
        p = out.put(f"img/act/{layer}_{i}.jpg", encode.jpeg(g), "activations")
        grids.append(f"<figure>{H.img('../' + p, f'{name} at {layer}', cls='wide')}"
                     f"<figcaption>{H.esc(name)}: all {c} channels of {layer} "
                     f"({a.shape[1]}x{a.shape[2]} each), channel k at row k // 16"
                     "</figcaption></figure>")
    kg = kernel_grid(params, layer, model=model)
    kimg = _kernel_image(kg)
    kp = out.put(f"img/kernels/{layer}.png", encode.png(kimg), "kernels")
    what = ("RGB: each filter's 3 input channels (grey = 0)" if kg.rgb
            else "mean over the input channels; blue < 0 < red")
    hist = weight_histogram(params, layer, model=model, bins=40)
    svg = H.svg_histogram(hist.counts, hist.edges, label=f"{layer} kernel weights")
    objective = "pre-ReLU" if pre_activation else "post-ReLU"
    body = f"""<h1>{H.esc(layer)}</h1>
{_layer_nav(list(layers), layer, "../")}
<p>{c} filters, output {a.shape[1]}x{a.shape[2]} per image; receptive field
{rf.size[0]}x{rf.size[1]} px, stride {rf.jump[0]} px.
<b>{dead} of {c}</b> filters are dead on the {len(names)} image(s) (never positive
anywhere); dimmed below.</p>
<h2>Filter patterns ({len(idx)} of {c})</h2>
<p class="muted">Gradient ascent in RGB from grey noise ({size} px), maximising
each filter's mean {objective} response. Click a tile for its unit page.</p>
<div class="atlas">{"".join(cells)}</div>
{extra}<h2>Activations</h2>
{"".join(grids)}
<h2>Kernels and weights</h2>
<div class="pair"><figure>{H.img('../' + kp, f'{layer} kernels', cls='wide')}
<figcaption>{c} kernels, {what}; colour limit &plusmn;{kg.vmax:.3g}</figcaption>
</figure><figure>{svg}<figcaption>{hist.size:,} weights, mean {hist.mean:.3g},
std {hist.std:.3g}</figcaption></figure></div>
"""
    out.put(f"layers/{layer}.html",
            H.page(f"{layer} - jaxconvviz report", body, root="../"), "html")


def _unit_page(out: _Writer, layer, k, idx, j, tile, lucid_tile, a, x, names, rf,
               top_k, reached, pre_activation, n_channels, *, extra: str = ""
               ) -> None:
    root = "../../"
    prev = (f'<a rel="prev" href="{idx[j - 1]}.html">&larr; filter {idx[j - 1]}</a>'
            if j else "")
    nxt = (f'<a rel="next" href="{idx[j + 1]}.html">filter {idx[j + 1]} &rarr;</a>'
           if j + 1 < len(idx) else "")
    pats = [f'<figure class="pattern">'
            f'{H.img(root + tile, "book pattern", cls="big", lazy=False)}'
            f"<figcaption>book style (gradient ascent); mean "
            f"{'pre' if pre_activation else 'post'}-ReLU objective, reached "
            f"post-ReLU mean {reached:.3g}</figcaption></figure>"]
    if lucid_tile:
        lt = H.img(root + lucid_tile, "lucid pattern", cls="big", lazy=False)
        pats.append(f'<figure class="pattern">{lt}'
                    "<figcaption>lucid style (jaxconvviz.render)</figcaption>"
                    "</figure>")
    # top-k patches: one strip file, shown per patch with object-position
    md = max(1, math.ceil(rf.size[0] / rf.jump[0] / 2)), max(
        1, math.ceil(rf.size[1] / rf.jump[1] / 2))
    best = [u for u in top_units(a, top_k, min_distance=md) if u[3] > 0]
    figs = []
    if best:
        u8 = _u8_rgb(x)
        crops = [encode.resize(crop_patch(u8[n], rf.box(i, jj)), (PATCH_PX, PATCH_PX),
                               smooth=True) for n, i, jj, _ in best]
        strip = np.concatenate(crops, axis=1)
        sp = out.put(f"img/patches/{layer}/{k}.jpg", encode.jpeg(strip), "patches")
        for r, (n, i, jj, v) in enumerate(best):
            y0, y1, x0, x1 = rf.box(i, jj)
            figs.append(
                f'<figure><img src="{root}{sp}" alt="patch {r + 1}" width="{PATCH_PX}" '
                f'height="{PATCH_PX}" style="width:{PATCH_PX}px;height:{PATCH_PX}px;'
                f'object-fit:none;object-position:'
                f'-{r * PATCH_PX}px 0" loading="lazy">'
                f'<figcaption title="{H.esc(names[n])}: unit ({i}, {jj}), input px '
                f'y {y0}..{y1 - 1}, x {x0}..{x1 - 1}"><b>{v:.3g}</b><br>'
                f"{H.esc(names[n])}<br>unit ({i}, {jj})</figcaption></figure>")
        patches = f'<div class="patches">{"".join(figs)}</div>'
    else:
        patches = ('<p class="note">This filter is never positive on the given '
                   "images: no patches.</p>")
    vals = a.ravel()
    pos = vals[vals > 0]
    counts, edges = np.histogram(pos if pos.size else vals, bins=30)
    svg = H.svg_histogram(counts, edges, label="positive activations"
                          if pos.size else "activations")
    per_img = H.table(["image", "max", "mean", "positive"],
                      [[H.esc(names[n]), f"{a[n].max():.3g}", f"{a[n].mean():.3g}",
                        f"{(a[n] > 0).mean():.1%}"] for n in range(a.shape[0])],
                      numeric=(1, 2, 3))
    body = f"""<h1>{H.esc(layer)} filter {k}</h1>
<div class="pager"><a href="../../layers/{layer}.html">&uarr; {H.esc(layer)}
({n_channels} filters)</a>{prev}{nxt}</div>
<div class="pair">{"".join(pats)}{extra}</div>
<h2>Top {len(best)} image patches</h2>
<p class="muted">The positions of the given images where this filter responds most
(at most one per half field), each cropped to the unit's receptive field
({rf.size[0]}x{rf.size[1]} px, computed from the layer table) and shown at
{PATCH_PX} px; black is outside the image.</p>
{patches}
<h2>Activation distribution</h2>
<div class="pair"><figure>{svg}<figcaption>{pos.size:,} of {vals.size:,} positions
positive ({pos.size / max(vals.size, 1):.1%})</figcaption></figure>{per_img}</div>
"""
    out.put(f"units/{layer}/{k}.html",
            H.page(f"{layer} filter {k} - jaxconvviz report", body, root=root), "html")


def _index_page(out: _Writer, params, model: ConvNet, hw, layer_rows, source,
                source_hash, size, steps, pre_activation, use_lucid, n_images,
                backend, *, extra: str = "") -> None:
    rows, total = [], 0
    for spec in model.layers:
        shape = model.output_shape(spec.name, hw)
        n = int(sum(np.size(v) for v in params.get(spec.name, {}).values()))
        total += n
        rf = ""
        if spec.name in model.spatial_layers:
            f = receptive_field(model, spec.name, hw)
            rf = f"{f.size[0]}x{f.size[1]}"
        name = H.esc(spec.name)
        if any(r[0] == spec.name for r in layer_rows):
            name = f'<a href="layers/{spec.name}.html">{name}</a>'
        rows.append([name, H.esc(spec.kind), H.esc(tuple(shape)), rf, f"{n:,}"])
    rows.append(["<b>total</b>", "", "", "", f"<b>{total:,}</b>"])
    strips = []
    for layer, idx, tiles, dead, _rf in layer_rows:
        imgs = "".join(f'<a href="units/{layer}/{k}.html">'
                       f'{H.img(tiles[j], f"{layer} filter {k}", lazy=len(strips) > 6)}'
                       "</a>" for j, k in enumerate(idx[:STRIP]))
        strips.append([f'<a href="layers/{layer}.html">{H.esc(layer)}</a>',
                       f'<div class="strip">{imgs}</div>',
                       f"{len(idx)} / {model.channels(layer)}", str(dead)])
    digest = (f"<code>{H.esc(source_hash)}</code>" if source_hash
              else "(no file)")
    styles = "book" + (" and lucid" if use_lucid else "")
    body = f"""<h1>{H.esc(model.name_)}: what its filters respond to</h1>
<p>Weights: {H.esc(source)}<br>SHA-256: {digest}</p>
<p class="muted">{styles} patterns at {size} px ({steps} ascent steps, mean
{'pre' if pre_activation else 'post'}-ReLU objective); activations and patches from
{n_images} image(s) at {hw[0]}x{hw[1]} px; computed on {H.esc(backend)}.</p>
{extra}<h2>Layers</h2>
{H.table(["layer", "patterns", "filters shown", "dead on images"], strips,
         numeric=(2, 3))}
<h2>Model</h2>
{H.table(["layer", "kind", f"output shape ({hw[0]}x{hw[1]} input)",
          "receptive field", "parameters"], rows, numeric=(4,))}
"""
    out.put("index.html", H.page(f"{model.name_} - jaxconvviz report", body, root=""),
            "html")


__all__ = ["build_report", "ReportImage", "ReportStats", "estimate_seconds",
           "ascent_macs", "available_cam_methods"]
