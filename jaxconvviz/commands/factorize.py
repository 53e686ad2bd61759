"""``jaxconvviz factorize``: one image's activations at a layer as a few
groups (NMF), the figure of Olah et al. 2018.

Writes ``factorize_<layer>.png`` (the image, a colour per group over it,
each group's feature visualization and spatial map), the group renderings
``factorize_<layer>_groups.png`` and ``factorize_<layer>.npz`` (maps,
directions, attribution).
"""

from __future__ import annotations

import io
import re

from jaxconvviz.commands import common
from jaxconvviz.commands.common import CLIError, add_model_args, out_dir, say


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "factorize",
        help="NMF of one image's activations into groups (Olah et al. 2018)",
        description="Factor IMAGE's activations at --layer into --groups "
        "non-negative groups (scikit-learn NMF; pip install 'jaxconvviz[atlas]'), "
        "render each group's channel direction, and draw the figure.",
    )
    p.add_argument("image", metavar="IMAGE", help="an image file")
    p.add_argument("--layer", required=True, metavar="LAYER",
                   help="a spatial layer after a ReLU, e.g. block4_conv3")
    p.add_argument("--groups", type=int, default=6, metavar="N",
                   help="number of groups (default: 6)")
    p.add_argument("--class-index", type=int, default=None, metavar="C",
                   help="also each group's attribution to class C's logit "
                   "(needs a classifier: --weights imagenet --top, or --model)")
    p.add_argument("--image-size", type=int, default=224, metavar="PX",
                   help="side the image is resized to (default: 224; a model "
                   "with a fixed input size uses its own)")
    p.add_argument("--size", type=int, default=None, metavar="PX",
                   help="side of the group renderings (default: 128 on a GPU, "
                   "64 on a CPU)")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="lucid steps (default: 512 on a GPU, 128 on a CPU)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--out", default=".", metavar="DIR",
                   help="output directory (default: current directory)")
    p.add_argument("--top", action="store_true",
                   help="load the VGG16 weights with their classifier")
    add_model_args(p)
    p.set_defaults(func=run)


def _check(args) -> None:
    for flag, v in (("--groups", args.groups), ("--image-size", args.image_size),
                    ("--size", args.size), ("--steps", args.steps)):
        if v is not None and v < 1:
            raise CLIError(f"{flag} must be >= 1; got {v}.")


def run(args) -> int:
    _check(args)
    dest = out_dir(args.out)
    import jax
    import numpy as np

    from jaxconvviz.directions.activation_atlas import estimate_render_seconds
    from jaxconvviz.directions.factorize import factorize_activations
    from jaxconvviz.featureviz.progress import format_seconds
    from jaxconvviz.featureviz.styles import Lucid
    from jaxconvviz.plotting import plot_factorization

    top = bool(args.top or args.class_index is not None)
    model, params, desc = common.load_model_and_params(args, include_top=top)
    model.check_layer(args.layer, model.spatial_layers, name="--layer")
    hw = None if None not in model.input_shape[:2] else (args.image_size,) * 2
    image = common.load_image_for(args.image, model, size=hw)
    on_cpu = jax.default_backend() == "cpu"
    size = args.size or (64 if on_cpu else 128)
    steps = args.steps or (128 if on_cpu else 512)
    est = estimate_render_seconds(model, args.layer, args.groups, style=Lucid(),
                                  size=size, steps=steps)
    say(f"factorize {args.layer} of {desc}: {args.groups} groups, renders "
        f"{size} px x {steps} steps, estimated {format_seconds(est)} on a CPU")
    f = factorize_activations(params, image, args.layer, key=jax.random.key(args.seed),
                              n_groups=args.groups, model=model,
                              class_index=args.class_index, render_size=size,
                              steps=steps)
    safe = re.sub(r"[^\w.-]", "_", args.layer)
    ims = np.clip(np.round(f.images), 0, 255).astype(np.uint8)
    fig = plot_factorization(
        np.clip(np.asarray(image), 0, 255).astype(np.uint8), f.maps, ims,
        attribution=f.attribution,
        title=f"{args.layer}: {args.groups} NMF groups of {desc}")
    path = common.save_figure(fig, dest / f"factorize_{safe}.png")
    rel = f.reconstruction_error / max(float(np.linalg.norm(f.activations)), 1e-12)
    say(f"wrote {path} (reconstruction error {f.reconstruction_error:.4g}, "
        f"relative {rel:.3f})")
    from jaxconvviz.views.grids import tile_grid

    common.save_png(np.asarray(tile_grid(ims, n_cols=len(ims))),
                    dest / f"factorize_{safe}_groups.png")
    buf = io.BytesIO()
    np.savez(buf, maps=f.maps, directions=f.directions,
             attribution=np.asarray([] if f.attribution is None else f.attribution),
             images=ims)
    data = buf.getvalue()
    common.save_bytes(lambda fh: fh.write(data), dest / f"factorize_{safe}.npz")
    return 0
