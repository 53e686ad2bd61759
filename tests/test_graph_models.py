"""Graph models: merge kinds, ancestors-only forward, cut nodes, Keras parity.

Fast tests use hand-built graphs (ConvNet specs or a small Keras functional
model holding every supported layer kind); the ``slow`` tests import the ten
``keras.applications`` networks of issue 17 (``weights=None``, fixed seed,
the smallest input each allows) and compare every node with Keras.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.models.convnet import ConvNet, Layer
from jaxconvviz.models.keras_import import load_keras_model

RTOL = 1e-4  # node outputs: max |ours - keras| / max |keras|
PRED_ATOL = 1e-5


# ------------------------------------------------------------ hand-built
def _tiny_resnet(classes=3) -> ConvNet:
    """conv1 -> (conv2a -> conv2b) + conv1 -> add -> out (relu) -> side branch
    joined by concat -> gap -> dense: a cut at ``out``, none at ``conv2a``."""
    mk = Layer.make
    layers = (
        mk("conv1", "conv", features=4, kernel_size=3, padding="same",
           activation="relu"),
        mk("conv2a", "conv", features=4, kernel_size=3, padding="same",
           activation="relu"),
        mk("conv2b", "conv", features=4, kernel_size=3, padding="same"),
        mk("add", "add", inputs=("conv1", "conv2b")),
        mk("out", "activation", activation="relu"),
        mk("side", "conv", features=2, kernel_size=1, padding="valid",
           activation="relu"),
        mk("cat", "concatenate", axis=-1, inputs=("out", "side")),
        mk("last_conv", "conv", features=5, kernel_size=3, strides=2,
           padding="same", activation="relu"),
        mk("gap", "gap"),
        mk("logits", "dense", features=classes, activation="softmax"),
    )
    return ConvNet(layers=layers, input_shape=(None, None, 3),
                   preprocessing="none", input_name="img")


@pytest.fixture(scope="module")
def resnet_params():
    m = _tiny_resnet()
    return m.init_params(jax.random.key(1), hw=(8, 8))


def _count(jaxpr, prim="conv_general_dilated") -> int:
    n = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == prim:
            n += 1
        for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else ():
            n += _count(sub, prim)
        for p in eqn.params.values():
            inner = getattr(p, "jaxpr", None)
            if inner is not None and hasattr(inner, "eqns"):
                n += _count(inner, prim)
    return n


def test_graph_metadata():
    m = _tiny_resnet()
    assert m.sources[3] == (0, 2) and m.sources[6] == (4, 5)
    assert not m.is_chain and jcv.tiny_vgg16().is_chain
    assert m.spatial_layers == ("conv1", "conv2a", "conv2b", "add", "out", "side",
                                "cat", "last_conv")
    assert m.default_layer == "last_conv"
    assert m.has_top and m.num_outputs == 3
    assert m.output_shape("cat", (9, 7)) == (9, 7, 6)
    assert m.output_shape("last_conv", (9, 7)) == (5, 4, 5)
    assert m.output_shape("logits", (9, 7)) == (3,)
    assert m.channels("cat") == 6


@pytest.mark.slow
def test_only_ancestors_are_computed(resnet_params):
    """The compiled program of forward(stop=X) holds exactly X's conv
    ancestors: 'side' and 'last_conv' never run for stop='out'."""
    # counted as convolutions: 1x1 convs as convs, not as the CPU's matmuls
    m, p = _tiny_resnet().with_backend(pointwise="conv"), resnet_params
    x = jnp.ones((1, 8, 8, 3))
    for stop, convs in (("conv2a", 2), ("add", 3), ("out", 3), ("side", 4),
                        ("cat", 4), ("logits", 5)):
        jaxpr = jax.make_jaxpr(lambda p, x, s=stop: m.forward(p, x, stop=s))(p, x)
        assert _count(jaxpr.jaxpr) == convs, stop
    # a branch that does not feed stop is dropped too
    only_side = jax.make_jaxpr(lambda p, x: m.forward(p, x, stop="side"))(p, x)
    names = str(only_side)
    assert _count(only_side.jaxpr) == 4 and "concatenate" not in names


def test_forward_from_a_cut_node_and_not_from_others(resnet_params):
    m, p = _tiny_resnet(), resnet_params
    x = jax.random.uniform(jax.random.key(2), (2, 8, 8, 3))
    full = m.forward(p, x)
    out = m.forward(p, x, stop="out")
    np.testing.assert_allclose(m.forward(p, out, start="out"), full, rtol=1e-6)
    np.testing.assert_allclose(m.forward(p, out, start="out", stop="last_conv"),
                               m.forward(p, x, stop="last_conv"), rtol=1e-6)
    with pytest.raises(ValueError, match=r"start='conv2a' is not a cut.*"
                       r"forward_with"):
        m.forward(p, out, start="conv2a", stop="add")
    with pytest.raises(ValueError, match=r"start must come before stop"):
        m.forward(p, out, start="side", stop="add")


def test_forward_with_gradient_at_a_node_equals_split_gradient(resnet_params):
    """The zero-perturbation gradient at a node equals the gradient of the
    rest of the network with respect to that node (split at the cut)."""
    m, p = _tiny_resnet(), resnet_params
    x = jax.random.uniform(jax.random.key(3), (2, 8, 8, 3))

    def score(z):
        y, cap = m.forward_with(p, x, capture=("out",), perturb={"out": z},
                                logits=True)
        return y[:, 1].sum(), cap["out"]

    z0 = jnp.zeros((2, 8, 8, 4))
    g, act = jax.grad(score, has_aux=True)(z0)
    np.testing.assert_allclose(act, m.forward(p, x, stop="out"), rtol=1e-6)
    ref = jax.grad(lambda a: m.logits(p, a, start="out")[:, 1].sum())(act)
    np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=r"\['side'\] are not computed on the way "
                       r"to stop='out'"):
        m.forward_with(p, x, capture=("side",), stop="out")


def test_metadata_memo_follows_the_layers_and_the_input_name():
    """Metadata is memoized per layer tuple (convnet._memo): a clone shares it,
    other layers or another input name get their own, errors still raise,
    and a Layer's cached hash is neither pickled nor different from a fresh
    equal Layer's."""
    import pickle

    m = _tiny_resnet()
    assert m.layer_index("cat") == 6 and m.param_layers == (
        "conv1", "conv2a", "conv2b", "side", "last_conv", "logits")
    clone = m.with_backend(conv3x3="by_shape")
    assert clone.layers is m.layers and clone.default_layer == "last_conv"
    # a layer tuple without the classifier: new facts, not the cached ones
    cut = m.with_layers(m.layers[:-2])
    assert cut.default_layer == "last_conv" and not cut.has_top
    assert cut.output_shape("last_conv", (9, 7)) == (5, 4, 5)
    assert m.has_top and m.num_outputs == 3
    renamed = m.clone(input_name="conv1", parent=None)  # the input's name taken
    with pytest.raises(ValueError, match=r"a layer and the input\) are named 'conv1'"):
        _ = renamed.sources
    assert m.sources[3] == (0, 2)  # the failure cached nothing
    with pytest.raises(ValueError, match=r"layer must be one of .*did you mean 'cat'"):
        m.layer_index("cta")
    with pytest.raises(ValueError, match=r"layer must be one of"):
        m.layer_index(3)
    spec = m.layers[0]
    h = hash(spec)
    assert "_hash" not in pickle.loads(pickle.dumps(spec)).__dict__
    assert hash(Layer(spec.name, spec.kind, spec.options, spec.inputs)) == h


