"""Image folders built on the fly for the dataset tests.

:func:`make_image_folder` writes crops, flips and colour shifts of the two
bundled photos, blob images (:func:`jaxconvviz.attribution.toy.blob_images`),
every odd-but-valid format (CMYK JPEG, 16-bit grey PNG, palette PNG, GIF,
WebP, BMP, RGBA PNG, grey JPEG) and bad files placed in the middle of the
sorted order (0 bytes, truncated JPEG, a text file named ``.png``, a PNG
whose header declares 100,000 x 100,000 pixels), plus files a folder source
must skip (hidden, non-image suffix). It returns a :class:`Folder` that says,
in the source's order, which files exist and which are bad.

:func:`make_jpeg_folder` writes ``n`` distinct 640x480 JPEG crops of the
elephant photo (for the loader's speed measurement).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from jaxconvviz.images import CAT_PHOTO, ELEPHANT_PHOTO

#: Kinds of bad file :func:`make_image_folder` writes.
BAD_KINDS = ("empty", "truncated", "text", "huge")


@dataclass
class Folder:
    root: Path
    files: list[str] = field(default_factory=list)  # source order (sorted)
    bad: dict[str, str] = field(default_factory=dict)  # path -> kind
    special: dict[str, str] = field(default_factory=dict)  # path -> format note

    @property
    def bad_indices(self) -> list[int]:
        return [i for i, f in enumerate(self.files) if f in self.bad]

    @property
    def good_indices(self) -> list[int]:
        return [i for i, f in enumerate(self.files) if f not in self.bad]


def _photos() -> list[np.ndarray]:
    with Image.open(ELEPHANT_PHOTO) as im:
        ele = np.asarray(im.convert("RGB").reduce(4))  # 512x384
    with Image.open(CAT_PHOTO) as im:
        cat = np.asarray(im.convert("RGB"))  # 451x300
    return [ele, cat]


def _variant(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop (40-100% of each side), maybe flipped, colour-shifted."""
    h, w = photo.shape[:2]
    ch, cw = (int(s * rng.uniform(0.4, 1.0)) for s in (h, w))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    a = photo[y:y + ch, x:x + cw].astype(np.int16)
    if rng.random() < 0.5:
        a = a[:, ::-1]
    if rng.random() < 0.3:
        a = a[::-1]
    a = a + rng.integers(-40, 41, size=3)
    side = int(rng.integers(48, 200))  # keep files small: a long side of 48-200 px
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    img.thumbnail((side, side))
    return np.asarray(img)


def _save(img: Image.Image, path: Path, **kw) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return str(path)


