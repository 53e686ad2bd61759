"""``jaxconvviz report --out DIR``: a browsable offline atlas website of a network.

Examples::

    jaxconvviz report --out vgg16_report --filters-per-layer 8 --size 64
    jaxconvviz report --out full_report                 # every filter (long)
    jaxconvviz report --out r --weights imagenet --top --images photos/
    jaxconvviz report --out r --model my_cnn.keras --preprocess scale01
    jaxconvviz report --out r --dataset photos/ --layers block3_conv1
    jaxconvviz report --out r --examples examples_out   # a finished run

The report is built in a temporary folder beside DIR and renamed into place
at the end: an interrupted run (Ctrl-C) leaves neither DIR nor the temporary
folder. An existing DIR is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from jaxconvviz.commands.common import (
    CLIError,
    add_model_args,
    load_image_for,
    load_model_and_params,
    out_dir,
    say,
)

#: File suffixes taken from an --images folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="a browsable offline atlas website of the network",
        description="Write a static website to --out: the model's layer table, "
        "one page per conv layer (filter atlas, activation grids, kernels, "
        "weight histogram, dead filters) and per filter (its pattern, the image "
        "patches that excite it most cropped to its receptive field, its "
        "activation distribution), and an images page (predictions and CAM "
        "overlays when the model has a classifier top). Opens from disk; "
        "nothing is downloaded.",
    )
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the report folder (must not exist unless --overwrite)")
    p.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="conv layers to show (default: every conv layer)")
    p.add_argument("--filters-per-layer", type=int, default=None, metavar="N",
                   help="the first N filters of each layer (default: all; "
                   "VGG16 has 4,224)")
    p.add_argument("--images", nargs="+", default=None, metavar="PATH",
                   help="image files or folders for activations, top patches and "
                   "attribution (default: the bundled cat and elephant photos)")
    p.add_argument("--style", default=None, choices=("auto", "book", "lucid"),
                   help="pattern style: book (gradient ascent, DLwP), lucid "
                   "(jaxconvviz.render: decorrelated, transformation-robust; "
                   "the book pattern is shown beside), auto = lucid too "
                   "(default: auto on GPU/TPU, book on CPU, where lucid's 512 "
                   "steps are 13 times the book's 40)")
    p.add_argument("--lucid-steps", type=int, default=512, metavar="N",
                   help="lucid-style optimisation steps (default: 512)")
    p.add_argument("--cams", nargs="+", default=None, metavar="METHOD",
                   help="CAM methods on the images page, for models with a "
                   "classifier top (default: every CAM method)")
    p.add_argument("--size", type=int, default=None, metavar="PX",
                   help="pattern side (default: 64 on CPU, 128 on GPU/TPU)")
    p.add_argument("--steps", type=int, default=40,
                   help="book-style ascent steps (default: 40)")
    p.add_argument("--top-k", type=int, default=6, metavar="K",
                   help="image patches per filter page (default: 6)")
    p.add_argument("--image-size", type=int, default=224, metavar="PX",
                   help="side the images are resized to for models without a "
                   "fixed input size (default: 224)")
    p.add_argument("--top", action="store_true",
                   help="load VGG16's classifier top too (predictions, CAM); "
                   "default: on for --weights imagenet when the top file is "
                   "already on this machine")
    p.add_argument("--book-objective", action="store_true",
                   help="maximise the post-ReLU activation as the book does "
                   "(filters silent on the start image stay noise); default: "
                   "the pre-ReLU response")
    p.add_argument("--dataset", default=None, metavar="SOURCE",
                   help="an image dataset (folder, glob, .txt of paths): unit "
                   "pages show each unit's top --top-k crops over it, layer "
                   "pages the units by selectivity and the dead ones (one "
                   "pass, as `jaxconvviz examples`)")
    p.add_argument("--examples", default=None, metavar="DIR",
                   help="the --out folder of a finished `jaxconvviz examples` "
                   "run (or its result/ folder), instead of --dataset; "
                   "--layers defaults to its layers")
    p.add_argument("--atlas", default=None, metavar="LAYER",
                   help="add an activation-atlas page of LAYER over the dataset "
                   "(--dataset, else the report's images); needs "
                   "jaxconvviz[atlas]")
    p.add_argument("--atlas-grid", type=int, default=20, metavar="N",
                   help="cells per side of the --atlas page (default: 20)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing DIR (only once the new report is "
                   "complete)")
    add_model_args(p)
    p.set_defaults(func=run)


def _image_paths(items) -> list[Path]:
    from jaxconvviz.images import CAT_PHOTO, ELEPHANT_PHOTO

    if not items:
        return [Path(CAT_PHOTO), Path(ELEPHANT_PHOTO)]
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir()
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CLIError(f"--images folder {item!r} holds no image files "
                               f"({', '.join(IMAGE_SUFFIXES)}).")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise CLIError(f"--images: {item!r} is neither a file nor a folder.")
    return out


def _check_args(args) -> None:
    for flag, v, lo in (("--filters-per-layer", args.filters_per_layer, 1),
                        ("--steps", args.steps, 1), ("--top-k", args.top_k, 1),
                        ("--image-size", args.image_size, 1),
                        ("--size", args.size, 1),
                        ("--lucid-steps", args.lucid_steps, 1)):
        if v is not None and v < lo:
            raise CLIError(f"{flag} must be >= {lo}; got {v}.")


def _weights_file(args) -> Path | None:
    """The file the weights came from (for its hash), if there is one."""
    if getattr(args, "model", None):
        p = Path(args.model)
        return p if p.is_file() else None
    if args.weights == "hed":
        from jaxconvviz.models.weights import hed_weights_path

        return hed_weights_path()
    if args.weights == "imagenet":
        from jaxconvviz.models.weights import imagenet_available

        return imagenet_available(include_top=args.top, verify=False)
    p = Path(args.weights)
    return p if p.is_file() else None


def _fmt_time(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def run(args: argparse.Namespace) -> int:
    import jax

    from jaxconvviz.report import ReportImage, build_report, estimate_seconds
    from jaxconvviz.report.build import available_cam_methods

    _check_args(args)
    if args.cams is not None:
        bad = [m for m in args.cams if m not in available_cam_methods()]
        if bad:
            raise CLIError(f"--cams must be some of "
                           f"{', '.join(available_cam_methods())}; got {bad[0]!r}.")
    dest = out_dir(args.out)
    if dest.exists() and not args.overwrite:
        raise CLIError(f"--out {args.out!r} already exists; pass --overwrite to "
                       "replace it, or choose another folder.")
    paths = _image_paths(args.images)
    if not args.model and args.weights == "imagenet" and not args.top:
        from jaxconvviz.models.weights import imagenet_available

        args.top = imagenet_available(include_top=True, verify=False) is not None
    if args.top and not args.model and args.weights == "hed":
        raise CLIError("--top needs weights with a classifier; the 'hed' weights "
                       "have none (use --weights imagenet).")
    if args.dataset is not None and args.examples is not None:
        raise CLIError("use --dataset or --examples, not both.")
    if args.dataset is not None and not args.dataset.strip():
        raise CLIError("--dataset must name a folder, a glob or a .txt file of "
                       "paths; got an empty string.")
    loaded = _load_examples(args.examples) if args.examples is not None else None
    if args.dataset is not None:  # refuse an empty or unreadable one now
        from jaxconvviz.dataset.sources import open_source

        args.dataset_source = open_source(args.dataset, what="--dataset")
    model, params, desc = load_model_and_params(args, include_top=bool(args.top))
    layers = list(model.conv_layers) if args.layers is None else args.layers
    if loaded is not None and args.layers is None:
        layers = [x for x in model.conv_layers if x in loaded.layers]
    if not model.conv_layers:
        raise CLIError("the model has no conv layers to show.")
    for layer in layers:
        if layer not in model.conv_layers:
            raise CLIError(f"--layers must name conv layers of the model, one of "
                           f"{', '.join(model.conv_layers)}; got {layer!r}.")
    if args.atlas:
        from jaxconvviz.directions.activation_atlas import require

        model.check_layer(args.atlas, model.spatial_layers, name="--atlas")
        require("umap", "--atlas")
    on_cpu = jax.default_backend() == "cpu"
    size = args.size or (64 if on_cpu else 128)
    style = args.style or ("book" if on_cpu else "auto")
    for layer in layers:
        need = model.min_input_size(layer)
        if size < need:
            raise CLIError(f"--size must be at least {need} px for layer "
                           f"{layer!r}; got {size}.")
    fixed = model.input_shape[:2]
    hw = None if None not in fixed else (args.image_size, args.image_size)
    images = [ReportImage(p.name, load_image_for(p, model, size=hw)) for p in paths]
    n_filters = {layer: min(model.channels(layer),
                            args.filters_per_layer or model.channels(layer))
                 for layer in layers}
    total = sum(n_filters.values())
    est = estimate_seconds(model, layers, n_filters, size, args.steps,
                           lucid_steps=args.lucid_steps
                           if style != "book" else 0)
    where = "CPU" if on_cpu else jax.default_backend().upper()
    say(f"report of {desc}: {len(layers)} layer(s), {total:,} filter(s) at {size} px, "
        f"{len(images)} image(s); estimated {_fmt_time(est)} on this {where}"
        + ("" if on_cpu else " (the estimate assumes a CPU; expect less)"))
    from jaxconvviz.models.weights import file_hash

    wfile = _weights_file(args)
    digest = file_hash(wfile, "sha256") if wfile is not None else None
    source = desc + (f" ({wfile})" if wfile is not None else "")
    examples, ex_source = _examples(args, loaded, model, params, layers)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp",
                                dir=dest.parent))
    old = None
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        try:
            stats = build_report(
                tmp, params, model=model, images=images,
                key=jax.random.key(args.seed), layers=layers,
                filters_per_layer=args.filters_per_layer, size=size,
                steps=args.steps, style=style, lucid_steps=args.lucid_steps,
                cam_methods=args.cams,
                pre_activation=not args.book_objective, top_k=args.top_k,
                source=source, source_hash=digest, log=say,
                examples=examples, examples_source=ex_source)
            if args.atlas:
                from jaxconvviz.report.atlas_page import add_to_report

                add_to_report(tmp, params, model, args.dataset
                              or [im.rgb for im in images], args.atlas,
                              key=jax.random.key(args.seed), grid=args.atlas_grid,
                              render_size=size, steps=args.lucid_steps, log=say)
        except OSError as e:
            raise CLIError(_keep_partial(tmp, dest, e)) from None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old",
                                        dir=dest.parent))
            os.rmdir(old)
            os.rename(dest, old)
        os.rename(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            if dest.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:  # the swap failed half-way: put the old report back
                os.rename(old, dest)
    mb = stats.bytes / 1e6
    say(f"wrote {dest / 'index.html'}: {stats.files:,} files, {mb:.1f} MB, "
        f"{stats.filters:,} filter pages, in {_fmt_time(stats.seconds)}")
    sys.stdout.flush()
    return 0


def _load_examples(folder: str):
    """The DatasetExamples of an ``examples`` run's --out folder (or of its
    result/ folder)."""
    from jaxconvviz.dataset import DatasetExamples

    p = Path(folder)
    if not p.is_dir():
        raise CLIError(f"--examples must be the folder of a `jaxconvviz examples` "
                       f"run; {folder!r} is not a folder.")
    if (p / "result").is_dir():
        p = p / "result"
    try:
        return DatasetExamples.load(p)
    except FileNotFoundError:
        raise CLIError(f"--examples {folder!r} holds no finished result (run "
                       "`jaxconvviz examples SOURCE --out DIR` first).") from None


def _examples(args, loaded, model, params, layers):
    """(DatasetExamples or None, where it came from) for --examples/--dataset."""
    if loaded is not None:
        from jaxconvviz.report.dataset_pages import check_examples

        check_examples(loaded, model, layers)
        return loaded, str(args.examples)
    if args.dataset is None:
        return None, ""
    from jaxconvviz.dataset import dataset_examples
    from jaxconvviz.run import Run

    say(f"dataset examples over {args.dataset} (top {args.top_k} per unit)")
    res = dataset_examples(params, args.dataset_source, layers=layers,
                               k=args.top_k, model=model, run=Run(progress=True))
    return res, str(args.dataset)


def _keep_partial(tmp: Path, dest: Path, e: OSError) -> str:
    """Keep what a report that could not be finished wrote (renamed beside
    ``dest``, which costs no space) and say where it is."""
    reason = e.strerror or str(e)
    files = sum(1 for p in tmp.rglob("*") if p.is_file())
    partial = Path(tempfile.mkdtemp(prefix=f"{dest.name}.partial-", dir=dest.parent))
    try:
        os.rmdir(partial)
        os.rename(tmp, partial)
    except OSError:
        return f"could not write the report to {str(dest)!r} ({reason})."
    return (f"could not write the report to {str(dest)!r} ({reason}); the "
            f"{files} file{'s' if files != 1 else ''} written so far "
            f"{'are' if files != 1 else 'is'} kept in {str(partial)!r}.")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
