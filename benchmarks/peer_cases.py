"""Peer speed cases: jaxconvviz against lucent (feature visualisation) and
pytorch-grad-cam (CAM methods on VGG16 and ResNet50), side by side in one
process, same weights, same image size.

Each record has the library's time, the peer's, their ratio
(``speedup_vs_peer`` = peer seconds / ours, per image or per filter), the
target from its issue and whether it was met. A missing peer is recorded
as ``"peer": "absent (...)"``; a case that fails is recorded with its error
(:func:`benchmarks.cases.run_case`). Nothing is dropped.

On a CPU the peers take minutes per filter (lucent: 512 steps at 224 px
through the whole VGG16) or per image (Score-CAM, Ablation-CAM): cases take
a ``steps`` argument; both sides run the same number of steps and the
record states the steps measured and the per-step scaling to the target's
steps.
"""

from __future__ import annotations

__all__ = ["TARGETS", "case_cam", "case_render", "case_resnet50",
           "torchvision_vgg16"]

import time

from benchmarks import torch_peers as tp
from benchmarks.context import classifier
from benchmarks.timing import log, timed

#: Issue targets for the peer comparisons: ratio peer time / ours, at least.
TARGETS = {"render": 1.5, "cam": 4.0, "cam_scorecam": 1.5, "cam_ablationcam": 1.5,
           "resnet50": 4.0}


def _peer_fields(ours_s: float, peer_s: float | None, target: float,
                 unit: str) -> dict:
    if peer_s is None:
        return {"target_speedup_vs_peer": target, "met": None}
    ratio = peer_s / ours_s
    return {f"peer_s_per_{unit}": peer_s, "speedup_vs_peer": ratio,
            "target_speedup_vs_peer": target, "met": ratio >= target}


def torchvision_vgg16(params, model, *, with_top: bool = False):
    """torchvision's VGG16 (``weights=None``) holding ``params``' conv
    weights (and the dense top when ``with_top``; else its random top).

    Returns ``(net, source)``; source says whether torchvision's class or an
    equivalent ``torch.nn`` rebuild (torchvision not importable) was used.
    """
    import numpy as np
    import torch

    try:
        import torchvision

        net = torchvision.models.vgg16(weights=None)
        source = f"torchvision {torchvision.__version__} models.vgg16"
    except Exception as e:  # noqa: BLE001 - say which network was measured
        why = f"(torchvision failed: {type(e).__name__})"
        if with_top:  # net.features, pool, fc1-fc2-predictions, as torchvision
            return tp.vgg_classifier(params, model), f"torch.nn rebuild of VGG16 {why}"
        feats = tp.vgg_features(params, model, model.conv_layers[-1])
        holder = torch.nn.Module()
        holder.features = feats
        holder.forward = feats.forward
        return holder.to(tp.device()).eval(), (
            f"torch.nn rebuild of VGG16's features {why}")
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    for conv, name in zip(convs, model.conv_layers, strict=True):
        k = np.asarray(params[name]["kernel"], np.float32)
        conv.weight.data = torch.from_numpy(
            np.ascontiguousarray(k.transpose(3, 2, 0, 1)))
        conv.bias.data = torch.from_numpy(np.array(params[name]["bias"], np.float32))
    if with_top:
        k = np.asarray(params["fc1"]["kernel"], np.float32)  # rows in (7, 7, 512)
        k = k.reshape(7, 7, 512, -1).transpose(2, 0, 1, 3).reshape(25088, -1)
        dense = [k, np.asarray(params["fc2"]["kernel"], np.float32),
                 np.asarray(params["predictions"]["kernel"], np.float32)]
        for lin, w, name in zip((net.classifier[0], net.classifier[3],
                                 net.classifier[6]), dense,
                                ("fc1", "fc2", "predictions"), strict=True):
            lin.weight.data = torch.from_numpy(np.ascontiguousarray(w.T))
            lin.bias.data = torch.from_numpy(np.array(params[name]["bias"],
                                                        np.float32))
    return net.to(tp.device()).eval(), source


def _features_index(model, layer: str) -> int:
    """Index in torchvision's ``vgg16().features`` of ``layer``'s output as
    Keras reports it (a conv layer: its ReLU)."""
    idx = -1
    for spec in model.layers[: model.layer_index(layer) + 1]:
        idx += 2 if spec.kind == "conv" else 1 if spec.kind == "maxpool" else 0
    return idx


