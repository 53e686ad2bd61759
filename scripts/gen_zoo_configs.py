"""Generate the architecture configs of the model zoo from Keras (run once).

    KERAS_BACKEND=jax python scripts/gen_zoo_configs.py [--check] [NAME ...]

For every application of :data:`jaxconvviz.models.zoo.APPLICATIONS`, builds
the ``keras.applications`` model exactly as ``weights="imagenet"`` builds it
(with the weight download and loading replaced by no-ops, so nothing is
downloaded: EfficientNet adds a Rescaling layer only for ImageNet weights),
with and without the classifier, and writes its functional config
(``{"class_name": "Functional", "config": model.get_config(), "keras_version":
...}``) as deterministic gzip'd JSON to
``jaxconvviz/models/zoo_configs/<name>_{top,notop}.json.gz``.

``--check`` writes nothing and exits 1 if any shipped config differs from the
regenerated one (tests/test_zoo.py runs the same comparison).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "jaxconvviz" / "models" / "zoo_configs"

#: application name -> keras.applications constructor name
CONSTRUCTORS = {
    "resnet50": "ResNet50",
    "resnet50v2": "ResNet50V2",
    "mobilenet_v2": "MobileNetV2",
    "mobilenet_v3_small": "MobileNetV3Small",
    "efficientnet_b0": "EfficientNetB0",
    "densenet121": "DenseNet121",
    "xception": "Xception",
    "inception_v3": "InceptionV3",
    "vgg16": "VGG16",
    "vgg19": "VGG19",
    "convnext_tiny": "ConvNeXtTiny",
}


@contextlib.contextmanager
def _imagenet_without_download():
    """Build models as weights="imagenet" does, but fetch and load nothing."""
    import keras
    from keras.src.utils import file_utils

    saved_get, saved_load = file_utils.get_file, keras.Model.load_weights
    file_utils.get_file = lambda *a, **k: "/nonexistent-weights.h5"
    keras.Model.load_weights = lambda self, *a, **k: None
    try:
        yield
    finally:
        file_utils.get_file, keras.Model.load_weights = saved_get, saved_load


def config_for(name: str, include_top: bool) -> dict:
    """The Keras functional config of application ``name`` (ImageNet build)."""
    import keras

    keras.backend.clear_session()  # deterministic auto-names (input_layer, ...)
    ctor = getattr(keras.applications, CONSTRUCTORS[name])
    with _imagenet_without_download():
        model = ctor(weights="imagenet", include_top=include_top)
    return {"class_name": "Functional", "config": model.get_config(),
            "keras_version": keras.__version__}


def encode(config: dict) -> bytes:
    """Deterministic gzip'd JSON (sorted keys, mtime 0)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return gzip.compress(text.encode(), mtime=0)


def path_for(name: str, include_top: bool) -> Path:
    return CONFIG_DIR / f"{name}_{'top' if include_top else 'notop'}.json.gz"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="applications (default: all)")
    ap.add_argument("--check", action="store_true",
                    help="compare with the shipped configs, write nothing")
    args = ap.parse_args(argv)
    names = args.names or list(CONSTRUCTORS)
    bad = [n for n in names if n not in CONSTRUCTORS]
    if bad:
        ap.error(f"unknown application(s) {bad}; choose from {list(CONSTRUCTORS)}")
    changed = []
    for name in names:
        for top in (True, False):
            data = encode(config_for(name, top))
            dst = path_for(name, top)
            if args.check:
                if not dst.is_file() or gzip.decompress(dst.read_bytes()) != (
                        gzip.decompress(data)):
                    changed.append(dst.name)
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(dst.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(dst)
            print(f"wrote {dst.relative_to(ROOT)} "
                  f"({len(data):,} bytes)")
    if changed:
        print(f"configs differ from Keras: {changed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