def test_graph_topology_errors():
    mk = Layer.make
    bad = (mk("a", "conv", features=2), mk("b", "add", inputs=("a", "zz")))
    with pytest.raises(ValueError, match=r"'b' reads 'zz', which is not the input"):
        _ = ConvNet(layers=bad).sources
    with pytest.raises(ValueError, match=r"'m' \(add\) takes two or more inputs"):
        _ = ConvNet(layers=(mk("a", "conv", features=2), mk("m", "add"))).sources
    dead = (mk("a", "conv", features=2),
            mk("b", "conv", features=2, inputs=("input",)))
    with pytest.raises(ValueError, match=r"\['a'\] do not feed the output"):
        _ = ConvNet(layers=dead).sources


def test_every_merge_kind_closed_form():
    mk = Layer.make
    layers = (
        mk("s", "rescaling", scale=2.0),  # 2x
        mk("add", "add", inputs=("input", "s")),  # 3x
        mk("sub", "subtract", inputs=("add", "s")),  # x
        mk("mul", "multiply", inputs=("sub", "s", "input")),  # 2x^3
        mk("avg", "average", inputs=("mul", "s")),  # x^3 + x
        mk("max", "maximum", inputs=("avg", "add")),
        mk("cat", "concatenate", axis=-1, inputs=("max", "input")),
    )
    m = ConvNet(layers=layers, input_shape=(2, 2, 1), preprocessing="none")
    x = jnp.asarray([-2.0, -0.5, 0.5, 3.0]).reshape(1, 2, 2, 1)
    y = np.asarray(m.forward({}, x))
    xv = np.asarray(x)
    np.testing.assert_allclose(y[..., 0:1], np.maximum(xv ** 3 + xv, 3 * xv),
                               rtol=1e-6)
    np.testing.assert_allclose(y[..., 1:2], xv)


