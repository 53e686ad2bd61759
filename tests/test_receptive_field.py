"""Receptive fields (analytic, from the layer table) and patch cropping."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.models.convnet import ConvNet, Layer
from jaxconvviz.models.receptive import crop_patch, receptive_field, top_units

# Hand count for VGG16 (3x3 'same' convs, stride 1; 2x2/2 pools):
# a 3x3 conv adds 2 * jump, a 2x2 pool adds 1 * jump and doubles the jump.
#   block1: 1+2=3, 3+2=5, pool 5+1=6 (jump 2)
#   block2: 6+4=10, 14, pool 14+2=16 (jump 4)
#   block3: 16+8=24, 32, 40, pool 40+4=44 (jump 8)
#   block4: 44+16=60, 76, 92, pool 92+8=100 (jump 16)
#   block5: 100+32=132, 164, 196, pool 196+16=212 (jump 32)
# Offsets: each 'same' 3x3 conv pads 1 pixel of its input (= jump input
# pixels) before; pools pad nothing. block1_conv1 -1, conv2 -2, block2 -4, -6,
# block3 -10, -14, -18, block4 -26, -34, -42, block5 -58, -74, -90.
VGG16_HAND = {
    "block1_conv1": (3, 1, -1), "block1_conv2": (5, 1, -2),
    "block1_pool": (6, 2, -2),
    "block2_conv1": (10, 2, -4), "block2_conv2": (14, 2, -6),
    "block2_pool": (16, 4, -6),
    "block3_conv1": (24, 4, -10), "block3_conv2": (32, 4, -14),
    "block3_conv3": (40, 4, -18), "block3_pool": (44, 8, -18),
    "block4_conv1": (60, 8, -26), "block4_conv2": (76, 8, -34),
    "block4_conv3": (92, 8, -42), "block4_pool": (100, 16, -42),
    "block5_conv1": (132, 16, -58), "block5_conv2": (164, 16, -74),
    "block5_conv3": (196, 16, -90), "block5_pool": (212, 32, -90),
}


@pytest.mark.parametrize("layer", list(VGG16_HAND))
def test_vgg16_receptive_fields_hand_counted(layer):
    size, jump, start = VGG16_HAND[layer]
    rf = receptive_field(jcv.VGG16(include_top=False), layer, (224, 224))
    assert rf.size == (size, size)
    assert rf.jump == (jump, jump)
    assert rf.start == (start, start)
    # the field of unit 0 is centred on the unit's own stride cell
    assert start + (size - 1) / 2 == (jump - 1) / 2
    out = jcv.VGG16(include_top=False).output_shape(layer, (224, 224))[:2]
    assert rf.output_hw == out


def test_receptive_field_box_and_last_unit():
    rf = receptive_field(jcv.VGG16(include_top=False), "block5_conv3", (224, 224))
    assert rf.box(0, 0) == (-90, 106, -90, 106)
    assert rf.box(13, 2) == (-90 + 13 * 16, -90 + 13 * 16 + 196, -58, 138)
    # the last unit's field hangs past the image as far as the first's before it
    assert rf.box(13, 13)[1] - 224 == 90


def _chain():
    """Strides, 'valid' and 'same' (odd padding split), dilation, avg pools and
    non-square kernels; linear activations so a unit's input gradient is
    non-zero exactly on its field (avg pools, not max: a max routes the
    gradient through one pixel)."""
    L = Layer.make
    layers = (
        L("c1", "conv", features=3, kernel_size=(3, 5), strides=2,
          padding="same", activation="linear"),
        L("p1", "avgpool", pool_size=2, strides=2, padding="valid"),
        L("c2", "conv", features=3, kernel_size=3, dilation=2, padding="same",
          activation="linear"),
        L("c3", "conv", features=2, kernel_size=(2, 3), strides=(1, 2),
          padding="valid", activation="linear"),
        L("act", "activation", activation="linear"),
        L("p2", "avgpool", pool_size=3, strides=2, padding="same"),
    )
    return ConvNet(layers=layers, input_shape=(None, None, 2),
                   preprocessing="none")


def _supports(model, params, layer, hw, units):
    """Bounding boxes of the input pixels where d unit / d input != 0, for each
    ``(i, j)`` of ``units`` (one compiled, vmapped gradient)."""
    def unit(x, i, j):
        return model.forward(params, x, stop=layer)[0, i, j].sum()

    x = jax.random.normal(jax.random.key(1), (1, *hw, model.input_shape[2]))
    ii, jj = (jnp.asarray(v) for v in zip(*units, strict=True))
    g = jax.jit(jax.vmap(jax.grad(unit), in_axes=(None, 0, 0)))(x, ii, jj)
    out = []
    for gi in np.abs(np.asarray(g))[:, 0].sum(-1):
        ys, xs = np.nonzero(gi > 0)
        out.append((ys.min(), ys.max() + 1, xs.min(), xs.max() + 1))
    return out


@pytest.mark.parametrize("hw", [(41, 57), (48, 64)])
@pytest.mark.slow
def test_receptive_field_equals_gradient_support(hw):
    """d unit / d input is non-zero exactly on the analytic field when the
    field lies inside the image, and never outside the field.

    (At a border the field, as usually defined, also spans positions that
    are padding of an intermediate layer -- e.g. the row a 'valid' pool
    drops -- so the gradient may stop short of the clipped box there.)
    """
    model = _chain()
    params = model.init_params(jax.random.key(0), hw=hw)
    params = jax.tree.map(lambda a: jnp.abs(a) + 0.1, params)  # no cancellation
    for layer in ("c1", "p1", "c2", "c3", "act", "p2"):
        rf = receptive_field(model, layer, hw)
        assert rf.output_hw == model.output_shape(layer, hw)[:2]
        oh, ow = rf.output_hw
        units = {(0, 0), (oh - 1, ow - 1), (oh // 2, ow // 2), (0, ow - 1),
                 (oh // 2, ow // 2 + 1), (oh // 3, ow // 4)}
        units = sorted((i, j) for i, j in units if 0 <= i < oh and 0 <= j < ow)
        inside = 0
        for (i, j), got in zip(units, _supports(model, params, layer, hw, units),
                               strict=True):
            y0, y1, x0, x1 = rf.box(i, j)
            sy0, sy1, sx0, sx1 = got
            if y0 >= 0 and x0 >= 0 and y1 <= hw[0] and x1 <= hw[1]:
                inside += 1
                assert got == (y0, y1, x0, x1), (layer, i, j)
            else:
                assert y0 <= sy0 < sy1 <= y1 and x0 <= sx0 < sx1 <= x1, (layer, i, j)
        assert inside >= 1 or layer == "p2", layer


@pytest.mark.slow
def test_vgg_like_border_units_see_their_whole_clipped_field():
    """VGG16's geometry (stride-1 'same' convs, 2x2 pools on even sizes) has no
    dropped rows: even corner units' gradients fill the clipped field (linear
    activations and average pools, so no ReLU or max cuts the gradient)."""
    model = jcv.VGG16(include_top=False, block_widths=(2, 2, 2, 2, 2))

    def linear(s):
        if s.kind == "conv":
            return Layer.make(s.name, s.kind, **{**dict(s.options),
                                                 "activation": "linear"})
        return Layer.make(s.name, "avgpool", **dict(s.options))

    linear = tuple(linear(s) for s in model.layers)
    model = model.with_layers(linear).clone(input_shape=(None, None, 2),
                                            parent=None)
    params = model.init_params(jax.random.key(0), hw=(32, 32))
    params = jax.tree.map(lambda a: jnp.abs(a) + 0.1, params)
    for layer in ("block1_conv2", "block2_pool", "block3_conv3"):
        rf = receptive_field(model, layer, (32, 32))
        oh, ow = rf.output_hw
        units = [(0, 0), (oh - 1, ow - 1), (oh // 2, 0)]
        got = _supports(model, params, layer, (32, 32), units)
        for (i, j), box in zip(units, got, strict=True):
            y0, y1, x0, x1 = rf.box(i, j)
            assert box == (max(y0, 0), min(y1, 32), max(x0, 0), min(x1, 32))


def test_receptive_field_errors():
    m = jcv.tiny_vgg16(include_top=True)
    with pytest.raises(ValueError, match="layer must be one of .*got 'fc1'"):
        receptive_field(m, "fc1", (32, 32))
    with pytest.raises(ValueError, match=r"input_hw must be \(h, w\).*got \(0, 32\)"):
        receptive_field(m, "block1_conv1", (0, 32))
    with pytest.raises(ValueError, match="too small for layer 'block5_pool'"):
        receptive_field(m, "block5_pool", (16, 16))


def test_crop_patch_inside_and_at_every_border():
    img = np.arange(5 * 6 * 2, dtype=np.int32).reshape(5, 6, 2)
    np.testing.assert_array_equal(crop_patch(img, (1, 3, 2, 5)), img[1:3, 2:5])
    # top-left corner: 2 rows and 1 column of padding before the image
    p = crop_patch(img, (-2, 2, -1, 2), fill=-7)
    assert p.shape == (4, 3, 2) and p.dtype == img.dtype
    np.testing.assert_array_equal(p[:2], -7)
    np.testing.assert_array_equal(p[:, 0], -7)
    np.testing.assert_array_equal(p[2:, 1:], img[0:2, 0:2])
    # bottom-right corner
    p = crop_patch(img, (3, 8, 4, 9), fill=0)
    np.testing.assert_array_equal(p[:2, :2], img[3:5, 4:6])
    assert (p[2:] == 0).all() and (p[:, 2:] == 0).all()
    # larger than the image on all sides (VGG16 block5 fields on a small image)
    p = crop_patch(img[..., 0], (-3, 9, -4, 10), fill=255)
    assert p.shape == (12, 14)
    np.testing.assert_array_equal(p[3:8, 4:10], img[..., 0])
    assert (p == 255).sum() == 12 * 14 - 30
    # the input is not modified and the result is a copy
    q = crop_patch(img, (0, 5, 0, 6))
    q[:] = 0
    assert img.sum() == np.arange(60).sum()


def test_crop_patch_of_vgg16_border_unit_keeps_unit_centred():
    rf = receptive_field(jcv.VGG16(include_top=False), "block3_conv1", (64, 64))
    img = np.full((64, 64, 3), 9, np.uint8)
    p = crop_patch(img, rf.box(0, 0), fill=0)  # box (-10, 14, -10, 14)
    assert p.shape == (24, 24, 3)
    assert (p[:10] == 0).all() and (p[:, :10] == 0).all() and (p[10:, 10:] == 9).all()


def test_crop_patch_errors():
    img = np.zeros((4, 4, 3))
    with pytest.raises(ValueError, match="box must be"):
        crop_patch(img, (2, 2, 0, 1))
    with pytest.raises(ValueError, match="outside the 4x4 image"):
        crop_patch(img, (4, 6, 0, 2))
    with pytest.raises(ValueError, match=r"image must have shape"):
        crop_patch(np.zeros(4), (0, 1, 0, 1))


def test_top_units_greedy_with_distance():
    a = np.zeros((2, 4, 5), np.float32)
    a[0, 1, 1], a[0, 1, 2], a[1, 3, 4], a[0, 3, 3], a[1, 0, 0] = 9, 8, 7, 6, 5
    assert top_units(a, 3) == [(0, 1, 1, 9.0), (0, 1, 2, 8.0), (1, 3, 4, 7.0)]
    # (0, 1, 2) is 1 column from (0, 1, 1): skipped with min_distance 2
    assert top_units(a, 3, min_distance=(2, 2)) == [
        (0, 1, 1, 9.0), (1, 3, 4, 7.0), (0, 3, 3, 6.0)]
    assert len(top_units(a[:1, :1, :1], 5)) == 1
    with pytest.raises(ValueError, match="k must be an integer >= 1; got 0"):
        top_units(a, 0)


@pytest.mark.slow
def test_graph_model_union_of_branches_and_padding():
    """A residual block: the add sees the union of a 5x5 path and a strided
    1x1 path; zero padding and cropping shift the field. Checked against the
    gradient support and the models' own (size, jump) table."""
    from jaxconvviz.models.shapes import receptive_fields

    L = Layer.make
    lin = {"activation": "linear"}
    layers = (
        L("pad", "zeropad", inputs=("image",), padding=((2, 1), (0, 3))),
        L("a1", "conv", inputs=("pad",), features=2, kernel_size=3, **lin),
        L("a2", "conv", inputs=("a1",), features=2, kernel_size=3, strides=2,
          **lin),
        L("b1", "conv", inputs=("pad",), features=2, kernel_size=1, strides=2,
          **lin),
        L("sum", "add", inputs=("a2", "b1")),
        L("crop", "cropping", inputs=("sum",), cropping=((1, 0), (0, 1))),
        L("c", "conv", inputs=("crop",), features=2, kernel_size=3,
          padding="valid", **lin),
    )
    model = ConvNet(layers=layers, input_shape=(None, None, 2),
                    preprocessing="none", input_name="image")
    hw = (30, 27)
    params = model.init_params(jax.random.key(0), hw=hw)
    params = jax.tree.map(lambda a: jnp.abs(a) + 0.1, params)
    table = receptive_fields(model.layers, model.sources, range(len(layers)))
    for layer in ("a2", "sum", "crop", "c"):
        rf = receptive_field(model, layer, hw)
        i = model.layer_index(layer)
        assert (rf.size[0], rf.jump[0]) == table[i][0]
        assert (rf.size[1], rf.jump[1]) == table[i][1]
        assert rf.output_hw == model.output_shape(layer, hw)[:2]
    # by hand for 'sum' (input 30x27, padded to 33x30): path a is 3x3 'same'
    # (pads 1 before) then 3x3/2 'same' (33 rows: 17 out, 2 padding rows, 1
    # before; 30 columns: 15 out, 1 padding column, 0 before): 5 px, jump 2,
    # from -1 - 1 = -2 (rows) and -1 - 0 = -1 (columns) of the padded image;
    # path b (1x1/2, no padding) sees 1 px from 0, inside path a's. Zero
    # padding puts 2 rows and 0 columns before the image: rows start at -4.
    rf = receptive_field(model, "sum", hw)
    assert rf.size == (5, 5) and rf.jump == (2, 2) and rf.start == (-4, -1)
    rf = receptive_field(model, "c", hw)
    oh, ow = rf.output_hw
    units = [(i, j) for i in range(oh) for j in range(ow)
             if rf.box(i, j)[0] >= 0 and rf.box(i, j)[2] >= 0
             and rf.box(i, j)[1] <= hw[0] and rf.box(i, j)[3] <= hw[1]]
    assert len(units) >= 4
    units = units[:: max(1, len(units) // 6)]
    for (i, j), got in zip(units, _supports(model, params, "c", hw, units),
                           strict=True):
        assert got == rf.box(i, j), (i, j)
