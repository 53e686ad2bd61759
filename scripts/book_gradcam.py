"""Reproduce Deep Learning with Python 5.4.3 (listings 5.40-5.44): the Grad-CAM
heatmap of "African elephant" on the two-elephant photo, with VGG16 and its
ImageNet classifier -- with the book's defects fixed (gradients pooled per
image, not over the batch; zero-safe normalisation; clipped overlay).

    python scripts/book_gradcam.py --out book_gradcam            # ImageNet VGG16
    python scripts/book_gradcam.py --weights PATH.h5             # a VGG16 .h5 with top
    python scripts/book_gradcam.py --synthetic --out /tmp/synth  # no weights needed

Writes ``elephant_heatmap.png`` (the 14x14 map, listing 5.43),
``elephant_cam.png`` (overlay on the full-resolution photo, listing 5.44) and
``gradcam_elephant.png`` (the three panels), and prints the top-3 predictions
(the book: African_elephant 0.925, tusker 0.070, Indian_elephant 0.004).

The ImageNet weights with the classifier (553,467,096 bytes, 527.8 MiB) are
never downloaded here: without them the script says how to fetch them and
exits 2.

``--synthetic`` needs no weights: it trains a small CNN (conv-pool-conv-GAP-
dense) to tell a red, green or blue square on noise apart, then draws
held-out images with two squares of different colours and the Grad-CAM of
each colour's class -- which must sit on that colour's square.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import jaxconvviz as jcv
from jaxconvviz.commands.common import save_figure
from jaxconvviz.images import ELEPHANT_PHOTO, load_img, save_image, to_uint8
from jaxconvviz.plotting import plot_gradcam

AFRICAN_ELEPHANT = 386


def elephant(args) -> int:
    from jaxconvviz.models.weights import imagenet_available, load_vgg16

    if args.weights == "imagenet" and imagenet_available(True, verify=False) is None:
        print("The ImageNet VGG16 weights with the classifier are not available "
              "locally. Fetch them (527.8 MiB) with\n"
              "    jaxconvviz weights fetch imagenet --top\n"
              "or pass --weights PATH to a Keras VGG16 .h5 with its top "
              "(vgg16_weights_tf_dim_ordering_tf_kernels.h5), or run --synthetic.",
              file=sys.stderr)
        return 2
    params = load_vgg16(args.weights, include_top=True)
    x = load_img(ELEPHANT_PHOTO, target_size=(224, 224))  # listing 5.41
    probs = np.asarray(jcv.predict(params, x[None]))
    print("Predicted:", [(w, n, round(float(p), 4)) for w, n, p in
                         jcv.decode_predictions(probs, top=3)[0]])
    print("argmax:", int(probs[0].argmax()), "(book: 386)")
    k = AFRICAN_ELEPHANT if args.class_index is None else args.class_index
    cam = np.asarray(jcv.grad_cam(params, x[None], layer="block5_conv3",
                                  class_index=k))[0]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    ax.matshow(cam, cmap="viridis")  # plt.matshow(heatmap), listing 5.42
    ax.set_title(f"Grad-CAM block5_conv3, class {k}")
    save_figure(fig, out / "elephant_heatmap.png")
    photo = load_img(ELEPHANT_PHOTO)  # the book overlays on the original file
    over = jcv.overlay(photo[None], cam[None], alpha=0.4)[0]
    save_image(over, out / "elephant_cam.png")
    names = jcv.decode_predictions(probs, top=3)[0]
    fig = plot_gradcam(to_uint8(photo), cam, over,
                       title=f"Grad-CAM at block5_conv3: {jcv.class_label(k)}",
                       predictions=names)
    save_figure(fig, out / "gradcam_elephant.png")
    print(f"wrote {out}/elephant_heatmap.png, elephant_cam.png, gradcam_elephant.png")
    return 0


# ------------------------------------------------------------ synthetic check
NAMES = ("red", "green", "blue")


def synthetic(args) -> int:
    import jax
    import jax.numpy as jnp
    import optax

    from jaxconvviz.attribution.toy import COLOURS, SIDE, blob_model
    from jaxconvviz.attribution.toy import blob_images as _blob_images
    from jaxconvviz.views.heatmaps import resize_heatmaps

    model = blob_model()
    key = jax.random.key(args.seed)
    k_init, k_train, k_a, k_b, k_c = jax.random.split(key, 5)
    params = model.init_params(k_init)
    opt = optax.adam(1e-2)
    state = opt.init(params)

    @jax.jit
    def step(params, state, key):
        x, y, _ = _blob_images(key, 64)

        def loss(p):
            logits = model.logits(p, model.preprocess(x))
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for k in jax.random.split(k_train, 200):
        params, state = step(params, state, k)

    # held out: two non-overlapping squares of different colours per image
    n = 64
    xa, ya, ma = _blob_images(k_a, n)
    _, _, mb = _blob_images(k_b, n)
    yb = (ya + 1 + jax.random.randint(k_c, (n,), 0, 2)) % 3
    x = jnp.where(mb[..., None], jnp.asarray(COLOURS)[yb][:, None, None, :], xa)
    keep = ~np.asarray(jnp.any(ma & mb, axis=(1, 2)))
    x, ya, yb, ma, mb = (np.asarray(a)[keep] for a in (x, ya, yb, ma, mb))
    cam_a = np.asarray(jcv.grad_cam(params, x, layer="c2", model=model,
                                    class_index=ya))
    cam_b = np.asarray(jcv.grad_cam(params, x, layer="c2", model=model,
                                    class_index=yb))
    for cam, mask in ((cam_a, ma), (cam_b, mb)):
        up = resize_heatmaps(cam, (SIDE, SIDE))
        arg = up.reshape(len(up), -1).argmax(-1)
        hit = mask.reshape(len(up), -1)[np.arange(len(up)), arg].mean()
        print(f"heatmap argmax on the square of its class: {100 * hit:.1f}% "
              f"of {len(up)} held-out images")

    from matplotlib.figure import Figure

    cols = min(8, len(x))
    over_a = jcv.overlay(x[:cols], cam_a[:cols], alpha=0.5)
    over_b = jcv.overlay(x[:cols], cam_b[:cols], alpha=0.5)
    fig = Figure(figsize=(2 * cols, 6.6), layout="constrained")
    axes = fig.subplots(3, cols)
    for i in range(cols):
        axes[0, i].imshow(to_uint8(x[i]))
        axes[1, i].imshow(over_a[i])
        axes[1, i].set_title(f"class {NAMES[ya[i]]}")
        axes[2, i].imshow(over_b[i])
        axes[2, i].set_title(f"class {NAMES[yb[i]]}")
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Grad-CAM (layer c2) of a CNN trained to name a square's colour: "
                 "each class's map sits on its own square")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out / "synthetic_gradcam.png")
    print(f"wrote {out / 'synthetic_gradcam.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="book_gradcam", help="output directory")
    ap.add_argument("--weights", default="imagenet",
                    help="'imagenet' (default; needs `jaxconvviz weights fetch "
                    "imagenet --top`) or a path to a VGG16 .h5 with its top")
    ap.add_argument("--class", dest="class_index", type=int, default=None,
                    help=f"class to explain (default {AFRICAN_ELEPHANT}, "
                    "African_elephant, as the book)")
    ap.add_argument("--synthetic", action="store_true",
                    help="train a small CNN on synthetic squares instead (no "
                    "weights needed) and show its Grad-CAMs")
    ap.add_argument("--seed", type=int, default=0, help="--synthetic PRNG seed")
    args = ap.parse_args(argv)
    try:
        return synthetic(args) if args.synthetic else elephant(args)
    except (ValueError, OSError) as e:
        print(f"book_gradcam: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
