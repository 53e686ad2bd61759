"""The activation-atlas page: one self-contained, offline HTML file.

The composed atlas image with a clickable grid over it (zoom with the
buttons or the mouse wheel, drag to pan); clicking a cell shows its
rendering, its count and its top dataset patches (with image names). Every
image is embedded (``data:`` URIs), so the file works alone, e.g. opened
from disk. Used by ``jaxconvviz activation-atlas`` and by
``jaxconvviz report --atlas LAYER``.
"""

from __future__ import annotations

import base64
import html
import json

import numpy as np

from jaxconvviz.models.receptive import crop_patch, receptive_field
from jaxconvviz.report import encode


def _uri(a, kind: str = "png") -> str:
    b = encode.png(a) if kind == "png" else encode.jpeg(a)
    return f"data:image/{'png' if kind == 'png' else 'jpeg'};base64," + (
        base64.b64encode(b).decode("ascii"))


def patch_box(model, layer: str, input_size: int, row: int, col: int
              ) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` in input pixels of the patch shown for the unit
    at ``(row, col)``: centred on its receptive field, ``min(field, 4 x
    stride)`` pixels wide (the whole field of a deep unit is most of the
    image)."""
    rf = receptive_field(model, layer, (input_size, input_size))
    y0, y1, x0, x1 = rf.box(row, col)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    side = max(min(rf.size[0], 4 * rf.jump[0]), 8)
    return (int(round(cy - side / 2)), int(round(cy - side / 2)) + side,
            int(round(cx - side / 2)), int(round(cx - side / 2)) + side)


def patch_crops(atlas, model, image_fn, *, px: int = 64) -> list[list[tuple]]:
    """Per cell, ``[(name, uint8 (px, px, 3)), ...]`` for its top patches;
    ``image_fn(i)`` gives image ``i`` as float RGB ``(s, s, 3)`` at the
    atlas' sampling size."""
    cache: dict[int, np.ndarray] = {}
    out = []
    for cell in np.asarray(atlas.patches):
        row = []
        for i, r, c in cell.tolist():
            if i < 0:
                continue
            if i not in cache:
                cache[i] = np.clip(np.asarray(image_fn(i)), 0, 255).astype(np.uint8)
            box = patch_box(model, atlas.layer, atlas.input_size, r, c)
            crop = crop_patch(cache[i], box, fill=255)
            row.append((atlas.names[i], encode.resize(crop, (px, px))))
        out.append(row)
    return out


_CSS = """
body{font-family:system-ui,sans-serif;margin:0;display:flex;height:100vh}
#view{flex:1;overflow:hidden;position:relative;background:#fafafa;cursor:grab}
#stage{position:absolute;transform-origin:0 0}
#stage img{display:block;image-rendering:auto}
#grid{position:absolute;left:0;top:0;display:grid}
#grid div{box-sizing:border-box}
#grid div.cell{cursor:pointer}
#grid div.cell:hover{outline:2px solid #e33}
#grid div.sel{outline:3px solid #06c}
#side{width:340px;padding:12px;overflow:auto;border-left:1px solid #ccc}
#side img{max-width:100%}
#info img.cell{width:256px;height:256px;image-rendering:auto}
.patches{display:flex;flex-wrap:wrap;gap:4px}
.patches figure{margin:0;width:96px;font-size:10px;word-break:break-all}
.tools{position:absolute;right:8px;top:8px;z-index:2}
"""

_JS = """
const D = JSON.parse(document.getElementById('data').textContent);
const stage = document.getElementById('stage'), view = document.getElementById('view');
let z = 1, ox = 0, oy = 0, drag = null;
function apply(){stage.style.transform=`translate(${ox}px,${oy}px) scale(${z})`;}
function zoom(f, cx, cy){
  ox = cx - (cx - ox) * f; oy = cy - (cy - oy) * f; z *= f; apply();}
view.addEventListener('wheel', e => {e.preventDefault();
  const r = view.getBoundingClientRect();
  zoom(e.deltaY < 0 ? 1.2 : 1 / 1.2, e.clientX - r.left, e.clientY - r.top);});
view.addEventListener('mousedown', e => {drag = [e.clientX - ox, e.clientY - oy, 0];});
window.addEventListener('mousemove', e => {if (drag) {ox = e.clientX - drag[0];
  oy = e.clientY - drag[1]; drag[2]++; apply();}});
window.addEventListener('mouseup', () => {setTimeout(() => {drag = null;}, 0);});
const mid = f => zoom(f, view.clientWidth / 2, view.clientHeight / 2);
document.getElementById('zin').onclick = () => mid(1.5);
document.getElementById('zout').onclick = () => mid(1 / 1.5);
document.getElementById('zfit').onclick = () => {z = 1; ox = oy = 0; apply();};
function show(k){
  if (drag && drag[2] > 2) return;
  document.querySelectorAll('#grid .sel').forEach(e => e.classList.remove('sel'));
  document.getElementById('c' + k).classList.add('sel');
  const c = D.cells[k];
  let h = `<h3>cell (${c.row}, ${c.col})</h3><p>${c.count} activation vectors</p>`;
  h += `<img class="cell" src="${c.img}" alt="rendering of cell ${k}">`;
  h += '<h4>dataset patches</h4>';
  h += '<div class="patches">' + c.patches.map(p =>
    `<figure><img src="${p[1]}"><figcaption>${p[0]}</figcaption></figure>`
  ).join('') + '</div>';
  document.getElementById('info').innerHTML = h;
}
document.querySelectorAll('#grid .cell').forEach(
  e => e.onclick = () => show(+e.dataset.k));
if (location.hash === '#selftest') {
  const first = document.querySelector('#grid .cell');
  if (first) first.click();
  const b = document.body.dataset;
  b.cells = D.cells.length;
  b.patches = document.querySelectorAll('#info .patches figure').length;
  b.shown = document.querySelector('#info h3') ? '1' : '0';
  b.selftest = 'done';
}
"""


def atlas_html(atlas, atlas_u8, *, cell_images_u8=None, patches=None,
               title: str = "Activation atlas") -> str:
    """The page as a string.

    Args:
      atlas: an :class:`~jaxconvviz.ActivationAtlas`.
      atlas_u8: the composed image (:meth:`~jaxconvviz.ActivationAtlas.compose`).
      cell_images_u8: uint8 ``(K, s, s, 3)`` cell renderings (None: cut
        from ``atlas_u8``).
      patches: per cell ``[(name, uint8 crop), ...]`` (:func:`patch_crops`),
        or None.
      title: the page title.
    """
    a = np.asarray(atlas_u8)
    g = atlas.grid
    s = a.shape[0] // g
    cells = []
    for k, ((r, c), n) in enumerate(zip(atlas.cells.tolist(), atlas.counts.tolist(),
                                        strict=True)):
        im = (cell_images_u8[k] if cell_images_u8 is not None
              else a[r * s:(r + 1) * s, c * s:(c + 1) * s])
        ps = [] if patches is None else [(html.escape(str(nm)), _uri(p, "jpeg"))
                                         for nm, p in patches[k]]
        cells.append({"row": r, "col": c, "count": n, "img": _uri(im), "patches": ps})
    where = {(r, c): k for k, (r, c) in enumerate(atlas.cells.tolist())}
    divs = "".join(
        f'<div class="cell" id="c{where[(r, c)]}" data-k="{where[(r, c)]}" '
        f'title="cell ({r}, {c})"></div>' if (r, c) in where else "<div></div>"
        for r in range(g) for c in range(g))
    data = json.dumps({"cells": cells}).replace("</", "<\\/")
    side = a.shape[0]
    head = (f"{html.escape(title)}: layer {html.escape(atlas.layer)}, {g}x{g} grid, "
            f"{len(cells)} cells, {int(atlas.counts.sum()):,} of "
            f"{atlas.vectors.shape[0]:,} vectors")
    if atlas.class_index is not None:
        head += f", filtered by attribution to class {atlas.class_index}"
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        '<div id="view"><div class="tools"><button id="zin">+</button>'
        '<button id="zout">&minus;</button><button id="zfit">fit</button></div>'
        f'<div id="stage"><img src="{_uri(a)}" width="{side}" height="{side}" '
        f'alt="activation atlas"><div id="grid" style="width:{side}px;'
        f'height:{side}px;grid-template-columns:repeat({g},1fr);'
        f'grid-template-rows:repeat({g},1fr)">{divs}</div></div></div>'
        f'<div id="side"><p>{head}</p><p>Click a cell.</p><div id="info"></div></div>'
        f'<script type="application/json" id="data">{data}</script>'
        f"<script>{_JS}</script></body></html>")


def add_to_report(folder, params, model, source, layer: str, *, key, grid: int = 20,
                  samples: int = 100_000, log=print, **kw) -> str:
    """``report --atlas LAYER``: compute the atlas of ``layer`` over
    ``source`` and write ``atlas_<layer>.html`` into the report ``folder``,
    with a link to it at the end of the report's ``index.html``. Returns the
    page's file name."""
    from pathlib import Path

    from jaxconvviz._atomic import atomic_write
    from jaxconvviz.directions.activation_atlas import activation_atlas, open_images

    at = activation_atlas(params, source, layer, key=key, grid=grid, samples=samples,
                          model=model, **kw)
    src = open_images(source)
    img = at.compose()
    crops = patch_crops(at, model, lambda i: src.image(i, at.input_size))
    name = f"atlas_{layer}.html"
    page = atlas_html(at, img, patches=crops)
    folder = Path(folder)
    data = page.encode("utf-8")
    atomic_write(folder / name, lambda fh: fh.write(data))
    index = folder / "index.html"
    if index.is_file():
        text = index.read_text(encoding="utf-8")
        link = (f'<p><a href="{html.escape(name)}">activation atlas of '
                f'{html.escape(layer)}</a></p>')
        text = text.replace("</body>", link + "</body>", 1) if "</body>" in text \
            else text + link
        new = text.encode("utf-8")
        atomic_write(index, lambda fh: fh.write(new))
    log(f"atlas page {name}: {len(at.counts)} cells")
    return name


__all__ = ["atlas_html", "patch_crops", "patch_box", "add_to_report"]
