"""Reading Keras model files: the config JSON and the weights of a ``.keras``
zip archive or a legacy full-model ``.h5``, with errors that name the file.

Read with json, zipfile, h5py (imported when a file is read) and numpy only;
Keras is never imported.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from jaxconvviz.errors import InputError
from jaxconvviz.models.weights.limits import member_cap, read_zip_member

#: Largest ``config.json`` member read from a ``.keras`` archive (64 MiB; the
#: config of DenseNet201 is about 1 MB), below the weights ceiling when that
#: is lower (``$JAXCONVVIZ_MAX_WEIGHT_BYTES``).
MAX_CONFIG_BYTES = 64 << 20

#: ``expect(config) -> (expected shapes, group names)``: what the model built
#: from the config needs, called before any weight is read.
Expect = Callable[[dict], tuple[Mapping | None, Mapping[str, str] | None]]


def read_keras_archive(path: Path, label: str, *, expect: Expect | None = None,
                       max_bytes: int | None = None) -> tuple[dict, dict[str, list]]:
    """(model config dict, {layer_name: [arrays]}) from a .keras or .h5 file.

    Zip members are streamed and bounded (:func:`~jaxconvviz.models.weights.
    limits.read_zip_member`: the ceiling, a zip-bomb ratio check, never past
    the declared size); ``config.json`` may take at most
    :data:`MAX_CONFIG_BYTES`; ``model.weights.h5`` at most
    :func:`~jaxconvviz.models.weights.limits.member_cap` of the shapes
    ``expect`` returns (what the architecture needs plus a margin, and never
    more than the absolute ceiling). ``expect`` is called with the parsed config
    before any weight is read; the ``(expected, group_names)`` it returns are
    passed to :func:`~jaxconvviz.models.weights.read_keras_weights`, so every
    dataset is checked against the shape the architecture declares (and the
    total against what it needs) before it is read. ``max_bytes``: the
    absolute ceiling (None: ``$JAXCONVVIZ_MAX_WEIGHT_BYTES`` or 4 GiB).
    """
    from jaxconvviz.models.weights import read_keras_weights, weight_ceiling

    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK") or path.suffix.lower() == ".keras":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                if "config.json" not in names:
                    raise InputError(
                        f"{label}: a zip archive without config.json is not a "
                        f"Keras .keras model; it holds {names[:6]}."
                    )
                if "model.weights.h5" not in names:
                    raise InputError(
                        f"{label}: .keras archive has no model.weights.h5 (only "
                        f"{names[:6]}); re-save it with model.save('m.keras')."
                    )
                cap = min(weight_ceiling(max_bytes), MAX_CONFIG_BYTES)
                config = _parse_json(read_zip_member(zf, "config.json", label,
                                                     max_bytes=cap),
                                     label, "config.json")
                expected, groups = expect(config) if expect else (None, None)
                blob = read_zip_member(
                    zf, "model.weights.h5", label, max_bytes=max_bytes,
                    cap=member_cap(_shapes(expected), max_bytes=max_bytes))
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise InputError(
                f"{label}: corrupt or truncated .keras archive ({e})."
            ) from None
        weights = read_keras_weights(
            _NamedBytesIO(blob, f"{label}:model.weights.h5"), expected=expected,
            group_names=groups, max_bytes=max_bytes)
        return config, weights

    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        what = ("truncated or corrupt HDF5 file" if head == b"\x89HDF\r\n\x1a\n"
                else "neither a .keras zip archive nor an HDF5 .h5 file")
        raise InputError(
            f"{label}: not a readable Keras model: {what} ({e})."
        ) from None
    with f:
        raw = f.attrs.get("model_config")
        if raw is None:
            if "layers" in f or "layer_names" in f.attrs:
                raise InputError(
                    f"{label}: holds weights only, no architecture (no "
                    "'model_config'); save the whole model with "
                    "model.save('m.keras') or model.save('m.h5'), or load these "
                    "weights into a model you build (jcv.load_params)."
                )
            raise InputError(
                f"{label}: HDF5 file without a Keras 'model_config' attribute; "
                "not a full-model .h5 (save with model.save('m.h5'))."
            )
        if isinstance(raw, bytes | np.bytes_):
            raw = bytes(raw).decode("utf8", errors="replace")
        if not isinstance(raw, str):
            raise InputError(f"{label}: attribute 'model_config' must be a JSON "
                             f"string; got {type(raw).__name__}.")
        config = _parse_json(raw, label, "model_config")
        expected, groups = expect(config) if expect else (None, None)
        try:
            weights = read_keras_weights(f, expected=expected, group_names=groups,
                                         max_bytes=max_bytes)
        except (KeyError, OSError) as e:
            raise InputError(f"{label}: corrupt Keras weights ({e}).") from None
    return config, weights


def _shapes(expected):
    """Every shape of ``expected`` (``{layer: [shape, ...]}`` or ``{layer:
    {param: shape}}``), or None."""
    if expected is None:
        return None
    return [s for shapes in expected.values()
            for s in (shapes.values() if isinstance(shapes, Mapping) else shapes)]


class _NamedBytesIO(io.BytesIO):
    """BytesIO with a ``name`` so weight errors name the archive member."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name


def _parse_json(raw, label: str, what: str) -> dict:
    try:
        config = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{label}: {what} is not valid JSON ({e}).") from None
    if not isinstance(config, dict) or "class_name" not in config:
        raise InputError(
            f"{label}: {what} is not a Keras model config (no 'class_name')."
        )
    return config


__all__ = ["read_keras_archive", "MAX_CONFIG_BYTES"]
