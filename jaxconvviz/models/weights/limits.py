"""Bounds on what a weights file may make this package allocate.

Every dataset of a weights file (HDF5 dataset, ``.npz`` entry, the
``model.weights.h5`` member of a ``.keras`` zip) is checked from its metadata
-- declared shape, dtype, stored size -- before a byte of it is read:

- when the architecture is known (:func:`~jaxconvviz.models.weights.load_params`,
  :func:`~jaxconvviz.models.weights.load_vgg16`), each array must have the
  shape the model expects, and all arrays together may take at most what the
  architecture needs at 8 bytes per value plus :data:`CAP_MARGIN`;
- always, the total stays under an absolute ceiling, :data:`MAX_WEIGHT_BYTES`
  (4 GiB; set ``$JAXCONVVIZ_MAX_WEIGHT_BYTES`` or pass ``max_bytes=`` to
  raise or lower it);
- the ``model.weights.h5`` member of a ``.keras`` zip is inflated only up to
  :func:`member_cap`: the smaller of that ceiling and what the architecture
  built from ``config.json`` needs (8 bytes per value, plus
  :data:`CAP_MARGIN` and :data:`HDF5_BYTES_PER_ARRAY` per array), so a
  small model's archive cannot make the reader allocate gigabytes before its
  datasets are checked;
- a dataset must hold numbers (no strings, objects, compound or opaque types
  other than Keras 3's bfloat16), must not point outside the file (external
  or virtual storage), must have all its bytes in the file (a "sparse"
  dataset whose storage was never allocated is refused) and, when compressed,
  may expand at most :data:`MAX_EXPANSION` times.

A file that breaks a rule is refused with a one-line
:class:`~jaxconvviz.errors.InputError` naming the file, the layer and the
field, having read nothing but metadata, so rejecting it costs no more memory
than its legitimate size.
"""

from __future__ import annotations

import math
import os
import zipfile

from jaxconvviz.errors import InputError

#: Default absolute ceiling on the bytes one weights file may allocate (4 GiB;
#: the largest Keras application, ConvNeXt XLarge, needs 1.4 GB).
MAX_WEIGHT_BYTES = 4 << 30
#: Environment variable that overrides :data:`MAX_WEIGHT_BYTES` (bytes, an int;
#: suffixes K, M, G accepted).
MAX_BYTES_ENV = "JAXCONVVIZ_MAX_WEIGHT_BYTES"
#: Slack over what a known architecture needs (metadata, small extra arrays).
CAP_MARGIN = 1 << 20
#: HDF5 bookkeeping allowed per weight array in a ``.keras`` weights member
#: (object headers, attributes, B-tree nodes: 1-4 KiB in files Keras writes).
HDF5_BYTES_PER_ARRAY = 16 << 10
#: Largest accepted ratio of a compressed dataset's size to its stored size
#: (float weights compress about 1.1x; an array of zeros about 1000x).
MAX_EXPANSION = 64
#: Compressed datasets under this many bytes are not ratio-checked.
_SMALL = 1 << 20

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def weight_ceiling(max_bytes: int | None = None) -> int:
    """The absolute ceiling in bytes: ``max_bytes`` if given, else
    ``$JAXCONVVIZ_MAX_WEIGHT_BYTES``, else :data:`MAX_WEIGHT_BYTES`."""
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or (
                max_bytes < 1):
            raise InputError(f"max_bytes must be a positive int (bytes) or None; "
                             f"got {max_bytes!r}.")
        return max_bytes
    env = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not env:
        return MAX_WEIGHT_BYTES
    num, unit = env.rstrip("KMGTkmgtBb"), env[len(env.rstrip("KMGTkmgtBb")):]
    unit = unit.upper().rstrip("B")
    try:
        value = int(num) * _UNITS[unit]
    except (ValueError, KeyError):
        value = 0
    if value < 1:
        raise InputError(f"${MAX_BYTES_ENV} must be a positive number of bytes "
                         f"(e.g. 8G); got {env!r}.")
    return value