# ------------------------------------------------------------------ render
def case_render(ctx, layer: str = "block4_conv1", size: int = 224,
                steps: int = 512, n: int = 4) -> list[dict]:
    """Issue 15: lucid-style ``jcv.render`` vs lucent's ``render_vis``, per
    filter, ``n`` filters of ``layer`` at ``size`` px, ``steps`` steps each.

    lucent: torchvision's VGG16 with the same conv weights, one
    ``render_vis`` call per filter, its defaults (FFT-decorrelated image,
    standard transforms, Adam lr 0.05, torchvision normalisation), objective
    ``features_<conv>:k`` (before the ReLU, as ``jcv.render``'s default
    ``pre_activation=True``). Ours: one ``jcv.render`` call for all ``n``
    filters with its defaults (lucid style). Target: ours >= 1.5x faster per filter.
    """
    case = f"render:{layer}:{size}:{steps}:{n}"
    render = ctx.jcv.render
    filters = list(range(n))

    def ours():
        return render(ctx.params, layer, filters, key=ctx.key, size=size,
                      steps=steps, model=ctx.model)

    log(f"render {layer} {size}px {steps} steps x {n} filters (ours)")
    cold = timed(ours)
    warm = timed(ours)
    rec = {"case": case, "kind": "render", "layer": layer, "size": size,
           "steps": steps, "n": n, "dtype": "float32",
           "ours_s": warm, "ours_cold_s": cold, "ours_s_per_filter": warm / n,
           "chunks": {"filters_per_call": n},
           "baseline": "lucent render_vis, one call per filter"}
    if not (tp.available("torch") and tp.available("lucent")):
        rec["peer"] = "absent (torch or torch-lucent not installed)"
        rec.update(_peer_fields(warm / n, None, TARGETS["render"], "filter"))
        return [rec]
    from lucent.optvis import param
    from lucent.optvis import render as lrender

    net, source = torchvision_vgg16(ctx.params, ctx.model)
    for p in net.parameters():  # as lucent's README runs it: params untouched
        p.requires_grad_(True)
    # the conv module itself (before its ReLU), as jcv.render's default
    # pre_activation=True optimises
    obj = f"features_{_features_index(ctx.model, layer) - 1}:"
    n_peer = max(1, min(n, ctx.args.peer_filters))

    def peer(k, steps=steps):
        lrender.render_vis(net, obj + str(k), param_f=lambda: param.image(size),
                           thresholds=(steps,), show_image=False, progress=False)
        tp.sync()

    log(f"  lucent: {n_peer} filter(s), {steps} steps each")
    peer(0, steps=2)  # warm-up
    t0 = time.perf_counter()
    for k in range(n_peer):
        peer(k)
    peer_s = (time.perf_counter() - t0) / n_peer
    rec.update({"peer": f"lucent render_vis on {source}", "peer_filters_timed":
                n_peer, "peer_versions": tp.versions()})
    rec.update(_peer_fields(warm / n, peer_s, TARGETS["render"], "filter"))
    return [rec]


# --------------------------------------------------------------------- CAM
def _corr(a, b) -> float:
    import numpy as np

    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _cam_pair(ctx, case, kind, model, params, net, target_layer, method, n, size,
              source, target, conv3x3=None) -> list[dict]:
    import numpy as np

    cam = ctx.jcv.cam
    imgs = np.asarray(ctx.jax.random.uniform(ctx.jax.random.key(3),
                                             (n, size, size, 3)) * 255.0)

    if conv3x3 is not None:  # "auto" is 0.x's name of "by_shape"
        model = model.with_backend(
            conv3x3="by_shape" if conv3x3 == "auto" else conv3x3)

    def ours():
        return cam(params, imgs, method=method, model=model, size=(size, size))

    log(f"{kind} {method}: {n} image(s) at {size}px (ours)")
    with_compile = timed(ours)
    warm = timed(ours)
    mine = np.asarray(ours())
    rec = {"case": case, "kind": kind, "method": method, "n": n, "size": size,
           "dtype": "float32", "conv3x3_impl": _conv3x3_used(method, model),
           "ours_s": warm,
           "ours_cold_s": with_compile,
           "ours_s_per_image": warm / n, "chunks": {"batch_size": None},
           "output": "maps resized to the input size in both"}
    if net is None or not tp.available("pytorch-grad-cam"):
        rec["peer"] = "absent (torch or grad-cam not installed)"
        rec.update(_peer_fields(warm / n, None, target, "image"))
        return [rec]
    x = np.asarray(model.preprocess(imgs)).transpose(0, 3, 1, 2)
    try:
        peer_s, res = tp.time_cam(net, target_layer, x, method,
                                  batch_size=ctx.args.peer_cam_batch)
    except Exception as e:  # noqa: BLE001 - the peer failing is a result
        rec["peer_error"] = f"{type(e).__name__}: {e}"
        rec.update(_peer_fields(warm / n, None, target, "image"))
        return [rec]
    rec.update({"peer": f"pytorch-grad-cam {tp.versions()['pytorch-grad-cam']} on "
                        f"{source}", "peer_s": peer_s,
                "correlation_with_peer": _corr(mine, np.asarray(res))})
    rec.update(_peer_fields(warm / n, peer_s / n, target, "image"))
    return [rec]