@pytest.mark.slow
def test_filter_patterns_on_a_graph_batched_equals_one_at_a_time(resnet_params):
    m, p = _tiny_resnet(), resnet_params
    kw = dict(key=jax.random.key(0), steps=3, size=12, model=m)
    both = np.asarray(jcv.filter_patterns(p, "add", [0, 3], **kw))
    for i, f in enumerate((0, 3)):
        one = np.asarray(jcv.filter_patterns(p, "add", [f], **kw))[0]
        np.testing.assert_allclose(both[i], one, rtol=1e-5, atol=1e-4)
    assert np.abs(both[0] - both[1]).max() > 1e-3  # different filters differ


def test_preprocessing_modes_match_keras_imagenet_utils(keras):
    from keras.src.applications import imagenet_utils

    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 4, 3)).astype(np.float32)
    for mode in ("caffe", "tf", "torch"):
        ref = imagenet_utils.preprocess_input(x.copy(), mode=mode)
        m = ConvNet(layers=(Layer.make("a", "activation"),), preprocessing=mode)
        np.testing.assert_allclose(np.asarray(m.preprocess(x)), ref, rtol=1e-6,
                                   atol=1e-5)
    # tf: x / 127.5 - 1 by hand; torch: ImageNet mean/std
    np.testing.assert_allclose(
        jcv.models.preprocess.preprocess_mode(np.full((1, 1, 1, 3), 255.0), "tf"),
        np.ones((1, 1, 1, 3)))
    np.testing.assert_allclose(
        jcv.models.preprocess.preprocess_mode(np.zeros((1, 1, 1, 3)), "torch")[
            0, 0, 0], [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225], rtol=1e-6)
    with pytest.raises(ValueError, match=r"mode must be one of .*'torch'.*got 'bgr'"):
        jcv.models.preprocess.preprocess_mode(np.zeros((1, 1, 1, 3)), "bgr")


# ------------------------------------------------------------ Keras parity
def _randomize(km, seed, keras=None):
    """Random weights (positive variances), so every node carries signal."""
    rng = np.random.default_rng(seed)
    for layer in km.layers:
        ws = []
        for v in layer.weights:
            shape = tuple(v.shape)
            name = v.path.split("/")[-1]
            if "variance" in name:
                ws.append(rng.uniform(0.5, 1.5, shape))
            elif name == "count":
                ws.append(np.asarray(v))
            elif name in ("gamma",):
                ws.append(rng.uniform(0.5, 1.5, shape))
            else:
                ws.append(rng.normal(0, 0.4, shape))
        if ws:
            layer.set_weights([w.astype(np.float32) for w in ws])
            if hasattr(layer, "finalize_state"):  # Normalization: as on loading
                layer.finalize_state()


def _node_outputs(keras, km, x, names):
    """Keras' own output of every node named ``names``: top-level operations
    through one ``keras.Model``, layers inside nested models through a
    ``keras.Model`` of the nested block fed Keras' own input to it."""
    ops = {op.name: op for op in km.operations}
    top = [n for n in names if n in ops]
    # predict: compiled as ours is (Keras' eager op-by-op results differ from
    # its own compiled predict by ~1e-4 relative deep in a calibrated ResNet50)
    outs = keras.Model(km.inputs, [ops[n].output for n in top]).predict(
        x, verbose=0)
    res = dict(zip(top, (np.asarray(o) for o in outs), strict=True))
    for block in km.layers:
        if not isinstance(block, keras.Model):
            continue
        inner = [n for n in names if n not in res
                 and n in {op.name for op in block.layers}]
        if not inner:
            continue
        t_in = block._inbound_nodes[0].input_tensors[0]
        a_in = keras.Model(km.inputs, t_in).predict(x, verbose=0)
        sub = keras.Model(block.inputs, [block.get_layer(n).output
                                         for n in inner]).predict(a_in, verbose=0)
        res.update(zip(inner, (np.asarray(o) for o in sub), strict=True))
    return res


