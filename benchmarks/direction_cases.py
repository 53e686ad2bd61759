"""Activation-atlas rendering (issue 32): ``directions:LAYER:SIZE:STEPS:N``.

``N`` random non-negative directions of ``LAYER`` rendered by the library in
one batched lucid call (:class:`jaxconvviz.objectives.CosineDirection`, the
atlas' objective), against lucent's ``render_vis`` with one direction
objective per call, as lucid's atlas notebooks render cells (when torch and
torch-lucent are installed). Target: ours >= 4x lucent per direction.
"""

from __future__ import annotations

__all__ = ["TARGET", "case_directions"]

import time

from benchmarks import torch_peers as tp
from benchmarks.timing import log, timed

#: Issue 32: ours at least 4x faster per direction than lucent.
TARGET = 4.0


def _directions(ctx, layer: str, n: int):
    import jax
    import numpy as np

    c = ctx.model.channels(layer)
    return np.abs(np.asarray(jax.random.normal(jax.random.key(7), (n, c))))


def case_directions(ctx, layer: str = "block4_conv3", size: int = 64,
                    steps: int = 128, n: int = 100) -> list[dict]:
    from jaxconvviz.directions.activation_atlas import estimate_render_seconds
    from jaxconvviz.featureviz.objectives import CosineDirection

    case = f"directions:{layer}:{size}:{steps}:{n}"
    dirs = _directions(ctx, layer, n)
    obj = CosineDirection(layer, tuple(map(tuple, dirs.tolist())))
    c = ctx.model.channels(layer)
    if n > c:
        raise ValueError(f"n must be <= {c} directions for one call at {layer}")

    def ours():
        return ctx.jcv.render(ctx.params, layer, list(range(n)), key=ctx.key,
                              size=size, steps=steps, objective=obj,
                              model=ctx.model)

    log(f"directions {layer} {size}px {steps} steps x {n} (ours, one call)")
    cold = timed(ours)
    warm = timed(ours)
    est = estimate_render_seconds(ctx.model, layer, n, size=size, steps=steps)
    rec = {"case": case, "kind": "directions", "layer": layer, "size": size,
           "steps": steps, "n": n, "dtype": "float32", "ours_s": warm,
           "ours_cold_s": cold, "ours_s_per_direction": warm / n,
           "cpu_estimate_s": est, "target_speedup_vs_peer": TARGET,
           "baseline": "lucent render_vis, one direction objective per call"}
    if not (tp.available("torch") and tp.available("lucent")):
        rec["peer"] = "absent (torch or torch-lucent not installed)"
        rec["met"] = None
        return [rec]
    import torch
    from lucent.optvis import objectives, param
    from lucent.optvis import render as lrender

    from benchmarks.peer_cases import _features_index, torchvision_vgg16

    net, source = torchvision_vgg16(ctx.params, ctx.model)
    name = f"features_{_features_index(ctx.model, layer) - 1}"
    n_peer = max(1, min(n, ctx.args.peer_filters))

    def peer(k, steps=steps):
        v = torch.tensor(dirs[k], dtype=torch.float32)
        obj = objectives.direction_neuron(name, v)
        lrender.render_vis(net, obj, param_f=lambda: param.image(size),
                           thresholds=(steps,), show_image=False, progress=False)
        tp.sync()

    log(f"  lucent: {n_peer} direction(s), {steps} steps each")
    peer(0, steps=2)
    t0 = time.perf_counter()
    for k in range(n_peer):
        peer(k)
    peer_s = (time.perf_counter() - t0) / n_peer
    ratio = peer_s / (warm / n)
    rec.update({"peer": f"lucent render_vis on {source}", "peer_directions_timed":
                n_peer, "peer_s_per_direction": peer_s, "speedup_vs_peer": ratio,
                "met": ratio >= TARGET, "peer_versions": tp.versions()})
    return [rec]
