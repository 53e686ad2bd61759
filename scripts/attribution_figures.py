"""Figures of the attribution methods for docs/images, on the blob net (a
small CNN trained in seconds to name the colour of a square on noise).

    python scripts/attribution_figures.py [--out docs/images]

Writes cam_methods_blob.png (the demo's figure), gradient_methods_blob.png,
attribution_metrics_blob.png (means over 32 images) and sanity_blob.png
(cascading randomization). About 3-5 minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np
from matplotlib.figure import Figure

from jaxconvviz.attribution.explain import evaluate, explain_methods
from jaxconvviz.attribution.explain import method_label as label
from jaxconvviz.attribution.gradients import ATTRIBUTION_METHODS
from jaxconvviz.attribution.sanity import cascading_randomization
from jaxconvviz.attribution.toy import CLASS_NAMES, blob_images, train_blob_net
from jaxconvviz.commands.common import save_figure
from jaxconvviz.commands.demo import _cam_methods
from jaxconvviz.commands.explain import METRICS_BETTER, comparison_figure, summary
from jaxconvviz.plotting import plot_metrics


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/images")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    t0 = time.perf_counter()
    _cam_methods(out, seed=args.seed)
    model, params = train_blob_net(key=jax.random.key(args.seed))
    x, _, _ = blob_images(jax.random.key(args.seed + 1), 4)
    x = np.asarray(x)
    classes, probs, table = evaluate(params, x, ATTRIBUTION_METHODS, model=model,
                                     layer="c2", steps=16)
    rows = [f"{CLASS_NAMES[int(k)]} square\nprobability {p:.3f}"
            for k, p in zip(classes, probs, strict=True)]
    fig = comparison_figure(np.rint(x).astype(np.uint8), table, ATTRIBUTION_METHODS,
                            rows, title="input-gradient methods (sum |a| over "
                            "colour, / max); del. AUC: deletion area")
    print("wrote", save_figure(fig, out / "gradient_methods_blob.png"))

    xs, _, _ = blob_images(jax.random.key(args.seed + 2), 32)
    xs = np.asarray(xs)
    methods = explain_methods()
    _, _, big = evaluate(params, xs, methods, model=model, layer="c2", steps=16)
    means = summary(big)
    for m, row in means.items():
        print(m, {k: round(v, 4) for k, v in row.items()})
    fig = plot_metrics({label(m): v for m, v in means.items()},
                       better=METRICS_BETTER,
                       title="faithfulness on the blob net, means over 32 images")
    print("wrote", save_figure(fig, out / "attribution_metrics_blob.png"))

    sanity_methods = ("gradcam", "gradcam++", "scorecam", "eigencam", "saliency",
                      "guided_backprop", "integrated_gradients")
    res = cascading_randomization(params, xs[:16], methods=sanity_methods,
                                  key=jax.random.key(args.seed), model=model,
                                  layer="c2")
    fig = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
    ax = fig.subplots()
    steps = ["trained"] + [f"+{s}" for s in res.steps]
    for m, v in res.mean().items():
        ax.plot(range(len(steps)), [1.0, *v.tolist()], marker="o", label=label(m))
        print("sanity", m, np.round(v, 3).tolist())
    ax.set_xticks(range(len(steps)), steps)
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel("layers randomised (cumulative, top first)")
    ax.set_ylabel("Spearman correlation with the trained maps")
    ax.set_title("cascading randomization (Adebayo et al.), blob net, 16 images",
                 fontsize=10)
    ax.legend(fontsize=7)
    print("wrote", save_figure(fig, out / "sanity_blob.png"))
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
