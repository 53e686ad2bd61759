"""Figures of a dataset pass (:func:`jaxconvviz.dataset_examples`): a unit's
top-k crops with their values and files, a layer's grid of units with each
one's top crop, and a layer's "most selective" / "dead over the dataset"
panel. NumPy + matplotlib only; the crops come in as uint8 arrays
(:func:`jaxconvviz.dataset.crops.example_crops` cuts them from the files).
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib import patheffects
from matplotlib.figure import Figure

from jaxconvviz.errors import InputError

#: Colour of a dead unit's cell (never > 0 over the dataset).
DEAD_RGB = (0.78, 0.16, 0.16)
_STROKE = [patheffects.withStroke(linewidth=2.2, foreground="black")]


def _crops(crops_u8, name: str) -> np.ndarray:
    c = np.asarray(crops_u8)
    if c.dtype != np.uint8 or c.ndim != 4 or c.shape[-1] not in (1, 3) or not (
            c.shape[0] and c.shape[1] and c.shape[2]):
        raise InputError(f"{name} must be uint8 (n, h, w, 3) with n >= 1; got "
                         f"{c.dtype} {c.shape}.")
    return np.repeat(c, 3, -1) if c.shape[-1] == 1 else c


def _fit(tile: np.ndarray, side: int) -> np.ndarray:
    """A crop resized to ``side`` x ``side`` (nearest neighbour)."""
    h, w = tile.shape[:2]
    ys = (np.arange(side) * h // side).clip(0, h - 1)
    xs = (np.arange(side) * w // side).clip(0, w - 1)
    return tile[ys][:, xs]


def _short(name: str, width: int) -> str:
    """A file name for a caption: its last path part, cut to ``width`` chars
    with an ellipsis in the middle (start and extension stay readable)."""
    base = os.path.basename(str(name)) or str(name)
    if len(base) <= width:
        return base
    keep = max(width - 1, 2)
    return base[: keep - keep // 2] + "\u2026" + base[-(keep // 2):]


def _values(values, n: int, name: str) -> np.ndarray:
    v = np.asarray(values, np.float64).reshape(-1)
    if v.shape != (n,):
        raise InputError(f"{name} must have one value per crop ({n}); got shape "
                         f"{np.shape(values)}.")
    return v


def plot_unit_examples(crops_u8, values, names, *, layer: str, unit: int,
                       n_cols: int | None = None, source: str = "") -> Figure:
    """A unit's top dataset examples: the crops in rank order, each with its
    rank, its activation value and its file name.

    Args:
      crops_u8: uint8 ``(k, s, s, 3)`` receptive-field crops, best first
        (:func:`jaxconvviz.dataset.crops.example_crops`).
      values: ``(k,)`` the unit's value at each example (NaN: no example,
        the cell is left empty; fewer than k images excited the unit).
      names: ``k`` file names (paths are shortened to their last part).
      layer, unit: what the examples are of (title).
      n_cols: crops per row (default: all in one row up to 9, else 6).
      source: a second title line (model, dataset size).

    Returns:
      A Figure, about 150 px per crop.
    """
    c = _crops(crops_u8, "crops_u8")
    k = c.shape[0]
    v = _values(values, k, "values")
    names = [str(s) for s in names]
    if len(names) != k:
        raise InputError(f"names must have one entry per crop ({k}); got "
                         f"{len(names)}.")
    cols = int(n_cols) if n_cols else (k if k <= 9 else 6)
    if cols < 1:
        raise InputError(f"n_cols must be >= 1; got {n_cols}.")
    rows = -(-k // cols)
    cell, cap, top = 1.5, 0.5, 0.62  # inches: crop, caption below, title
    fig = Figure(figsize=(cols * cell + 0.2, rows * (cell + cap) + top), dpi=100)
    H = rows * (cell + cap) + top
    W = cols * cell + 0.2
    for r in range(k):
        i, j = divmod(r, cols)
        x0 = (0.1 + j * cell + 0.06) / W
        y0 = (H - top - i * (cell + cap) - cell + 0.06) / H
        ax = fig.add_axes((x0, y0, (cell - 0.12) / W, (cell - 0.12) / H))
        ax.set_xticks([])
        ax.set_yticks([])
        if np.isnan(v[r]):
            ax.set_facecolor("#eeeeee")
            ax.text(0.5, 0.5, "no example", ha="center", va="center",
                    fontsize=8, color="#777777", transform=ax.transAxes)
        else:
            ax.imshow(c[r], interpolation="nearest")
        for s in ax.spines.values():
            s.set_color("#999999")
        ax.text(0.04, 0.96, f"#{r + 1}", color="white", fontsize=9,
                ha="left", va="top", transform=ax.transAxes,
                path_effects=_STROKE)
        label = "" if np.isnan(v[r]) else f"{v[r]:.3g}"
        ax.text(0.5, -0.04, label, ha="center", va="top", fontsize=10,
                fontweight="bold", transform=ax.transAxes)
        ax.text(0.5, -0.2, "" if np.isnan(v[r]) else _short(names[r], 24),
                ha="center", va="top", fontsize=7.5, color="#444444",
                transform=ax.transAxes)
    fig.text(0.5, 1 - 0.08 / H,
             f"{layer} unit {int(unit)}: top {k} dataset examples"
             + (f"\n{source}" if source else ""),
             ha="center", va="top", fontsize=10.5)
    return fig


def plot_layer_examples(top_crops_u8, values, *, layer: str, units=None,
                        dead=None, n_cols: int = 12, source: str = "") -> Figure:
    """A layer's units at a glance: each unit's best dataset crop in a grid,
    numbered, with its top value; dead units are a red cell marked "dead".

    Args:
      top_crops_u8: uint8 ``(n, s, s, 3)``, unit ``units[i]``'s top crop in
        cell ``i`` (row-major).
      values: ``(n,)`` each unit's top value.
      units: the unit ids (default ``range(n)``).
      dead: ``(n,)`` bool, units never > 0 over the dataset (their crop is
        not shown).
      n_cols: cells per row.
      source: a second title line.

    Returns:
      A Figure, 100 px per cell (67 px beyond 128 units).
    """
    c = _crops(top_crops_u8, "top_crops_u8")
    n = c.shape[0]
    v = _values(values, n, "values")
    ids = list(range(n)) if units is None else [int(u) for u in units]
    if len(ids) != n:
        raise InputError(f"units must have one id per crop ({n}); got {len(ids)}.")
    d = np.zeros(n, bool) if dead is None else np.asarray(dead, bool).reshape(-1)
    if d.shape != (n,):
        raise InputError(f"dead must be (n,) bool with n={n}; got {np.shape(dead)}.")
    if int(n_cols) < 1:
        raise InputError(f"n_cols must be >= 1; got {n_cols}.")
    cols = min(int(n_cols), n)
    rows = -(-n // cols)
    # one mosaic image (fast for 512 units): crops at 96 px (64 px beyond 128
    # units)
    side, gap = (96, 4) if n <= 128 else (64, 3)
    tiles = np.stack([_fit(t, side) for t in c])
    tiles[d] = np.asarray(DEAD_RGB) * 255
    mosaic = np.full((rows * (side + gap) - gap, cols * (side + gap) - gap, 3), 255,
                     np.uint8)
    # darkened corners under the labels (plain text draws far faster than
    # stroked text: a 512-unit layer saves in about a second)
    tiles[:, :15, :34] //= 2
    tiles[~d, -14:, -38:] //= 2
    for r in range(n):
        i, j = divmod(r, cols)
        mosaic[i * (side + gap): i * (side + gap) + side,
               j * (side + gap): j * (side + gap) + side] = tiles[r]
    top = 0.62
    W, H = mosaic.shape[1] / 100, mosaic.shape[0] / 100 + top
    fig = Figure(figsize=(W, H), dpi=100)
    ax = fig.add_axes((0, 0, 1, (H - top) / H))
    ax.imshow(mosaic, interpolation="nearest", aspect="equal")
    ax.set_axis_off()
    for r in range(n):
        i, j = divmod(r, cols)
        y, x = i * (side + gap), j * (side + gap)
        ax.text(x + 3, y + 2, str(ids[r]), color="white", fontsize=8, ha="left",
                va="top")
        if d[r]:
            ax.text(x + side / 2, y + side / 2, "dead", ha="center", va="center",
                    color="white", fontsize=9, fontweight="bold")
        elif np.isfinite(v[r]):
            ax.text(x + side - 3, y + side - 2, f"{v[r]:.3g}", color="white",
                    fontsize=7, ha="right", va="bottom")
    n_dead = int(d.sum())
    fig.text(0.5, 1 - 0.08 / H,
             f"{layer}: each unit's top dataset example ({n} units"
             + (f", {n_dead} dead" if n_dead else "") + ")"
             + (f"\n{source}" if source else ""),
             ha="center", va="top", fontsize=10.5)
    return fig


def plot_unit_lists(selectivity, dead, *, layer: str, top_crops_u8=None,
                    n: int = 12, source: str = "") -> Figure:
    """A layer's "most selective" and "dead over the dataset" lists, drawn.

    Left: the ``n`` most selective units as bars (longest first), each with
    its top dataset crop beside its number when ``top_crops_u8`` is given.
    Right: a map of all units, one square each, coloured by selectivity, the
    units dead over the whole dataset in red and their ids listed below.

    Args:
      selectivity: ``(C,)`` per unit (:meth:`LayerExamples.selectivity`;
        NaN for dead units is allowed).
      dead: ``(C,)`` bool, or the dead unit ids.
      layer: the layer (title).
      top_crops_u8: optional uint8 ``(C, s, s, 3)``, each unit's top crop.
      n: units in the "most selective" list.
      source: a second title line.

    Returns:
      A Figure about 1000 px wide.
    """
    s = np.asarray(selectivity, np.float64).reshape(-1)
    C = s.shape[0]
    if C < 1:
        raise InputError("selectivity must have one value per unit; got none.")
    dm = np.asarray(dead)
    if dm.dtype == bool:
        dm = dm.reshape(-1)
    else:  # ids
        ids = dm.astype(int).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= C):
            raise InputError(f"dead ids must be in 0..{C - 1}; got {ids.tolist()[:5]}.")
        dm = np.zeros(C, bool)
        dm[ids] = True
    if dm.shape != (C,):
        raise InputError(f"dead must be ({C},) bool or unit ids; got shape "
                         f"{np.shape(dead)}.")
    if top_crops_u8 is not None:
        crops = _crops(top_crops_u8, "top_crops_u8")
        if crops.shape[0] != C:
            raise InputError(f"top_crops_u8 must have one crop per unit ({C}); got "
                             f"{crops.shape[0]}.")
    if int(n) < 1:
        raise InputError(f"n must be >= 1; got {n}.")
    live = np.flatnonzero(~dm & np.isfinite(s))
    order = live[np.lexsort((live, -s[live]))][: int(n)]  # ties: lower id first
    m = max(len(order), 1)
    row = 0.42
    H = max(m * row + 1.3, 3.4)
    W = 10.0
    fig = Figure(figsize=(W, H), dpi=100)
    # ---- left: bars, crops as labels
    side = row * 0.92  # inches: a crop beside each bar's label
    left = 0.8 + (side + 0.06 if top_crops_u8 is not None else 0.0)
    ax = fig.add_axes((left / W, 0.55 / H, (4.6 - left) / W, (H - 1.25) / H))
    y = np.arange(len(order))[::-1]
    if len(order):
        ax.barh(y, s[order], height=0.7, color="#4a7fb8")
        ax.set_ylim(-0.5, len(order) - 0.5)
        ax.set_yticks(y, [f"unit {u}" for u in order], fontsize=8)
        if top_crops_u8 is not None:
            ax.tick_params(axis="y", length=0, pad=(side + 0.08) * 72)
        for yy, u in zip(y, order, strict=True):
            ax.text(s[u], yy, f" {s[u]:.3g}", va="center", ha="left", fontsize=7.5)
        hi = float(np.nanmax(s[order]))
        ax.set_xlim(min(0.0, float(np.nanmin(s[order]))), hi * 1.18 if hi > 0 else 1)
    else:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "every unit is dead", ha="center", va="center",
                transform=ax.transAxes)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel("selectivity", fontsize=9)
    ax.set_title(f"most selective {len(order)} of {C}", fontsize=10)
    for sp in ("top", "right"):
        ax.spines[sp].set_visible(False)
    if top_crops_u8 is not None and len(order):
        y0, hh = 0.55 / H, (H - 1.25) / H
        step = hh / len(order)
        side = min(step * H, row) * 0.92
        for r, u in enumerate(order):
            yc = y0 + hh - (r + 0.5) * step
            ia = fig.add_axes(((left - side - 0.04) / W, yc - side / 2 / H,
                               side / W, side / H))
            ia.imshow(crops[u], interpolation="nearest")
            ia.set_axis_off()
    # ---- right: the unit map
    cols = int(np.ceil(np.sqrt(C * 1.6)))
    rows = -(-C // cols)
    grid = np.full((rows * cols,), np.nan)
    finite = np.isfinite(s) & ~dm
    lo, hi = (float(s[finite].min()), float(s[finite].max())) if finite.any() else (
        0.0, 1.0)
    grid[:C] = np.where(finite, (s - lo) / max(hi - lo, 1e-12), np.nan)
    import matplotlib

    rgba = matplotlib.colormaps["viridis"](np.nan_to_num(grid))
    rgba[np.arange(rows * cols) >= C] = (1, 1, 1, 1)
    rgba[:C][dm] = (*DEAD_RGB, 1)
    rgba[:C][~dm & ~np.isfinite(s)] = (0.8, 0.8, 0.8, 1)
    bx = fig.add_axes((5.1 / W, 1.45 / H, 4.7 / W, (H - 2.15) / H))
    bx.imshow(rgba.reshape(rows, cols, 4), interpolation="nearest", aspect="equal")
    bx.set_xticks(np.arange(-0.5, cols, 1), minor=True)
    bx.set_yticks(np.arange(-0.5, rows, 1), minor=True)
    bx.grid(which="minor", color="white", linewidth=0.6)
    bx.tick_params(which="both", length=0)
    bx.set_xticks([])
    bx.set_yticks([0, rows - 1], [0, (rows - 1) * cols], fontsize=7)
    if C <= 128:  # numbered cells while the numbers stay readable
        for u in range(C):
            r, c = divmod(u, cols)
            bx.text(c, r, str(u), ha="center", va="center", fontsize=6.5,
                    color="white", path_effects=_STROKE)
    n_dead = int(dm.sum())
    bx.set_title(f"dead over the dataset: {n_dead} of {C} (red)", fontsize=10)
    dead_ids = np.flatnonzero(dm).tolist()
    text = ("no unit is dead: every unit is > 0 somewhere" if not dead_ids else
            "dead: " + ", ".join(map(str, dead_ids[:40]))
            + (f", ... (+{len(dead_ids) - 40})" if len(dead_ids) > 40 else ""))
    fig.text(7.45 / W, 1.3 / H, f"colour: selectivity {lo:.3g} (dark) to "
             f"{hi:.3g} (yellow); units row-major", ha="center", va="top",
             fontsize=7.5, color="#555555")
    fig.text(7.45 / W, 1.05 / H, text, ha="center", va="top", fontsize=8,
             wrap=True, color=DEAD_RGB if dead_ids else "#444444")
    fig.text(0.5, 1 - 0.08 / H, f"{layer}: units by selectivity, and the units "
             "dead over the dataset" + (f"\n{source}" if source else ""),
             ha="center", va="top", fontsize=10.5)
    return fig


__all__ = ["plot_unit_examples", "plot_layer_examples", "plot_unit_lists"]
