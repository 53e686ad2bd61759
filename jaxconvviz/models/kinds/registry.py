"""The layer-kind registry: one :class:`LayerKind` record per kind.

A record holds everything the package knows about one kind of layer: its
forward pass, its output shape, its parameters (names in Keras weight order,
shapes, initializers), its geometry for receptive fields and multiply-add
counts, the Keras classes it imports and how, and the Keras class and config
it exports as. :func:`register_layer_kind` adds one; every table of kinds
(:data:`KINDS`, :data:`LAYER_KINDS`, :data:`MERGE_KINDS`, :data:`CONV_KINDS`,
``shapes.SHAPES``, ``keras_import.SUPPORTED_LAYERS``) is a live, read-only
view of the records, so a registered kind is at once a valid
:class:`~jaxconvviz.models.convnet.Layer` kind, runs in a ConvNet, has shapes
and params, and imports from / exports to Keras files.

Imports jax and flax only.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import numpy as np

from jaxconvviz.errors import InputError, InputTypeError
from jaxconvviz.models.kinds.common import ACTIVATIONS, same_shape

Shape = tuple[int, ...]

#: Keras class names no kind may claim: the importer handles them itself.
RESERVED_KERAS_CLASSES = frozenset({"InputLayer", "Sequential", "Functional",
                                    "Model"})

#: Initializer names a param spec may use (or pass a Flax initializer).
INITIALIZERS: dict[str, Callable] = {
    "zeros": nn.initializers.zeros,
    "ones": nn.initializers.ones,
    "lecun": nn.initializers.lecun_normal(),
}


_REQUIRED = object()  # KerasLayer accessors: no default, the key is required


def _is_int(v) -> bool:
    """An int (not a bool) or an integral float, as JSON may spell an int."""
    if isinstance(v, bool):
        return False
    if isinstance(v, float):
        return math.isfinite(v) and v.is_integer()
    return isinstance(v, int | np.integer)


def _no_params(spec) -> tuple[str, ...]:
    return ()


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer: Keras name, kind (one of :data:`LAYER_KINDS`), static options,
    and the layers it reads.

    ``options`` is a sorted tuple of ``(key, value)`` pairs so the spec is
    hashable and a whole model can be a static ``jit`` argument. ``inputs``
    names the layers whose outputs this one takes (in order; the model's
    ``input_name`` is the image input); empty means the previous layer (or
    the input, for the first layer), so a chain needs none. Merge kinds
    (:data:`MERGE_KINDS`) take two or more.
    """

    name: str
    kind: str
    options: tuple[tuple[str, Any], ...] = ()
    inputs: tuple[str, ...] = ()

    @classmethod
    def make(cls, name: str, kind: str, *, inputs: tuple[str, ...] = (),
             **options: Any) -> Layer:
        if kind not in LAYER_KINDS:
            raise InputError(f"kind must be one of {LAYER_KINDS}; got {kind!r}.")
        act = options.get("activation")
        if act is not None and act not in ACTIVATIONS:
            raise InputError(
                f"layer {name!r}: activation must be one of "
                f"{sorted(ACTIVATIONS)}; got {act!r}."
            )
        if isinstance(inputs, str) or not all(isinstance(i, str) for i in inputs):
            raise InputError(
                f"layer {name!r}: inputs must be a tuple of layer names; got "
                f"{inputs!r}.")
        return cls(name, kind, tuple(sorted(options.items())), tuple(inputs))

    def __hash__(self) -> int:
        # Cached (not pickled: str hashes differ between processes). A model
        # is a static jit argument, so its layers are hashed at every call of
        # a compiled technique: 2 ms a call for DenseNet121's 428 layers.
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.name, self.kind, self.options, self.inputs))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    def opt(self, key: str, default: Any = None) -> Any:
        for k, v in self.options:
            if k == key:
                return v
        return default

    @property
    def has_params(self) -> bool:
        return bool(self.param_names)

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of this layer's params in Keras weight order (file order)."""
        return KINDS[self.kind].params(self)


