"""``jaxconvviz activation-atlas``: the activation atlas of a layer over a
dataset (Carter et al. 2019).

Writes ``atlas_<layer>.png`` (the composed atlas), ``atlas_<layer>.html``
(a zoomable offline page: click a cell for its rendering, count and dataset
patches) and ``atlas_<layer>.npz`` (cells, counts, directions, patches,
layout).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from jaxconvviz.commands import common
from jaxconvviz.commands.common import CLIError, add_model_args, out_dir, say


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "activation-atlas",
        help="activation atlas of a layer over a dataset (Carter et al. 2019)",
        description="Sample spatial activation vectors of --layer over SOURCE, "
        "lay them out with UMAP (pip install 'jaxconvviz[atlas]'), bin them into "
        "a --grid x --grid layout and render each cell's mean direction.",
    )
    p.add_argument("source", metavar="SOURCE",
                   help="the dataset: a folder of images (recursive), a glob, a "
                   ".txt list of paths, an image file, or a .npy array "
                   "(n, h, w, 3) of RGB 0-255")
    p.add_argument("--layer", required=True, metavar="LAYER",
                   help="a spatial layer, e.g. block4_conv3")
    p.add_argument("--grid", type=int, default=20, metavar="N",
                   help="cells per side (default: 20)")
    p.add_argument("--samples", type=int, default=100_000, metavar="N",
                   help="activation vectors kept (default: 100000)")
    p.add_argument("--min-count", type=int, default=3, metavar="N",
                   help="drop cells with fewer vectors (default: 3)")
    p.add_argument("--border", type=int, default=0, metavar="N",
                   help="skip positions within N of the layer map's edge "
                   "(default: 0)")
    p.add_argument("--class-index", type=int, default=None, metavar="C",
                   help="class-filtered atlas: vectors weighted by attribution "
                   "to class C's logit (needs a classifier)")
    p.add_argument("--image-size", type=int, default=224, metavar="PX",
                   help="side images are resized to (default: 224)")
    p.add_argument("--size", type=int, default=None, metavar="PX",
                   help="side of each cell's rendering (default: 128 on a GPU, "
                   "48 on a CPU)")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="lucid steps (default: 512 on a GPU, 128 on a CPU)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="images per sampling batch and renders per call")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--out", default=".", metavar="DIR",
                   help="output directory (default: current directory)")
    p.add_argument("--top", action="store_true",
                   help="load the VGG16 weights with their classifier")
    add_model_args(p)
    p.set_defaults(func=run)


def load_source(text: str):
    """SOURCE for :func:`~jaxconvviz.activation_atlas`: a .npy array as an
    array, anything else (a folder, a glob, an image file, a .txt list of
    paths) as the dataset reader takes it."""
    import numpy as np

    p = Path(text)
    if p.suffix.lower() == ".npy" and p.is_file():
        a = np.load(p)
        return a, [f"{p.name}[{i}]" for i in range(len(a))]
    if p.is_file() and p.suffix.lower() != ".txt":
        return [str(p)], None
    if not (p.exists() or any(ch in text for ch in "*?[")):
        raise CLIError(f"SOURCE {text!r} is neither a folder, a glob, an image file, "
                       "a .txt list nor a .npy array.")
    return text, None


def run(args) -> int:
    for flag, v in (("--grid", args.grid), ("--samples", args.samples),
                    ("--min-count", args.min_count), ("--image-size", args.image_size),
                    ("--size", args.size), ("--steps", args.steps),
                    ("--batch-size", args.batch_size)):
        if v is not None and v < 1:
            raise CLIError(f"{flag} must be >= 1; got {v}.")
    dest = out_dir(args.out)
    import dataclasses

    import jax
    import numpy as np

    from jaxconvviz.directions.activation_atlas import (
        activation_atlas,
        estimate_render_seconds,
        open_images,
        require,
    )
    from jaxconvviz.featureviz.progress import format_seconds
    from jaxconvviz.plotting import plot_activation_atlas
    from jaxconvviz.report.atlas_page import atlas_html, patch_crops
    from jaxconvviz.run import Run

    require("umap", "activation-atlas")
    top = bool(args.top or args.class_index is not None)
    model, params, desc = common.load_model_and_params(args, include_top=top)
    model.check_layer(args.layer, model.spatial_layers, name="--layer")
    size = model.input_shape[0] or args.image_size
    source, names = load_source(args.source)
    src = open_images(source, what="SOURCE")
    on_cpu = jax.default_backend() == "cpu"
    rsize = args.size or (48 if on_cpu else 128)
    steps = args.steps or (128 if on_cpu else 512)
    est = estimate_render_seconds(model, args.layer, args.grid ** 2, size=rsize,
                                  steps=steps)
    say(f"activation atlas of {args.layer} ({desc}): {src.n} images, up to "
        f"{args.samples:,} vectors, {args.grid}x{args.grid} grid; rendering up to "
        f"{args.grid ** 2} cells ({rsize} px x {steps} steps) estimated "
        f"{format_seconds(est)} on a CPU")
    at = activation_atlas(
        params, source, args.layer, key=jax.random.key(args.seed), grid=args.grid,
        samples=args.samples, min_count=args.min_count, model=model,
        class_index=args.class_index, border=args.border, size=size,
        render_size=rsize,
        steps=steps, run=Run(batch_size=args.batch_size, progress=True))
    if names is not None:
        at = dataclasses.replace(at, names=names)
    safe = re.sub(r"[^\w.-]", "_", args.layer)
    img = at.compose()
    common.save_png(img, dest / f"atlas_{safe}.png")
    fig = plot_activation_atlas(img, grid=at.grid, title=f"{args.layer}: "
                                f"{len(at.counts)} cells of {desc}")
    common.save_figure(fig, dest / f"atlas_{safe}_figure.png")
    crops = patch_crops(at, model, lambda i: src.image(i, at.input_size))
    page = atlas_html(at, img, patches=crops,
                      title=f"Activation atlas of {desc}").encode("utf-8")
    common.save_bytes(lambda fh: fh.write(page), dest / f"atlas_{safe}.html")
    buf = io.BytesIO()
    np.savez(buf, cells=at.cells, counts=at.counts, directions=at.directions,
             patches=at.patches, coords=at.coords, image_index=at.image_index,
             position=at.position, cell_of=at.cell_of, names=np.asarray(at.names),
             images=np.clip(np.round(at.images), 0, 255).astype(np.uint8))
    data = buf.getvalue()
    common.save_bytes(lambda fh: fh.write(data), dest / f"atlas_{safe}.npz")
    say(f"wrote {dest / f'atlas_{safe}.png'}, .html, .npz: {len(at.counts)} cells, "
        f"{int(at.counts.sum()):,} of {at.vectors.shape[0]:,} vectors in kept cells")
    return 0
