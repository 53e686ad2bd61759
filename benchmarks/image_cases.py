"""Image cases: Grad-CAM and every conv activation of a batch of images,
batched vs a per-image loop (pytorch-grad-cam with ``--peers``)."""

from __future__ import annotations

__all__ = ["case_activations", "case_gradcam"]

from benchmarks import flops as fl
from benchmarks import torch_peers as tp
from benchmarks.context import Ctx, classifier, images
from benchmarks.timing import log, sync, timed, timeit


def case_gradcam(ctx: Ctx, n: int, size: int) -> list[dict]:
    """Grad-CAM of ``n`` RGB [0, 255] images: batched vs a per-image loop of
    the same function, and pytorch-grad-cam's GradCAM with ``--peers``."""
    import numpy as np

    jcv = ctx.jcv
    model, params = classifier(ctx, size)
    imgs = images(ctx, n, size)
    log(f"gradcam {n} images {size}px")
    bs = ctx.args.gradcam_batch

    def batched():
        return jcv.grad_cam(params, imgs, model=model, run=jcv.Run(batch_size=bs))

    def loop():
        return [jcv.grad_cam(params, imgs[i:i + 1], model=model) for i in range(n)]

    cold, warm, samples = timeit(batched, repeat=ctx.args.repeat)
    sync(loop())  # compile the one-image program before timing it
    per_image = timed(loop)
    a = np.asarray(batched())
    b = np.concatenate([np.asarray(x) for x in loop()])
    flops = fl.forward_flops(model, size, n, upto="block5_conv3")
    rec = {
        "case": f"gradcam:{n}:{size}", "kind": "gradcam", "n": n, "size": size,
        "dtype": "float32", "chunks": {"batch_size": bs},
        "baseline": "per-image loop of jcv.grad_cam (compiled once)",
        "baseline_s": per_image, "batched_s": warm, "cold_s": cold,
        "samples_s": samples,
        "speedup": per_image / warm, "images_per_s": n / warm,
        "baseline_images_per_s": n / per_image,
        "batched_equals_loop_max_abs": float(np.abs(a - b).max()),
        "gflop": flops / 1e9, "tflops": flops / warm / 1e12,
    }
    if ctx.peers and not ctx.smoke:
        rec.update(_gradcam_peer(params, model, np.asarray(imgs), warm))
    return [rec]


def _gradcam_peer(params, model, imgs, warm) -> dict:
    if not (tp.available("torch") and tp.available("pytorch-grad-cam")):
        return {"pytorch_grad_cam": "absent (torch or grad-cam not installed)"}
    import numpy as np

    try:
        net = tp.vgg_classifier(params, model)
        x = np.asarray(model.preprocess(imgs)).transpose(0, 3, 1, 2)
        dt, _ = tp.time_cam(net, net.features[-1], x, "gradcam")
    except Exception as e:  # noqa: BLE001 - a peer failing is a result too
        return {"pytorch_grad_cam_error": f"{type(e).__name__}: {e}"}
    n = imgs.shape[0]
    return {"pytorch_grad_cam_s": dt, "pytorch_grad_cam_images_per_s": n / dt,
            "speedup_vs_pytorch_grad_cam": dt / warm,
            "note_pytorch_grad_cam": "its output is resized to the input size on "
                                     "the host (cv2) and min-max normalised; ours "
                                     "is the 14x14 map"}


def case_activations(ctx: Ctx, n: int, size: int) -> list[dict]:
    """Every conv activation of ``n`` images, batched vs a per-image loop."""
    import numpy as np

    jcv = ctx.jcv
    model, params = ctx.model, ctx.params
    imgs = images(ctx, n, size)
    layers = model.conv_layers
    log(f"activations {n} images {size}px, {len(layers)} layers")
    bs = ctx.args.gradcam_batch or n

    def batched():
        return [jcv.activations(params, imgs[s:s + bs], layers=layers, model=model)
                for s in range(0, n, bs)]

    def loop():
        return [jcv.activations(params, imgs[i:i + 1], layers=layers, model=model)
                for i in range(n)]

    cold, warm, samples = timeit(batched, repeat=ctx.args.repeat)
    sync(loop())
    per_image = timed(loop)
    flops = fl.forward_flops(model, size, n)
    return [{
        "case": f"activations:{n}:{size}", "kind": "activations", "n": n,
        "size": size, "dtype": "float32", "chunks": {"batch_size": bs},
        "baseline": "per-image loop of jcv.activations (compiled once)",
        "baseline_s": per_image, "batched_s": warm, "cold_s": cold,
        "samples_s": samples,
        "speedup": per_image / warm, "images_per_s": n / warm,
        "baseline_images_per_s": n / per_image,
        "gflop": flops / 1e9, "tflops": flops / warm / 1e12,
        "all_finite": bool(all(np.isfinite(np.asarray(v)).all()
                               for d in batched() for v in d.values())),
    }]