def _assert_parity(keras, km, model, params, x, *, rtol=RTOL, pred_atol=PRED_ATOL,
                   expect_all=True):
    """Every node equal to Keras' within ``rtol`` of its scale; the
    prediction within ``pred_atol``. Returns the worst relative error."""
    ref = _node_outputs(keras, km, x, model.layer_names)
    if expect_all:
        inner = {n for n in model.layer_names if n not in ref}
        assert not inner, f"nodes without a Keras counterpart: {sorted(inner)[:5]}"
    with jax.default_matmul_precision("float32"):
        # compiled, as Keras' predict is (op-by-op results differ by ~1e-4)
        pred, ours = jax.jit(lambda p, x: model.forward_with(
            p, x, capture=tuple(ref)))(params, x)
        pred = np.asarray(pred)
    worst, where = 0.0, None
    for n, r in ref.items():
        o = np.asarray(ours[n])
        assert o.shape == r.shape, (n, o.shape, r.shape)
        rel = float(np.abs(o - r).max() / max(np.abs(r).max(), 1e-30))
        if rel > worst:
            worst, where = rel, n
    assert worst <= rtol, f"node {where!r}: relative error {worst:.2e}"
    last = km.operations[-1].name
    kpred = ref[last] if last in ref else np.asarray(km.predict(x, verbose=0))
    np.testing.assert_allclose(pred, kpred, rtol=0, atol=pred_atol)
    return worst


def _every_kind_keras(keras):
    """A small functional model with every merge kind and most layer kinds."""
    from keras.src.applications.convnext import LayerScale

    L = keras.layers
    inp = keras.Input((12, 12, 3), name="img")
    x = L.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inp)
    x = L.Normalization(mean=[0.1, -0.2, 0.3], variance=[1.5, 2.0, 0.5],
                        name="norm_fixed")(x)
    x = L.Normalization(axis=-1, name="norm_adapted")(x)
    a = L.Conv2D(8, 3, padding="same", activation="relu6", name="conv_a")(x)
    a = L.AveragePooling2D(3, strides=1, padding="same", name="avg_same")(a)
    b = L.Conv2D(8, 3, padding="same", groups=4, activation="gelu",
                 name="conv_g")(a)
    add = L.Add(name="merge_add")([a, b])
    sub = L.Subtract(name="sub")([a, b])
    mul = L.Multiply(name="mul")([add, sub])
    avg = L.Average(name="avg")([a, b, mul])
    mx = L.Maximum(name="max")([avg, a])
    cat = L.Concatenate(name="cat")([mx, b])
    ln = L.LayerNormalization(epsilon=1e-6, name="ln")(cat)
    pw = L.Dense(16, activation="hard_sigmoid", name="pointwise")(ln)
    ls = LayerScale(0.5, 16, name="layer_scale")(pw)
    op = ls * 2.0 + 1.0  # keras.ops nodes
    op = L.Activation("linear", name="lin")(op)
    pad = L.ZeroPadding2D(((0, 1), (1, 0)), name="pad")(op)
    dw = L.DepthwiseConv2D(3, strides=2, depth_multiplier=2, activation="swish",
                           name="dw")(pad)
    sep = L.SeparableConv2D(8, 3, padding="same", depth_multiplier=2,
                            activation="hard_swish", name="sep")(dw)
    crop = L.Cropping2D(((1, 0), (0, 1)), name="crop")(sep)
    bn = L.BatchNormalization(name="bn")(crop)
    relu = L.ReLU(6.0, name="relu6")(bn)
    se = L.GlobalAveragePooling2D(keepdims=True, name="se_pool")(relu)
    se = L.Conv2D(8, 1, activation="sigmoid", name="se_conv")(se)
    gate = L.Multiply(name="gate")([relu, se])
    mp = L.MaxPooling2D(2, strides=1, padding="valid", name="mp")(gate)
    gm = L.GlobalMaxPooling2D(name="gmp")(mp)
    r = L.Reshape((1, 1, 8), name="reshape")(gm)
    f = L.Flatten(name="flat")(r)
    gap = L.GlobalAveragePooling2D(name="gap")(mp)
    top = L.Add(name="top_add")([gap, f])
    top = L.Dropout(0.3, name="drop")(top)
    logits = L.Dense(5, name="logits")(top)
    probs = L.Activation("softmax", name="probs")(logits)
    km = keras.Model(inp, probs)
    _randomize(km, 0)
    return km


