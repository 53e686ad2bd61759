"""Layered convnets in Flax linen, named as Keras names them, with a split forward.

One module class, :class:`ConvNet`, runs a static tuple of :class:`Layer`
specs in topological order: a chain, or a graph (ResNet, MobileNet, ...)
when layers name their ``inputs``. Per-kind computations live in
:mod:`jaxconvviz.models.layers` (a dispatch table), analytic shapes in
:mod:`jaxconvviz.models.shapes`. VGG16 is a preset of it (:func:`VGG16`,
:func:`tiny_vgg16`), and Keras models imported by
:mod:`jaxconvviz.models.keras_import` are too, so every technique works on
both through the same contract:

``model.forward(params, x, start=None, stop=None)`` runs the layers strictly
after ``start`` up to and including ``stop`` -- the notes' two-model split
(``last_conv_layer_model`` + ``classifier_model``) as a pure function, no hooks;
in a graph ``start`` must be a cut node. ``model.forward_with(params, x,
capture=, perturb=)`` reads and differentiates any node in one pass.

Layouts match Keras so weight files load without transposes: NHWC images,
HWIO conv kernels, ``(in, out)`` dense kernels, NHWC flatten order.

``params`` is the inner dict ``{layer_name: {"kernel": ..., "bias": ...}}``;
BatchNormalization layers keep ``gamma``/``beta``/``moving_mean``/
``moving_variance`` in the same dict (inference only).

Imports jax, flax and numpy only.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxconvviz._types import ImagesRGB, Params
from jaxconvviz.errors import InputError, InputTypeError
from jaxconvviz.models import convs
from jaxconvviz.models.layers import (
    ACTIVATIONS,
    CONV_KINDS,
    KINDS,
    LAYER_KINDS,
    MERGE_KINDS,
    apply_layer,
    max_pool_tiled,  # noqa: F401 -- re-exported (moved to layers.py)
)
from jaxconvviz.models.layers import conv_geometry as _conv_geometry
from jaxconvviz.models.preprocess import PREPROCESS_MODES, preprocess_mode
from jaxconvviz.models.shapes import conv_out as _conv_out  # noqa: F401
from jaxconvviz.models.shapes import node_shapes, spatial_nodes
from jaxconvviz.models.shapes import param_shapes as _param_shapes

#: Pixel domains a model's input may expect (see :meth:`ConvNet.preprocess`).
PREPROCESSING = PREPROCESS_MODES


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer: Keras name, kind (one of :data:`LAYER_KINDS`), static options,
    and the layers it reads.

    ``options`` is a sorted tuple of ``(key, value)`` pairs so the spec is
    hashable and a whole model can be a static ``jit`` argument. ``inputs``
    names the layers whose outputs this one takes (in order; the model's
    ``input_name`` is the image input); empty means the previous layer (or
    the input, for the first layer), so a chain needs none. Merge kinds
    (:data:`~jaxconvviz.models.layers.MERGE_KINDS`) take two or more.
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


#: Final activations that mark a classifier head (the logits are their input).
_HEAD_ACTIVATIONS = ("softmax", "sigmoid", "linear")

#: :meth:`ConvNet.channel_forward` convolves up to this many images one by
#: one; larger batches as one grouped convolution.
_CHANNEL_UNROLL = 16


#: Derived facts of a layer tuple (names, index, sources, shapes...), keyed
#: by the tuple's identity: see :func:`_memo`.
_MEMO: dict[int, tuple[tuple, dict]] = {}
_MEMO_MODELS = 64
_MEMO_ENTRIES = 4096


def _memo(layers: tuple) -> dict:
    """A dict of facts derived from exactly this ``layers`` tuple.

    Why identity and not ``functools.lru_cache``: a model's metadata
    (``layer_index``, ``sources``, ``output_shape``, ``default_layer``...) is
    read dozens of times per call of a technique, and an ``lru_cache`` keyed
    by the tuple hashes its hundreds of frozen ``Layer`` dataclasses every
    time (Python caches no tuple hash). Measured on a 2-core CPU, that and
    the repeated lookups were 5.3 ms of MobileNetV2's 14 ms one-image
    Grad-CAM and 20 ms of DenseNet121's 72 ms. The entry holds the tuple
    itself, so its ``id`` cannot be reused while the entry lives; clones of
    a model share the tuple and so the facts.
    """
    hit = _MEMO.get(id(layers))
    if hit is None or hit[0] is not layers:
        if len(_MEMO) >= _MEMO_MODELS:
            _MEMO.pop(next(iter(_MEMO)))
        hit = _MEMO[id(layers)] = (layers, {})
    elif len(hit[1]) > _MEMO_ENTRIES:  # e.g. output_shape at many sizes
        hit[1].clear()
    return hit[1]


def _memoized(layers: tuple, key, compute):
    facts = _memo(layers)
    try:
        return facts[key]
    except KeyError:
        value = facts[key] = compute()
        return value


@functools.lru_cache(maxsize=256)
def _graph(layers: tuple[Layer, ...], input_name: str) -> tuple[tuple[int, ...], ...]:
    """Per layer, the indices of its inputs (-1: the model input); checks the
    topology (known names in topological order, arity, no dead ends)."""
    index: dict[str, int] = {}
    sources: list[tuple[int, ...]] = []
    for i, spec in enumerate(layers):
        if spec.name in index or spec.name == input_name:
            raise InputError(f"two layers (or a layer and the input) are named "
                             f"{spec.name!r}.")
        if spec.inputs:
            try:
                src = tuple(-1 if n == input_name else index[n] for n in spec.inputs)
            except KeyError as e:
                raise InputError(
                    f"layer {spec.name!r} reads {e.args[0]!r}, which is not the "
                    f"input {input_name!r} nor a layer before it (layers must be "
                    "in topological order).") from None
        else:
            src = (i - 1,)
        merge = KINDS[spec.kind].merge
        if (len(src) < 2) if merge else (len(src) != 1):
            raise InputError(
                f"layer {spec.name!r} ({spec.kind}) takes "
                f"{'two or more inputs' if merge else 'one input'}; got "
                f"{len(src)} ({', '.join(spec.inputs) or 'the previous layer'}).")
        index[spec.name] = i
        sources.append(src)
    if layers:
        used = _ancestors(tuple(sources), len(layers) - 1)
        dead = [s.name for i, s in enumerate(layers) if i not in used]
        if dead:
            raise InputError(
                f"layers {dead} do not feed the output layer "
                f"{layers[-1].name!r} (the last one); drop them or reorder.")
    return tuple(sources)


@functools.lru_cache(maxsize=4096)
def _ancestors(sources: tuple[tuple[int, ...], ...], i: int) -> frozenset[int]:
    """Layer ``i`` and every layer it depends on (not the input, -1)."""
    seen, todo = {i}, [i]
    while todo:
        for j in sources[todo.pop()]:
            if j >= 0 and j not in seen:
                seen.add(j)
                todo.append(j)
    return frozenset(seen)


@functools.lru_cache(maxsize=1024)
def _bypasses(sources: tuple[tuple[int, ...], ...], cut: int) -> frozenset[int]:
    """Layers reachable from the input on a path that avoids layer ``cut``."""
    reach: set[int] = set()
    for i, src in enumerate(sources):
        if i != cut and any(j == -1 or j in reach for j in src):
            reach.add(i)
    return frozenset(reach)


class ConvNet(nn.Module):
    """A graph (or chain) of Keras-named layers with a split forward pass.

    Nodes are evaluated in their (topological) order, and only the ancestors
    of the requested ``stop`` layer are computed.

    Attributes:
      layers: the layer specs in topological order; the last is the output.
      input_shape: ``(h, w, c)`` the model was built for; ``h``/``w`` may be
        ``None`` for fully convolutional models.
      preprocessing: pixel domain of the model's input, one of
        :data:`PREPROCESSING` -- ``"caffe"`` (VGG16, ResNet50:
        :func:`~jaxconvviz.preprocess_input`), ``"tf"`` (``x / 127.5 - 1``),
        ``"torch"`` (``x / 255``, ImageNet mean/std), ``"scale01"``
        (``x / 255``) or ``"none"`` (RGB [0, 255] fed as is; models with
        their own Rescaling/Normalization layers). :meth:`preprocess`
        applies it.
      dtype: compute dtype of convs and dense layers (params stay float32);
        ``jnp.bfloat16`` halves memory traffic on accelerators.
      name_: display name.
      conv_impl: how conv layers are computed: ``"xla"``
        (``lax.conv_general_dilated``, the default) or ``"matmul"``
        (:func:`jaxconvviz.models.convs.conv_general_dilated`: the same values up to
        summation order, faster bfloat16 ascent steps on XLA:CPUs with bf16
        instructions,
        reverse-mode derivatives only). Not ``"auto"``: a model is one
        program; the techniques resolve ``"auto"`` per backend.
      input_name: the name layers use in ``Layer.inputs`` for the image input
        (the Keras InputLayer's name for imported models).
      depthwise_impl: how depthwise convolutions (``DepthwiseConv2D``, the
        first half of ``SeparableConv2D``) are computed, one of
        :data:`~jaxconvviz.models.convs.DEPTHWISE_IMPLS`: ``"auto"`` (the
        default: ``"slices"`` on XLA:CPU, ``"grouped"`` elsewhere),
        ``"slices"`` (:func:`~jaxconvviz.models.convs.depthwise_conv2d`, a
        sum of shifted slices, 20-40x faster on XLA:CPU) or ``"grouped"``
        (``lax.conv_general_dilated`` with one group per channel, as Keras'
        JAX backend computes it). The values agree up to float32 summation
        order. Where ``conv_vjp`` is ``"custom"`` the slices' derivative is
        a custom VJP (reverse mode only).
      pointwise_impl: how 1x1 convolutions (``Conv2D`` with a 1x1 kernel,
        the second half of ``SeparableConv2D``) are computed, one of
        :data:`~jaxconvviz.models.convs.POINTWISE_IMPLS`: ``"auto"`` (the
        default: ``"dot"`` on XLA:CPU, ``"conv"`` elsewhere), ``"dot"``
        (:func:`~jaxconvviz.models.convs.pointwise_conv`, a strided slice and
        a matrix product, 16 % faster ResNet50 Grad-CAM on XLA:CPU) or
        ``"conv"`` (``lax.conv_general_dilated``). The values agree up to
        float32 summation order.
      conv3x3_impl: how stride-1 3x3 float32 convolutions are computed, one
        of :data:`~jaxconvviz.models.convs.CONV3X3_IMPLS`: ``"conv"`` (the
        default: ``lax.conv_general_dilated``, as Keras), ``"auto"`` (on
        XLA:CPU Winograd F(2x2, 3x3) for the layer shapes where it was
        measured faster, :func:`~jaxconvviz.models.convs.winograd_pays`;
        ``"conv"`` elsewhere) or ``"winograd"``
        (:func:`~jaxconvviz.models.convs.winograd_conv` for every such
        layer). Winograd takes about a quarter off VGG16's forward pass for
        4 images at 224 px on XLA:CPU but adds about 0.5 s of compilation
        per layer (4 s for VGG16), so it is for long runs (many images, big
        batches), not the default; ``jcv.cam`` uses ``"auto"`` for
        Score-CAM by itself (its ``conv3x3_impl`` argument). The values agree within
        float32 rounding (~1e-6 relative). Winograd layers have reverse-mode
        derivatives only; use ``"conv"`` for ``jax.jvp``.
      conv_vjp: how convolutions' input gradients are computed: None (the
        default: JAX's own rules under your ``jax.grad``/``jax.jvp`` of
        ``forward``/``logits``; the custom VJPs inside the library's own
        gradient programs on XLA:CPU -- the ascent and render engine, the
        gradient CAMs and attributions -- where JAX's rules run 3-7x slower
        in loops and depthwise layers), ``"jax"`` (JAX's rules everywhere;
        forward mode works) or ``"custom"`` (the custom VJPs everywhere:
        :func:`~jaxconvviz.models.convs.hwio_vjp_conv`, the gather form of
        :func:`~jaxconvviz.models.convs.depthwise_conv2d`; reverse mode
        only). Values agree up to float32 summation order.
    """

    layers: tuple[Layer, ...]
    input_shape: tuple[int | None, int | None, int] = (None, None, 3)
    preprocessing: str = "caffe"
    dtype: Any = jnp.float32
    name_: str = "convnet"
    conv_impl: str = "xla"
    input_name: str = "input"
    depthwise_impl: str = "auto"
    pointwise_impl: str = "auto"
    conv3x3_impl: str = "conv"
    conv_vjp: str | None = None

    # ------------------------------------------------------------------ compute
    @nn.compact
    def __call__(self, x, start: str | None = None, stop: str | None = None,
                 perturb: Mapping[str, Any] | None = None,
                 capture: tuple[str, ...] | None = None):
        sources = self.sources
        i1 = len(self.layers) - 1 if stop is None else self.layer_index(stop)
        need = _ancestors(sources, i1)
        x = x.astype(self.dtype)
        if start is None:
            values = {-1: x}
        else:  # a cut node (checked by forward): the layers between it and stop
            i0 = self.layer_index(start)
            need = need - _ancestors(sources, i0)
            values = {i0: x}
        captured = {}
        for i in sorted(need):
            spec = self.layers[i]
            y = apply_layer(self, spec, tuple(values[j] for j in sources[i]))
            if perturb and spec.name in perturb:
                y = y + jnp.asarray(perturb[spec.name]).astype(y.dtype)
            if capture and spec.name in capture:
                captured[spec.name] = y
            values[i] = y
        out = values[i1]
        return out if capture is None else (out, captured)

    # ----------------------------------------------------------- pure helpers
    def forward(self, params: Params, x, *, start: str | None = None,
                stop: str | None = None):
        """Run the layers strictly after ``start`` up to and including ``stop``.

        Args:
          params: ``{layer_name: {...}}`` as returned by the loaders.
          x: the input of the layer after ``start`` -- for ``start=None`` the
            model input in its pixel domain (VGG16: caffe BGR, see
            :func:`~jaxconvviz.preprocess_input`), shape ``(n, h, w, c)``;
            otherwise the activation of ``start``.
          start: layer name or ``None`` (the input).
          stop: layer name or ``None`` (the last layer).

        Returns:
          The activation of ``stop`` with that layer's own activation applied
          (``predictions`` gives probabilities); :meth:`logits` gives the
          pre-softmax class scores.
        """
        if start is not None:
            self.check_layer(start, self.layer_names, name="start")
        if stop is not None:
            self.check_layer(stop, self.layer_names, name="stop")
        if start is not None:
            self._check_cut(start, stop)
        return self.apply({"params": params}, x, start=start, stop=stop)

    def _check_cut(self, start: str, stop: str | None) -> None:
        """``forward(start=)`` needs every path from the input to ``stop`` to
        pass through ``start`` (always true in a chain when start < stop)."""
        sources = self.sources
        i0 = self.layer_index(start)
        i1 = len(self.layers) - 1 if stop is None else self.layer_index(stop)
        stop_name = self.layers[i1].name
        if i0 >= i1 or i0 not in _ancestors(sources, i1):
            raise InputError(
                f"start must come before stop; got start={start!r} "
                f"(layer {i0}) and stop={stop_name!r} (layer {i1})"
                + ("." if i0 >= i1 else f"; {stop_name!r} does not depend on "
                   f"{start!r}."))
        if i1 in _bypasses(sources, i0):
            raise InputError(
                f"start={start!r} is not a cut of the graph: {stop_name!r} also "
                f"depends on the input through a path that avoids {start!r} (a "
                "skip connection), so forward(start=...) cannot resume from "
                "its activation; use forward_with(params, x, capture=..., "
                "perturb=...) to read or differentiate at that layer.")

    def forward_with(self, params: Params, x, *, capture: tuple[str, ...] = (),
                     perturb: Mapping[str, Any] | None = None,
                     stop: str | None = None, logits: bool = False):
        """One forward pass that also returns inner activations and can shift them.

        The graph-safe way to reach inside a network (no split into two
        models): ``perturb[name]`` is added to layer ``name``'s output before
        the layers after it see it, so ``jax.grad`` with respect to a zero
        perturbation is the gradient of the output with respect to that
        layer's activation (Grad-CAM and the CAM family use this).

        Args:
          params: ``{layer_name: {...}}`` weights.
          x: ``(n, h, w, c)`` model input, in the model's pixel domain.
          capture: layer names whose outputs (after the perturbation) are
            returned.
          perturb: ``{layer_name: array}`` added to those layers' outputs
            (broadcastable to them).
          stop: last layer to run (None: the whole model). Layers after it
            are never computed.
          logits: drop the last layer's own activation (softmax, sigmoid):
            the output is then the class logits.

        Returns:
          ``(out, captured)``: the output of ``stop`` (or of the model) and
          ``{name: activation}`` for each name in ``capture``.
        """
        perturb = dict(perturb or {})
        capture = tuple(capture)
        for name in capture + tuple(perturb) + ((stop,) if stop else ()):
            self.check_layer(name, self.layer_names)
        model = self
        if logits:
            if stop is None:
                stop, strip = self._logits_node
            else:
                strip = True
            if strip:
                model = self.without_activation(stop)
        i1 = len(self.layers) - 1 if stop is None else self.layer_index(stop)
        need = _ancestors(self.sources, i1)
        late = [n_ for n_ in capture + tuple(perturb)
                if self.layer_index(n_) not in need]
        if late:
            raise InputError(
                f"capture/perturb layers {late} are not computed on the way to "
                f"stop={self.layers[i1].name!r} (they are not among its "
                "ancestors); pass a later stop, or stop=None.")
        return model.apply({"params": params}, x, stop=stop, perturb=perturb,
                           capture=capture)

    @property
    def default_layer(self) -> str:
        """The default target layer of the attribution and view techniques:
        the last layer whose output is spatial ``(H, W, C)`` and that is not a
        pooling layer (``block5_conv3`` for VGG16, the book's choice).
        Identity nodes (a nested model's output, Keras ``Identity``) are
        passed over for the layer that computes the same tensor
        (``out_relu`` for a transfer-learning model around MobileNetV2)."""
        flags = self._spatial_flags
        cands = _memoized(self.layers, ("default", self.input_name), lambda: [
            s.name for s, f in zip(self.layers, flags, strict=True)
            if f and s.kind not in ("maxpool", "avgpool", "identity")])
        if not cands:
            raise InputError(
                f"model {self.name_!r} has no spatial non-pooling layer to target; "
                f"its layers are {', '.join(self.layer_names)}.")
        return cands[-1]

    def channel_forward(self, params: Params, x, layer: str, channels):
        """Channel ``channels[i]`` of conv ``layer`` for image ``i``, and no other.

        The same values as ``forward(params, x, stop=layer)[i, :, :,
        channels[i]]`` up to float summation order, at a fraction of the
        cost: the layers before ``layer`` run in full, ``layer`` itself only
        for the kernel column (and bias) of each image's channel, so its
        forward and input gradient cost ``1 / c_out`` of the full layer's.
        A filter objective (:func:`~jaxconvviz.filter_patterns`) needs
        nothing else: VGG16's block1_conv2 at 64 px is 17x fewer
        multiply-adds, block3_conv1 1.2x.

        Each image's convolution is its own call (``n <= 16``, the XLA:CPU
        chunk sizes) or one grouped convolution (``n > 16``); an image's
        result does not depend on the others in the batch.

        Args:
          params: ``{layer_name: {...}}`` weights.
          x: ``(n, h, w, c)`` model input (the model's pixel domain).
          layer: a conv layer of this model.
          channels: int ``(n,)``, an output channel of ``layer`` per image.

        Returns:
          ``(n, h', w')`` in ``self.dtype``: the channel after ``layer``'s
          own activation (use :meth:`without_activation` for the response
          before it).
        """
        i = self.layer_index(layer)
        spec = self.layers[i]
        if spec.kind != "conv":
            raise InputError(
                f"layer must be a conv layer ({', '.join(self.conv_layers)}); got "
                f"{layer!r} ({spec.kind}).")
        (src,) = self.sources[i]
        if src >= 0:
            x = self.forward(params, x, stop=self.layers[src].name)
        o = spec.opt
        x = x.astype(self.dtype)
        channels = jnp.asarray(channels)
        cols = jnp.take(params[spec.name]["kernel"], channels, axis=-1
                        ).astype(self.dtype)  # (kh, kw, c_in / groups, n)
        groups = int(o("groups", 1))
        if groups > 1:  # each image sees the input channels of its group only
            c_in = cols.shape[2]
            first = channels // (int(o("features")) // groups) * c_in
            x = jax.vmap(lambda xi, f: jax.lax.dynamic_slice_in_dim(
                xi, f, c_in, axis=-1))(x, first)
        strides, padding, dilation = _conv_geometry(spec)
        conv = functools.partial(
            jax.lax.conv_general_dilated, window_strides=strides, padding=padding,
            rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        n = x.shape[0]
        if n <= _CHANNEL_UNROLL:
            # one call per image: XLA:CPU runs these several times faster
            # than the grouped form below (docs/design-notes.md)
            y = jnp.concatenate([conv(x[j:j + 1], cols[..., j:j + 1])
                                 for j in range(n)], axis=0)[..., 0]
        else:  # image j is feature group j
            _, h, w, c = x.shape
            lhs = x.transpose(1, 2, 0, 3).reshape(1, h, w, n * c)
            y = conv(lhs, cols, feature_group_count=n)[0].transpose(2, 0, 1)
        if o("use_bias", True):
            bias = jnp.take(params[spec.name]["bias"], channels).astype(self.dtype)
            y = y + bias[:, None, None]
        return ACTIVATIONS[o("activation", "linear")](y)

    @property
    def _logits_node(self) -> tuple[str, bool]:
        """``(layer, strip)``: the layer whose output (its own activation
        removed when ``strip``) is the class logits. A final Dense; or, for a
        final ``Activation`` (softmax, sigmoid, linear) as Keras applications
        end, the layer feeding it."""
        last = self.layers[-1]
        if (last.kind == "activation"
                and last.opt("activation", "linear") in _HEAD_ACTIVATIONS):
            (src,) = self.sources[-1]
            if src >= 0:
                return self.layers[src].name, False
        return last.name, True

    def logits(self, params: Params, x, *, start: str | None = None):
        """Pre-activation scores of the last layer (the class logits).

        The final layer's own activation (softmax, sigmoid) is not applied:
        Grad-CAM and class objectives differentiate this, as the paper does.
        A model ending in a Dense layer and a separate ``Activation``
        (softmax/sigmoid/linear) gives the Dense layer's output.
        """
        name, strip = self._logits_node
        if not self.has_top:
            return self.forward(params, x, start=start)
        model = self.without_activation(name) if strip else self
        return model.forward(params, x, start=start, stop=name)

    def without_activation(self, layer: str) -> ConvNet:
        """This model with ``layer``'s own activation (ReLU, softmax...) removed.

        Its output is then the pre-activation: the class logits for the last
        layer, or a conv's pre-ReLU response for filter objectives.
        """
        i = self.layer_index(layer)
        spec = self.layers[i]
        if spec.opt("activation") is None:
            return self
        linear = Layer.make(spec.name, spec.kind, inputs=spec.inputs,
                            **{**dict(spec.options), "activation": "linear"})
        return self.with_layers(self.layers[:i] + (linear,) + self.layers[i + 1:])

    def with_layers(self, layers: tuple[Layer, ...]) -> ConvNet:
        return self.clone(layers=tuple(layers), parent=None)

    def with_dtype(self, dtype) -> ConvNet:
        return self.clone(dtype=dtype, parent=None)

    def with_conv_impl(self, conv_impl: str) -> ConvNet:
        """This model with convs computed by ``conv_impl`` (``"auto"`` resolved
        for the default backend and this model's dtype; see
        :func:`jaxconvviz.models.convs.resolve_conv_impl`)."""
        impl = convs.resolve_conv_impl(conv_impl, self.dtype)
        return self if impl == self.conv_impl else self.clone(conv_impl=impl,
                                                              parent=None)

    def preprocess(self, images_rgb: ImagesRGB):
        """Map RGB [0, 255] images to this model's input domain
        (:func:`~jaxconvviz.models.preprocess.preprocess_mode`)."""
        return preprocess_mode(images_rgb, self.preprocessing)

    # ------------------------------------------------------------- metadata
    @property
    def sources(self) -> tuple[tuple[int, ...], ...]:
        """Per layer, the indices of the layers it reads (-1: the model input).

        Raises ValueError for an invalid topology (unknown or later input
        names, wrong arity, layers that do not feed the last one)."""
        return _memoized(self.layers, ("sources", self.input_name),
                         lambda: _graph(self.layers, self.input_name))

    @property
    def is_chain(self) -> bool:
        """Every layer reads only the layer before it."""
        return all(src == (i - 1,) for i, src in enumerate(self.sources))

    @property
    def layer_names(self) -> tuple[str, ...]:
        return _memoized(self.layers, "names",
                         lambda: tuple(s.name for s in self.layers))

    @property
    def param_layers(self) -> tuple[str, ...]:
        """The layers that have params (kernels, biases, BN statistics...)."""
        return _memoized(self.layers, "param_layers", lambda: tuple(
            s.name for s in self.layers if s.has_params))

    @property
    def conv_layers(self) -> tuple[str, ...]:
        """The ``Conv2D`` layers (kind ``"conv"``; grouped ones included)."""
        return tuple(s.name for s in self.layers if s.kind == "conv")

    @property
    def filter_layers(self) -> tuple[str, ...]:
        """Every convolving layer: conv, depthwise and separable convs."""
        return tuple(s.name for s in self.layers if s.kind in CONV_KINDS)

    @property
    def spatial_layers(self) -> tuple[str, ...]:
        """Layers whose output is a ``(h, w, c)`` feature map over the input's
        pixels (see :func:`jaxconvviz.models.shapes.spatial_nodes`)."""
        flags = self._spatial_flags
        return _memoized(self.layers, ("spatial", self.input_name), lambda: tuple(
            s.name for s, f in zip(self.layers, flags, strict=True) if f))

    @property
    def has_top(self) -> bool:
        """The model ends in a classifier: a Dense layer (with or without its
        own activation), or one followed by an ``Activation`` (softmax,
        sigmoid, linear), whose output is a vector per image."""
        if not self.layers:
            return False
        return _memoized(self.layers, ("has_top", self.input_name, self.input_shape),
                         self._has_top)

    def _has_top(self) -> bool:
        name, _ = self._logits_node
        i = self.layer_index(name)
        kind = self.layers[i].kind
        if not (kind == "dense" or (self.layers[-1].kind == "activation"
                                    and kind in ("flatten", "reshape"))):
            return False
        return name not in self.spatial_layers and len(
            self.output_shape(name, self._probe_hw)) == 1

    @property
    def num_outputs(self) -> int:
        """Classes (units) of the classifier top; 0 without one."""
        if not self.has_top:
            return 0
        return int(self.output_shape(self._logits_node[0], self._probe_hw)[-1])

    def layer_index(self, layer: str) -> int:
        index = _memoized(self.layers, "index", lambda: {
            s.name: i for i, s in enumerate(self.layers)})
        i = index.get(layer) if isinstance(layer, str) else None
        if i is None:
            self.check_layer(layer, self.layer_names)  # raises, listing them
        return i

    def layer(self, layer: str) -> Layer:
        return self.layers[self.layer_index(layer)]

    @staticmethod
    def check_layer(layer: str, allowed: tuple[str, ...], *, name: str = "layer"
                    ) -> str:
        """Return ``layer`` if it is in ``allowed``, else a ValueError listing
        them (the first 60 of a long list) and suggesting the nearest name."""
        if not isinstance(layer, str) or layer not in allowed:
            import difflib

            shown = ", ".join(allowed[:60])
            if len(allowed) > 60:
                shown += f", ... ({len(allowed)} in all)"
            near = (difflib.get_close_matches(layer, allowed, n=1)
                    if isinstance(layer, str) else [])
            hint = f"; did you mean {near[0]!r}?" if near else "."
            raise InputError(f"{name} must be one of {shown}; got {layer!r}{hint}")
        return layer

    def output_shape(self, layer: str, hw: tuple[int, int]) -> tuple[int, ...]:
        """Shape of one image's activation at ``layer`` for an ``(h, w)`` input.

        Spatial layers give ``(h', w', c)``; ``h'`` or ``w'`` below 1 means the
        input is too small for that layer. Computed analytically (no tracing,
        :mod:`jaxconvviz.models.shapes`), over ``layer``'s ancestors only.
        """
        i = self.layer_index(layer)
        h, w = hw
        sources, c = self.sources, self.input_shape[2]
        return _memoized(
            self.layers, ("shape", self.input_name, c, h, w, i),
            lambda: node_shapes(self.layers, sources, (h, w, c),
                                _ancestors(sources, i))[i])

    @property
    def _probe_hw(self) -> tuple[int, int]:
        h, w, _ = self.input_shape
        return (h or 1024, w or 1024)

    def channels(self, layer: str) -> int:
        """Number of channels (or units) of ``layer``'s output."""
        return int(self.output_shape(layer, self._probe_hw)[-1])

    def _fits(self, layer: str, n: int) -> bool:
        i = self.layer_index(layer)
        try:
            shapes = node_shapes(self.layers, self.sources,
                                 (n, n, self.input_shape[2]),
                                 _ancestors(self.sources, i))
        except ValueError:  # mismatched merges: some branch is already empty
            return False
        return all(len(s) != 3 or (s[0] >= 1 and s[1] >= 1)
                   for j, s in shapes.items() if self._spatial_flags[j])

    @property
    def _spatial_flags(self) -> tuple[bool, ...]:
        sources = self.sources
        return _memoized(self.layers, ("spatial_flags", self.input_name),
                         lambda: spatial_nodes(self.layers, sources))

    def min_input_size(self, layer: str) -> int:
        """Smallest square input side for which ``layer`` and every spatial
        layer before it have outputs of at least 1x1."""
        lo, hi = 1, 4096
        if not self._fits(layer, hi):
            raise InputError(f"layer {layer!r} needs an input larger than 4096 px.")
        while lo < hi:  # spatial sizes grow with the input: bisect
            mid = (lo + hi) // 2
            if self._fits(layer, mid):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def init_params(self, key, *, hw: tuple[int, int] | None = None) -> Params:
        """Random params (Flax default initialisers) for tests and training."""
        h, w, c = self.input_shape
        if hw is not None:
            h, w = hw
        if h is None or w is None:
            side = max(32, self.min_input_size(self.layers[-1].name))
            h, w = h or side, w or side
        x = jnp.zeros((1, h, w, c), jnp.float32)
        # jitted: op-by-op init of even a tiny net costs seconds on a busy CPU
        return jax.jit(self.init)(key, x)["params"]

    def param_shapes(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """``{layer: {param: shape}}`` as :meth:`init_params` creates them,
        computed analytically (no tracing; Keras layouts)."""
        h, w, c = self.input_shape
        if h is None or w is None:
            side = max(32, self.min_input_size(self.layers[-1].name))
            h, w = h or side, w or side
        sources = self.sources
        shapes = node_shapes(self.layers, sources, (h, w, c),
                             range(len(self.layers)))
        shapes[-1] = (h, w, c)
        out = {}
        for i, spec in enumerate(self.layers):
            ps = _param_shapes(spec, shapes[sources[i][0]])
            if ps:
                out[spec.name] = ps
        return out

    def check_params(self, params: Params, *, source: str = "params") -> None:
        """Raise ValueError unless every parameterised layer has matching shapes."""
        expected = self.param_shapes()
        for lname, leaves in expected.items():
            if lname not in params:
                raise InputError(
                    f"{source}: layer {lname!r} is missing; found layers "
                    f"{sorted(params)}."
                )
            # kernel first: its shape says more than the bias's
            for pname, spec in sorted(leaves.items(),
                                      key=lambda kv: kv[0] != "kernel"):
                found = params[lname].get(pname)
                if found is None:
                    raise InputError(
                        f"{source}: layer {lname!r} has no {pname!r}; found "
                        f"{sorted(params[lname])}."
                    )
                if tuple(found.shape) != tuple(spec):
                    raise InputError(
                        f"{source}: layer {lname!r} {pname} has shape "
                        f"{tuple(found.shape)}; expected {tuple(spec)}."
                    )


# ----------------------------------------------------------------- VGG16
VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_DEPTHS = (2, 2, 3, 3, 3)
TINY_WIDTHS = (4, 4, 8, 8, 8)


@functools.lru_cache(maxsize=64)
def _vgg_layers(widths, depths, include_top, fc_width, num_classes):
    # cached: the same tuple object for the same preset, so the VGG16 that
    # jcv.cam(params, x) infers from params at every call hits _memo
    layers: list[Layer] = []
    for b, (width, depth) in enumerate(zip(widths, depths, strict=True), start=1):
        for i in range(1, depth + 1):
            layers.append(Layer.make(f"block{b}_conv{i}", "conv", features=int(width),
                                     kernel_size=3, padding="same",
                                     activation="relu"))
        layers.append(Layer.make(f"block{b}_pool", "maxpool", pool_size=2,
                                 strides=2, padding="valid"))
    if include_top:
        layers += [
            Layer.make("flatten", "flatten"),
            Layer.make("fc1", "dense", features=int(fc_width), activation="relu"),
            Layer.make("fc2", "dense", features=int(fc_width), activation="relu"),
            Layer.make("predictions", "dense", features=int(num_classes),
                       activation="softmax"),
        ]
    return tuple(layers)


def VGG16(  # noqa: N802 -- named as keras.applications.VGG16
    include_top: bool = True,
    *,
    block_widths: tuple[int, ...] = VGG16_WIDTHS,
    block_depths: tuple[int, ...] = VGG16_DEPTHS,
    fc_width: int = 4096,
    num_classes: int = 1000,
    input_size: int = 224,
    dtype: Any = jnp.float32,
) -> ConvNet:
    """Keras' VGG16 as a :class:`ConvNet`, layer names and layouts identical.

    13 ``same`` 3x3 ReLU convs in five blocks (64, 128, 256, 512, 512 wide),
    each block ending in a 2x2/2 max pool; with ``include_top`` also
    ``flatten``, ``fc1``/``fc2`` (4096, ReLU) and ``predictions`` (1000,
    softmax). Input: caffe BGR (see :func:`~jaxconvviz.preprocess_input`),
    224x224 with the top, any size >= 32 without.

    The keyword arguments build smaller presets of the same class (see
    :func:`tiny_vgg16`) with the same layer names.
    """
    if len(block_widths) != 5 or len(block_depths) != 5:
        raise InputError(
            f"block_widths and block_depths must have 5 entries; got "
            f"{block_widths!r} and {block_depths!r}."
        )
    return ConvNet(
        layers=_vgg_layers(tuple(map(int, block_widths)),
                           tuple(map(int, block_depths)), bool(include_top),
                           int(fc_width), int(num_classes)),
        input_shape=(input_size, input_size, 3) if include_top else (None, None, 3),
        preprocessing="caffe",
        dtype=dtype,
        name_="vgg16",
    )


def tiny_vgg16(include_top: bool = True, *, num_classes: int = 1000,
               dtype: Any = jnp.float32) -> ConvNet:
    """A tiny preset of VGG16 for fast tests: same 22 layer names, widths
    (4, 4, 8, 8, 8), ``fc_width=16``, 32x32 input with the top."""
    return VGG16(include_top, block_widths=TINY_WIDTHS, fc_width=16,
                 num_classes=num_classes, input_size=32, dtype=dtype)


_FULL = VGG16(include_top=True)
#: Keras VGG16 layer names in order (22 with the top).
LAYER_NAMES: tuple[str, ...] = _FULL.layer_names
#: The 13 conv layer names in order.
CONV_LAYERS: tuple[str, ...] = _FULL.conv_layers


def vgg_from_params(params: Params, *, dtype: Any = jnp.float32) -> ConvNet:
    """Infer the VGG16 preset (full or tiny, with or without top) from params."""
    if not isinstance(params, Mapping) or "block1_conv1" not in params:
        keys = sorted(params)[:8] if isinstance(params, Mapping) else type(params)
        raise InputError(
            "params do not look like VGG16 params (no 'block1_conv1'); pass "
            f"model= for other networks (e.g. from jcv.load_keras_model). Got "
            f"keys {keys}."
        )
    try:
        widths = tuple(int(params[f"block{b}_conv1"]["kernel"].shape[-1])
                       for b in range(1, 6))
        depths = tuple(
            sum(1 for k in params if re.fullmatch(rf"block{b}_conv\d+", k))
            for b in range(1, 6)
        )
    except KeyError as e:
        raise InputError(f"VGG16 params are missing layer {e.args[0]!r}.") from None
    include_top = "predictions" in params
    if include_top:
        fc_in, fc_width = params["fc1"]["kernel"].shape
        num_classes = int(params["predictions"]["kernel"].shape[-1])
        side = math.isqrt(int(fc_in) // widths[-1])
        input_size = side * 32
    else:
        fc_width, num_classes, input_size = 4096, 1000, 224
    return VGG16(include_top, block_widths=widths, block_depths=depths,
                 fc_width=int(fc_width), num_classes=num_classes,
                 input_size=input_size, dtype=dtype)


def resolve_model(params: Params, *, model: ConvNet | None = None) -> ConvNet:
    """``model`` if given, else the VGG16 preset the params belong to."""
    if model is None:
        return vgg_from_params(params)
    if not isinstance(model, ConvNet):
        raise InputTypeError(
            f"model must be a jaxconvviz ConvNet (from jcv.VGG16 or "
            f"jcv.load_keras_model); got {type(model).__name__}."
        )
    return model


def forward(params: Params, x, *, start: str | None = None, stop: str | None = None,
            model: ConvNet | None = None):
    """Pure forward pass of VGG16 (or ``model``) from ``start`` to ``stop``.

    Args:
      params: ``{layer_name: {"kernel", "bias"}}``.
      x: caffe-BGR images ``(n, h, w, 3)`` when ``start`` is None (see
        :func:`~jaxconvviz.preprocess_input`), else the activation of ``start``.
      start: run the layers strictly after this one (None: from the input).
      stop: up to and including this one (None: to the last layer).
      model: the network; None infers the VGG16 preset from ``params``.

    Returns:
      The activation of ``stop``: ``(n, h', w', c)`` for spatial layers,
      ``(n, units)`` after ``flatten``; ``predictions`` gives probabilities.
    """
    return resolve_model(params, model=model).forward(params, x, start=start, stop=stop)


__all__ = [
    "Layer",
    "ConvNet",
    "LAYER_KINDS",
    "MERGE_KINDS",
    "PREPROCESSING",
    "VGG16",
    "tiny_vgg16",
    "LAYER_NAMES",
    "CONV_LAYERS",
    "forward",
    "resolve_model",
    "vgg_from_params",
]
