"""``jaxconvviz activations IMAGE``: every channel of intermediate layers.

The book's listing 5.31: one PNG per layer (``activations_<layer>.png``),
each channel standardised (``(x - mean) / std * 64 + 128``, clipped; dead
channels flat, never NaN) and tiled ``--images-per-row`` to a row.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from jaxconvviz.commands import common
from jaxconvviz.commands.common import (
    CLIError,
    add_model_args,
    out_dir,
    save_figure,
    say,
)

#: The book resizes the cat photo to 150x150.
DEFAULT_SIZE = 150


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "activations",
        help="activation grids of intermediate layers for one image",
        description="Draw every channel of each layer's activation for IMAGE "
        "(Deep Learning with Python, listing 5.31): one PNG per layer, "
        "activations_<layer>.png.",
    )
    p.add_argument("image", metavar="IMAGE", help="input image (PNG, JPEG, ...)")
    p.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="layers to draw (default: the first 8 layers with a "
                   "spatial output, as the book; VGG16: block1_conv1 ... "
                   "block3_conv2)")
    p.add_argument("--images-per-row", type=int, default=16, metavar="N",
                   help="channel tiles per row (default: 16, as the book)")
    p.add_argument("--size", type=int, default=None, metavar="PX",
                   help="resize IMAGE to PX x PX (default: the model's input "
                   f"size if fixed, else {DEFAULT_SIZE} as the book)")
    p.add_argument("--dead-value", type=float, default=0.0, metavar="V",
                   help="pixel value (0..255) of channels that are constant "
                   "over the image (default: 0, as the book's figures)")
    p.add_argument("--out", default=".", metavar="DIR",
                   help="output directory (default: current directory)")
    add_model_args(p)
    p.set_defaults(func=run)


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name)


def run(args) -> int:
    if args.images_per_row < 1:
        raise CLIError(
            f"--images-per-row must be >= 1; got {args.images_per_row}."
        )
    if args.size is not None and args.size < 1:
        raise CLIError(f"--size must be >= 1; got {args.size}.")
    if not 0.0 <= args.dead_value <= 255.0:
        raise CLIError(f"--dead-value must be in 0..255; got {args.dead_value}.")
    from jaxconvviz.images import check_image_path

    check_image_path(args.image, name="IMAGE")
    dest = out_dir(args.out)

    from tqdm import tqdm

    from jaxconvviz.plotting import plot_activation_grid, solid_channels
    from jaxconvviz.views.activation_grids import default_layers, layer_activation_grids

    model, params, desc = common.load_model_and_params(args, include_top=False)
    layers = tuple(args.layers) if args.layers else default_layers(model)
    for name in layers:
        model.check_layer(name, model.spatial_layers, name="--layers")
    size = args.size
    if size is None:
        h, w = model.input_shape[:2]
        size = h if h is not None and h == w else DEFAULT_SIZE
    image = common.load_image_for(args.image, model, size=(size, size))
    for name in layers:
        if min(model.output_shape(name, (size, size))[:2]) < 1:
            raise CLIError(
                f"--size {size} is too small for layer {name!r}; it needs at "
                f"least {model.min_input_size(name)} px."
            )
    say(f"{desc}: activations of {len(layers)} layer(s) for {args.image} "
        f"at {size}x{size}")
    grids = layer_activation_grids(params, image, layers=layers,
                                   images_per_row=args.images_per_row,
                                   dead_value=args.dead_value, model=model)
    image_name = Path(args.image).name
    # a bar only on a terminal: in a log each "wrote ..." line is the progress
    bar_off = len(layers) < 2 or not sys.stderr.isatty()
    for name in tqdm(layers, desc="layers", unit="layer", disable=bar_off):
        th, tw, c = model.output_shape(name, (size, size))
        fig = plot_activation_grid(grids[name], layer=name, image_name=image_name,
                                   tile_hw=(th, tw), n_channels=c)
        # one inch per tile: dpi = tile height shows every activation pixel
        path = save_figure(fig, dest / f"activations_{_safe(name)}.png",
                           dpi=min(max(100, th), 200))
        solid = len(solid_channels(grids[name], (th, tw), c))
        say(f"wrote {path} ({c} channels of {th}x{tw}; {solid} solid: zero on "
            "this image)")
    return 0