@dataclasses.dataclass(frozen=True)
class KerasLayer:
    """One Keras layer entry, as a kind's ``from_keras`` receives it.

    Attributes:
      name: the Keras layer name (the ConvNet layer keeps it).
      cls: the Keras class name (``"Conv2D"``).
      config: the layer's ``get_config()`` dict from the file.
      in_shapes: per-example shapes (batch axis omitted) of its inputs.
      where: ``"<file>: layer '<name>' (<cls>)"``, the prefix of messages.
      kind: the kind whose record imports ``cls``.
    """

    name: str
    cls: str
    config: Mapping[str, Any]
    in_shapes: tuple[Shape, ...]
    where: str
    kind: str

    def get(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)

    @property
    def channels(self) -> Shape:
        """The first input's per-example shape (``()`` for none)."""
        return self.in_shapes[0] if self.in_shapes else ()

    def error(self, message: str) -> InputError:
        """An :class:`~jaxconvviz.errors.InputError` naming the file, the
        layer and its class, then ``message``."""
        return InputError(f"{self.where} {message}")

    def require(self, key: str) -> Any:
        if key not in self.config:
            raise self.error(f"has no {key!r} in its config.")
        return self.config[key]

    def _value(self, key: str, default: Any) -> Any:
        if default is _REQUIRED:
            return self.require(key)
        v = self.config.get(key, default)
        return default if v is None else v

    def integer(self, key: str, default: Any = _REQUIRED, *, lo: int = 1) -> int:
        """An int option (an integral float is accepted), at least ``lo``;
        no default: required. A mistyped or out-of-range value raises an
        error naming the layer and ``key``."""
        v = self._value(key, default)
        if _is_int(v) and int(v) >= lo:
            return int(v)
        raise self.error(f"has {key!r}: {v!r:.60}; expected an int >= {lo}.")

    def number(self, key: str, default: Any = _REQUIRED, *,
               lo: float | None = None, hi: float | None = None) -> float:
        """A finite float option in ``[lo, hi]`` (None: unbounded)."""
        v = self._value(key, default)
        ok = (isinstance(v, int | float) and not isinstance(v, bool)
              and math.isfinite(v) and (lo is None or v >= lo)
              and (hi is None or v <= hi))
        if not ok:
            bounds = "" if lo is None and hi is None else (
                f" in [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]")
            raise self.error(f"has {key!r}: {v!r:.60}; expected a number{bounds}.")
        return float(v)

    def numbers(self, key: str, default: Any = _REQUIRED) -> float | tuple[float, ...]:
        """A float, or a non-empty (nested) list of floats as a flat tuple."""
        v = self._value(key, default)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return self.number(key, default)
        try:
            flat = np.ravel(np.asarray(v, dtype=np.float64))
        except (TypeError, ValueError):
            flat = np.zeros(0)
        if (not isinstance(v, list | tuple) or flat.size == 0
                or not np.isfinite(flat).all()):
            raise self.error(f"has {key!r}: {v!r:.60}; expected a number or a "
                             "non-empty list of numbers.")
        return tuple(float(a) for a in flat)

    def flag(self, key: str, default: bool) -> bool:
        """A bool option (``true``/``false``; 0 and 1 are accepted)."""
        v = self._value(key, default)
        if isinstance(v, bool) or (_is_int(v) and int(v) in (0, 1)):
            return bool(v)
        raise self.error(f"has {key!r}: {v!r:.60}; expected true or false.")

    def pair(self, key: str, default: Any = None, *, lo: int = 1) -> tuple[int, int]:
        """A size option (``3`` or ``[3, 1]``) as two ints, each at least
        ``lo``; no default: required."""
        v = self._value(key, _REQUIRED if default is None else default)
        if _is_int(v):
            v = (v, v)
        if (isinstance(v, list | tuple) and len(v) == 2
                and all(_is_int(a) and int(a) >= lo for a in v)):
            return (int(v[0]), int(v[1]))
        raise self.error(f"has {key!r}: {v!r:.60}; expected an int >= {lo} or a "
                         f"list of 2 such ints.")

    def amounts(self, key: str, default: Any
                ) -> tuple[tuple[int, int], tuple[int, int]]:
        """Padding/cropping amounts (``1``, ``[1, 2]`` or ``[[1, 1], [2, 2]]``)
        as ``((top, bottom), (left, right))`` ints >= 0."""
        v = self._value(key, default)

        def two(a):
            if _is_int(a) and int(a) >= 0:
                return (int(a), int(a))
            if (isinstance(a, list | tuple) and len(a) == 2
                    and all(_is_int(b) and int(b) >= 0 for b in a)):
                return (int(a[0]), int(a[1]))
            return None

        if _is_int(v):
            v = (v, v)
        got = ([two(a) for a in v] if isinstance(v, list | tuple) and len(v) == 2
               else [None])
        if None in got:
            raise self.error(f"has {key!r}: {v!r:.60}; expected an int >= 0, 2 ints or "
                             "2 pairs of ints.")
        return (got[0], got[1])

    def padding(self) -> str:
        pad = str(self.config.get("padding", "valid")).lower()
        if pad not in ("valid", "same"):
            raise self.error(f"has padding {pad!r}; expected 'valid' or 'same'.")
        return pad

    def activation(self, key: str = "activation") -> str:
        """The activation option as a key of :data:`ACTIVATIONS`."""
        value = self.config.get(key)
        if value is None:
            return "linear"
        if isinstance(value, Mapping):  # serialised function object
            cfg = value.get("config")
            value = cfg if isinstance(cfg, str) else value.get("class_name")
        name = str(value)
        if name not in ACTIVATIONS:
            raise self.error(
                f"has activation {name!r}; supported activations: "
                f"{', '.join(sorted(ACTIVATIONS))}.")
        return name

    def last_axis(self, key: str = "axis") -> None:
        """Check that the layer works on the channel (last) axis."""
        axis = self.config.get(key, -1)
        axis = axis[0] if isinstance(axis, list | tuple) and len(axis) == 1 else axis
        if axis not in (-1, len(self.channels)):  # batch is axis 0
            raise self.error(f"normalises axis {axis!r}; only the channel axis "
                             "(-1) is supported.")

    def layer(self, kind: str | None = None, **options: Any):
        """``Layer.make(self.name, kind, **options)``; ``kind`` defaults to
        :attr:`kind`."""
        return Layer.make(self.name, kind or self.kind, **options)


