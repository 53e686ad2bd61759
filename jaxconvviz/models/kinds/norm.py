"""Normalisation kinds: ``batchnorm``, ``layernorm``, ``normalization``,
``layerscale`` (Keras BatchNormalization at inference, LayerNormalization,
Normalization, ConvNeXt's LayerScale)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxconvviz.models.kinds.common import bcast, keras_initializer
from jaxconvviz.models.kinds.registry import LayerKind, layer_params


def _affine_norm(x, mean, var, p, eps):
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` in Keras 3's order of
    operations (``x * inv + (beta - mean * inv)``, ``inv = rsqrt(var + eps) *
    gamma``): the same rounding as Keras, so deep graphs stay within float32
    ulps of it instead of drifting by ~1e-5 relative over 50 layers."""
    inv = jax.lax.rsqrt(var + jnp.asarray(eps, x.dtype))
    if "gamma" in p:
        inv = inv * p["gamma"]
    res = -mean * inv
    if "beta" in p:
        res = res + p["beta"]
    return x * inv + res


def _cast_params(spec, x) -> dict:
    return {k: bcast(v.astype(x.dtype), x) for k, v in layer_params(spec, x).items()}


def _names_affine(spec):
    return ((("gamma",) if spec.opt("scale", True) else ())
            + (("beta",) if spec.opt("center", True) else ()))


def _per_channel(spec, in_shape):
    f = (int(in_shape[-1]),)
    return {"gamma": (f, "ones"), "beta": (f, "zeros"),
            "moving_mean": (f, "zeros"), "moving_variance": (f, "ones"),
            "mean": (f, "zeros"), "variance": (f, "ones"), "count": ((), "zeros")}


# ------------------------------------------------------------- batchnorm
def _batchnorm(net, spec, xs):
    (x,) = xs
    p = _cast_params(spec, x)
    return _affine_norm(x, p["moving_mean"], p["moving_variance"], p,
                        spec.opt("epsilon", 1e-3))


def _batchnorm_from_keras(k):
    k.last_axis()
    return k.layer(features=int(k.channels[-1]),
                   epsilon=k.number("epsilon", 1e-3, lo=0.0),
                   center=k.flag("center", True),
                   scale=k.flag("scale", True))


def _batchnorm_to_keras(spec):
    o = spec.opt
    return dict(
        axis=-1, momentum=0.99, epsilon=float(o("epsilon", 1e-3)),
        center=bool(o("center", True)), scale=bool(o("scale", True)),
        beta_initializer=keras_initializer("Zeros"),
        gamma_initializer=keras_initializer("Ones"),
        moving_mean_initializer=keras_initializer("Zeros"),
        moving_variance_initializer=keras_initializer("Ones"),
        beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
        gamma_constraint=None, synchronized=False,
    )


# ------------------------------------------------------------- layernorm
def _layernorm(net, spec, xs):
    """Keras LayerNormalization over the last axis (``jnp.var`` moments)."""
    (x,) = xs
    p = _cast_params(spec, x)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.var(x, axis=-1, keepdims=True)
    return _affine_norm(x, mean, var, p, spec.opt("epsilon", 1e-3))


def _layernorm_from_keras(k):
    k.last_axis()
    if k.flag("rms_scaling", False):
        raise k.error("has rms_scaling=True; only False is supported.")
    return k.layer(epsilon=k.number("epsilon", 1e-3, lo=0.0),
                   center=k.flag("center", True),
                   scale=k.flag("scale", True))


def _layernorm_to_keras(spec):
    o = spec.opt
    return dict(axis=-1, epsilon=float(o("epsilon", 1e-3)),
                center=bool(o("center", True)), scale=bool(o("scale", True)),
                rms_scaling=False, beta_initializer=keras_initializer("Zeros"),
                gamma_initializer=keras_initializer("Ones"))


# --------------------------------------------------------- normalization
def _normalization(net, spec, xs):
    """Keras Normalization: ``(x - mean) / max(sqrt(variance), 1e-7)``.

    ``mean``/``variance`` are options when the Keras config fixes them
    (ConvNeXt's stem), else params (adapted: ``mean``, ``variance``,
    ``count``, as EfficientNet stores them)."""
    (x,) = xs
    o = spec.opt
    if o("mean") is not None:
        mean, var = bcast(o("mean"), x), bcast(o("variance"), x)
    else:
        p = layer_params(spec, x)
        mean, var = bcast(p["mean"], x), bcast(p["variance"], x)
    return (x - mean) / jnp.maximum(jnp.sqrt(var), jnp.asarray(1e-7, x.dtype))


def _normalization_from_keras(k):
    k.last_axis()
    if k.flag("invert", False):
        raise k.error("has invert=True; only False is supported.")
    if k.get("mean") is None:
        return k.layer()
    c = int(k.channels[-1])

    def per_channel(key):
        v = k.numbers(key)
        v = list(v) if isinstance(v, tuple) else [v]
        if len(v) not in (1, c):
            raise k.error(f"has {len(v)} values in {key}; expected 1 or {c} (one "
                          "per channel).")
        return tuple(v * c if len(v) == 1 else v)

    return k.layer(mean=per_channel("mean"), variance=per_channel("variance"))


# ------------------------------------------------------------ layerscale
def _layerscale(net, spec, xs):
    (x,) = xs
    return x * bcast(layer_params(spec, x)["gamma"], x)


#: The normalisation kinds' records.
RECORDS = (
    LayerKind("batchnorm", _batchnorm,
              params=lambda s: _names_affine(s) + ("moving_mean", "moving_variance"),
              param_shapes=_per_channel, keras=("BatchNormalization",),
              from_keras=_batchnorm_from_keras, keras_class="BatchNormalization",
              to_keras=_batchnorm_to_keras, doc="BatchNormalization (inference)"),
    LayerKind("layernorm", _layernorm, params=_names_affine,
              param_shapes=_per_channel, keras=("LayerNormalization",),
              from_keras=_layernorm_from_keras, keras_class="LayerNormalization",
              to_keras=_layernorm_to_keras, doc="LayerNormalization"),
    LayerKind("normalization", _normalization,
              params=lambda s: () if s.opt("mean") is not None else (
                  "mean", "variance", "count"),
              param_shapes=_per_channel, keras=("Normalization",),
              from_keras=_normalization_from_keras, doc="Normalization"),
    LayerKind("layerscale", _layerscale, params=lambda s: ("gamma",),
              param_shapes=_per_channel, keras=("LayerScale",),
              from_keras=lambda k: k.layer(), doc="LayerScale (ConvNeXt)"),
)

__all__ = ["RECORDS"]
