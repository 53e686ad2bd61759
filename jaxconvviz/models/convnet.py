"""Layered convnets in Flax linen, named as Keras names them, with a split forward.

One module class, :class:`ConvNet`, runs a static tuple of :class:`Layer`
specs in topological order: a chain, or a graph (ResNet, MobileNet, ...)
when layers name their ``inputs``. Per-kind computations live in
:mod:`jaxconvviz.models.layers` (a dispatch table), analytic shapes in
:mod:`jaxconvviz.models.shapes`, the graph (:class:`Layer`, topology) in
:mod:`jaxconvviz.models.graph`, the algorithms in :mod:`jaxconvviz.backend`
(chosen by the model's one :class:`~jaxconvviz.backend.Backend` field).
VGG16 is a preset of it (:mod:`jaxconvviz.models.vgg`), and Keras models
imported by :mod:`jaxconvviz.models.keras_import` are too, so every
technique works on both through the same contract:

``model.forward(params, x, start=None, stop=None)`` runs the layers strictly
after ``start`` up to and including ``stop`` -- the notes' two-model split
(``last_conv_layer_model`` + ``classifier_model``) as a pure function, no hooks;
in a graph ``start`` must be a cut node. ``model.forward_with(params, x,
capture=, perturb=)`` reads and differentiates any node in one pass.

Layouts match Keras so weight files load without transposes: NHWC images,
HWIO conv kernels, ``(in, out)`` dense kernels, NHWC flatten order.

``params`` is the inner dict ``{layer_name: {"kernel": ..., "bias": ...}}``;
BatchNormalization layers keep ``gamma``/``beta``/``moving_mean``/
``moving_variance`` in the same dict (inference only). Imports jax and flax.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxconvviz._types import ImagesRGB, Params
from jaxconvviz.backend.config import Backend
from jaxconvviz.errors import InputError
from jaxconvviz.models.graph import Layer, ancestors, bypasses, graph_sources, memoized
from jaxconvviz.models.layers import (
    ACTIVATIONS,
    CONV_KINDS,
    LAYER_KINDS,
    MERGE_KINDS,
    apply_layer,
    max_pool_tiled,  # noqa: F401 -- re-exported (moved to layers.py)
)
from jaxconvviz.models.layers import conv_geometry as _conv_geometry
from jaxconvviz.models.preprocess import PREPROCESS_MODES, preprocess_mode
from jaxconvviz.models.shapes import node_shapes, spatial_nodes
from jaxconvviz.models.shapes import param_shapes as _param_shapes

#: Pixel domains a model's input may expect (see :meth:`ConvNet.preprocess`).
PREPROCESSING = PREPROCESS_MODES


#: Final activations that mark a classifier head (the logits are their input).
_HEAD_ACTIVATIONS = ("softmax", "sigmoid", "linear")

#: :meth:`ConvNet.channel_forward` convolves up to this many images one by
#: one; larger batches as one grouped convolution.
_CHANNEL_UNROLL = 16


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
      input_name: the name layers use in ``Layer.inputs`` for the image input
        (the Keras InputLayer's name for imported models).
      backend: how the layers are computed, a :class:`~jaxconvviz.backend.
        Backend` of value-neutral algorithm choices (convolution form, 3x3
        Winograd, depthwise, pointwise, custom VJPs); every field
        ``"auto"`` by default. Fields set here win over the process default
        (``with jcv.backend(...)``), which wins over ``"auto"``'s rule for
        the platform; the library's entry points bind all three before
        tracing (:func:`jaxconvviz.backend.bind`), while this model's own
        :meth:`forward` (under your ``jax.jit``/``jax.grad``) reads only
        this field and resolves ``"auto"`` for user programs.
    """

    layers: tuple[Layer, ...]
    input_shape: tuple[int | None, int | None, int] = (None, None, 3)
    preprocessing: str = "caffe"
    dtype: Any = jnp.float32
    name_: str = "convnet"
    input_name: str = "input"
    backend: Backend = Backend()

    def __post_init__(self):
        if not isinstance(self.backend, Backend):
            raise InputError(f"backend must be a jaxconvviz Backend; got "
                             f"{type(self.backend).__name__}.")
        super().__post_init__()

    # ------------------------------------------------------------------ compute
    @nn.compact
    def __call__(self, x, start: str | None = None, stop: str | None = None,
                 perturb: Mapping[str, Any] | None = None,
                 capture: tuple[str, ...] | None = None):
        sources = self.sources
        i1 = len(self.layers) - 1 if stop is None else self.layer_index(stop)
        need = ancestors(sources, i1)
        x = x.astype(self.dtype)
        if start is None:
            values = {-1: x}
        else:  # a cut node (checked by forward): the layers between it and stop
            i0 = self.layer_index(start)
            need = need - ancestors(sources, i0)
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
        if i0 >= i1 or i0 not in ancestors(sources, i1):
            raise InputError(
                f"start must come before stop; got start={start!r} "
                f"(layer {i0}) and stop={stop_name!r} (layer {i1})"
                + ("." if i0 >= i1 else f"; {stop_name!r} does not depend on "
                   f"{start!r}."))
        if i1 in bypasses(sources, i0):
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
        need = ancestors(self.sources, i1)
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
        cands = memoized(self.layers, ("default", self.input_name), lambda: [
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
        nothing else.

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

    def with_backend(self, backend: Backend | None = None, **fields) -> ConvNet:
        """This model with ``backend`` (a whole :class:`~jaxconvviz.backend.
        Backend`) and/or these backend fields set, e.g.
        ``model.with_backend(conv3x3="winograd")``; ``"auto"`` unsets a
        field. An unknown field or value is an InputError."""
        b = self.backend if backend is None else backend
        unknown = sorted(set(fields) - set(Backend.__dataclass_fields__))
        if unknown:
            raise InputError(f"with_backend got unknown Backend fields {unknown}; "
                             f"known: {', '.join(Backend.__dataclass_fields__)}.")
        b = b.replace(**fields) if fields else b
        return self if b == self.backend else self.clone(backend=b, parent=None)

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
        return memoized(self.layers, ("sources", self.input_name),
                         lambda: graph_sources(self.layers, self.input_name))

    @property
    def is_chain(self) -> bool:
        """Every layer reads only the layer before it."""
        return all(src == (i - 1,) for i, src in enumerate(self.sources))

    @property
    def layer_names(self) -> tuple[str, ...]:
        return memoized(self.layers, "names",
                         lambda: tuple(s.name for s in self.layers))

    @property
    def param_layers(self) -> tuple[str, ...]:
        """The layers that have params (kernels, biases, BN statistics...)."""
        return memoized(self.layers, "param_layers", lambda: tuple(
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
        return memoized(self.layers, ("spatial", self.input_name), lambda: tuple(
            s.name for s, f in zip(self.layers, flags, strict=True) if f))

    @property
    def has_top(self) -> bool:
        """The model ends in a classifier: a Dense layer (with or without its
        own activation), or one followed by an ``Activation`` (softmax,
        sigmoid, linear), whose output is a vector per image."""
        if not self.layers:
            return False
        return memoized(self.layers, ("has_top", self.input_name, self.input_shape),
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
        index = memoized(self.layers, "index", lambda: {
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
        return memoized(
            self.layers, ("shape", self.input_name, c, h, w, i),
            lambda: node_shapes(self.layers, sources, (h, w, c),
                                ancestors(sources, i))[i])

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
                                 ancestors(self.sources, i))
        except ValueError:  # mismatched merges: some branch is already empty
            return False
        return all(len(s) != 3 or (s[0] >= 1 and s[1] >= 1)
                   for j, s in shapes.items() if self._spatial_flags[j])

    @property
    def _spatial_flags(self) -> tuple[bool, ...]:
        sources = self.sources
        return memoized(self.layers, ("spatial_flags", self.input_name),
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


__all__ = ["ConvNet", "Layer", "LAYER_KINDS", "MERGE_KINDS", "PREPROCESSING"]