@dataclasses.dataclass(frozen=True)
class LayerKind:
    """Everything about one layer kind; register with :func:`register_layer_kind`.

    Attributes:
      kind: the name a :class:`~jaxconvviz.models.convnet.Layer` gives as its
        ``kind`` (``"conv"``).
      apply: ``apply(net, spec, xs) -> y``: the forward pass; ``xs`` the
        tuple of input arrays (batch first), ``net`` the ConvNet (its
        ``dtype`` and algorithm choices); called inside the ConvNet's compact
        call, so params are created under ``spec.name`` (see
        :func:`layer_params`).
      shape: ``shape(spec, in_shapes) -> out_shape`` on per-example shapes
        (batch axis omitted); default: the first input's.
      params: ``params(spec) -> names`` of the layer's params in Keras weight
        (file) order; default none.
      param_shapes: ``param_shapes(spec, in_shape) -> {name: (shape, init)}``
        for at least the names ``params(spec)`` gives, ``in_shape`` the first
        input's; ``init`` one of :data:`INITIALIZERS` or a Flax initializer.
      merge: takes two or more inputs (else exactly one).
      convolves: its outputs are filter maps (``ConvNet.filter_layers``).
      spatial: whether the output is still a map over the input's pixels
        (False for global pools, flatten, reshape); or ``spatial(spec) ->
        bool`` when an option decides.
      window: ``window(spec) -> (kernel, strides, dilation)`` pairs of a
        windowed kind (convs, pools), for receptive fields; None: pointwise.
      macs: ``macs(spec, in_shape, out_shape, channels) -> int``, the
        multiply-adds for one example (``channels``: only that many output
        channels; None all); None: 0.
      mac_bound: its cost is its multiply-adds (else memory traffic).
      keras: the Keras class names imported as this kind.
      from_keras: ``from_keras(layer: KerasLayer) -> Layer``: translates a
        Keras layer config (checking its fields; raise ``layer.error(...)``).
      keras_class: the Keras class it exports as (None: not exported).
      to_keras: ``to_keras(spec) -> dict``: the Keras config entries besides
        ``name``, ``trainable`` and ``dtype``; weights are written in
        ``params(spec)`` order.
      doc: one line on the Keras layer it reproduces.
    """

    kind: str
    apply: Callable[[Any, Any, tuple], Any]
    shape: Callable[[Any, tuple[Shape, ...]], Shape] = same_shape
    params: Callable[[Any], tuple[str, ...]] = _no_params
    param_shapes: Callable[[Any, Shape], Mapping[str, tuple[Shape, Any]]] | None = None
    merge: bool = False
    convolves: bool = False
    spatial: bool | Callable[[Any], bool] = True
    window: Callable[[Any], tuple] | None = None
    macs: Callable[[Any, Shape, Shape, int | None], int] | None = None
    mac_bound: bool = False
    keras: tuple[str, ...] = ()
    from_keras: Callable[[KerasLayer], Any] | None = None
    keras_class: str | None = None
    to_keras: Callable[[Any], dict] | None = None
    doc: str = ""

    def __post_init__(self):
        if not isinstance(self.kind, str) or not self.kind.isidentifier():
            raise InputError(f"LayerKind.kind must be a name such as 'conv'; got "
                             f"{self.kind!r}.")
        for field in ("apply", "shape", "params", "param_shapes", "window", "macs",
                      "from_keras", "to_keras"):
            v = getattr(self, field)
            if v is not None and not callable(v):
                raise InputTypeError(f"LayerKind {self.kind!r}: {field} must be "
                                     f"callable; got {type(v).__name__}.")
        if isinstance(self.keras, str):
            object.__setattr__(self, "keras", (self.keras,))
        if self.params is not _no_params and self.param_shapes is None:
            raise InputError(f"LayerKind {self.kind!r} names params but has no "
                             "param_shapes (their shapes and initializers).")
        if self.keras and self.from_keras is None:
            raise InputError(f"LayerKind {self.kind!r} takes Keras classes "
                             f"{list(self.keras)} but has no from_keras.")
        if (self.keras_class is None) != (self.to_keras is None):
            raise InputError(f"LayerKind {self.kind!r}: keras_class and to_keras "
                             "go together (both or neither).")
        bad = RESERVED_KERAS_CLASSES.intersection(self.keras)
        if bad:
            raise InputError(f"LayerKind {self.kind!r}: Keras classes {sorted(bad)} "
                             "are read by the importer itself.")

    def is_spatial(self, spec) -> bool:
        return self.spatial(spec) if callable(self.spatial) else bool(self.spatial)


