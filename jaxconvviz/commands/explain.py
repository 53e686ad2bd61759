"""``jaxconvviz explain IMAGE... --methods M1,M2 --out DIR``: compare methods.

For each image, every method's heatmap side by side (``explain_<stem>.png``,
each panel labelled with the method and its deletion AUC); for all images a
table of faithfulness metrics (``metrics.csv``: deletion and insertion AUC,
drop in confidence and whether it increased, per image and method) and its
bar chart of means (``metrics.png``).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

from jaxconvviz.commands import common
from jaxconvviz.commands.common import CLIError

DEFAULT_METHODS = "gradcam,gradcam++,scorecam"
METRICS_BETTER = {"deletion AUC": "lower", "insertion AUC": "higher",
                  "average drop %": "lower", "increase in confidence %": "higher"}


def register(subparsers) -> None:
    from jaxconvviz.attribution.explain import explain_methods

    p = subparsers.add_parser(
        "explain",
        help="compare attribution methods on images, with faithfulness metrics",
        description="Heatmaps of several methods side by side for each image, "
        "and a table (CSV + bar chart) of deletion/insertion AUC, average drop "
        "and increase in confidence. Methods: "
        + ", ".join(explain_methods()) + ".",
    )
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"comma-separated methods (default: {DEFAULT_METHODS})")
    p.add_argument("--class", dest="class_index", type=int, default=None,
                   metavar="N", help="class to explain (default: each image's "
                   "top-1)")
    p.add_argument("--layer", default=None,
                   help="spatial layer of the CAMs (default: the model's last "
                   "spatial non-pooling layer, block5_conv3 for VGG16)")
    p.add_argument("--steps", type=int, default=16,
                   help="deletion/insertion steps (default: 16)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of SmoothGrad's noise (default: 0)")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="heatmap weight in the overlays (default: 0.5)")
    p.add_argument("--out", default=".", metavar="DIR",
                   help="output directory (default: .)")
    common.add_model_args(p, default_weights="imagenet", include_top=True)
    p.set_defaults(func=run)


def parse_methods(text: str) -> tuple[str, ...]:
    from jaxconvviz.attribution.explain import explain_methods

    valid = explain_methods()
    methods = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [m for m in methods if m not in valid]
    if not methods or bad:
        raise CLIError(f"--methods must be a comma list of {', '.join(valid)}; "
                       f"got {text!r}.")
    return methods


def summary(table) -> dict:
    """``{method: {metric: mean}}`` for :func:`~jaxconvviz.plotting.plot_metrics`."""
    return {m: {"deletion AUC": float(np.mean(r["deletion AUC"])),
                "insertion AUC": float(np.mean(r["insertion AUC"])),
                "average drop %": float(100 * np.mean(r["drop"])),
                "increase in confidence %": float(100 * np.mean(r["increased"]))}
            for m, r in table.items()}


def comparison_figure(images_u8, table, methods, row_titles, *, alpha=0.5,
                      title=None):
    """The side-by-side figure of :func:`evaluate`'s maps for these images."""
    from jaxconvviz.plotting import plot_methods
    from jaxconvviz.views.heatmaps import overlay

    ovs = np.stack([overlay(images_u8, table[m]["maps"], alpha=alpha)
                    for m in methods], axis=1)
    from jaxconvviz.attribution.explain import method_label as label

    labels = [f"{label(m)}\ndel. AUC {table[m]['deletion AUC'][i]:.3f}"
              for i in range(len(images_u8)) for m in methods]
    return plot_methods(images_u8, ovs, labels, row_titles=row_titles, title=title)


def run(args: argparse.Namespace) -> int:
    import jax

    from jaxconvviz.attribution.explain import evaluate
    from jaxconvviz.attribution.explain import method_label as label
    from jaxconvviz.images import to_uint8
    from jaxconvviz.models.labels import load_class_index
    from jaxconvviz.plotting import plot_metrics

    methods = parse_methods(args.methods)
    if args.steps < 1:
        raise CLIError(f"--steps must be >= 1; got {args.steps}.")
    if not 0.0 <= args.alpha <= 1.0:
        raise CLIError(f"--alpha must be in [0, 1]; got {args.alpha}.")
    paths = [Path(p) for p in args.images]
    for p in paths:
        if not p.is_file():
            raise CLIError(f"image file not found: {str(p)!r}.")
    d = common.out_dir(args.out)
    model, params, desc = common.load_model_and_params(args, include_top=True)
    if not model.has_top:
        raise CLIError(f"{desc} has no classifier top; explain needs class logits.")
    layer = args.layer
    if layer is not None:
        from jaxconvviz.attribution.cams import check_cam_layer

        check_cam_layer(model, layer, name="--layer")
    n_out = model.num_outputs
    if args.class_index is not None and not 0 <= args.class_index < n_out:
        raise CLIError(f"--class must be in 0..{n_out - 1} for {desc}; got "
                       f"{args.class_index}.")
    x = np.stack([common.load_image_for(p, model) for p in paths])
    if x.shape[-1] == 1:
        x = x.astype(np.float32)
    classes, probs, table = evaluate(params, x, methods, model=model, layer=layer,
                                     class_index=args.class_index, steps=args.steps,
                                     key=jax.random.key(args.seed))
    # "African_elephant (386)" for ImageNet, "class 9" for a model without names
    index = load_class_index() if n_out == 1000 else None  # read the JSON once
    names = ([f"{index[int(k)][1]} ({int(k)})" for k in classes]
             if index else [f"class {int(k)}" for k in classes])
    common.say(f"{desc}; methods {', '.join(methods)}")
    shown = to_uint8(x if x.shape[-1] == 3 else np.repeat(x, 3, axis=-1))
    for i, p in enumerate(paths):
        fig = comparison_figure(
            shown[i:i + 1], {m: {k: v[i:i + 1] for k, v in r.items()}
                             for m, r in table.items()}, methods,
            [f"{names[i]}\nscore {probs[i]:.3g}"],
            alpha=args.alpha, title=f"{p.name}: {names[i]}, score {probs[i]:.3g}")
        fp = common.save_figure(fig, d / f"explain_{p.stem}.png")
        common.say(f"wrote {fp}")
    buf = io.StringIO()
    buf.write("image,method,class,score,deletion_auc,insertion_auc,"
              "confidence_drop,confidence_increased\n")
    for i, p in enumerate(paths):
        for m in methods:
            r = table[m]
            buf.write(f"{p.name},{m},{int(classes[i])},{probs[i]:.6g},"
                      f"{r['deletion AUC'][i]:.6g},{r['insertion AUC'][i]:.6g},"
                      f"{r['drop'][i]:.6g},{int(r['increased'][i])}\n")
    csv = d / "metrics.csv"
    from jaxconvviz._atomic import atomic_write

    data = buf.getvalue().encode()
    atomic_write(csv, lambda fh: fh.write(data))
    common.say(f"wrote {csv}")
    means = summary(table)
    common.say("method: deletion AUC (lower better), insertion AUC (higher), "
               "average drop %, increase %")
    for m, row in means.items():
        common.say(f"  {m}: " + ", ".join(f"{v:.4g}" for v in row.values()))
    fig = plot_metrics({label(m): v for m, v in means.items()},
                       better=METRICS_BETTER,
                       title=f"{desc}: means over {len(paths)} image(s)")
    fp = common.save_figure(fig, d / "metrics.png")
    common.say(f"wrote {fp}")
    return 0
