"""``jaxconvviz gradcam IMAGE [--method M]``: a class heatmap on a photo.

Prints the top-3 predictions, then writes ``gradcam_<stem>.png`` (image,
heatmap, overlay) and ``overlay_<stem>.png`` (the heatmap blended onto the
photo at its full resolution, DLwP listing 5.44) into ``--out``. With
``--method`` any CAM (``gradcam++``, ``scorecam``, ...) or input-gradient
method (``integrated_gradients``, ``smoothgrad``, ...; shown as ``sum |a|``
over colour, / max); files are then named ``<method>_<stem>.png`` and
``overlay_<method>_<stem>.png`` (``+`` written ``p``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from jaxconvviz.commands import common
from jaxconvviz.commands.common import CLIError

IMAGENET_CLASSES = 1000


def register(subparsers) -> None:
    from jaxconvviz.attribution.cam_registry import cam_methods
    from jaxconvviz.attribution.gradients import ATTRIBUTION_METHODS

    p = subparsers.add_parser(
        "gradcam",
        help="Grad-CAM (or --method: any CAM or gradient attribution) of an "
        "image",
        description="Grad-CAM (arXiv:1610.02391) of one class at a spatial "
        "layer: which parts of the image raise the class logit; --method "
        "picks any other CAM method or input-space attribution. Defaults "
        "follow DLwP 5.4.3: VGG16 with ImageNet weights and its classifier, "
        "layer block5_conv3, the top-1 class.",
    )
    p.add_argument("image", metavar="IMAGE", help="an image file (PNG, JPEG, ...)")
    p.add_argument("--class", dest="class_index", type=int, default=None,
                   metavar="N", help="class index to explain (default: the "
                   "top-1 prediction; 386 = African_elephant)")
    p.add_argument("--method", default="gradcam",
                   help="attribution method: a CAM (" + ", ".join(cam_methods())
                   + ") or an input-gradient method (" + ", ".join(
                       ATTRIBUTION_METHODS) + "); default: gradcam")
    p.add_argument("--layer", default=None,
                   help="spatial layer of the CAM (default: the model's last "
                   "spatial non-pooling layer, block5_conv3 for VGG16)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of SmoothGrad's noise (default: 0)")
    p.add_argument("--out", default=".", metavar="DIR",
                   help="output directory (default: .)")
    p.add_argument("--alpha", type=float, default=0.4,
                   help="heatmap weight in the overlay, in [0, 1] (the book's 0.4)")
    p.add_argument("--colormap", default="jet",
                   help="matplotlib colormap of the heatmap (default: jet)")
    common.add_model_args(p, default_weights="imagenet", include_top=True)
    p.set_defaults(func=run)


def _probabilities(model, logits: np.ndarray) -> tuple[np.ndarray, str]:
    """Apply the model's own output activation; returns (scores, kind)."""
    act = model.layers[-1].opt("activation", "linear")
    if act == "softmax":
        z = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True), "probability"
    if act == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits)), "sigmoid probability"
    return logits, "score"


def _load(args):
    try:
        return common.load_model_and_params(args, include_top=True)
    except OSError as e:
        if args.model or args.weights != "imagenet":
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CLIError(
            f"the ImageNet VGG16 weights with the classifier are not available "
            f"({msg}); fetch them with `jaxconvviz weights fetch imagenet --top` "
            f"or pass --weights PATH to a Keras VGG16 .h5 with its top."
        ) from None


def run(args: argparse.Namespace) -> int:
    import jax

    from jaxconvviz.attribution.cams import check_cam_layer
    from jaxconvviz.attribution.explain import explain_methods, heatmaps, is_cam
    from jaxconvviz.attribution.explain import method_label as label
    from jaxconvviz.images import load_img, to_uint8
    from jaxconvviz.models.labels import decode_predictions, load_class_index
    from jaxconvviz.plotting import plot_gradcam
    from jaxconvviz.views.heatmaps import colorize, overlay

    method = args.method
    if method not in explain_methods():
        raise CLIError(f"--method must be one of {', '.join(explain_methods())}; "
                       f"got {method!r}.")
    if not 0.0 <= args.alpha <= 1.0:
        raise CLIError(f"--alpha must be in [0, 1]; got {args.alpha}.")
    colorize(np.zeros((1, 1, 1)), colormap=args.colormap)  # validate it early
    path = Path(args.image)
    if not path.is_file():
        raise CLIError(f"image file not found: {args.image!r}.")
    d = common.out_dir(args.out)
    model, params, desc = _load(args)
    if not model.has_top:
        raise CLIError(
            f"{desc} has no classifier top; Grad-CAM needs class logits. Use "
            "--weights imagenet (fetch: `jaxconvviz weights fetch imagenet "
            "--top`) or a Keras classifier via --model."
        )
    layer = model.default_layer if args.layer is None else args.layer
    check_cam_layer(model, layer, name="--layer")
    n_out = model.num_outputs
    if args.class_index is not None and not 0 <= args.class_index < n_out:
        valid = ("0 (the single logit of a binary sigmoid head)" if n_out == 1
                 else f"in 0..{n_out - 1}")
        raise CLIError(f"--class must be {valid} for {desc}; got "
                       f"{args.class_index}.")

    original = load_img(path)  # full resolution RGB: the overlay is drawn on it
    x = common.load_image_for(path, model)
    out, _ = model.forward_with(params, model.preprocess(x[None]), logits=True)
    logits = np.asarray(out, dtype=np.float64)
    k = int(np.argmax(logits[0])) if args.class_index is None else args.class_index
    cam = heatmaps(params, x[None], method, np.array([k], np.int32), model=model,
                   layer=layer, key=jax.random.key(args.seed))[0]
    scores, kind = _probabilities(model, logits)

    where = f"layer {layer}; " if is_cam(method) or method == "guided_gradcam" else ""
    common.say(f"{desc}; {where}heatmap {cam.shape[0]}x{cam.shape[1]}")
    imagenet = n_out == IMAGENET_CLASSES
    if imagenet:
        top = decode_predictions(scores, top=3)[0]
        rows = [(name, float(s)) for _, name, s in top]
        name = f"{load_class_index()[k][1]} (index {k})"
    else:
        order = np.argsort(-scores[0], kind="stable")[:3]
        rows = [(f"class {i}", float(scores[0, i])) for i in order]
        name = f"class {k}"
    common.say(f"top predictions ({kind}):")
    for rank, (row_name, s) in enumerate(rows, 1):
        common.say(f"  {rank}. {row_name}: {s:.4f}")
    common.say(f"{label(method)} of {name}, logit {logits[0, k]:.4g}"
               + (", the top-1 class" if args.class_index is None else ""))

    over = overlay(original[None], cam[None], alpha=args.alpha,
                   colormap=args.colormap)[0]
    at = f" at {layer}" if where else ""
    fig = plot_gradcam(
        to_uint8(original), cam, over,
        title=f"{label(method)}{at}: {name}, {kind} {scores[0, k]:.3g}",
        predictions=rows, colormap=args.colormap)
    stem = path.stem
    prefix = "gradcam" if method == "gradcam" else method.replace("+", "p")
    fig_path = common.save_figure(fig, d / f"{prefix}_{stem}.png")
    ov_path = common.save_png(over, d / f"overlay_{prefix}_{stem}.png"
                              if method != "gradcam" else d / f"overlay_{stem}.png")
    common.say(f"wrote {fig_path}")
    common.say(f"wrote {ov_path}")
    return 0

