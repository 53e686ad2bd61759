"""Activation-atlas rendering (issue 32): ``directions:LAYER:SIZE:STEPS:N``.

``N`` random non-negative directions of ``LAYER`` rendered by the library in
one batched lucid call (:class:`jaxconvviz.objectives.CosineDirection`, the
atlas' objective), against lucent's ``render_vis`` with one direction
objective per call, as lucid's atlas notebooks render cells (when torch and
torch-lucent are installed). Target: ours >= 4x lucent per direction.
"""

from __future__ import annotations

__all__ = ["TARGET", "case_directions"]

import os
import statistics
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
    load0 = os.getloadavg()
    cold = timed(ours)
    warms = [timed(ours) for _ in range(max(1, ctx.args.repeat))]
    warm = statistics.median(warms)
    est = estimate_render_seconds(ctx.model, layer, n, size=size, steps=steps)
    rec = {"case": case, "kind": "directions", "layer": layer, "size": size,
           "steps": steps, "n": n, "dtype": "float32", "ours_s": warm,
           "ours_cold_s": cold, "ours_runs_s": warms,
           "loadavg_before": load0, "loadavg_after_ours": os.getloadavg(),
           "ours_s_per_direction": warm / n,
           "ours_render": "jcv.render lucid style (its defaults), all n directions "
                          f"in one batched call at {size} px",
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
    peer_runs = []
    for k in range(n_peer):
        t0 = time.perf_counter()
        peer(k)
        peer_runs.append(time.perf_counter() - t0)
        log(f"  lucent direction {k}: {peer_runs[-1]:.1f} s")
    peer_s = statistics.median(peer_runs)
    ratio = peer_s / (warm / n)
    rec.update({"peer": f"lucent render_vis on {source}", "peer_directions_timed":
                n_peer, "peer_runs_s": peer_runs, "peer_s_per_direction": peer_s,
                "peer_objective": f"objectives.direction_neuron('{name}', v) "
                                  "(centre position, as CosineDirection "
                                  "center=True; lucent has no cossim variant)",
                "peer_render": f"param.image({size}); render_vis upsamples "
                               "images under 224 px to 224 before the model and "
                               "runs the whole VGG16 (random dense top) each step",
                "speedup_vs_peer": ratio,
                "extrapolation": f"per direction: ours {n} directions batched in "
                                 f"one call / {n}, lucent {n_peer} call(s); the "
                                 "issue's 100 directions are extrapolated per "
                                 "direction, not run",
                "loadavg_after": os.getloadavg(),
                "met": ratio >= TARGET, "peer_versions": tp.versions()})
    return [rec]
