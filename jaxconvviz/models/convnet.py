"""Layered convnets in Flax linen, named as Keras names them, with a split forward.

One module class, :class:`ConvNet`, runs a static tuple of :class:`Layer`
specs in order. VGG16 is a preset of it (:func:`VGG16`, :func:`tiny_vgg16`),
and Keras models imported by :mod:`jaxconvviz.models.keras_import` are too, so every
technique works on both through the same contract:

``model.forward(params, x, start=None, stop=None)`` runs the layers strictly
after ``start`` up to and including ``stop`` -- the notes' two-model split
(``last_conv_layer_model`` + ``classifier_model``) as a pure function, no hooks.

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
from jaxconvviz.models.preprocess import preprocess_input

#: Layer kinds a :class:`Layer` may have, and the Keras classes they come from.
LAYER_KINDS = (
    "conv",  # Conv2D
    "dense",  # Dense
    "maxpool",  # MaxPooling2D
    "avgpool",  # AveragePooling2D
    "gap",  # GlobalAveragePooling2D
    "gmp",  # GlobalMaxPooling2D
    "flatten",  # Flatten
    "dropout",  # Dropout (identity at inference)
    "batchnorm",  # BatchNormalization (inference)
    "activation",  # Activation / ReLU
    "rescaling",  # Rescaling
)

ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "swish": jax.nn.silu,
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.2),
    "relu6": jax.nn.relu6,
}

#: Pixel domains a model's input may expect (see :meth:`ConvNet.preprocess`).
PREPROCESSING = ("caffe", "scale01", "none")


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer: Keras name, kind (one of :data:`LAYER_KINDS`), static options.

    ``options`` is a sorted tuple of ``(key, value)`` pairs so the spec is
    hashable and a whole model can be a static ``jit`` argument.
    """

    name: str
    kind: str
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def make(cls, name: str, kind: str, **options: Any) -> Layer:
        if kind not in LAYER_KINDS:
            raise InputError(f"kind must be one of {LAYER_KINDS}; got {kind!r}.")
        act = options.get("activation")
        if act is not None and act not in ACTIVATIONS:
            raise InputError(
                f"layer {name!r}: activation must be one of "
                f"{sorted(ACTIVATIONS)}; got {act!r}."
            )
        return cls(name, kind, tuple(sorted(options.items())))

    def opt(self, key: str, default: Any = None) -> Any:
        for k, v in self.options:
            if k == key:
                return v
        return default

    @property
    def has_params(self) -> bool:
        return self.kind in ("conv", "dense", "batchnorm")

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of this layer's params in Keras weight order (file order)."""
        if self.kind in ("conv", "dense"):
            return ("kernel", "bias") if self.opt("use_bias", True) else ("kernel",)
        if self.kind == "batchnorm":
            return ((("gamma",) if self.opt("scale", True) else ())
                    + (("beta",) if self.opt("center", True) else ())
                    + ("moving_mean", "moving_variance"))
        return ()


#: :meth:`ConvNet.channel_forward` convolves up to this many images one by
#: one; larger batches as one grouped convolution.
_CHANNEL_UNROLL = 16


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(a) for a in v)


def _conv_geometry(spec: Layer) -> tuple[tuple[int, int], str, tuple[int, int]]:
    """``(strides, padding, dilation)`` of a conv layer as ``lax`` takes them
    (one reading for :meth:`ConvNet._apply_layer` and
    :meth:`ConvNet.channel_forward`)."""
    o = spec.opt
    return (_pair(o("strides", 1)), o("padding", "same").upper(),
            _pair(o("dilation", 1)))


