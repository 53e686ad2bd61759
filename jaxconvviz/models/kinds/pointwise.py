"""Weightless pointwise kinds: ``activation``, ``rescaling`` and the
identities ``dropout`` (every layer that is the identity at inference) and
``identity`` (Keras Activation/ReLU, Rescaling, Dropout & co., Identity)."""

from __future__ import annotations

from jaxconvviz.models.kinds.common import activate, bcast, keras_floats
from jaxconvviz.models.kinds.registry import LayerKind


def _activation(net, spec, xs):
    (x,) = xs
    return activate(spec, x)


def _relu(k) -> str:
    max_value = None if k.get("max_value") is None else k.number("max_value")
    slope = k.number("negative_slope" if "negative_slope" in k.config else "alpha",
                     0.0)
    threshold = k.number("threshold", 0.0)
    if slope == 0.0 and threshold == 0.0 and max_value is None:
        return "relu"
    if slope == 0.0 and threshold == 0.0 and max_value == 6.0:
        return "relu6"
    raise k.error(
        f"has max_value={max_value}, negative_slope={slope}, "
        f"threshold={threshold}; supported: the defaults (relu) or max_value=6 "
        "(relu6).")


def _activation_from_keras(k):
    return k.layer(activation=_relu(k) if k.cls == "ReLU" else k.activation())


def _rescaling(net, spec, xs):
    (x,) = xs
    o = spec.opt
    return x * bcast(o("scale", 1.0), x) + bcast(o("offset", 0.0), x)


def _identity(net, spec, xs):
    (x,) = xs
    return x


def _dropout_from_keras(k):
    if k.cls == "Dropout":  # kept so save_keras_model writes it back
        return k.layer(rate=k.number("rate", 0.5, lo=0.0, hi=1.0))
    return k.layer()


#: The pointwise kinds' records.
RECORDS = (
    LayerKind("activation", _activation, keras=("Activation", "ReLU"),
              from_keras=_activation_from_keras, keras_class="Activation",
              to_keras=lambda s: {"activation": s.opt("activation", "linear")},
              doc="Activation / ReLU"),
    LayerKind("rescaling", _rescaling, keras=("Rescaling",),
              from_keras=lambda k: k.layer(
                  scale=k.numbers("scale", 1.0), offset=k.numbers("offset", 0.0)),
              keras_class="Rescaling",
              to_keras=lambda s: {"scale": keras_floats(s.opt("scale", 1.0)),
                                  "offset": keras_floats(s.opt("offset", 0.0))},
              doc="Rescaling"),
    LayerKind("dropout", _identity,
              # identity at inference (Keras' predict runs with training=False)
              keras=("Dropout", "SpatialDropout2D", "GaussianDropout",
                     "GaussianNoise", "AlphaDropout",
                     "StochasticDepth"),  # StochasticDepth: convnext
              from_keras=_dropout_from_keras, keras_class="Dropout",
              to_keras=lambda s: {"rate": float(s.opt("rate", 0.5)), "seed": None,
                                  "noise_shape": None},
              doc="Dropout & co. (identity at inference)"),
    LayerKind("identity", _identity, keras=("Identity",),
              from_keras=lambda k: k.layer(), keras_class="Identity",
              to_keras=lambda spec: {},
              doc="Identity; a nested model's output"),
)

__all__ = ["RECORDS"]