@pytest.fixture(scope="module")
def every_kind(tmp_path_factory):
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("the Keras oracle must run with KERAS_BACKEND=jax")
    keras.utils.set_random_seed(0)
    km = _every_kind_keras(keras)
    path = tmp_path_factory.mktemp("graph") / "every_kind.keras"
    km.save(path)
    return km, path


@pytest.mark.keras
@pytest.mark.slow
def test_every_layer_kind_matches_keras_node_by_node(keras, every_kind):
    km, path = every_kind
    model, params = load_keras_model(path)
    kinds = {s.kind for s in model.layers}
    assert kinds >= {"add", "subtract", "multiply", "average", "maximum",
                     "concatenate", "depthwise_conv", "separable_conv",
                     "layernorm", "normalization", "layerscale", "zeropad",
                     "cropping", "reshape", "rescaling", "gap", "gmp"}
    assert model.layer("conv_g").opt("groups") == 4
    assert model.layer("se_pool").opt("keepdims") is True
    x = np.random.default_rng(1).uniform(0, 255, (2, 12, 12, 3)).astype(np.float32)
    _assert_parity(keras, km, model, params, x, rtol=1e-5)
    # the classifier top: Dense + a separate softmax Activation
    assert model.has_top and model.num_outputs == 5
    klogits = keras.Model(km.inputs, km.get_layer("logits").output)(x)
    np.testing.assert_allclose(np.asarray(model.logits(params, x)),
                               np.asarray(klogits), rtol=1e-5, atol=1e-5)
    out, _ = model.forward_with(params, x, logits=True)
    np.testing.assert_allclose(np.asarray(out), np.asarray(klogits), rtol=1e-5,
                               atol=1e-5)
    # the squeeze-excite branch is not spatial; the gated map is
    assert "se_conv" not in model.spatial_layers
    assert model.default_layer == "gate"  # 'mp' is a pooling layer