_RECORDS: dict[str, LayerKind] = {}
_KERAS_CLASSES: dict[str, str] = {}  # Keras class -> kind


def register_layer_kind(record: LayerKind, *, replace: bool = False) -> LayerKind:
    """Add a layer kind (or, with ``replace=True``, swap a registered one).

    Raises ``ValueError`` if the kind is registered already (without
    ``replace``) or one of its Keras classes belongs to another kind.
    Register before building models of the kind: compiled functions keep the
    record they were traced with.
    """
    if not isinstance(record, LayerKind):
        raise InputTypeError(f"record must be a LayerKind; got "
                             f"{type(record).__name__}.")
    old = _RECORDS.get(record.kind)
    if old is not None and not replace:
        raise InputError(f"layer kind {record.kind!r} is registered already; pass "
                         "replace=True to swap it.")
    taken = {c: _KERAS_CLASSES[c] for c in record.keras
             if _KERAS_CLASSES.get(c, record.kind) != record.kind}
    if taken:
        raise InputError(f"layer kind {record.kind!r}: Keras classes {taken} are "
                         "imported as other kinds already.")
    if old is not None:
        unregister_layer_kind(record.kind)
    _RECORDS[record.kind] = record
    _KERAS_CLASSES.update(dict.fromkeys(record.keras, record.kind))
    return record


def unregister_layer_kind(kind: str) -> LayerKind:
    """Remove a registered kind (and its Keras classes); returns its record."""
    record = layer_kind(kind)
    del _RECORDS[kind]
    for c in record.keras:
        _KERAS_CLASSES.pop(c, None)
    return record


def layer_kind(kind: str) -> LayerKind:
    """The record of a registered kind."""
    try:
        return _RECORDS[kind]
    except KeyError:
        raise InputError(f"kind must be one of {tuple(_RECORDS)}; got "
                         f"{kind!r}.") from None


