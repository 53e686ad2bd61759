"""Dataset examples in the report (``jaxconvviz report --dataset SOURCE`` or
``--examples DIR``), and the arrays the ``examples`` command's figures show.

A :class:`~jaxconvviz.DatasetExamples` (one pass of
:func:`jaxconvviz.dataset_examples` over an image dataset) adds to the
report: on each unit page, the unit's top-k dataset crops beside its feature
visualization, each with its value and file name (the box in the original
file in the tooltip); on each layer page, the layer's units sorted by
selectivity and the units dead over the whole dataset; on the index, where
the examples come from. :mod:`jaxconvviz.report.build` calls
:class:`DatasetPages`; the crops are cut from the original files by
:func:`jaxconvviz.dataset.crops.example_crops`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxconvviz.errors import InputError
from jaxconvviz.report import encode
from jaxconvviz.report import html as H

#: Side of a dataset crop on unit pages (css and file pixels).
CROP_PX = 112
#: Thumbnail side in the layer page's selectivity table.
THUMB_PX = 40


class UnitExamples(NamedTuple):
    """One unit's top-k dataset examples, best first. Ranks without an
    example (fewer than k images excited the unit) have value NaN, name ""
    and a black crop."""

    crops: np.ndarray  # uint8 (k, s, s, 3)
    values: np.ndarray  # float64 (k,)
    names: list  # k file names
    boxes: list  # k (y0, y1, x0, x1) in original pixels, or None


class LayerSummary(NamedTuple):
    """A layer's units at a glance: each unit's top crop and value, the dead
    units, the selectivity and the live units sorted by it (descending, ties
    by unit id)."""

    top_crops: np.ndarray  # uint8 (C, s, s, 3)
    top_values: np.ndarray  # (C,)
    dead_mask: np.ndarray  # bool (C,)
    selectivity: np.ndarray  # (C,)
    by_selectivity: np.ndarray  # int (n_live,)


def example_crops(result, layer: str, unit: int, *, size: int) -> np.ndarray:
    """:func:`jaxconvviz.dataset.crops.example_crops` (imported on use)."""
    from jaxconvviz.dataset import crops

    return np.asarray(crops.example_crops(result, layer, unit, size=size))


def example_boxes(result, layer: str, unit: int) -> list:
    """:func:`jaxconvviz.dataset.crops.example_boxes` (imported on use)."""
    from jaxconvviz.dataset import crops

    return list(crops.example_boxes(result, layer, unit))


def unit_examples(result, layer: str, unit: int, *, crop_size: int = 96
                  ) -> UnitExamples:
    """``unit``'s top-k examples of ``layer`` in ``result``, as
    :class:`UnitExamples` (crops ``crop_size`` px square)."""
    ex = result.layers[layer]
    index = np.asarray(ex.index)[unit]
    k = index.shape[0]
    ok = index >= 0
    values = np.where(ok, np.asarray(ex.value, np.float64)[unit], np.nan)
    names = [str(result.names[i]) if i >= 0 else "" for i in index]
    crops = np.zeros((k, crop_size, crop_size, 3), np.uint8)
    boxes: list = [None] * k
    if ok.any():
        got = example_crops(result, layer, unit, size=crop_size)
        crops[: len(got)] = got[:k]
        for r, b in enumerate(example_boxes(result, layer, unit)[:k]):
            boxes[r] = tuple(int(v) for v in b[1])
    crops[~ok] = 0
    return UnitExamples(crops, values, names, boxes)


def dead_mask(ex) -> np.ndarray:
    """bool ``(C,)``: the units of a LayerExamples never > 0 over the dataset."""
    m = np.zeros(np.asarray(ex.mean).shape[0], bool)
    m[np.asarray(ex.dead(), int)] = True
    return m


def by_selectivity(ex) -> np.ndarray:
    """The live units of a LayerExamples, most selective first (ties: lower
    unit id first); dead units and NaN selectivities are left out."""
    s = np.asarray(ex.selectivity(), np.float64)
    live = np.flatnonzero(~dead_mask(ex) & np.isfinite(s))
    return live[np.lexsort((live, -s[live]))]


def layer_summary(result, layer: str, *, crop_size: int = 96) -> LayerSummary:
    """Each unit's top crop and value for ``layer``, with its selectivity
    and dead units (the ``examples`` command's layer figures)."""
    ex = result.layers[layer]
    value, index = np.asarray(ex.value, np.float64), np.asarray(ex.index)
    C = value.shape[0]
    dead = dead_mask(ex)
    tops = np.zeros((C, crop_size, crop_size, 3), np.uint8)
    first = _first_only(result, layer)  # reads one file per unit, not k
    for u in range(C):
        if index[u, 0] >= 0 and not dead[u]:
            tops[u] = example_crops(first, layer, u, size=crop_size)[0]
    top_values = np.where(index[:, 0] >= 0, value[:, 0], np.nan)
    return LayerSummary(tops, top_values, dead,
                        np.asarray(ex.selectivity(), np.float64), by_selectivity(ex))


def _first_only(result, layer: str):
    """``result`` with only ``layer`` and only each unit's best example (the
    per-example arrays cut to rank 0)."""
    import dataclasses

    ex = result.layers[layer]
    if not dataclasses.is_dataclass(result):
        return result
    names = {f.name for f in dataclasses.fields(ex)}
    cut = {f: np.asarray(getattr(ex, f))[:, :1] for f in
           ("value", "index", "position", "border") if f in names}
    return dataclasses.replace(result, layers={layer: dataclasses.replace(ex, **cut)})


def check_examples(result, model, layers) -> None:
    """InputError unless ``result`` holds every one of ``layers`` with the
    model's unit count (a result of another model or other layers)."""
    have = list(result.layers)
    for layer in layers:
        if layer not in result.layers:
            raise InputError(f"examples must hold layer {layer!r}; the result has "
                             f"{', '.join(have) or 'no layers'} (compute it with "
                             "`jaxconvviz examples SOURCE --layers ...`).")
        c = np.asarray(result.layers[layer].value).shape[0]
        if c != model.channels(layer):
            raise InputError(f"examples of {layer!r} have {c} units but the model's "
                             f"layer has {model.channels(layer)}: the result is of "
                             f"another model ({getattr(result, 'model_name', '?')}).")


class DatasetPages:
    """The report's dataset sections; ``out`` is the report's writer (its
    ``put(rel, data, kind) -> rel``)."""

    def __init__(self, out, result, *, source: str = ""):
        self.out, self.result, self.source = out, result, source
        self._strip: dict = {}

    def index_html(self) -> str:
        r = self.result
        n = len(r.names) - len(r.bad)
        bad = (f"; {len(r.bad)} unreadable file(s) skipped "
               f"(first: {H.esc(r.bad[0][1])}: {H.esc(r.bad[0][2])})" if r.bad
               else "")
        src = f" from {H.esc(self.source)}" if self.source else ""
        return (f'<p class="muted">Dataset examples: top {r.k} of {n:,} image(s)'
                f"{src} at {r.input_hw[0]}x{r.input_hw[1]} px{bad}.</p>")

    def unit_html(self, layer: str, unit: int, *, root: str = "../../") -> str:
        """The unit's top-k dataset crops as one figure (a strip file shown
        crop by crop), each with its value and file name."""
        ux = unit_examples(self.result, layer, unit, crop_size=CROP_PX)
        ok = np.isfinite(ux.values)
        if not ok.any():
            return ('<figure class="dsx"><p class="note">Never positive on any '
                    "dataset image: dead over the dataset, no examples.</p>"
                    "<figcaption>dataset examples</figcaption></figure>")
        strip = np.concatenate(list(ux.crops[ok]), axis=1)
        sp = self.out.put(f"img/dataset/{layer}/{unit}.jpg", encode.jpeg(strip),
                          "dataset")
        self._strip[(layer, unit)] = sp
        cells = []
        for r in np.flatnonzero(ok):
            box = ux.boxes[r]
            where = ("" if box is None else f", original px y {box[0]}.."
                     f"{box[1] - 1}, x {box[2]}..{box[3] - 1}")
            cells.append(
                f'<figure><img src="{root}{sp}" alt="dataset example {r + 1}" '
                f'width="{CROP_PX}" height="{CROP_PX}" style="width:{CROP_PX}px;'
                f"height:{CROP_PX}px;object-fit:none;object-position:"
                f'-{r * CROP_PX}px 0" loading="lazy">'
                f'<figcaption title="{H.esc(ux.names[r])}{where}"><b>'
                f"{ux.values[r]:.4g}</b><br>{H.esc(_base(ux.names[r]))}"
                "</figcaption></figure>")
        ex = self.result.layers[layer]
        sel = float(np.asarray(ex.selectivity())[unit])
        stats = (f"mean {float(np.asarray(ex.mean)[unit]):.3g}, max "
                 f"{float(np.asarray(ex.max)[unit]):.3g}, &gt;0 at "
                 f"{float(np.asarray(ex.frac_pos)[unit]):.1%} of positions, "
                 f"selectivity {sel:.3g}")
        n = len(self.result.names) - len(self.result.bad)
        return (f'<figure class="dsx"><div class="dsx-grid">{"".join(cells)}</div>'
                f"<figcaption><b>top {int(ok.sum())} dataset examples</b> of {n:,} "
                "images, "
                f"cropped to the receptive field in the original file; {stats}"
                "</figcaption></figure>")

    def layer_html(self, layer: str, shown, *, root: str = "../") -> str:
        """The layer's units sorted by selectivity (a table; units with a page
        link to it, with their top crop) and the units dead over the dataset."""
        ex = self.result.layers[layer]
        shown = set(int(k) for k in shown)
        sel = np.asarray(ex.selectivity(), np.float64)
        mean, mx = np.asarray(ex.mean), np.asarray(ex.max)
        fp = np.asarray(ex.frac_pos)
        rows = []
        for u in by_selectivity(ex):
            u = int(u)
            name, thumb = f"unit {u}", ""
            if u in shown:
                name = f'<a href="{root}units/{layer}/{u}.html">unit {u}</a>'
                sp = self._strip.get((layer, u))
                if sp:
                    thumb = (f'<img src="{root}{sp}" alt="top example of unit {u}" '
                             f'width="{THUMB_PX}" height="{THUMB_PX}" style="width:'
                             f"{THUMB_PX}px;height:{THUMB_PX}px;object-fit:cover;"
                             f'object-position:0 0;aspect-ratio:1" loading="lazy">')
            rows.append([name, thumb, f"{sel[u]:.3g}", f"{mx[u]:.3g}",
                         f"{mean[u]:.3g}", f"{fp[u]:.1%}"])
        dead = np.flatnonzero(dead_mask(ex))
        links = ", ".join(
            f'<a href="{root}units/{layer}/{u}.html">{u}</a>' if u in shown
            else str(u) for u in dead.tolist())
        n = len(self.result.names) - len(self.result.bad)
        dead_p = (f"<p><b>{len(dead)} of {len(sel)}</b> units are dead over the "
                  f"dataset (never positive on any of the {n:,} images): "
                  f'<span class="dead-units">{links}</span></p>' if len(dead) else
                  f"<p>No unit is dead over the dataset: every one of the "
                  f"{len(sel)} is positive somewhere in the {n:,} images.</p>")
        table = H.table(["unit", "top example", "selectivity", "max", "mean",
                         "> 0"], rows, numeric=(2, 3, 4, 5))
        return f"""<h2>Dataset: units by selectivity</h2>
{dead_p}
<p class="muted">Over {n:,} dataset images; units sorted by selectivity (most
selective first; see <code>LayerExamples.selectivity</code>). Dead units are left
out of the table.</p>
<details open><summary>{len(rows)} live units</summary>{table}</details>
"""


def _base(name: str) -> str:
    s = str(name).replace("\\", "/")
    return s.rsplit("/", 1)[-1] or s


__all__ = ["DatasetPages", "LayerSummary", "UnitExamples", "by_selectivity",
           "check_examples", "dead_mask", "example_boxes", "example_crops",
           "layer_summary", "unit_examples", "CROP_PX"]
