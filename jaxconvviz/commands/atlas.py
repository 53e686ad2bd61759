"""``jaxconvviz atlas``: a grid of filter patterns (gradient ascent) for one layer.

Examples::

    jaxconvviz atlas --layer block3_conv1 --filters 0:64 --size 150
    jaxconvviz atlas --layer block1_conv1 --filters 0:16 --size 64 --out atlases
    jaxconvviz atlas --layer conv2d_1 --model my_cnn.keras --filters 0:32
    jaxconvviz atlas --all-layers --size 128 --dtype bfloat16 --out atlas_all

Writes ``atlas_<layer>.png`` (the raw grid, one pixel per pattern pixel) and
``atlas_<layer>_figure.png`` (the same with a title naming layer and weights).
"""

from __future__ import annotations

import argparse

from jaxconvviz.commands.common import (
    CLIError,
    add_model_args,
    init_distributed,
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
    p.add_argument("--all-layers", action="store_true",
                   help="every conv layer (VGG16: 13 layers, 4,224 filters) in "
                   "one filter_atlas run, one grid per layer")
    p.add_argument("--filters", default=None, metavar="SEL",
                   help="filters: START:STOP or a comma list (default: 0:64; "
                   "with --all-layers every filter, and a START:STOP range is "
                   "clipped to each layer's filters)")
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
                   help="filters per compiled chunk (default: all on GPU; on "
                   "CPU 1 to 16 by the layer's feature-map size)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="network compute dtype (default: float32; bfloat16 is "
                   "faster on GPUs and on CPUs with AVX512-BF16 or AMX-BF16)")
    p.add_argument("--conv-impl", default="auto", choices=("auto", "xla", "matmul"),
                   help="how convolutions are computed: xla, matmul (matrix "
                   "products), auto = matmul for bfloat16 on CPU, else xla "
                   "(default: auto)")
    p.add_argument("--memory-budget", default=None, metavar="BYTES",
                   help="bytes per device for a chunk of filters, e.g. 16GB or "
                   "12GiB (default: from the device's free memory)")
    p.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() first (SLURM/Open MPI "
                   "auto-detected, else JAX_COORDINATOR_ADDRESS, "
                   "JAX_NUM_PROCESSES, JAX_PROCESS_ID); every process computes "
                   "its share, process 0 writes (see docs/scaling.md)")
    p.add_argument("--pre-activation", action="store_true",
                   help="maximise the filter's response before its ReLU (the "
                   "default since the engine refactor; kept for old scripts)")
    p.add_argument("--book-objective", action="store_true",
                   help="maximise the response after the ReLU, as the book does: "
                   "filters silent on the grey start image then stay noise")
    p.add_argument("--style", default="book", choices=("book", "lucid"),
                   help="book (default): normalised pixel ascent from grey; "
                   "lucid: decorrelated Fourier image, random transforms, Adam "
                   "0.05 (use --steps 512 for lucid's quality)")
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
    """The layers to render: --layer, or every conv layer with --all-layers."""
    valid = model.spatial_layers
    if args.all_layers:
        if args.layer is not None:
            raise CLIError("use --layer or --all-layers, not both.")
        return list(model.conv_layers)
    if args.layer is None:
        raise CLIError(f"--layer is required; one of {', '.join(valid)}.")
    if args.layer not in valid:
        raise CLIError(
            f"--layer must be one of {', '.join(valid)}; got {args.layer!r}."
        )
    return [args.layer]


def _check_args(args) -> None:
    if args.pre_activation and args.book_objective:
        raise CLIError("use --pre-activation or --book-objective, not both.")
    args.pre_activation = not args.book_objective
    if args.style == "lucid" and (args.step_size != 1.0 or args.domain == "rgb"):
        raise CLIError("--step-size and --domain apply to --style book.")
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
    if args.filters is None:
        args.filters = ":" if args.all_layers else "0:64"
    if args.distributed:
        init_distributed()
    model, params, desc = load_model_and_params(args, include_top=False)
    layers = _layers(args, model)
    margin = 24 if args.style == "lucid" else 0  # lucid pads 12 px per side
    for layer in layers:  # validate every layer before computing any
        need = max(1, model.min_input_size(layer) - margin)
        if args.size < need:
            raise CLIError(
                f"--size must be at least {need} px for layer {layer!r}; got "
                f"{args.size}."
            )
        _filters(args, model.channels(layer))
    d = out_dir(args.out)
    if args.all_layers or args.distributed or args.memory_budget:
        _atlas_many(args, model, params, desc, layers, d)
        return 0
    for layer in layers:
        _atlas_one(args, model, params, desc, layer, d)
    return 0


def _filters(args, n: int) -> list[int]:
    """--filters for a layer of ``n`` filters; with --all-layers a range's end
    is clipped to each layer (``0:64`` = the first 64 filters, or all)."""
    text = args.filters
    if args.all_layers and ":" in text:
        a, _, b = text.partition(":")
        if b.strip().lstrip("-").isdigit() and int(b) > n:
            text = f"{a}:{n}"
    return parse_slice(text, name="--filters", n=n)


def _style(args, model):
    """The style of the flags: --style, --steps, --size, --step-size,
    --domain, --pre-activation / --book-objective."""
    from jaxconvviz.featureviz.styles import Book, Lucid

    kw = dict(steps=args.steps, size=args.size, pre_activation=args.pre_activation)
    if args.style == "lucid":
        return Lucid(**kw)
    rgb = args.domain == "rgb" or (args.domain == "auto" and bool(args.model))
    return Book(step_size=args.step_size, preprocess=rgb, **kw)


def _run(args, progress):
    from jaxconvviz.run import Run

    return Run(batch_size=args.batch_size, memory_budget=args.memory_budget,
               dtype=args.dtype, progress=progress)


def _atlas_many(args, model, params, desc, layers, d) -> None:
    """Every layer in one filter_atlas run (chunked, sharded); process 0 writes."""
    import jax

    from jaxconvviz.backend import backend
    from jaxconvviz.commands.common import INTERRUPT_NOTES
    from jaxconvviz.featureviz.atlas import filter_atlas
    from jaxconvviz.featureviz.progress import RunInterrupted

    sel = {layer: _filters(args, model.channels(layer)) for layer in layers}
    main = jax.process_index() == 0
    try:
        with backend(conv=args.conv_impl):
            res = filter_atlas(params, layers=layers, filters_per_layer=sel,
                               key=jax.random.key(args.seed),
                               style=_style(args, model), model=model,
                               run=_run(args, main))
    except RunInterrupted as e:  # Ctrl-C: write the layers that finished
        INTERRUPT_NOTES.append(f"after {len(e.results)} of {len(layers)} layers")
        if main:
            for layer in layers:
                if layer in e.results:
                    _atlas_one(args, model, params, desc, layer, d,
                               pats=e.results[layer])
        raise
    if not main:
        return
    for layer in layers:
        _atlas_one(args, model, params, desc, layer, d, pats=res[layer])


def _atlas_one(args, model, params, desc, layer, d, pats=None) -> None:
    import jax
    import numpy as np

    from jaxconvviz.backend import backend
    from jaxconvviz.featureviz.filters import filter_activation
    from jaxconvviz.featureviz.progress import dead_filter_hint, own_objective_source
    from jaxconvviz.featureviz.render import render
    from jaxconvviz.plotting import plot_atlas
    from jaxconvviz.views.grids import atlas_grid, tile_grid

    idx = _filters(args, model.channels(layer))
    rgb = args.domain == "rgb" or (args.domain == "auto" and bool(args.model))
    lucid = args.style == "lucid"
    if pats is None:  # (--all-layers passes the filter_atlas result)
        with backend(conv=args.conv_impl):
            pats = render(params, layer, idx, key=jax.random.key(args.seed),
                              style=_style(args, model), model=model,
                              run=_run(args, True))
    if lucid:
        u8 = np.clip(np.rint(np.asarray(pats, np.float32)), 0, 255).astype(np.uint8)
        grid = tile_grid(u8, n_cols=args.cols, margin=args.margin)
        dead = 0
    else:
        act = filter_activation(params, pats, layer, idx, preprocess=rgb,
                                    model=model)
        dead = int((act <= 0).sum())
        grid = atlas_grid(pats, n_cols=args.cols, margin=args.margin)
    if grid.shape[-1] == 1:
        grid = grid[..., 0]
    raw = save_png(grid, d / f"atlas_{layer}.png")
    if lucid:
        how = "lucid style (Fourier image, random transforms, Adam)"
    else:
        domain = "RGB through preprocessing" if rgb else "network input"
        how = f"book style, optimised in the {domain}"
    objective = "pre-ReLU" if args.pre_activation else "post-ReLU"
    fig = plot_atlas(grid, layer=layer, n_filters=len(idx),
                     source=f"{desc}; mean {objective} response, {args.steps} "
                     f"steps, {args.size} px, {how}", filter_indices=idx,
                     n_cols=args.cols, margin=args.margin)
    figpath = save_figure(fig, d / f"atlas_{layer}_figure.png")
    say(f"wrote {raw} and {figpath} ({len(idx)} filters of {layer}, {desc})")
    own, _ = own_objective_source(model, layer)
    if dead and not own:  # a pooling layer: no pre-ReLU objective of its own
        say(f"{layer}: {dead} of {len(idx)} filters end with zero response; "
            + dead_filter_hint(model, layer, pre_activation=args.pre_activation))
    elif dead and args.pre_activation:
        say(f"{layer}: {dead} of {len(idx)} filters end with zero activation "
            "after the ReLU (their pre-ReLU response rose but stayed negative)")
    elif dead:
        say(f"{layer}: {dead} of {len(idx)} filters stayed at zero activation "
            "(dead on the grey start: zero gradient, so their tiles show the "
            "start noise; drop --book-objective to revive them)")
