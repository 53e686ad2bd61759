"""Cut the demo dataset ``jaxconvviz/data/photos/`` (issue 31): small JPEG
crops of public-domain / CC0 / CDLA-Permissive photos.

Sources: the two photos already in ``jaxconvviz/data/`` and eight images from
the scikit-image 0.26.0 wheel's ``skimage/data/`` (their licences, as the
docstrings of ``skimage/data/_fetchers.py`` state them, are in
``jaxconvviz/data/LICENSE-NOTES.md``). Usage::

    pip download --no-deps scikit-image==0.26.0 -d /tmp/sk
    unzip -q /tmp/sk/scikit_image-0.26.0-*.whl 'skimage/data/*' -d /tmp/sk
    python scripts/make_demo_photos.py /tmp/sk/skimage/data

Each crop is a square box ``(y, x, side)`` of the source, resized to
:data:`SIDE` px (Pillow LANCZOS), saved as JPEG quality :data:`QUALITY`.
Deterministic: the boxes are listed below, the output is byte-identical for a
given Pillow version.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

DATA = Path(__file__).resolve().parents[1] / "jaxconvviz" / "data"
OUT = DATA / "photos"
SIDE = 160
QUALITY = 85

#: source file -> [(y, x, side)] square crops, in source pixels.
CROPS: dict[str, list[tuple[int, int, int]]] = {
    "african_elephants.jpg": [  # 2048 x 1536
        (560, 560, 420), (520, 1080, 460), (600, 1400, 380), (560, 1650, 398),
        (400, 1000, 1000), (0, 0, 1000), (900, 200, 500), (0, 1300, 700)],
    "chelsea.png": [  # 451 x 300
        (0, 0, 300), (0, 151, 300), (40, 120, 180), (120, 200, 170)],
    "astronaut.png": [  # 512 x 512
        (0, 0, 512), (20, 120, 240), (200, 0, 300), (250, 250, 260)],
    "coffee.png": [  # 600 x 400
        (0, 0, 400), (0, 200, 400), (50, 120, 260), (150, 350, 250)],
    "rocket.jpg": [  # 640 x 427
        (0, 0, 427), (0, 213, 427), (60, 260, 200), (220, 0, 207)],
    "hubble_deep_field.jpg": [  # 1000 x 872
        (0, 0, 500), (300, 450, 500), (100, 600, 250), (600, 100, 270)],
    "camera.png": [  # 512 x 512, grey
        (0, 0, 512), (40, 150, 260), (250, 230, 260)],
    "grass.png": [(0, 0, 512), (256, 256, 256)],  # 512 x 512 grey textures
    "gravel.png": [(0, 0, 512), (0, 256, 256)],
    "brick.png": [(0, 0, 512), (256, 0, 256)],
}


def main(skimage_data: str) -> None:
    src = Path(skimage_data)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, boxes in CROPS.items():
        path = DATA / name if (DATA / name).is_file() else src / name
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            for k, (y, x, s) in enumerate(boxes):
                assert 0 <= x and x + s <= w and 0 <= y and y + s <= h, (name, k)
                crop = im.crop((x, y, x + s, y + s)).resize((SIDE, SIDE),
                                                            Image.LANCZOS)
                crop.save(OUT / f"{Path(name).stem}_{k}.jpg", quality=QUALITY,
                          optimize=True)


if __name__ == "__main__":
    main(sys.argv[1])
