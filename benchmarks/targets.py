"""The issues' targets as data: each says which record it reads, and
:func:`evaluate` reports ``target``, ``measured`` and ``met`` for every one
(``met: null`` with the reason when the run did not measure it)."""

from __future__ import annotations

__all__ = ["ISSUE19_TARGETS", "evaluate"]

#: Issue 19 (one H200, VGG16, 128 px, 40 steps, all 4,224 filters). Each:
#: (id, text, op, value, GPU only).
ISSUE19_TARGETS = (
    ("atlas_bf16_s", "full atlas <= 4 s bfloat16", "<=", 4.0, True),
    ("atlas_f32_s", "full atlas <= 8 s float32 (TF32 allowed and named)", "<=",
     8.0, True),
    ("block5_conv3_bf16_s", "block5_conv3 alone (512 filters) <= 0.8 s bf16", "<=",
     0.8, True),
    ("atlas_bf16_mfu", ">= 50% MFU in bf16 over the full atlas (XLA's FLOP count)",
     ">=", 0.5, True),
    ("atlas_vs_jax_loop", ">= 30x the one-filter-at-a-time JAX loop (float32 "
     "atlas vs the float32 loop)", ">=", 30.0, True),
    ("atlas_vs_torch_loop", ">= 60x the book's loop in PyTorch (float32 atlas vs "
     "the float32 loop)", ">=", 60.0, True),
    ("gradcam_batched_vs_per_image", "Grad-CAM batched >= 10x per-image", ">=", 10.0,
     True),
    ("gradcam_vs_pytorch_grad_cam", "Grad-CAM >= 4x pytorch-grad-cam on the same "
     "device", ">=", 4.0, True),
)

_UNIT = {"render": "filter", "directions": "direction (extrapolated from N "
          "batched directions, 1-2 lucent calls)"}

FULL_ATLAS = {"size": 128, "steps": 40, "n": 4224}


def _ok(rec: dict) -> bool:
    return "error" not in rec and "absent" not in rec


def _full_atlas(recs, dtype):
    return next((r for r in recs if r.get("kind") == "atlas" and _ok(r)
                 and r.get("dtype") == dtype
                 and all(r.get(k) == v for k, v in FULL_ATLAS.items())), None)


def _notes_total(recs, impl):
    return next((r for r in recs if r.get("kind") == "notes" and _ok(r)
                 and r.get("impl") == impl and r.get("size") == 128
                 and r.get("steps") == 40 and r.get("n") == 4224), None)


def _measure(tid: str, recs: list[dict]):
    """``(measured value or None, the case it came from or why not)``."""
    if tid in ("atlas_bf16_s", "atlas_f32_s"):
        r = _full_atlas(recs, "bfloat16" if "bf16" in tid else "float32")
        return (r["batched_s"], r["case"]) if r else (None, "no full atlas:128 "
                                                      "record (40 steps, 4,224 "
                                                      "filters) in this dtype")
    if tid == "block5_conv3_bf16_s":
        r = next((x for x in recs if x.get("kind") == "filters" and _ok(x)
                  and x.get("layer") == "block5_conv3" and x.get("n") == 512
                  and x.get("size") == 128 and x.get("steps") == 40
                  and x.get("dtype") == "bfloat16"), None)
        return (r["batched_s"], r["case"]) if r else (
            None, "no filters:block5_conv3:128:512 bfloat16 record")
    if tid == "atlas_bf16_mfu":
        r = _full_atlas(recs, "bfloat16")
        if r is None:
            return None, "no full bf16 atlas record"
        if r.get("mfu") is None or r.get("mfu_flops") != "xla_cost_analysis":
            return None, f"no MFU from XLA's count ({r.get('peak_source')})"
        return r["mfu"], r["case"]
    if tid in ("atlas_vs_jax_loop", "atlas_vs_torch_loop"):
        r = _full_atlas(recs, "float32")
        b = _notes_total(recs, "jax" if "jax" in tid else "torch")
        if r is None or b is None:
            return None, "needs the float32 full atlas and the notes:128 case " \
                         "(with --peers for PyTorch) in the same run"
        return b["scaled_total_s"] / r["batched_s"], f"{b['case']} / {r['case']}"
    if tid.startswith("gradcam"):
        r = next((x for x in recs if x.get("kind") == "gradcam" and _ok(x)
                  and x.get("size") == 224), None)
        if r is None:
            return None, "no gradcam:N:224 record"
        key = "speedup" if tid.endswith("per_image") else "speedup_vs_pytorch_grad_cam"
        return (r[key], r["case"]) if key in r else (
            None, "pytorch-grad-cam absent or failed (run with --peers)")
    raise KeyError(tid)


def evaluate(records: list[dict], env: dict) -> list[dict]:
    """Issue 19's targets and the peer targets (issues 15-17) of ``records``.

    GPU targets read on a CPU run are ``applies: false``; peer targets read
    the ``met`` of each peer record.
    """
    out = []
    gpu = env.get("platform") == "gpu"
    for tid, text, op, value, gpu_only in ISSUE19_TARGETS:
        measured, src = _measure(tid, records)
        met = None
        if measured is not None:
            met = measured <= value if op == "<=" else measured >= value
        applies = gpu or not gpu_only
        out.append({"id": tid, "issue": 19, "target": f"{op} {value}", "text": text,
                    "measured": measured, "met": met if applies else None,
                    "applies": applies, "source": src,
                    "device_kind": env.get("device_kind"),
                    **({} if applies else {"note": "a GPU target; this run is on "
                                                   f"{env.get('platform')}"})})
    for r in records:  # issue 31: the dataset pass
        if r.get("kind") == "examples" and _ok(r):
            out.append({"id": r["case"], "issue": 31,
                        "target": f">= {r['target_ratio']}",
                        "text": "streamed images/s >= 85% of the same jitted pass "
                                "on images already in memory",
                        "measured": r["streamed_vs_in_memory"], "met": r["met"],
                        "applies": True, "source": r["case"],
                        "device_kind": env.get("device_kind")})
        if r.get("kind") == "examples" and _ok(r) and "target_speedup_vs_peer" in r:
            out.append({"id": r["case"] + ":torch", "issue": 31,
                        "target": f">= {r['target_speedup_vs_peer']}",
                        "text": "streamed images/s >= the PyTorch user's loop "
                                "(DataLoader + hooks + torch.topk), same weights",
                        "measured": r.get("speedup_vs_peer"),
                        "met": r.get("met_vs_peer"), "applies": True,
                        "source": r.get("peer"),
                        "device_kind": env.get("device_kind")})
        if r.get("kind") == "examples_memory" and _ok(r):
            out.append({"id": r["case"], "issue": 31,
                        "target": f"< {r['target_mib']} MiB",
                        "text": "resident memory growth from N1 to N2 images",
                        "measured": r["growth_mib"], "met": r["met"],
                        "applies": True, "source": r["case"],
                        "device_kind": env.get("device_kind")})
    issue = {"render": 15, "cam": 16, "resnet50": 17, "directions": 32}
    for r in records:
        if r.get("kind") in issue and "target_speedup_vs_peer" in r:
            out.append({"id": r["case"], "issue": issue[r["kind"]],
                        "target": f">= {r['target_speedup_vs_peer']}",
                        "text": f"{r['case']}: the peer's time / ours, per "
                                f"{_UNIT.get(r['kind'], 'image')}",
                        "measured": r.get("speedup_vs_peer"), "met": r.get("met"),
                        "applies": True, "source": r.get("peer") or r.get("absent"),
                        "device_kind": env.get("device_kind")})
    return out