def _huge_png(w: int, h: int) -> bytes:
    """A PNG whose IHDR declares ``w x h`` RGB and whose data is one tiny
    zlib stream (a decompression bomb's header, without the bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def make_image_folder(root, *, n_photos: int = 24, n_blobs: int = 6,
                      seed: int = 0) -> Folder:
    """A folder source with good, odd and bad images (module docstring).

    File names start with a 3-digit number, so the folder's sorted order is
    the order written; bad files sit at positions 3, 9, 14, 20 (when there
    are enough files). One subfolder (``sub/``) checks recursion.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    photos = _photos()
    entries: list[tuple[str, object]] = []  # (relative name, writer)

    for k in range(n_photos):
        a = _variant(photos[k % 2], rng)
        ext = (".jpg", ".png", ".jpeg", ".JPG")[k % 4]
        kw = {"quality": 90} if ext.lower() in (".jpg", ".jpeg") else {}
        entries.append((f"photo{k:02d}{ext}", ("img", Image.fromarray(a), kw)))
    if n_blobs:
        import jax

        from jaxconvviz.attribution.toy import blob_images

        x, _, _ = blob_images(jax.random.key(seed), n_blobs)
        for k, b in enumerate(np.asarray(x, np.uint8)):
            entries.append((f"sub/blob{k}.png", ("img", Image.fromarray(b), {})))
    base = photos[1][:120, :160]
    grey16 = (np.linspace(0, 65535, 90 * 70).reshape(70, 90)).astype(np.uint16)
    special = [
        ("cmyk.jpg", ("img", Image.fromarray(base).convert("CMYK"), {"quality": 95}),
         "CMYK JPEG"),
        ("grey16.png", ("img", Image.fromarray(grey16), {}),
         "16-bit grey PNG"),
        ("palette.png", ("img", Image.fromarray(base).convert(
            "P", palette=Image.ADAPTIVE), {}), "palette PNG"),
        ("anim.gif", ("gif", Image.fromarray(base), {}), "GIF (2 frames)"),
        ("photo.webp", ("img", Image.fromarray(base), {"quality": 90}), "WebP"),
        ("photo.bmp", ("img", Image.fromarray(base), {}), "BMP"),
        ("rgba.png", ("img", Image.fromarray(np.dstack([base, base[..., :1]])), {}),
         "RGBA PNG"),
        ("grey.jpg", ("img", Image.fromarray(base).convert("L"), {}), "grey JPEG"),
    ]
    jpeg = io.BytesIO()
    Image.fromarray(photos[0][:200, :200]).save(jpeg, format="JPEG", quality=90)
    bad = [
        ("empty.jpg", ("bytes", b""), "empty"),
        ("truncated.jpg", ("bytes", jpeg.getvalue()[: len(jpeg.getvalue()) // 2]),
         "truncated"),
        ("notes.png", ("bytes", b"this is a text file, not a PNG\n" * 4), "text"),
        ("bomb.png", ("bytes", _huge_png(100_000, 100_000)), "huge"),
    ]
    for name, w, note in special:
        entries.insert(int(rng.integers(0, len(entries) + 1)), (name, w, note))
    for pos, (name, w, note) in zip((3, 9, 14, 20), bad, strict=True):
        entries.insert(min(pos, len(entries)), (name, w, ("bad", note)))

    folder = Folder(root)
    for k, e in enumerate(entries):
        name, w = e[0], e[1]
        note = e[2] if len(e) > 2 else None
        rel = Path(name)
        path = root / rel.parent / f"{k:03d}_{rel.name}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if w[0] == "bytes":
            path.write_bytes(w[1])
        elif w[0] == "gif":
            img = w[1]
            img.save(path, save_all=True,
                     append_images=[Image.fromarray(255 - np.asarray(img))])
        else:
            _save(w[1], path, **w[2])
        folder.files.append(str(path))
        if isinstance(note, tuple):
            folder.bad[str(path)] = note[1]
        elif note:
            folder.special[str(path)] = note
    # Files a folder source must not pick up.
    (root / ".hidden.jpg").write_bytes(b"not even an image")
    (root / "readme.txt").write_text("not an image\n")
    (root / ".cache").mkdir()
    Image.fromarray(base).save(root / ".cache" / "skip.png")
    # Sorting is by the relative path: "sub/..." sorts after the digits.
    folder.files.sort(key=lambda p: Path(p).relative_to(root).as_posix())
    return folder


def make_jpeg_folder(root, n: int = 200, *, hw: tuple[int, int] = (480, 640),
                     seed: int = 0) -> list[str]:
    """``n`` distinct ``hw`` JPEG crops (quality 90) of the elephant photo."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with Image.open(ELEPHANT_PHOTO) as im:
        ele = np.asarray(im.convert("RGB"))
    h, w = hw
    out = []
    for k in range(n):
        y = int(rng.integers(0, ele.shape[0] - 2 * h + 1))
        x = int(rng.integers(0, ele.shape[1] - 2 * w + 1))
        crop = Image.fromarray(ele[y:y + 2 * h, x:x + 2 * w]).reduce(2)
        out.append(_save(crop, root / f"img{k:04d}.jpg", quality=90))
    return out
