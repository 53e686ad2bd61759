"""Writers for synthetic Keras weight files in the exact on-disk layouts.

Layouts (see shared/reference/KERAS-WEIGHTS.md):

* :func:`write_released` -- weights-only ``.h5``: root attr ``layer_names``
  (bytes), one group per layer with attr ``weight_names``; ``style="v01"`` is
  the released keras.applications file (``block1_conv1_W_1:0`` datasets
  directly in the group), ``style="tf2"`` tf.keras 2 ``save_weights``
  (``block1_conv1/kernel:0``, a sub-group per ``/``).
* :func:`write_legacy_model` -- Keras 3 ``model.save("x.h5")``: group
  ``model_weights`` with its own ``layer_names`` (str, input layer included),
  ``<layer>/<layer>/kernel`` datasets, ``top_level_model_weights``.
* :func:`write_keras3` -- Keras 3 ``.weights.h5``: ``layers/<class>[_N]/vars``
  groups with attr ``name``, datasets ``0``, ``1``.

``weights`` arguments are ``{layer: [arrays in Keras order]}``; layer names in
``layer_names`` but not in ``weights`` become weightless groups (pools).
"""

from __future__ import annotations

import re

import h5py
import numpy as np


def keras_lists(params, model) -> dict[str, list[np.ndarray]]:
    """Flax params -> ``{layer: [kernel, bias]}`` in model layer order."""
    return {
        s.name: [np.asarray(params[s.name][k]) for k in ("kernel", "bias")]
        for s in model.layers if s.has_params
    }


def _str_array(names, as_bytes: bool):
    if as_bytes:
        return np.array([n.encode("utf8") for n in names], dtype="S")
    return np.array(names, dtype=h5py.string_dtype())


def _set_names(attrs, key, names, *, as_bytes: bool, chunks: int | None) -> None:
    if chunks is None:
        attrs[key] = _str_array(names, as_bytes) if names else np.array([], "S1")
        return
    step = -(-len(names) // chunks)
    for i in range(chunks):
        attrs[f"{key}{i}"] = _str_array(names[i * step:(i + 1) * step], as_bytes)


def write_released(path, weights, layer_names, *, style: str = "v01",
                   as_bytes: bool = True, chunks: int | None = None) -> None:
    """Weights-only ``.h5`` (the released keras.applications file for v01)."""
    with h5py.File(path, "w") as f:
        _set_names(f.attrs, "layer_names", list(layer_names), as_bytes=as_bytes,
                   chunks=chunks)
        if style == "tf2":
            f.attrs["backend"] = b"tensorflow"
            f.attrs["keras_version"] = b"2.4.0"
        for layer in layer_names:
            g = f.create_group(layer)
            arrays = weights.get(layer, [])
            if style == "v01":
                tags = ["W", "b"] + [f"w{i}" for i in range(2, len(arrays))]
                names = [f"{layer}_{t}_1:0" for t in tags[: len(arrays)]]
            else:
                tags = ["kernel", "bias"] + [f"w{i}" for i in range(2, len(arrays))]
                names = [f"{layer}/{t}:0" for t in tags[: len(arrays)]]
            _set_names(g.attrs, "weight_names", names, as_bytes=as_bytes, chunks=None)
            for n, a in zip(names, arrays, strict=True):
                g.create_dataset(n, data=a)  # '/' in n creates the sub-group


def write_legacy_model(path, weights, layer_names) -> None:
    """Keras 3 legacy full-model ``.h5`` (``model.save("x.h5")``)."""
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = "jax"
        f.attrs["keras_version"] = "3.15.1"
        f.attrs["model_config"] = '{"class_name": "Functional"}'
        mw = f.create_group("model_weights")
        mw.attrs["backend"] = "jax"
        mw.attrs["keras_version"] = "3.15.1"
        names = ["input_layer_7", *layer_names]
        mw.attrs["layer_names"] = _str_array(names, as_bytes=False)
        for layer in sorted(names):
            g = mw.create_group(layer)
            arrays = weights.get(layer, [])
            wn = [f"{layer}/{t}" for t in ("kernel", "bias")[: len(arrays)]]
            g.attrs["weight_names"] = (_str_array(wn, as_bytes=False) if wn
                                       else np.array([], np.float64))
            for n, a in zip(wn, arrays, strict=True):
                g.create_dataset(n, data=a)
        mw.create_group("top_level_model_weights").attrs["weight_names"] = np.array(
            [], np.float64)


def _class_of(layer: str) -> str:
    if re.fullmatch(r"block\d_conv\d", layer):
        return "conv2d"
    if re.fullmatch(r"block\d_pool", layer):
        return "max_pooling2d"
    if layer == "flatten":
        return "flatten"
    return "dense"


def write_keras3(target, weights, layer_names, *, prefix: str = "",
                 optimizer: bool = False, bf16: tuple[str, ...] = ()) -> None:
    """Keras 3 ``.weights.h5``; ``prefix`` nests everything one level deeper."""
    import ml_dtypes

    own = isinstance(target, h5py.Group)
    f = target if own else h5py.File(target, "w")
    try:
        counts: dict[str, int] = {}
        for layer in layer_names:
            cls = _class_of(layer)
            n = counts.get(cls, 0)
            counts[cls] = n + 1
            key = cls if n == 0 else f"{cls}_{n}"
            v = f.create_group(f"{prefix}layers/{key}/vars")
            v.attrs["name"] = layer
            for i, a in enumerate(weights.get(layer, [])):
                if layer in bf16:
                    a16 = np.asarray(a, ml_dtypes.bfloat16)
                    ds = v.create_dataset(str(i), data=a16)
                    ds.attrs["dtype"] = "bfloat16"
                else:
                    v.create_dataset(str(i), data=a)
        f.create_group(f"{prefix}vars").attrs["name"] = "vgg16"
        if optimizer:
            o = f.create_group("optimizer/vars")
            o.attrs["name"] = "adam"
            for i in range(12):
                o.create_dataset(str(i), data=np.full((2,), i, np.float32))
    finally:
        if not own:
            f.close()
