"""The converted-weights store: ``.npz`` files, their sidecars, loading into a model.

Converted files are ``.npz`` archives (``"layer/param"`` float32 arrays plus
a ``__jaxconvviz__`` JSON record) with a JSON sidecar ``<file>.json`` holding
their SHA-256, size and the source file's hash. The store is
``$JAXCONVVIZ_HOME``, else ``$XDG_CACHE_HOME/jaxconvviz``, else
``~/.cache/jaxconvviz`` (:func:`store_dir`).

:func:`load_params` loads any supported file (the Keras layouts of
:mod:`~jaxconvviz.models.weights.keras_files` or a converted ``.npz``) into a
given :class:`~jaxconvviz.models.convnet.ConvNet`, shape-checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxconvviz._atomic import atomic_write
from jaxconvviz._version import __version__
from jaxconvviz.errors import InputError, InputTypeError
from jaxconvviz.models.weights.keras_files import (
    ACCEPTED_FILES,
    ZIP_SIGNATURE,
    check_weights_path,
    file_signature,
    is_keras_zip,
    natural_key,
    read_keras_weights,
    source_label,
)
from jaxconvviz.models.weights.limits import Budget, declared_nbytes

#: Format tag stored in converted ``.npz`` files and their sidecars.
CONVERTED_FORMAT = "jaxconvviz-params-v1"
#: The entry of a converted ``.npz`` that holds its JSON record.
META_KEY = "__jaxconvviz__"
#: Environment variable that sets :func:`store_dir`.
HOME_ENV = "JAXCONVVIZ_HOME"


# ------------------------------------------------------------------ hashing
_HASH_CACHE: dict[tuple, str] = {}


def file_hash(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file (``"sha256"`` or ``"md5"``), cached per size+mtime."""
    p = Path(path)
    st = p.stat()
    key = (os.fspath(p.resolve()), algorithm, st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.new(algorithm)
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def clear_hash_cache() -> None:
    """Forget the digests :func:`file_hash` remembered (tests, or files
    rewritten within one mtime tick)."""
    _HASH_CACHE.clear()


# -------------------------------------------------------------------- store
def store_dir() -> Path:
    """Directory of converted weights: ``$JAXCONVVIZ_HOME``, else
    ``$XDG_CACHE_HOME/jaxconvviz``, else ``~/.cache/jaxconvviz`` (not created)."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "jaxconvviz"


def sidecar_path(path: Path) -> Path:
    """The JSON sidecar of a store file: ``<file>.json``."""
    return path.with_name(path.name + ".json")


def read_sidecar(path: Path) -> dict | None:
    """The sidecar record of ``path`` as a dict; None if absent or unreadable."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        record = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _read_npz(path: Path, label: str, expected: Mapping | None,
              max_bytes: int | None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz``, each header checked before its data is read:
    no pickled (object) arrays, sizes under the :class:`~.limits.Budget`, and
    with ``expected`` (``{layer: {param: shape}}``) only those entries, at
    those shapes."""
    need = None
    if expected is not None:
        need = sum(declared_nbytes(s, 8) for e in expected.values() for s in e.values())
    budget = Budget(label, need=need, max_bytes=max_bytes)
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                key = info.filename.removesuffix(".npy")
                layer, _, pname = key.rpartition("/")
                if key != META_KEY and (not layer or not pname):
                    raise InputError(
                        f"{label}: entry {key!r} is not named 'layer/param'; not a "
                        f"jaxconvviz converted weights file (expected "
                        f"{ACCEPTED_FILES}).")
                want = None
                if expected is not None and key != META_KEY:
                    if pname not in expected.get(layer, {}):
                        continue
                    want = tuple(expected[layer][pname])
                where = f"entry {key!r}"
                with zf.open(info) as fh:
                    fmt = np.lib.format
                    version = fmt.read_magic(fh)
                    header = {(1, 0): fmt.read_array_header_1_0,
                              (2, 0): fmt.read_array_header_2_0}.get(version)
                    if header is None:
                        raise InputError(f"{label}: {where} uses .npy format "
                                         f"{version}; expected 1.0 or 2.0.")
                    shape, _, dtype = header(fh)
                    if dtype.hasobject:
                        raise InputError(
                            f"{label}: {where} is a pickled object array; pickles "
                            "can run code, so this file is refused for safety (a "
                            "jaxconvviz .npz holds plain float32 arrays: re-create "
                            "it with `jaxconvviz weights convert`).")
                    if want is not None and tuple(shape) != want:
                        raise InputError(f"{label}: {where} has shape "
                                         f"{tuple(shape)}; the model expects {want}.")
                    nbytes = declared_nbytes(shape, dtype.itemsize)
                    if nbytes > info.file_size:
                        raise InputError(
                            f"{label}: {where} declares {nbytes:,} bytes (shape "
                            f"{tuple(shape)}) but holds {info.file_size:,}; a "
                            "truncated or crafted .npz.")
                    budget.take(nbytes, f"{where} (shape {tuple(shape)})")
                    fh.seek(0)
                    arrays[key] = np.lib.format.read_array(fh, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, RuntimeError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{label}: truncated or damaged .npz file ({e}).") from None
    arrays.pop(META_KEY, None)
    return arrays


def read_converted(path: Path, label: str, *, expected: Mapping | None = None,
                   max_bytes: int | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Read a converted ``.npz`` (``"layer/param"`` keys), SHA-256-checked if a
    sidecar records one; with ``expected`` (``{layer: {param: shape}}``, e.g.
    ``model.param_shapes()``) only those entries are read, shape-checked
    before reading. Pickled (object) entries are refused."""
    record = read_sidecar(path)
    if record is not None and "sha256" in record:
        got = file_hash(path, "sha256")
        if got != record["sha256"]:
            raise InputError(
                f"{label}: SHA-256 {got} does not match {record['sha256']} recorded "
                f"in {sidecar_path(path).name}; the file is damaged -- delete it and "
                "convert or fetch it again."
            )
    arrays = _read_npz(path, label, expected, max_bytes)
    params: dict[str, dict[str, np.ndarray]] = {}
    for k, a in arrays.items():
        layer, sep, pname = k.rpartition("/")
        if not sep or not layer:
            raise InputError(
                f"{label}: entry {k!r} is not named 'layer/param'; not a "
                f"jaxconvviz converted weights file (expected {ACCEPTED_FILES})."
            )
        params.setdefault(layer, {})[pname] = a
    if not params:
        raise InputError(f"{label}: an .npz file with no weights in it.")
    return params


def expected_shapes(model) -> dict[str, dict[str, tuple[int, ...]]]:
    """``{layer: {param: shape}}`` of ``model``'s parameterised layers, params
    in Keras weight order (what :func:`read_any`'s ``model=`` checks against)."""
    shapes = model.param_shapes()
    return {s.name: {p: tuple(shapes[s.name][p]) for p in s.param_names}
            for s in model.layers if s.has_params and s.name in shapes}


def read_any(source: Any, *, model=None,
             max_bytes: int | None = None) -> tuple[str, dict, str]:
    """``("keras", {layer: [arrays]}, label)`` or ``("params", {layer: {name:
    array}}, label)`` for any supported file (a missing path or a directory
    raise first, naming what is accepted).

    With ``model``, only its layers are read and every array is checked
    against the shape the model expects before it is read; ``max_bytes`` sets
    the absolute ceiling (see :mod:`~jaxconvviz.models.weights.limits`)."""
    want = None if model is None else expected_shapes(model)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        label = os.fspath(source)
        check_weights_path(path, label)
        if path.is_file() and file_signature(path).startswith(ZIP_SIGNATURE) and not (
            is_keras_zip(path)
        ):
            return "params", read_converted(path, label, expected=want,
                                            max_bytes=max_bytes), label
        return "keras", read_keras_weights(path, expected=want,
                                           max_bytes=max_bytes), label
    return "keras", read_keras_weights(source, expected=want,
                                       max_bytes=max_bytes), source_label(source)


def guess_param_names(layer: str, arrays: list[np.ndarray], label: str) -> list[str]:
    """Param names for a Keras layer's arrays without a model (conv/dense/BN)."""
    nd = [a.ndim for a in arrays]
    if len(arrays) == 1 and nd[0] >= 2:
        return ["kernel"]
    if len(arrays) == 2 and nd[0] >= 2 and nd[1] == 1:
        return ["kernel", "bias"]
    if len(arrays) == 4 and nd == [1, 1, 1, 1]:
        return ["gamma", "beta", "moving_mean", "moving_variance"]
    raise InputError(
        f"{label}: cannot name the {len(arrays)} arrays of layer {layer!r} (shapes "
        f"{[tuple(a.shape) for a in arrays]}) without a model; pass model= (e.g. "
        "from jcv.load_keras_model) to load or convert this file."
    )


def as_float32(a: np.ndarray) -> np.ndarray:
    """Floating (and bfloat16) arrays as float32; others unchanged."""
    a = np.asarray(a)
    if a.dtype == np.float32:
        return a
    if a.dtype.kind not in "fV" and a.dtype.name != "bfloat16":
        return a
    return a.astype(np.float32)


def file_params(kind: str, data: dict, label: str) -> dict[str, dict[str, np.ndarray]]:
    """``{layer: {param: array}}`` from :func:`read_any` data without a model
    (Keras lists named by :func:`guess_param_names`)."""
    if kind == "params":
        return data
    return {
        layer: dict(zip(guess_param_names(layer, arrays, label), arrays, strict=True))
        for layer, arrays in data.items()
    }


def assemble_params(kind: str, data: dict, label: str, model) -> dict:
    """Params for ``model``'s parameterised layers from file data; shape-checked."""
    import jax.numpy as jnp

    params: dict[str, dict[str, Any]] = {}
    for spec in model.layers:
        if not spec.has_params:
            continue
        if spec.name not in data:
            found = sorted(data, key=natural_key)
            raise InputError(
                f"{label}: layer {spec.name!r} is missing; the file has layers "
                f"{found[:30]}{' ...' if len(found) > 30 else ''}."
            )
        if kind == "keras":
            names = list(spec.param_names)
            arrays = data[spec.name]
            if len(arrays) != len(names):
                raise InputError(
                    f"{label}: layer {spec.name!r} has {len(arrays)} weight arrays "
                    f"(shapes {[tuple(a.shape) for a in arrays]}); the model expects "
                    f"{len(names)} ({', '.join(names)})."
                )
            entry = dict(zip(names, arrays, strict=True))
        else:  # named params: keep the model's own names (check_params: missing)
            wanted = list(spec.param_names)
            entry = {k: v for k, v in data[spec.name].items() if k in wanted}
        params[spec.name] = {k: as_float32(v) for k, v in entry.items()}
    model.check_params(params, source=label)
    return {
        layer: {k: jnp.asarray(v) for k, v in entry.items()}
        for layer, entry in params.items()
    }


def load_params(source: Any, *, model, max_bytes: int | None = None) -> dict:
    """Load a weights file into the params of ``model``.

    Every parameterised layer of ``model`` is looked up by its Keras name;
    other layers in the file are ignored. Keras weight lists are named by
    layer kind (``kernel``/``bias``; BatchNormalization ``gamma``, ``beta``,
    ``moving_mean``, ``moving_variance``) and every array is shape-checked.

    Args:
      source: any Keras HDF5 layout (see :func:`read_keras_weights`), a
        ``.keras`` archive, a file written by :func:`convert`, or an open
        h5py File/Group or binary file object.
      model: the :class:`~jaxconvviz.models.convnet.ConvNet` to load into.
        Only its layers are read, each array shape-checked before reading.
      max_bytes: absolute ceiling on the bytes the file may allocate (None:
        ``$JAXCONVVIZ_MAX_WEIGHT_BYTES`` or 4 GiB; see
        :mod:`~jaxconvviz.models.weights.limits`).

    Returns:
      ``{layer: {param: jax.Array float32}}``.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: unreadable file, a missing layer, or a shape that does not
        match ``model`` (the message names the file, layer and both shapes).
    """
    from jaxconvviz.models.convnet import ConvNet

    if not isinstance(model, ConvNet):
        raise InputTypeError(
            f"model must be a jaxconvviz ConvNet (jcv.VGG16(), jcv.tiny_vgg16(), "
            f"jcv.load_keras_model(...)); got {type(model).__name__}."
        )
    kind, data, label = read_any(source, model=model, max_bytes=max_bytes)
    return assemble_params(kind, data, label, model)




# -------------------------------------------------------------- conversion
def write_converted(params: Mapping[str, Mapping[str, Any]], dst: Path, *,
                     source: str, source_md5: str | None) -> Path:
    """Write ``{layer: {param: array}}`` as a converted ``.npz`` (float32,
    ``"layer/param"`` keys) atomically, then its sidecar (SHA-256, size,
    source name and MD5); a stale sidecar is removed first."""
    arrays: dict[str, np.ndarray] = {}
    for layer, entry in params.items():
        for pname, value in entry.items():
            arrays[f"{layer}/{pname}"] = as_float32(np.asarray(value))
    layers = [[layer, list(entry)] for layer, entry in params.items()]
    meta = json.dumps({"format": CONVERTED_FORMAT, "layers": layers,
                       "source": source}).encode()
    arrays[META_KEY] = np.frombuffer(meta, dtype=np.uint8)
    # Remove a stale sidecar first: a new file with an old hash must not verify.
    sidecar_path(dst).unlink(missing_ok=True)
    atomic_write(dst, lambda fh: np.savez(fh, **arrays))
    record = {
        "format": CONVERTED_FORMAT,
        "file": dst.name,
        "size": dst.stat().st_size,
        "sha256": file_hash(dst, "sha256"),
        "source": source,
        "source_md5": source_md5,
        "layers": [layer for layer, _ in layers],
        "jaxconvviz": __version__,
    }
    text = json.dumps(record, indent=1).encode()
    atomic_write(sidecar_path(dst), lambda fh: fh.write(text))
    return dst


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, model=None) -> Path:
    """Convert any supported weights file to the jaxconvviz ``.npz`` format.

    Writes ``dst`` atomically (temp file + rename) and a sidecar
    ``dst + ".json"`` with its SHA-256, size and the source file's MD5;
    loaders verify the hash. All layers with weights are kept.

    Args:
      src: a Keras HDF5 file (any layout), a ``.keras`` archive or an ``.npz``.
      dst: output path ending in ``.npz``.
      model: optional ConvNet to name and shape-check the arrays with; without
        it conv/dense (``kernel``, ``bias``) and BatchNormalization layers are
        recognised by their array counts and ranks.

    Returns:
      ``dst`` as a Path.
    """
    src_p, dst_p = Path(src), Path(dst)
    if dst_p.suffix != ".npz":
        raise InputError(f"dst must end in .npz; got {os.fspath(dst)!r}.")
    if src_p.exists() and dst_p.exists() and src_p.resolve() == dst_p.resolve():
        raise InputError(f"dst must differ from src; got {os.fspath(dst)!r} twice.")
    if model is not None:
        params = load_params(src_p, model=model)
    else:
        kind, data, label = read_any(src_p)
        params = file_params(kind, data, label)
    return write_converted(params, dst_p, source=src_p.name,
                            source_md5=file_hash(src_p, "md5"))


def list_store() -> list[dict]:
    """Files in :func:`store_dir`: ``name``, ``path``, ``size`` (bytes) and
    ``sha256`` (from the sidecar; None when there is none). Not hashed."""
    d = store_dir()
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.iterdir(), key=lambda q: natural_key(q.name)):
        if not p.is_file() or p.name.startswith(".") or p.name.endswith(".json"):
            continue
        record = read_sidecar(p) or {}
        out.append({"name": p.name, "path": p, "size": p.stat().st_size,
                    "sha256": record.get("sha256")})
    return out



__all__ = [
    "load_params",
    "convert",
    "list_store",
    "store_dir",
    "file_hash",
    "clear_hash_cache",
    "sidecar_path",
    "read_sidecar",
    "read_converted",
    "read_any",
    "expected_shapes",
    "file_params",
    "assemble_params",
    "write_converted",
    "as_float32",
    "guess_param_names",
    "CONVERTED_FORMAT",
    "META_KEY",
    "HOME_ENV",
]
