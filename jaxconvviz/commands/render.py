"""``jaxconvviz render``: lucid-style (or book-style) feature visualizations.

Examples::

    jaxconvviz render --layer block4_conv1 --filters 0:16 --style lucid \\
        --steps 512 --size 128 --out DIR
    jaxconvviz render --layer block3_conv1 --filters 0,5,9 --style book

Writes ``render_<layer>_<style>.png`` (the grid, one pixel per image pixel),
``render_<layer>_<style>_figure.png`` (titled, tiles numbered) and one
``render_<layer>_<style>_<k>.png`` per filter ``k``.
"""

from __future__ import annotations

import argparse

from jaxconvviz.commands import common
from jaxconvviz.commands.common import CLIError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "render", help="feature visualizations of filters: lucid style or book",
        description="Render what each selected filter of a layer responds to. "
        "lucid (default): a decorrelated Fourier image, random pad/jitter/"
        "scale/rotate at every step (per image), Adam 0.05, as lucid/lucent's "
        "render_vis. book: the book's normalised pixel ascent. All filters are "
        "optimised in one compiled program.",
    )
    p.add_argument("--layer", required=True, metavar="LAYER",
                   help="layer to visualise, e.g. block4_conv1")
    p.add_argument("--filters", default="0:16", metavar="SEL",
                   help="filters: START:STOP or a comma list (default: 0:16)")
    p.add_argument("--style", default="lucid", choices=("lucid", "book"),
                   help="lucid (default) or book")
    p.add_argument("--size", type=int, default=128, metavar="PX",
                   help="image side in pixels (default: 128)")
    p.add_argument("--steps", type=int, default=512,
                   help="optimisation steps (default: 512, lucid's)")
    p.add_argument("--lr", type=float, default=None, metavar="LR",
                   help="lucid: Adam learning rate (default: 0.05)")
    p.add_argument("--step-size", type=float, default=None, metavar="S",
                   help="book: step along the RMS-normalised gradient (default 1)")
    p.add_argument("--post-activation", action="store_true",
                   help="maximise the response after the layer's ReLU (the "
                   "book's objective) instead of before it")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--cols", type=int, default=8,
                   help="images per grid row (default: 8)")
    p.add_argument("--margin", type=int, default=5,
                   help="black pixels between images (default: 5)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="filters per compiled chunk (default: by device)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="network compute dtype (default: float32)")
    p.add_argument("--memory-budget", default=None, metavar="BYTES",
                   help="bytes per device for a chunk, e.g. 8GB (default: from "
                   "the device's free memory)")
    p.add_argument("--out", default=".", metavar="DIR",
                   help="output directory (default: .)")
    common.add_model_args(p)
    p.set_defaults(func=run)


def _check_args(args) -> None:
    for name in ("steps", "cols", "size"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name} must be >= 1; got {getattr(args, name)}.")
    if args.margin < 0:
        raise CLIError(f"--margin must be >= 0; got {args.margin}.")
    if args.batch_size is not None and args.batch_size < 1:
        raise CLIError(f"--batch-size must be >= 1; got {args.batch_size}.")
    if args.style == "lucid" and args.step_size is not None:
        raise CLIError("--step-size applies to --style book; lucid takes --lr.")
    if args.style == "book" and args.lr is not None:
        raise CLIError("--lr applies to --style lucid; book takes --step-size.")


def to_u8(images):
    """float RGB [0, 255] -> uint8 (rounded, clipped)."""
    import numpy as np

    return np.clip(np.rint(np.asarray(images, np.float32)), 0, 255).astype(np.uint8)


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    from jaxconvviz.featureviz.render import render
    from jaxconvviz.featureviz.styles import Book, Lucid
    from jaxconvviz.run import Run

    # every option checked (Run, style) before the weights load
    run_opts = Run(batch_size=args.batch_size, memory_budget=args.memory_budget,
                   dtype=args.dtype, progress=True)
    pre = not args.post_activation
    if args.style == "lucid":
        style = Lucid(steps=args.steps, size=args.size, pre_activation=pre,
                          learning_rate=0.05 if args.lr is None else args.lr)
    else:
        style = Book(steps=args.steps, size=args.size, pre_activation=pre,
                         step_size=1.0 if args.step_size is None else args.step_size)
    model, params, desc = common.load_model_and_params(args, include_top=False)
    model.check_layer(args.layer, model.spatial_layers, name="--layer")
    idx = common.parse_slice(args.filters, name="--filters",
                             n=model.channels(args.layer))
    d = common.out_dir(args.out)

    import jax

    from jaxconvviz.plotting import plot_atlas
    from jaxconvviz.views.grids import tile_grid

    imgs = render(params, args.layer, idx, key=jax.random.key(args.seed),
                      style=style, model=model, run=run_opts)
    imgs = style.to_rgb(imgs, model)  # display RGB [0, 255]
    u8 = to_u8(imgs)
    if u8.shape[-1] == 1:
        u8 = u8[..., 0]
    stem = f"render_{args.layer}_{args.style}"
    grid = tile_grid(u8, n_cols=args.cols, margin=args.margin)
    raw = common.save_png(grid, d / f"{stem}.png")
    for k, im in zip(idx, u8, strict=True):
        common.save_png(im, d / f"{stem}_{k}.png")
    what = ("lucid style: Fourier image, random transforms, Adam"
            if args.style == "lucid" else "book style: normalised pixel ascent")
    obj = "post" if args.post_activation else "pre"
    fig = plot_atlas(grid, layer=args.layer, n_filters=len(idx),
                     source=f"{desc}; {what}; {obj}-ReLU channel mean, "
                     f"{args.steps} steps, {args.size} px",
                     filter_indices=idx, n_cols=args.cols, margin=args.margin)
    figpath = common.save_figure(fig, d / f"{stem}_figure.png")
    common.say(f"wrote {raw}, {figpath} and {len(idx)} per-filter PNGs "
               f"({stem}_<k>.png)")
    return 0
