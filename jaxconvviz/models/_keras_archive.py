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
from pathlib import Path

import numpy as np

from jaxconvviz.errors import InputError


def read_keras_archive(path: Path, label: str) -> tuple[dict, dict[str, list]]:
    """(model config dict, {layer_name: [arrays]}) from a .keras or .h5 file."""
    from jaxconvviz.models.weights import read_keras_weights

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
                config = _parse_json(zf.read("config.json"), label, "config.json")
                blob = zf.read("model.weights.h5")
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise InputError(
                f"{label}: corrupt or truncated .keras archive ({e})."
            ) from None
        weights = read_keras_weights(_NamedBytesIO(blob, f"{label}:model.weights.h5"))
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
            raw = bytes(raw).decode("utf8")
        config = _parse_json(raw, label, "model_config")
        try:
            weights = read_keras_weights(f)
        except (KeyError, OSError) as e:
            raise InputError(f"{label}: corrupt Keras weights ({e}).") from None
    return config, weights


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


__all__ = ["read_keras_archive"]