def _fmt(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


class Budget:
    """Bytes a reader may still allocate; :meth:`take` refuses what exceeds it."""

    def __init__(self, label: str, *, need: int | None = None,
                 max_bytes: int | None = None):
        self.label = label
        self.ceiling = weight_ceiling(max_bytes)
        self.need = need
        arch = None if need is None else need + CAP_MARGIN
        self.cap = self.ceiling if arch is None else min(arch, self.ceiling)
        self.used = 0

    def why(self) -> str:
        if self.need is not None and self.cap < self.ceiling:
            return (f"the cap of {_fmt(self.cap)} (what the model's architecture "
                    "needs plus a margin)")
        return (f"the ceiling of {_fmt(self.ceiling)} (raise it with "
                f"${MAX_BYTES_ENV} or max_bytes=)")

    def take(self, nbytes: int, where: str) -> None:
        if self.used + nbytes > self.cap:
            raise InputError(
                f"{self.label}: {where} declares {_fmt(nbytes)}, which would take "
                f"this file past {self.why()}; refused before reading it.")
        self.used += nbytes


def declared_nbytes(shape, itemsize: int) -> int:
    """Bytes of an array of ``shape`` (Python ints: no overflow)."""
    return math.prod(int(s) for s in shape) * int(itemsize)


def member_cap(shapes, *, max_bytes: int | None = None) -> tuple[int, str]:
    """``(cap, why)``: the most bytes a ``.keras`` weights member may inflate
    to. ``shapes``: every weight shape the architecture declares (an iterable
    of shapes), or None (unknown: the absolute ceiling alone). The cap is the
    smaller of :func:`weight_ceiling` and ``8 bytes x values +``
    :data:`CAP_MARGIN` ``+`` :data:`HDF5_BYTES_PER_ARRAY` ``x arrays``;
    ``why`` says which, for the message."""
    ceiling = weight_ceiling(max_bytes)
    why = (f"the ceiling of {_fmt(ceiling)} (raise it with ${MAX_BYTES_ENV} or "
           "max_bytes=)")
    if shapes is None:
        return ceiling, why
    shapes = list(shapes)
    need = (sum(declared_nbytes(s, 8) for s in shapes) + CAP_MARGIN
            + HDF5_BYTES_PER_ARRAY * len(shapes))
    if need < ceiling:
        return need, (f"the cap of {_fmt(need)} (what the model's architecture "
                      "needs plus a margin)")
    return ceiling, why


def read_zip_member(zf: zipfile.ZipFile, name: str, label: str, *,
                    max_bytes: int | None = None, cap: tuple[int, str] | None = None
                    ) -> bytes:
    """The bytes of one zip member, streamed and stopped at the ceiling.

    The member's declared size is checked first (over the ceiling -- or
    ``cap``, ``(bytes, why)`` from :func:`member_cap`, when given -- or a
    compression ratio over 1000 on more than 1 MiB: refused before
    decompressing); then at most the declared size is inflated, so a member
    whose header lies cannot run past it.
    """
    if cap is None:
        ceiling = weight_ceiling(max_bytes)
        why = (f"the ceiling of {_fmt(ceiling)} (raise it with ${MAX_BYTES_ENV} "
               "or max_bytes=)")
    else:
        ceiling, why = cap
    info = zf.getinfo(name)
    where = f"archive member {name!r}"
    if info.file_size > ceiling:
        raise InputError(
            f"{label}: {where} declares {_fmt(info.file_size)}, over {why}; "
            "refused before decompressing it.")
    if info.file_size > _SMALL and info.file_size > 1000 * max(info.compress_size, 1):
        raise InputError(
            f"{label}: {where} expands {info.file_size // max(info.compress_size, 1)}"
            f"x ({_fmt(info.compress_size)} -> {_fmt(info.file_size)}), like a zip "
            "bomb; refused before decompressing it.")
    chunks, total = [], 0
    with zf.open(info) as fh:
        while chunk := fh.read(min(1 << 22, info.file_size - total + 1)):
            total += len(chunk)
            if total > info.file_size:
                raise InputError(f"{label}: {where} inflates past its declared size "
                                 f"of {_fmt(info.file_size)}; a damaged or crafted "
                                 "archive.")
            chunks.append(chunk)
    return b"".join(chunks)


__all__ = [
    "MAX_WEIGHT_BYTES",
    "MAX_BYTES_ENV",
    "MAX_EXPANSION",
    "CAP_MARGIN",
    "HDF5_BYTES_PER_ARRAY",
    "Budget",
    "member_cap",
    "weight_ceiling",
    "declared_nbytes",
    "read_zip_member",
]
