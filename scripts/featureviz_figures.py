"""Book-vs-lucid side-by-side figures for docs/images (HED VGG16 weights).

    JAX_PLATFORMS=cpu python scripts/featureviz_figures.py [--size 64]
        [--steps 128] [--layers block3_conv1 block5_conv1] [--out docs/images]

Writes ``book_vs_lucid_<layer>.png``: the same 16 filters rendered in the
book's style (normalised pixel ascent) and lucid's (Fourier image, random
transforms, Adam), same size, steps and pre-ReLU objective, and prints the
high-frequency energy of both.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np

import jaxconvviz as jcv
from jaxconvviz.commands.common import save_figure
from jaxconvviz.plotting import plot_side_by_side


def hf_fraction(images) -> np.ndarray:
    """Per image: power above half Nyquist over all non-DC power."""
    x = np.asarray(images, np.float64)
    x = x - x.mean(axis=(1, 2), keepdims=True)
    p = (np.abs(np.fft.fft2(x, axes=(1, 2))) ** 2).sum(-1)
    h, w = x.shape[1:3]
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None] ** 2)
    return p[:, f > 0.25].sum(1) / np.maximum(p[:, f > 0].sum(1), 1e-12)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--filters", type=int, default=16)
    ap.add_argument("--layers", nargs="+", default=["block3_conv1", "block5_conv1"])
    ap.add_argument("--out", default="docs/images")
    a = ap.parse_args()
    params = jcv.load_vgg16("hed")
    model = jcv.resolve_model(params)
    idx = list(range(a.filters))
    for layer in a.layers:
        grids, hf = [], {}
        for style in (jcv.Book(), jcv.Lucid()):
            t = time.perf_counter()
            x = jcv.render(params, layer, idx, key=jax.random.key(0), style=style,
                           size=a.size, steps=a.steps, model=model,
                           run=jcv.Run(progress=True))
            # display RGB [0, 255] (the book's contrast for the Book style)
            x = np.asarray(style.to_rgb(x, model))
            hf[style.name] = float(hf_fraction(x).mean())
            print(f"{layer} {style.name}: {time.perf_counter() - t:.0f} s, "
                  f"high-frequency energy {hf[style.name]:.4f}", flush=True)
            u8 = np.clip(np.rint(x), 0, 255).astype(np.uint8)
            grids.append(jcv.tile_grid(u8, n_cols=4, margin=3))
        fig = plot_side_by_side(
            *grids, layer=layer, filter_indices=idx,
            source=f"VGG16, HED weights; pre-ReLU channel mean, {a.steps} steps, "
            f"{a.size} px; high-frequency energy book {hf['book']:.3f}, "
            f"lucid {hf['lucid']:.3f}", n_cols=4, margin=3)
        path = save_figure(fig, Path(a.out) / f"book_vs_lucid_{layer}.png")
        print("wrote", path, flush=True)


if __name__ == "__main__":
    main()