@pytest.mark.keras
@pytest.mark.slow
def test_dense_without_activation_is_a_logits_top(keras, tmp_path):
    L = keras.layers
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 3, name="c")(inp)
    x = L.GlobalAveragePooling2D(name="g")(x)
    km = keras.Model(inp, L.Dense(3, name="scores")(x))
    _randomize(km, 2)
    km.save(tmp_path / "m.keras")
    model, params = load_keras_model(tmp_path / "m.keras")
    assert model.has_top and model.num_outputs == 3
    x = np.random.default_rng(0).uniform(0, 1, (2, 6, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model.logits(params, x)),
                               km.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    # no classifier: a model ending in a pooled vector without Dense
    km2 = keras.Model(inp, x_ := L.GlobalMaxPooling2D(name="p")(
        L.Conv2D(4, 3, name="c2")(inp)))
    del x_
    km2.save(tmp_path / "m2.keras")
    model2, _ = load_keras_model(tmp_path / "m2.keras")
    assert not model2.has_top and model2.num_outputs == 0


@pytest.mark.keras
def test_shared_and_unsupported_layers_are_rejected(keras, tmp_path):
    L = keras.layers
    inp = keras.Input((6, 6, 3))
    conv = L.Conv2D(3, 1, name="shared_conv")
    out = conv(conv(inp))
    keras.Model(inp, out).save(tmp_path / "shared.keras")
    with pytest.raises(ValueError, match=r"'shared_conv' \(Conv2D\) is called 2 "
                       r"times \(a shared layer\)"):
        load_keras_model(tmp_path / "shared.keras")
    up = L.UpSampling2D(name="up")(inp)
    keras.Model(inp, up).save(tmp_path / "up.keras")
    with pytest.raises(ValueError, match=r"'up' \(UpSampling2D\) is not supported; "
                       r"supported layers: .*DepthwiseConv2D.*SeparableConv2D"):
        load_keras_model(tmp_path / "up.keras")


# ------------------------------------------- keras.applications (slow)
#: Application -> (input side, preprocessing as Keras' preprocess_input does
#: it for that family). 32 px is the smallest most accept; Xception needs 71,
#: InceptionV3 75; ResNet50 and MobileNetV2 run at 64 so that their Grad-CAM
#: maps are 2x2, not 1x1.
APPS = {
    "ResNet50": (64, "caffe"),
    "ResNet50V2": (32, "tf"),
    "MobileNetV2": (64, "tf"),
    "MobileNetV3Small": (32, "none"),  # Rescaling inside the model
    "EfficientNetB0": (32, "none"),  # Rescaling + Normalization inside
    "DenseNet121": (32, "torch"),
    "Xception": (71, "tf"),
    "InceptionV3": (75, "tf"),
    "VGG19": (32, "caffe"),
    "ConvNeXtTiny": (32, "none"),  # Normalization inside
}
#: Worst relative node error per application, filled by the parity test and
#: printed at the end of the module (pytest -s) for the record.
WORST: dict[str, float] = {}


def _calibrate_batchnorm(keras, km, x):
    """BatchNormalization moving statistics := the batch statistics of ``x``
    at every layer (one training-mode call with momentum 0), so activations
    stay O(1) to the last layer (with the init statistics MobileNetV2's
    output is ~1e-10) and the comparison tests every node with signal.
    The call is one jitted ``stateless_call`` (an eager call compiles every
    op's shapes one by one: 6 s of a ResNet50's 20)."""
    bns = [layer for layer in km.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = 0.0
    tv = [v.value for v in km.trainable_variables]
    ntv = [v.value for v in km.non_trainable_variables]
    _, ntv = jax.jit(lambda tv, ntv, x: km.stateless_call(tv, ntv, x,
                                                          training=True))(tv, ntv, x)
    for v, a in zip(km.non_trainable_variables, ntv, strict=True):
        v.assign(a)
    for layer in bns:
        layer.momentum = 0.99


@contextlib.contextmanager
def _numpy_initialisers(keras, seed: int = 0):
    """Keras' random initialisers drawn with NumPy while an application is
    built: with the JAX backend every kernel shape compiles its own
    ``jax.random`` program (7.5 s of a DenseNet121's 10.6 s build). The
    values are as arbitrary as Keras' own (same distributions)."""
    from keras.src.backend.jax import random as R

    rng = np.random.default_rng(seed)
    real = R.uniform, R.normal, R.truncated_normal

    def cast(a, dtype):
        return jnp.asarray(a, dtype=dtype or "float32")

    def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
        return cast(rng.uniform(minval, maxval, shape), dtype)

    def normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
        return cast(rng.normal(mean, stddev, shape), dtype)

    def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
        z = rng.normal(0.0, 1.0, shape)
        bad = np.abs(z) > 2.0
        while bad.any():
            z[bad] = rng.normal(0.0, 1.0, int(bad.sum()))
            bad = np.abs(z) > 2.0
        return cast(mean + stddev * z, dtype)

    R.uniform, R.normal, R.truncated_normal = uniform, normal, truncated_normal
    try:
        yield
    finally:
        R.uniform, R.normal, R.truncated_normal = real


@pytest.fixture(scope="module")
def saved_apps(tmp_path_factory):
    """Build + save each application once (lazily) for this module."""
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("the Keras oracle must run with KERAS_BACKEND=jax")
    cache: dict = {}

    def get(name):
        if name not in cache:
            size, _ = APPS[name]
            keras.utils.set_random_seed(0)
            with _numpy_initialisers(keras):
                km = getattr(keras.applications, name)(
                    weights=None, input_shape=(size, size, 3))
            x = np.random.default_rng(7).uniform(
                0, 255, (4, size, size, 3)).astype(np.float32)
            _calibrate_batchnorm(keras, km, _keras_preprocess(keras, name, x))
            path = tmp_path_factory.mktemp(name) / f"{name}.keras"
            km.save(path)
            cache[name] = (km, path)
        return cache[name]

    return get


def _keras_preprocess(keras, name, x):
    mode = APPS[name][1]
    if mode == "none":
        return x.copy()
    from keras.src.applications import imagenet_utils

    return imagenet_utils.preprocess_input(x.copy(), mode=mode)


@pytest.mark.slow
@pytest.mark.keras
@pytest.mark.parametrize("name", list(APPS))
def test_application_matches_keras_node_by_node(keras, saved_apps, name):
    km, path = saved_apps(name)
    size, mode = APPS[name]
    model, params = load_keras_model(path, preprocessing=mode)
    x_rgb = np.random.default_rng(3).uniform(0, 255, (2, size, size, 3)
                                              ).astype(np.float32)
    x = np.asarray(model.preprocess(x_rgb))
    np.testing.assert_allclose(x, _keras_preprocess(keras, name, x_rgb),
                               rtol=1e-6, atol=1e-5)
    if name == "EfficientNetB0":
        # Random weights drive EfficientNetB0's activations to ~1e6, and its
        # squeeze-excite sigmoids turn the ~1e-5 relative summation-order
        # difference of the default depthwise algorithm (sums of slices on
        # CPU) into ~1e-2. Its graph is checked with Keras' own algorithm;
        # the two algorithms agree within 1e-5 (test_convs), and the other
        # depthwise models here run the default. Its squeeze-excite 1x1
        # convs likewise use Keras' algorithm (the CPU default, a matrix
        # product, differs in summation order only: up to 4e-3 relative at
        # block6d_se_expand on some CPUs; DenseNet121 holds that default).
        model = model.with_backend(depthwise="grouped", pointwise="conv")
    if name == "DenseNet121":
        # 120 layers of random-weight concatenations: the default 1x1
        # algorithm on CPU (matrix products, jaxconvviz.backend.matmul.
        # pointwise_conv) differs from Keras' convolution in summation order
        # only, and that reaches 2.3e-5 on a prediction of 0.5 (relative
        # 4.6e-5). The 1e-5 bar is checked with Keras' algorithm; the
        # default is held to 1e-4 below.
        default = model
        model = model.with_backend(pointwise="conv")
        with jax.default_matmul_precision("float32"):
            pred = np.asarray(jax.jit(default.forward)(params, x))
        np.testing.assert_allclose(pred, np.asarray(km.predict(x, verbose=0)),
                                   rtol=0, atol=1e-4)
    WORST[name] = _assert_parity(keras, km, model, params, x)
    assert model.has_top and model.num_outputs == 1000
    default = {"ResNet50": "conv5_block3_out", "MobileNetV2": "out_relu",
               "VGG19": "block5_conv4"}.get(name)
    if default:
        assert model.default_layer == default
    print(f"\n{name}: {len(model.layers)} nodes, worst relative error "
          f"{WORST[name]:.2e}")


@pytest.mark.slow
@pytest.mark.keras
@pytest.mark.parametrize("name,layer", [
    ("ResNet50", "conv5_block3_out"),
    ("MobileNetV2", "out_relu"),
])
def test_grad_cam_on_application_equals_keras_reference(keras, saved_apps, name,
                                                        layer):
    """Reference with Keras' own model: the activation at ``layer`` from a
    keras.Model output, and the gradient of the class logit with respect to
    it through Keras' own pooling and Dense layers (jax.grad of the Keras
    layer calls, the JAX backend)."""
    km, path = saved_apps(name)
    size, mode = APPS[name]
    model, params = load_keras_model(path, preprocessing=mode)
    x_rgb = np.random.default_rng(5).uniform(0, 255, (2, size, size, 3)
                                              ).astype(np.float32)
    x = _keras_preprocess(keras, name, x_rgb)
    acts = jnp.asarray(keras.Model(km.inputs, km.get_layer(layer).output).predict(
        x, verbose=0))  # compiled, as ours (eager differs by ~1e-4 relative)
    # the global pooling before 'predictions' (Keras numbers its name, e.g.
    # global_average_pooling2d_1, by how many were built in this process)
    pool, dense = km.layers[-2], km.get_layer("predictions")
    assert isinstance(pool, keras.layers.GlobalAveragePooling2D)

    def logits(a):
        return keras.ops.matmul(pool(a), dense.kernel) + dense.bias

    classes = np.asarray(jnp.argmax(logits(acts), axis=-1))
    grads = jax.vmap(jax.grad(lambda a, c: logits(a[None])[0, c]))(acts, classes)
    cam = jax.nn.relu(jnp.einsum("nhwc,nc->nhw", acts, grads.mean(axis=(1, 2))))
    ref = cam / jnp.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-30)
    with jax.default_matmul_precision("float32"):
        ours = jcv.grad_cam(params, x_rgb, model=model, layer=layer,
                            class_index=classes)
    assert ours.shape == ref.shape == (2, size // 32, size // 32)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-4,
                               atol=1e-5)
    assert float(np.asarray(ref).max()) == pytest.approx(1.0)
    # the default layer is this one
    np.testing.assert_allclose(np.asarray(jcv.grad_cam(
        params, x_rgb, model=model, class_index=classes)), np.asarray(ours),
        rtol=1e-6)


def test_without_activation_keeps_the_graph(resnet_params):
    m, p = _tiny_resnet(), resnet_params
    lin = m.without_activation("out")
    assert lin.layer("cat").inputs == ("out", "side")
    x = jax.random.uniform(jax.random.key(4), (1, 8, 8, 3))
    np.testing.assert_allclose(lin.forward(p, x, stop="out"),
                               m.forward(p, x, stop="add"), rtol=1e-6)
    np.testing.assert_allclose(jax.nn.relu(lin.forward(p, x, stop="out")),
                               m.forward(p, x, stop="out"), rtol=1e-6)


def test_saving_a_graph_as_keras_is_a_clear_error(resnet_params, tmp_path):
    from jaxconvviz.models.keras_export import save_keras_model

    with pytest.raises(ValueError, match=r"is a graph \(layers \['add', 'cat'\].*"
                       "Sequential chains only"):
        save_keras_model(resnet_params, tmp_path / "g.keras", model=_tiny_resnet())
    assert not (tmp_path / "g.keras").exists()


@pytest.mark.parametrize("make", [_tiny_resnet, lambda: jcv.tiny_vgg16(),
                                  lambda: jcv.VGG16(include_top=False)])
def test_analytic_param_shapes_equal_init(make):
    m = make()
    traced = jax.eval_shape(lambda: m.init_params(jax.random.key(0)))
    assert m.param_shapes() == {
        k: {n: tuple(v.shape) for n, v in d.items()} for k, d in traced.items()}


def test_receptive_fields_and_macs_by_hand():
    from jaxconvviz.models.shapes import conv_macs, receptive_fields

    vgg = jcv.VGG16(include_top=False)
    i = vgg.layer_index("block5_conv3")
    rf = receptive_fields(vgg.layers, vgg.sources, range(i + 1))
    assert rf[i] == ((196, 16), (196, 16))  # the textbook VGG16 conv5_3 field
    assert rf[vgg.layer_index("block1_pool")] == ((6, 2), (6, 2))
    m = _tiny_resnet()
    # only the ancestors count: 'side' (1x1, 4->2) is not under 'add'
    hw = 8 * 8
    c1, c2 = hw * 9 * 3 * 4, hw * 9 * 4 * 4
    assert conv_macs(m, "add", 8) == c1 + 2 * c2
    assert conv_macs(m, "cat", 8) == c1 + 2 * c2 + hw * 4 * 2
    assert conv_macs(m, "conv2b", 8, channel_only=True) == c1 + c2 + hw * 9 * 4
    mk = Layer.make
    sep = ConvNet(layers=(
        mk("dw", "depthwise_conv", kernel_size=3, depth_multiplier=2, padding="same"),
        mk("sep", "separable_conv", features=6, kernel_size=3, padding="same"),
        mk("g", "conv", features=4, kernel_size=1, groups=2, padding="same"),
    ), input_shape=(None, None, 3))
    assert conv_macs(sep, "dw", 4) == 16 * 9 * 6
    assert conv_macs(sep, "sep", 4) == 16 * 9 * 6 + 16 * (9 * 6 + 6 * 6)
    assert conv_macs(sep, "g", 4) == 16 * 9 * 6 + 16 * (9 * 6 + 6 * 6) + 16 * 3 * 4


@pytest.mark.slow
@pytest.mark.keras
def test_filter_patterns_on_resnet50_block_output(keras, saved_apps):
    """Issue 17's example: filter patterns at ``conv2_block1_out`` (the ReLU
    after a residual Add) of an imported ResNet50 -- batched equals one at a
    time, and the program never runs the layers after it."""
    _, path = saved_apps("ResNet50")
    model, params = load_keras_model(path, preprocessing="caffe")
    kw = dict(key=jax.random.key(0), steps=2, size=32, model=model,
              style=jcv.Book(preprocess=True))
    both = np.asarray(jcv.filter_patterns(params, "conv2_block1_out", [0, 5], **kw))
    one = np.asarray(jcv.filter_patterns(params, "conv2_block1_out", [5], **kw))
    assert both.shape == (2, 32, 32, 3) and np.isfinite(both).all()
    np.testing.assert_allclose(both[1], one[0], rtol=1e-5, atol=1e-3)
    conv_model = model.with_backend(pointwise="conv")  # 1x1 as convs
    jaxpr = jax.make_jaxpr(lambda p, x: conv_model.forward(
        p, x, stop="conv2_block1_out"))(params, jnp.zeros((1, 32, 32, 3)))
    # conv1 + conv2_block1's 1/2/3 convs and its shortcut conv
    assert _count(jaxpr.jaxpr) == 5
    # the default (1x1 convs as matrix products on CPU) prunes the same way
    dflt = jax.make_jaxpr(lambda p, x: model.forward(
        p, x, stop="conv2_block1_out"))(params, jnp.zeros((1, 32, 32, 3)))
    assert (_count(dflt.jaxpr), _count(dflt.jaxpr, "dot_general")) == (2, 3)