def _conv3x3_used(method: str, model) -> str:
    """The 3x3 convolution form ``jcv.cam`` ran with (``Backend.conv3x3``
    resolved: the model's setting, else the process default, else the
    method's preference, ``jcv.cam_method(method).conv3x3``; Score-CAM
    prefers ``"by_shape"``, Winograd where it pays)."""
    import jaxconvviz as jcv
    from jaxconvviz.backend import bind

    pref = jcv.cam_method(method).conv3x3
    bound = bind(model, library_gradients=True,
                 prefer_conv3x3=None if pref == "conv" else pref)
    return bound.backend.conv3x3


def _suffix(conv3x3: str | None) -> str:
    return "" if conv3x3 is None else f":{conv3x3}"


def case_cam(ctx, method: str = "gradcam", n: int = 4, size: int = 224,
             conv3x3: str | None = None) -> list[dict]:
    """Issue 16: ``jcv.cam(params, images, method=m)`` on VGG16 vs
    pytorch-grad-cam's class for ``m`` on torchvision's VGG16 holding the
    same weights (conv layers from the benchmark weights, one random top
    shared by both), per image, ``n`` RGB images at ``size`` px, top-1
    class, target layer block5_conv3's output (torchvision
    ``features[29]``). Target: >= 4x; Score-CAM and Ablation-CAM >= 1.5x.
    ``conv3x3`` is the model's ``Backend.conv3x3`` (``"by_shape"``, or
    ``"auto"``, 0.x's name of it: Winograd where it pays,
    ``cam:gradcam:4:224:auto``; ``"conv"``; ``"winograd"``; absent: the
    method's preference, ``jcv.cam_method(method).conv3x3``)."""
    case = f"cam:{method}:{n}:{size}{_suffix(conv3x3)}"
    target = TARGETS.get(f"cam_{method}", TARGETS["cam"])
    model, params = classifier(ctx, size)
    net = layer = source = None
    if ctx.peers and tp.available("torch") and not ctx.smoke:
        net, source = torchvision_vgg16(params, model, with_top=True)
        layer = net.features[_features_index(model, "block5_conv3")]
    return _cam_pair(ctx, case, "cam", model, params, net, layer, method, n, size,
                     source, target, conv3x3)


def case_resnet50(ctx, n: int = 4, size: int = 224, conv3x3: str | None = None,
                  method: str = "gradcam") -> list[dict]:
    """Issue 17: Grad-CAM on ResNet50 (random weights) vs pytorch-grad-cam on
    torchvision's ResNet50 (random weights), per image. Target: >= 4x.
    ``conv3x3``: as for :func:`case_cam`."""
    case = f"resnet50:{n}:{size}{_suffix(conv3x3)}"
    model, params = ctx.jcv.load_application("resnet50", weights=None)
    net = layer = source = None
    if ctx.peers and tp.available("torch"):
        try:
            import torchvision

            net = torchvision.models.resnet50(weights=None).to(tp.device()).eval()
            layer, source = net.layer4[-1], f"torchvision {torchvision.__version__} " \
                "models.resnet50 (random weights)"
        except Exception as e:  # noqa: BLE001
            source = f"torchvision failed: {type(e).__name__}: {e}"
    return _cam_pair(ctx, case, "resnet50", model, params, net, layer, method, n,
                     size, source, TARGETS["resnet50"], conv3x3)