def _tiles(x, k: tuple[int, int]):
    *b, h, w, c = x.shape
    x = x[..., : h // k[0] * k[0], : w // k[1] * k[1], :]
    return x.reshape(*b, h // k[0], k[0], w // k[1], k[1], c)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def max_pool_tiled(x, k: tuple[int, int]):
    """Max pooling with window == strides ``k``, 'valid' padding, NHWC.

    The same values as ``flax.linen.max_pool`` (a reshape and a max) and the
    same derivatives: each window's derivative flows through its first
    maximum in row-major order, as XLA's select-and-scatter does, but as an
    elementwise mask that fuses (select-and-scatter took ~17% of a VGG16
    ascent step on an H100). ``x`` may have any leading batch dimensions.
    """
    return _tiles(x, k).max(axis=(-4, -2))


@max_pool_tiled.defjvp
def _max_pool_tiled_jvp(k, primals, tangents):
    (x,), (t,) = primals, tangents
    xt = _tiles(x, k)
    y = xt.max(axis=(-4, -2))
    eq = xt == y[..., :, None, :, None, :]
    e = eq.astype(jnp.int32)
    row = e.sum(axis=-2, keepdims=True)
    before = jnp.cumsum(row, axis=-4) - row  # maxima in earlier window rows
    first = eq & (before + jnp.cumsum(e, axis=-2) == 1)
    dt = jnp.where(first, _tiles(t, k), jnp.zeros((), t.dtype)).sum(axis=(-4, -2))
    return y, dt


def _conv_out(n: int, k: int, s: int, d: int, padding: str) -> int:
    if padding == "same":
        return math.ceil(n / s)
    return (n - (k - 1) * d - 1) // s + 1


class _BatchNorm(nn.Module):
    """Keras BatchNormalization at inference: ``(x - mean) / sqrt(var + eps)``."""

    features: int
    epsilon: float = 1e-3
    center: bool = True
    scale: bool = True

    @nn.compact
    def __call__(self, x):
        f = (self.features,)
        shape = (1,) * (x.ndim - 1) + f  # explicit rank (no rank promotion)

        def p(name, init):
            return self.param(name, init, f).astype(x.dtype).reshape(shape)

        mean = p("moving_mean", nn.initializers.zeros)
        var = p("moving_variance", nn.initializers.ones)
        y = (x - mean) * jax.lax.rsqrt(var + jnp.asarray(self.epsilon, x.dtype))
        if self.scale:
            y = y * p("gamma", nn.initializers.ones)
        if self.center:
            y = y + p("beta", nn.initializers.zeros)
        return y


class ConvNet(nn.Module):
    """A chain of Keras-named layers with a split forward pass.

    Attributes:
      layers: the layer specs, in order.
      input_shape: ``(h, w, c)`` the model was built for; ``h``/``w`` may be
        ``None`` for fully convolutional models.
      preprocessing: pixel domain of the model's input -- ``"caffe"`` (VGG16:
        :func:`~jaxconvviz.preprocess_input`), ``"scale01"`` (``x / 255``) or
        ``"none"`` (RGB [0, 255] fed as is). :meth:`preprocess` applies it.
      dtype: compute dtype of convs and dense layers (params stay float32);
        ``jnp.bfloat16`` halves memory traffic on accelerators.
      name_: display name.
      conv_impl: how conv layers are computed: ``"xla"``
        (``lax.conv_general_dilated``, the default) or ``"matmul"``
        (:func:`jaxconvviz.models.convs.conv_general_dilated`: the same values up to
        summation order, 1.2-1.7x faster bfloat16 ascent steps on XLA:CPU,
        reverse-mode derivatives only). Not ``"auto"``: a model is one
        program; the techniques resolve ``"auto"`` per backend.
    """

    layers: tuple[Layer, ...]
    input_shape: tuple[int | None, int | None, int] = (None, None, 3)
    preprocessing: str = "caffe"
    dtype: Any = jnp.float32
    name_: str = "convnet"
    conv_impl: str = "xla"

    # ------------------------------------------------------------------ compute
    @nn.compact
    def __call__(self, x, start: str | None = None, stop: str | None = None,
                 perturb: Mapping[str, Any] | None = None,
                 capture: tuple[str, ...] | None = None):
        i0 = 0 if start is None else self.layer_index(start) + 1
        i1 = len(self.layers) - 1 if stop is None else self.layer_index(stop)
        x = x.astype(self.dtype)
        captured = {}
        for spec in self.layers[i0 : i1 + 1]:
            x = self._apply_layer(spec, x)
            if perturb and spec.name in perturb:
                x = x + jnp.asarray(perturb[spec.name]).astype(x.dtype)
            if capture and spec.name in capture:
                captured[spec.name] = x
        return x if capture is None else (x, captured)

    def _apply_layer(self, spec: Layer, x):
        kind, o = spec.kind, spec.opt
        act = ACTIVATIONS[o("activation", "linear")]
        if kind == "conv":
            if self.conv_impl not in ("xla", "matmul"):
                raise InputError(f"conv_impl must be 'xla' or 'matmul'; got "
                                 f"{self.conv_impl!r} (use with_conv_impl).")
            strides, padding, dilation = _conv_geometry(spec)
            x = nn.Conv(
                o("features"),
                _pair(o("kernel_size", 3)),
                strides=strides,
                padding=padding,
                kernel_dilation=dilation,
                use_bias=o("use_bias", True),
                dtype=self.dtype,
                conv_general_dilated=(convs.conv_general_dilated
                                      if self.conv_impl == "matmul" else None),
                name=spec.name,
            )(x)
            return act(x)
        if kind == "dense":
            x = nn.Dense(
                o("features"), use_bias=o("use_bias", True), dtype=self.dtype,
                name=spec.name,
            )(x)
            return act(x)
        if kind in ("maxpool", "avgpool"):
            pool = nn.max_pool if kind == "maxpool" else nn.avg_pool
            window = _pair(o("pool_size", 2))
            if (kind == "maxpool" and _pair(o("strides", window)) == window
                    and o("padding", "valid") == "valid"):
                return max_pool_tiled(x, window)  # same values, faster gradient
            kw = {}
            if kind == "avgpool":
                # Keras excludes the zero padding from the average.
                kw["count_include_pad"] = False
            return pool(
                x, window, strides=_pair(o("strides", window)),
                padding=o("padding", "valid").upper(), **kw,
            )
        if kind == "gap":
            return x.mean(axis=(-3, -2))
        if kind == "gmp":
            return x.max(axis=(-3, -2))
        if kind == "flatten":
            # NHWC row-major flatten == Keras Flatten (channels_last).
            return x.reshape(x.shape[0], -1)
        if kind == "dropout":
            return x
        if kind == "batchnorm":
            return _BatchNorm(
                o("features"), epsilon=o("epsilon", 1e-3), center=o("center", True),
                scale=o("scale", True), name=spec.name,
            )(x)
        if kind == "activation":
            return act(x)
        if kind == "rescaling":
            # scale/offset: scalars or per-channel tuples (explicit broadcast)
            def bc(v):
                v = jnp.asarray(v, x.dtype)
                return v.reshape((1,) * (x.ndim - v.ndim) + v.shape) if v.ndim else v

            return x * bc(o("scale", 1.0)) + bc(o("offset", 0.0))
        raise InputError(f"unknown layer kind {kind!r}")  # unreachable: checked

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
        if start is not None and stop is not None:
            if self.layer_index(start) >= self.layer_index(stop):
                raise InputError(
                    f"start must come before stop; got start={start!r} "
                    f"(layer {self.layer_index(start)}) and stop={stop!r} "
                    f"(layer {self.layer_index(stop)})."
                )
        return self.apply({"params": params}, x, start=start, stop=stop)

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
        for name in tuple(capture) + tuple(perturb) + ((stop,) if stop else ()):
            self.check_layer(name, self.layer_names)
        model = self
        if logits:
            model = self.without_activation(stop or self.layers[-1].name)
        return model.apply({"params": params}, x, stop=stop, perturb=perturb,
                           capture=tuple(capture))

    @property
    def default_layer(self) -> str:
        """The default target layer of the attribution and view techniques:
        the last layer whose output is spatial ``(H, W, C)`` and that is not a
        pooling layer (``block5_conv3`` for VGG16, the book's choice)."""
        cands = [n_ for n_ in self.spatial_layers
                 if self.layer(n_).kind not in ("maxpool", "avgpool")]
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
        if i:
            x = self.forward(params, x, stop=self.layers[i - 1].name)
        o = spec.opt
        x = x.astype(self.dtype)
        cols = jnp.take(params[spec.name]["kernel"], channels, axis=-1
                        ).astype(self.dtype)  # (kh, kw, c_in, n)
        strides, padding, dilation = _conv_geometry(spec)
        conv = functools.partial(
            jax.lax.conv_general_dilated, window_strides=strides, padding=padding,
            rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        n = x.shape[0]
        if n <= _CHANNEL_UNROLL:
            # one call per image: XLA:CPU runs these 4-16x faster than the
            # grouped form below (2 images at 64x64x64: 1.9 vs 10.6 ms fwd+grad)
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

    def logits(self, params: Params, x, *, start: str | None = None):
        """Pre-activation scores of the last layer (the class logits).

        The final layer's own activation (softmax, sigmoid) is not applied:
        Grad-CAM and class objectives differentiate this, as the paper does.
        """
        last = self.layers[-1]
        if last.kind != "dense":
            return self.forward(params, x, start=start)
        return self.without_activation(last.name).forward(params, x, start=start)

    def without_activation(self, layer: str) -> ConvNet:
        """This model with ``layer``'s own activation (ReLU, softmax...) removed.

        Its output is then the pre-activation: the class logits for the last
        layer, or a conv's pre-ReLU response for filter objectives.
        """
        i = self.layer_index(layer)
        spec = self.layers[i]
        if spec.opt("activation") is None:
            return self
        linear = Layer.make(spec.name, spec.kind,
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
        """Map RGB [0, 255] images to this model's input domain."""
        if self.preprocessing == "caffe":
            return preprocess_input(images_rgb)
        x = jnp.asarray(images_rgb, jnp.float32)
        if self.preprocessing == "scale01":
            return x / 255.0
        return x

    # ------------------------------------------------------------- metadata
    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.layers)

    @property
    def conv_layers(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.layers if s.kind == "conv")

    @property
    def spatial_layers(self) -> tuple[str, ...]:
        """Layers whose output is a ``(h, w, c)`` feature map."""
        out, spatial = [], True
        for s in self.layers:
            if s.kind in ("gap", "gmp", "flatten", "dense"):
                spatial = False
            if spatial:
                out.append(s.name)
        return tuple(out)

    @property
    def has_top(self) -> bool:
        return bool(self.layers) and self.layers[-1].kind == "dense"

    @property
    def num_outputs(self) -> int:
        return int(self.layers[-1].opt("features")) if self.has_top else 0

    def layer_index(self, layer: str) -> int:
        return self.layer_names.index(self.check_layer(layer, self.layer_names))

    def layer(self, layer: str) -> Layer:
        return self.layers[self.layer_index(layer)]

    @staticmethod
    def check_layer(layer: str, allowed: tuple[str, ...], *, name: str = "layer"
                    ) -> str:
        """Return ``layer`` if it is in ``allowed``, else a ValueError listing them."""
        if not isinstance(layer, str) or layer not in allowed:
            raise InputError(
                f"{name} must be one of {', '.join(allowed)}; got {layer!r}."
            )
        return layer

    def output_shape(self, layer: str, hw: tuple[int, int]) -> tuple[int, ...]:
        """Shape of one image's activation at ``layer`` for an ``(h, w)`` input.

        Spatial layers give ``(h', w', c)``; ``h'`` or ``w'`` below 1 means the
        input is too small for that layer. Computed analytically (no tracing).
        """
        idx = self.layer_index(layer)
        h, w = hw
        c = self.input_shape[2]
        flat: int | None = None
        for s in self.layers[: idx + 1]:
            o = s.opt
            if s.kind == "conv":
                k, st, d = _pair(o("kernel_size", 3)), _pair(o("strides", 1)), _pair(
                    o("dilation", 1))
                pad = o("padding", "same")
                h = _conv_out(h, k[0], st[0], d[0], pad)
                w = _conv_out(w, k[1], st[1], d[1], pad)
                c = o("features")
            elif s.kind in ("maxpool", "avgpool"):
                p = _pair(o("pool_size", 2))
                st = _pair(o("strides", p))
                pad = o("padding", "valid")
                h = _conv_out(h, p[0], st[0], 1, pad)
                w = _conv_out(w, p[1], st[1], 1, pad)
            elif s.kind in ("gap", "gmp"):
                flat = c
            elif s.kind == "flatten":
                flat = h * w * c
            elif s.kind == "dense":
                flat = o("features")
            elif s.kind == "batchnorm" and flat is None:
                pass
        return (flat,) if flat is not None else (h, w, c)

    def channels(self, layer: str) -> int:
        """Number of channels (or units) of ``layer``'s output."""
        return int(self.output_shape(layer, (10_000, 10_000))[-1])

    def min_input_size(self, layer: str) -> int:
        """Smallest square input side whose activation at ``layer`` is >= 1x1."""
        for n in range(1, 4096):
            shape = self.output_shape(layer, (n, n))
            if len(shape) == 1 or (shape[0] >= 1 and shape[1] >= 1):
                return n
        raise InputError(f"layer {layer!r} needs an input larger than 4096 px.")

    def init_params(self, key, *, hw: tuple[int, int] | None = None) -> Params:
        """Random params (Flax default initialisers) for tests and training."""
        h, w, c = self.input_shape
        if hw is not None:
            h, w = hw
        x = jnp.zeros((1, h or 32, w or 32, c), jnp.float32)
        # jitted: op-by-op init of even a tiny net costs seconds on a busy CPU
        return jax.jit(self.init)(key, x)["params"]

    def check_params(self, params: Params, *, source: str = "params") -> None:
        """Raise ValueError unless every parameterised layer has matching shapes."""
        expected = jax.eval_shape(lambda: self.init_params(jax.random.key(0)))
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
                if tuple(found.shape) != tuple(spec.shape):
                    raise InputError(
                        f"{source}: layer {lname!r} {pname} has shape "
                        f"{tuple(found.shape)}; expected {tuple(spec.shape)}."
                    )


# ----------------------------------------------------------------- VGG16
VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_DEPTHS = (2, 2, 3, 3, 3)
TINY_WIDTHS = (4, 4, 8, 8, 8)


def _vgg_layers(widths, depths, include_top, fc_width, num_classes):
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
        layers=_vgg_layers(block_widths, block_depths, include_top, fc_width,
                           num_classes),
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


def resolve_model(params: Params, model: ConvNet | None) -> ConvNet:
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
    return resolve_model(params, model).forward(params, x, start=start, stop=stop)


__all__ = [
    "Layer",
    "ConvNet",
    "VGG16",
    "tiny_vgg16",
    "LAYER_NAMES",
    "CONV_LAYERS",
    "forward",
    "resolve_model",
    "vgg_from_params",
]
