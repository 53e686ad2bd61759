"""HTML, CSS and the report's one small script, as Python string templates.

Plain HTML5 that opens from ``file://``: no framework, no CDN, no fonts or
anything else fetched from the network. Every page links ``style.css`` and
``report.js`` by a relative path (``root`` is ``""``, ``"../"`` or
``"../../"``). Every ``<img>`` below the first screen is ``loading="lazy"``.

``report.js`` (hand-written, ~30 lines): arrow keys follow the page's
``rel=prev``/``rel=next`` links; after ``load`` it writes the number of
``<img>`` elements and of broken ones to ``<body data-images data-broken>``.
Lazy images that have not loaded yet are not judged then; opening a page
with ``#selftest`` loads every image's ``src`` once and sets
``data-selftest="done"`` when all have answered (the browser test uses it).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

CSS = """\
:root { --fg: #1d2228; --muted: #5c6670; --bg: #fbfbfa; --card: #fff;
  --line: #dde1e5; --accent: #1f5fa8; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto,
  sans-serif; color: var(--fg); background: var(--bg); }
header { padding: 12px 24px; border-bottom: 1px solid var(--line);
  background: var(--card); display: flex; gap: 18px; align-items: baseline;
  flex-wrap: wrap; }
header .brand { font-weight: 700; }
header nav a { margin-right: 14px; }
main { padding: 16px 24px 48px; max-width: 1400px; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 18px; margin: 26px 0 8px; }
.muted { color: var(--muted); }
table { border-collapse: collapse; background: var(--card); }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left;
  vertical-align: middle; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.strip { display: flex; gap: 3px; }
.strip img { width: 48px; height: 48px; image-rendering: pixelated; }
.atlas { display: grid; grid-template-columns: repeat(auto-fill, minmax(104px, 1fr));
  gap: 8px; }
.atlas a { display: block; background: var(--card); border: 1px solid var(--line);
  padding: 4px; text-align: center; font-size: 12px; color: var(--muted); }
.atlas img { width: 100%; aspect-ratio: 1; display: block;
  image-rendering: pixelated; }
.atlas a.dead { opacity: .55; }
.pair { display: flex; gap: 18px; flex-wrap: wrap; align-items: flex-start; }
figure { margin: 0; background: var(--card); border: 1px solid var(--line);
  padding: 6px; }
