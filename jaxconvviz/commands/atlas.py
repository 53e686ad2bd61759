"""``jaxconvviz atlas``: a grid of filter patterns (gradient ascent) for one layer.

Examples::

    jaxconvviz atlas --layer block3_conv1 --filters 0:64 --size 150
    jaxconvviz atlas --layer block1_conv1 --filters 0:16 --size 64 --out atlases
    jaxconvviz atlas --layer conv2d_1 --model my_cnn.keras --filters 0:32

Writes ``atlas_<layer>.png`` (the raw grid, one pixel per pattern pixel) and
``atlas_<layer>_figure.png`` (the same with a title naming layer and weights).
"""

from __future__ import annotations

import argparse
import sys

from ..cli import CLIError
from .common import (
    add_model_args,
    load_model_and_params,
    out_dir,
    parse_slice,
    save_figure,
    save_png,
    say,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "atlas", help="filter patterns of a layer by gradient ascent, as a grid",
        description="Maximise the mean activation of each selected filter of a "
        "layer by normalised gradient ascent in input space (the book's method: "
        "start uniform*20+128, 40 steps of size 1), all filters batched, and "
        "write the patterns as one grid (row-major, filter k at row k // cols).",
    )
    p.add_argument("--layer", default=None, metavar="LAYER",
                   help="layer to visualise, e.g. block3_conv1 (required; an "
                   "unknown name lists the valid ones)")
    # A later --all-layers flag selects every conv layer; _layers() is where it
    # plugs in.
    p.add_argument("--filters", default="0:64", metavar="SEL",
                   help="filters: START:STOP or a comma list (default: 0:64)")
    p.add_argument("--size", type=int, default=150, metavar="PX",
                   help="pattern side in pixels (default: 150, the book's)")
    p.add_argument("--steps", type=int, default=40,
                   help="gradient-ascent steps (default: 40)")
    p.add_argument("--step-size", type=float, default=1.0, metavar="S",
                   help="step along the RMS-normalised gradient (default: 1.0)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the start images (default: 0)")
    p.add_argument("--cols", type=int, default=8,
                   help="patterns per grid row (default: 8)")
    p.add_argument("--margin", type=int, default=5,
                   help="black pixels between patterns (default: 5)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="filters per compiled chunk (default: all on GPU, 8 on "
                   "CPU)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="network compute dtype (default: float32)")
    p.add_argument("--domain", default="auto", choices=("auto", "input", "rgb"),
                   help="what is optimised: 'input' = the network's input tensor "
                   "as the book does (VGG16: caffe BGR), 'rgb' = an RGB image "
                   "passed through the model's preprocessing; auto = input for "
                   "VGG16, rgb for --model")
    p.add_argument("--out", default=".", metavar="DIR",
                   help="output directory (default: .)")
    add_model_args(p)
    p.set_defaults(func=run)


def _layers(args, model) -> list[str]:
    """The layers to render (one today; --all-layers will extend this)."""
    valid = model.spatial_layers
    if args.layer is None:
        raise CLIError(f"--layer is required; one of {', '.join(valid)}.")
    if args.layer not in valid:
        raise CLIError(
            f"--layer must be one of {', '.join(valid)}; got {args.layer!r}."
        )
    return [args.layer]


def _check_args(args) -> None:
    if args.steps < 1:
        raise CLIError(f"--steps must be >= 1; got {args.steps}.")
    if args.cols < 1:
        raise CLIError(f"--cols must be >= 1; got {args.cols}.")
    if args.margin < 0:
        raise CLIError(f"--margin must be >= 0; got {args.margin}.")
    if args.batch_size is not None and args.batch_size < 1:
        raise CLIError(f"--batch-size must be >= 1; got {args.batch_size}.")


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    model, params, desc = load_model_and_params(args, include_top=False)
    layers = _layers(args, model)
    for layer in layers:  # validate every layer before computing any
        need = model.min_input_size(layer)
        if args.size < need:
            raise CLIError(
                f"--size must be at least {need} px for layer {layer!r}; got "
                f"{args.size}."
            )
        parse_slice(args.filters, name="--filters", n=model.channels(layer))
    d = out_dir(args.out)
    for layer in layers:
        _atlas_one(args, model, params, desc, layer, d)
    return 0


def _atlas_one(args, model, params, desc, layer, d) -> None:
    import jax
    import jax.numpy as jnp
    from tqdm import tqdm

    from ..filters import filter_activation, filter_patterns
    from ..grids import atlas_grid
    from ..plotting import plot_atlas

    idx = parse_slice(args.filters, name="--filters", n=model.channels(layer))
    rgb = args.domain == "rgb" or (args.domain == "auto" and bool(args.model))
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    with tqdm(total=len(idx), unit="filter", desc=layer, file=sys.stderr,
              disable=None, leave=False) as bar:
        def progress(done, total):
            bar.update(done - bar.n)

        pats = filter_patterns(
            params, layer, idx, key=jax.random.key(args.seed), steps=args.steps,
            step_size=args.step_size, size=args.size, preprocess=rgb, model=model,
            batch_size=args.batch_size, dtype=dtype, progress=progress,
        )
    act = filter_activation(params, pats, layer, idx, preprocess=rgb, model=model)
    dead = int((act <= 0).sum())
    grid = atlas_grid(pats, n_cols=args.cols, margin=args.margin)
    if grid.shape[-1] == 1:
        grid = grid[..., 0]
    raw = save_png(grid, d / f"atlas_{layer}.png")
    domain = "RGB through preprocessing" if rgb else "network input"
    fig = plot_atlas(grid, layer=layer, n_filters=len(idx),
                     source=f"{desc}; {args.steps} steps, {args.size} px, "
                     f"optimised in the {domain}")
    figpath = save_figure(fig, d / f"atlas_{layer}_figure.png")
    say(f"wrote {raw} and {figpath} ({len(idx)} filters of {layer}, {desc})")
    if dead:
        say(f"{dead} of {len(idx)} filters stayed at zero activation (dead on the "
            "grey start: zero gradient, so their tiles show the start noise)")
