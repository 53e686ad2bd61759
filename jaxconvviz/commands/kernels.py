"""``jaxconvviz kernels``: a conv layer's kernels and its weight histogram.

The Fashion-MNIST note's weight views for any conv layer: the kernels as a
grid of small images on one fixed colour scale (``kernels_<layer>.png``; a
3-input-channel first layer as tiny RGB images) and a histogram of all the
layer's weights with their mean and std (``weights_hist_<layer>.png``),
optionally next to a freshly initialised (untrained) kernel's.
"""

from __future__ import annotations

import re

from jaxconvviz.commands import common
from jaxconvviz.commands.common import (
    CLIError,
    add_model_args,
    out_dir,
    parse_slice,
    save_figure,
    say,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "kernels",
        help="a conv layer's kernels and weight histogram",
        description="Draw a conv layer's kernels (kernels_<layer>.png) and the "
        "histogram of its weights with mean and std (weights_hist_<layer>.png).",
    )
    p.add_argument("--layer", default=None, metavar="LAYER",
                   help="conv layer (default: the model's first conv layer, "
                   "e.g. block1_conv1)")
    p.add_argument("--channel", type=int, default=None, metavar="I",
                   help="input channel to show (default: RGB images for a "
                   "3-channel first layer, the single channel of a 1-channel "
                   "layer, else the mean over input channels)")
    p.add_argument("--filters", default=None, metavar="SLICE",
                   help="filters to show: START:STOP or a comma list (default: all)")
    p.add_argument("--limit", type=float, default=None, metavar="W",
                   help="colour scale -W..W (default: the largest |weight| "
                   "shown; the Fashion-MNIST note uses 0.5)")
    p.add_argument("--per-row", type=int, default=16, metavar="N",
                   help="kernels per row (default: 16, as the note's 2x16)")
    p.add_argument("--bins", type=int, default=30, metavar="N",
                   help="histogram bins (default: 30)")
    p.add_argument("--compare-untrained", action="store_true",
                   help="overlay the histogram of a freshly initialised "
                   "kernel (Keras' default glorot_uniform, --seed)")
    p.add_argument("--seed", type=int, default=0,
                   help="PRNG seed of --compare-untrained (default: 0)")
    p.add_argument("--out", default=".", metavar="DIR",
                   help="output directory (default: current directory)")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    for name in ("per_row", "bins"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1; got "
                           f"{getattr(args, name)}.")
    if args.limit is not None and not args.limit > 0:
        raise CLIError(f"--limit must be > 0; got {args.limit}.")
    dest = out_dir(args.out)

    import jax
    import numpy as np

    from jaxconvviz.plotting import plot_kernels, plot_weight_histograms
    from jaxconvviz.views.kernels import glorot_uniform_like, kernel_grid, layer_kernel

    model, params, desc = common.load_model_and_params(args, include_top=False)
    if not model.conv_layers:
        raise CLIError("the model has no conv layers.")
    layer = args.layer or model.conv_layers[0]
    model.check_layer(layer, model.conv_layers, name="--layer")
    kernel = layer_kernel(params, layer, model=model)
    filters = None
    if args.filters is not None:
        filters = parse_slice(args.filters, name="--filters", n=int(kernel.shape[-1]))
    if args.channel is not None and not 0 <= args.channel < kernel.shape[2]:
        raise CLIError(f"--channel must be in 0..{kernel.shape[2] - 1} for "
                       f"layer {layer!r}; got {args.channel}.")
    kg = kernel_grid(params, layer, model=model, channel=args.channel,
                     filters=filters, limit=args.limit)
    safe = re.sub(r"[^\w.-]", "_", layer)
    shown = {"rgb": "RGB", "mean": "mean over input channels"}.get(
        kg.channel, f"input channel {kg.channel}")
    fig = plot_kernels(
        np.asarray(kg.kernels), vmin=kg.vmin, vmax=kg.vmax, n_cols=args.per_row,
        title=f"{layer}: {len(kg.filters)} kernels {kernel.shape[0]}x"
        f"{kernel.shape[1]}, {shown}\n{desc}",
    )
    path = save_figure(fig, dest / f"kernels_{safe}.png")
    say(f"wrote {path} ({len(kg.filters)} kernels, {shown}, scale "
        f"{kg.vmin:.3g}..{kg.vmax:.3g})")
    weights = {"trained": np.asarray(kernel)}
    if args.compare_untrained:
        weights["untrained (glorot_uniform)"] = np.asarray(
            glorot_uniform_like(kernel, key=jax.random.key(args.seed)))
    fig = plot_weight_histograms(weights, layer=layer, bins=args.bins)
    path = save_figure(fig, dest / f"weights_hist_{safe}.png")
    w = weights["trained"]
    say(f"wrote {path} (mean {w.mean():.4g}, std {w.std():.4g}, {w.size} weights)")
    return 0