figcaption { font-size: 13px; color: var(--muted); margin-top: 4px; }
img.big { width: 256px; height: 256px; image-rendering: pixelated; display: block; }
img.wide { max-width: 100%; display: block; }
img.photo { width: 224px; height: auto; display: block; }
.patches { display: flex; gap: 8px; flex-wrap: wrap; }
.patches img { display: block; }
.patches figure { width: 110px; }
.patches figcaption { white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
figure.pattern { width: 270px; }
.pager { display: flex; gap: 16px; margin: 6px 0 10px; }
.bar { fill: #4a7fb8; }
.axis { font-size: 11px; fill: var(--muted); }
.note { background: #fff8e1; border: 1px solid #f0d999; padding: 8px 12px;
  max-width: 900px; }
figure.dsx { max-width: 740px; }
.dsx-grid { display: grid; grid-template-columns: repeat(auto-fill, 116px);
  gap: 6px; }
.dsx-grid figure { border: 0; padding: 0; width: 116px; }
.dsx-grid figcaption { white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
"""

JS = """\
(function () {
  function mark(n, broken, attr) {
    var b = document.body;
    b.setAttribute('data-images', n);
    b.setAttribute('data-broken', broken);
    if (attr) b.setAttribute(attr, 'done');
  }
  window.addEventListener('load', function () {
    var imgs = Array.prototype.slice.call(document.images);
    if (location.hash !== '#selftest') {
      mark(imgs.length, imgs.filter(function (i) {
        return i.complete && i.naturalWidth === 0; }).length, null);
      return;
    }
    var left = imgs.length, broken = 0;
    if (!left) { mark(0, 0, 'data-selftest'); return; }
    imgs.forEach(function (i) {
      var p = new Image();
      p.onload = function () { if (!p.naturalWidth) broken++;
        if (--left === 0) mark(imgs.length, broken, 'data-selftest'); };
      p.onerror = function () { broken++;
        if (--left === 0) mark(imgs.length, broken, 'data-selftest'); };
      p.src = i.src;
    });
  });
  document.addEventListener('keydown', function (e) {
    var rel = e.key === 'ArrowLeft' ? 'prev' : e.key === 'ArrowRight' ? 'next' : '';
    var a = rel && document.querySelector('a[rel=' + rel + ']');
    if (a) location.href = a.href;
  });
})();
"""


def esc(text) -> str:
    """HTML-escape ``text`` (str() first)."""
    return html.escape(str(text), quote=True)


def page(title: str, body: str, *, root: str, subtitle: str = "") -> str:
    """A whole page: header with links to the index and images page, ``body``."""
    sub = f'<span class="muted">{esc(subtitle)}</span>' if subtitle else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<link rel="stylesheet" href="{root}style.css">
</head>
<body>
<header><span class="brand">jaxconvviz report</span>
<nav><a href="{root}index.html">model &amp; layers</a>
<a href="{root}images.html">images</a></nav>{sub}</header>
<main>
{body}
</main>
<script src="{root}report.js"></script>
</body>
</html>
"""


def img(src: str, alt: str, *, cls: str = "", lazy: bool = True,
        size: tuple[int, int] | None = None) -> str:
    """An ``<img>``; ``size = (w, h)`` in pixels reserves its box."""
    attrs = [f'src="{esc(src)}"', f'alt="{esc(alt)}"']
    if cls:
        attrs.append(f'class="{cls}"')
    if size:
        attrs.append(f'width="{int(size[0])}" height="{int(size[1])}"')
    if lazy:
        attrs.append('loading="lazy"')
    return f"<img {' '.join(attrs)}>"


def table(head: Sequence[str], rows: Sequence[Sequence[str]], *,
          numeric: Sequence[int] = ()) -> str:
    """A table; cells are HTML (escape text first); ``numeric``: right-aligned
    column indices."""
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = []
    for r in rows:
        tds = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                      for i, c in enumerate(r))
        body.append(f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def svg_histogram(counts, edges, *, width: int = 420, height: int = 140,
                  label: str = "") -> str:
    """Inline SVG bar chart of a histogram (``counts`` per bin between
    ``edges``), with the value range and the largest count as axis labels."""
    c = np.asarray(counts, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    pad_l, pad_b, pad_t = 8, 30, 16
    w, h = width - 2 * pad_l, height - pad_b - pad_t
    top = c.max() if c.size and c.max() > 0 else 1.0
    bw = w / max(len(c), 1)
    # one path for all bars (a unit page per filter: keep the bytes down)
    d = "".join(f"M{pad_l + i * bw:.1f} {pad_t + h:.0f}v{-h * v / top:.1f}"
                f"h{max(bw - 1, 0.5):.1f}v{h * v / top:.1f}z"
                for i, v in enumerate(c) if v > 0)
    bars = [f'<path class="bar" d="{d}"/>']
    y_axis = pad_t + h
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{esc(label)}">'
        f'<line x1="{pad_l}" y1="{y_axis}" x2="{pad_l + w}" y2="{y_axis}" '
        f'stroke="#888"/>{"".join(bars)}'
        f'<text class="axis" x="{pad_l}" y="{y_axis + 14}">{e[0]:.3g}</text>'
        f'<text class="axis" x="{pad_l + w}" y="{y_axis + 14}" '
        f'text-anchor="end">{e[-1]:.3g}</text>'
        f'<text class="axis" x="{pad_l}" y="11">max count {int(top)}</text>'
        f'<text class="axis" x="{pad_l + w / 2:.0f}" y="{y_axis + 26}" '
        f'text-anchor="middle">{esc(label)}</text></svg>'
    )


__all__ = ["CSS", "JS", "esc", "page", "img", "table", "svg_histogram"]
