"""The result of :func:`~jaxconvviz.dataset_examples`: :class:`DatasetExamples`.

Per layer a :class:`LayerExamples` (each unit's top-k dataset examples and
its statistics over the dataset), plus the image list, the files that could
not be used and, per image, the transform from model-input pixels back to
the original file. :meth:`DatasetExamples.save` writes one folder
(``examples.npz`` + ``examples.json``, atomically: the JSON, written last,
holds the SHA-256 of the ``.npz``, so a half-written folder never loads);
:meth:`DatasetExamples.load` reads it back.

Imports NumPy (and the standard library) only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import numpy as np

from jaxconvviz._atomic import atomic_write
from jaxconvviz.errors import InputError, MissingFileError

#: Format tag of ``examples.json``.
FORMAT = "jaxconvviz-dataset-examples/1"
NPZ, JSON = "examples.npz", "examples.json"

_ARRAYS = ("value", "index", "position", "border", "mean", "std", "max",
           "frac_pos", "hist", "bin_edges")


@dataclasses.dataclass(frozen=True, eq=False)
class LayerExamples:
    """One layer's units over a dataset (``C`` units, ``k`` examples each).

    Attributes:
      value: float32 ``(C, k)``: each example's activation, strongest first
        (NaN where the dataset had fewer than k images).
      index: int32 ``(C, k)``: global image index of each example (-1: none).
        Ties in value are broken by the smaller index.
      position: int32 ``(C, k, 2)``: ``(row, col)`` in the layer's feature
        map (the image's best allowed position; -1: none).
      border: bool ``(C, k)``: the example's receptive field lies more than
        half outside the image (with ``border="keep"/"mark"``, or for a
        layer none of whose positions lies mostly inside the image).
      mean, std, max: float32 ``(C,)`` over every counted position of every
        image (population standard deviation).
      frac_pos: float32 ``(C,)``: fraction of counted positions > 0.
      hist: int64 ``(C, nbins)``: images per bin of ``bin_edges`` by their
        best value (the max over the counted positions: the value that ranks
        images for the top-k); bin ``b`` is ``[bin_edges[b], bin_edges[b +
        1])``; the first and
        last edges are -inf and +inf; see
        :data:`jaxconvviz.dataset.stream.BIN_EDGES`).
      bin_edges: float32 ``(nbins + 1,)``.
      count: positions counted per unit (images x allowed positions).
      images: images counted.
      hw: ``(h, w)`` of the feature map.
      field: ``(size, jump, start)`` of the receptive field per axis
        (``((rh, rw), (jh, jw), (sh, sw))``, model-input pixels; see
        :class:`jaxconvviz.models.receptive.ReceptiveField`); None for
        dense layers.
    """

    value: np.ndarray
    index: np.ndarray
    position: np.ndarray
    border: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    max: np.ndarray
    frac_pos: np.ndarray
    hist: np.ndarray
    bin_edges: np.ndarray
    count: int
    images: int
    hw: tuple[int, int]
    field: tuple | None = None

    @property
    def units(self) -> int:
        return int(self.value.shape[0])

    def selectivity(self) -> np.ndarray:
        """float32 ``(C,)``: how many standard deviations the unit's top-k
        examples lie above its mean response, ``(mean(top-k values) - mean)
        / std`` (missing examples ignored). A unit that responds alike
        everywhere scores about 0, one that fires strongly on few images
        scores high; 0 for units with ``std == 0`` (dead or constant)."""
        top = np.nanmean(np.where(self.index >= 0, self.value, np.nan), axis=1) \
            if self.value.shape[1] and (self.index >= 0).any() else \
            np.zeros(self.units)
        top = np.nan_to_num(np.asarray(top, np.float64), nan=0.0)
        std = self.std.astype(np.float64)
        out = np.where(std > 0, (top - self.mean) / np.where(std > 0, std, 1), 0.0)
        return out.astype(np.float32)

    def dead(self) -> np.ndarray:
        """int ``(d,)``: the units never > 0 at any counted position of any
        image of the dataset (sorted)."""
        return np.flatnonzero(~(self.frac_pos > 0))

    def box(self, unit: int, rank: int = 0) -> tuple[int, int, int, int] | None:
        """``(y0, y1, x0, x1)`` (end exclusive, model-input pixels, not
        clipped) of example ``rank`` of ``unit``'s receptive field; the
        whole input for dense layers; None when there is no such example."""
        if self.index[unit, rank] < 0:
            return None
        if self.field is None:
            return None
        (rh, rw), (jh, jw), (sh, sw) = self.field
        i, j = (int(v) for v in self.position[unit, rank])
        return (sh + i * jh, sh + i * jh + rh, sw + j * jw, sw + j * jw + rw)


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetExamples:
    """Every requested layer's units over one dataset.

    Attributes:
      layers: ``{layer: LayerExamples}`` in the order requested.
      names: ``list[str]``: image name by global index (the file path, or
        ``"array[i]"``).
      bad: ``[(index, name, reason)]``: files that could not be used (they
        count in no statistic).
      transforms: float32 ``(n, 6)``: per image ``[orig_h, orig_w, sy, sx,
        oy, ox]`` (:class:`jaxconvviz.dataset.sources.Transform`); zeros for
        bad files.
      input_hw: ``(h, w)`` the images were resized to.
      k: examples per unit.
      model_name: the model's ``name_``.
      border: the border policy the pass used.
      fingerprint: the source's fingerprint (for resume checks).
    """

    layers: dict
    names: list
    bad: list
    transforms: np.ndarray
    input_hw: tuple[int, int]
    k: int
    model_name: str
    border: str = "exclude"
    fingerprint: str = ""

    def __repr__(self) -> str:
        return (f"DatasetExamples({len(self.names)} images, {len(self.bad)} bad, "
                f"layers={list(self.layers)}, k={self.k}, model={self.model_name!r})")

    def __getitem__(self, layer: str) -> LayerExamples:
        if layer not in self.layers:
            raise InputError(f"layer must be one of {', '.join(self.layers)}; got "
                             f"{layer!r}.")
        return self.layers[layer]

    # ------------------------------------------------------------ files
    def save(self, folder) -> Path:
        """Write ``folder/examples.npz`` then ``folder/examples.json``
        (both atomically; the JSON holds the ``.npz``'s SHA-256). Returns
        the folder."""
        folder = Path(folder)
        arrays = {"transforms": np.asarray(self.transforms, np.float32)}
        layers = []
        for i, (name, le) in enumerate(self.layers.items()):
            for f in _ARRAYS:
                arrays[f"{i}/{f}"] = np.asarray(getattr(le, f))
            layers.append({"name": name, "count": int(le.count),
                           "images": int(le.images), "hw": list(le.hw),
                           "field": None if le.field is None
                           else [list(map(int, v)) for v in le.field]})
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
        atomic_write(folder / NPZ, lambda fh: fh.write(data))
        meta = {"format": FORMAT, "sha256": hashlib.sha256(data).hexdigest(),
                "k": int(self.k), "input_hw": list(self.input_hw),
                "model_name": self.model_name, "border": self.border,
                "fingerprint": self.fingerprint, "layers": layers,
                "names": list(self.names),
                "bad": [[int(i), str(n), str(r)] for i, n, r in self.bad]}
        text = json.dumps(meta, indent=1).encode()
        atomic_write(folder / JSON, lambda fh: fh.write(text))
        return folder

    @classmethod
    def load(cls, folder) -> DatasetExamples:
        """Read what :meth:`save` wrote; a missing, foreign or half-written
        folder is a :class:`~jaxconvviz.errors.InputError` (missing:
        MissingFileError)."""
        folder = Path(folder)
        jp, zp = folder / JSON, folder / NPZ
        if not jp.is_file() or not zp.is_file():
            raise MissingFileError(
                f"folder {str(folder)!r} holds no dataset examples (expected "
                f"{JSON} and {NPZ}, as DatasetExamples.save writes).")
        try:
            meta = json.loads(jp.read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{str(jp)!r} is not a dataset-examples index "
                             f"({type(e).__name__}).") from None
        tag = meta.get("format") if isinstance(meta, dict) else None
        if tag != FORMAT:
            raise InputError(f"{str(jp)!r} is not a {FORMAT} index; got format "
                             f"{tag!r}.")
        data = zp.read_bytes()
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise InputError(f"{str(zp)!r} does not match {JSON} (an interrupted "
                             "save?); rerun the pass or resume it.")
        with np.load(io.BytesIO(data)) as z:
            arrays = {k: z[k] for k in z.files}
        layers = {}
        for i, lm in enumerate(meta["layers"]):
            field = None if lm["field"] is None else tuple(
                tuple(int(a) for a in v) for v in lm["field"])
            layers[lm["name"]] = LayerExamples(
                **{f: arrays[f"{i}/{f}"] for f in _ARRAYS}, count=int(lm["count"]),
                images=int(lm["images"]), hw=tuple(lm["hw"]), field=field)
        return cls(layers=layers, names=list(meta["names"]),
                   bad=[(int(i), n, r) for i, n, r in meta["bad"]],
                   transforms=arrays["transforms"], input_hw=tuple(meta["input_hw"]),
                   k=int(meta["k"]), model_name=meta["model_name"],
                   border=meta["border"], fingerprint=meta["fingerprint"])


__all__ = ["DatasetExamples", "LayerExamples"]