def keras_kind(cls: str) -> LayerKind | None:
    """The record that imports the Keras class ``cls`` (None: no kind does)."""
    kind = _KERAS_CLASSES.get(cls)
    return None if kind is None else _RECORDS[kind]


# ------------------------------------------------------------ live views
class KindNames(Sequence[str]):
    """A live, read-only tuple of registered kind names (those ``where``
    selects): it follows :func:`register_layer_kind`."""

    def __init__(self, where: Callable[[LayerKind], bool] | None = None):
        self._where = where

    def _names(self) -> tuple[str, ...]:
        w = self._where
        return tuple(k for k, r in _RECORDS.items() if w is None or w(r))

    def __contains__(self, kind) -> bool:
        r = _RECORDS.get(kind) if isinstance(kind, str) else None
        return r is not None and (self._where is None or self._where(r))

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __eq__(self, other) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, Sequence)
                               else other)

    __hash__ = None

    def __repr__(self) -> str:
        return repr(self._names())


class RecordField(Mapping[str, Any]):
    """A live, read-only ``{kind: getattr(record, field)}``."""

    def __init__(self, field: str):
        self._field = field

    def __getitem__(self, kind: str):
        return getattr(_RECORDS[kind], self._field)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(_RECORDS))

    def __len__(self) -> int:
        return len(_RECORDS)

    def __repr__(self) -> str:
        return f"RecordField({self._field!r}, kinds={tuple(_RECORDS)})"


#: Every registered kind -> its record (live, read-only).
KINDS: Mapping[str, LayerKind] = types.MappingProxyType(_RECORDS)
#: Kinds a :class:`~jaxconvviz.models.convnet.Layer` may have.
LAYER_KINDS = KindNames()
#: Kinds that take two or more inputs.
MERGE_KINDS = KindNames(lambda r: r.merge)
#: Kinds whose outputs are filter maps (``ConvNet.filter_layers``).
CONV_KINDS = KindNames(lambda r: r.convolves)
#: Kinds whose cost is their multiply-adds.
MAC_BOUND_KINDS = KindNames(lambda r: r.mac_bound)
#: Keras class -> the kind it imports as (live, read-only).
KERAS_CLASSES: Mapping[str, str] = types.MappingProxyType(_KERAS_CLASSES)


# ---------------------------------------------------------------- running
def apply_layer(net, spec, xs: tuple):
    """Run one layer on its inputs (inside ``net``'s compact call)."""
    return _RECORDS[spec.kind].apply(net, spec, xs)


def param_specs(spec, in_shape: Shape) -> tuple[tuple[str, Shape, Any], ...]:
    """``((name, shape, init), ...)`` of one layer's params in Keras order,
    given its (first) input's per-example shape."""
    record = _RECORDS[spec.kind]
    names = record.params(spec)
    if not names:
        return ()
    table = record.param_shapes(spec, tuple(int(a) for a in in_shape))
    return tuple((n, tuple(int(a) for a in table[n][0]), table[n][1]) for n in names)


class _Vars(nn.Module):
    """Creates a layer's params: ``specs`` = ``((name, shape, init), ...)``."""

    specs: tuple[tuple[str, tuple[int, ...], Any], ...]

    @nn.compact
    def __call__(self):
        return {n: self.param(n, INITIALIZERS[i] if isinstance(i, str) else i, s)
                for n, s, i in self.specs}


def make_params(spec, *specs) -> dict:
    """Create (or read) params ``specs`` = ``(name, shape, init)``... under
    the layer's name, inside the ConvNet's compact call."""
    return _Vars(tuple(specs), name=spec.name)()


def layer_params(spec, x) -> dict:
    """The params the kind's record declares, for input ``x`` (batch first),
    created (or read) under the layer's name: ``{name: array}``."""
    return make_params(spec, *param_specs(spec, x.shape[1:]))


__all__ = ["LayerKind", "KerasLayer", "register_layer_kind", "unregister_layer_kind",
           "layer_kind", "keras_kind", "KINDS", "LAYER_KINDS", "MERGE_KINDS",
           "CONV_KINDS", "MAC_BOUND_KINDS", "KERAS_CLASSES", "KindNames",
           "RecordField", "INITIALIZERS", "RESERVED_KERAS_CLASSES", "apply_layer",
           "param_specs", "make_params", "layer_params"]
