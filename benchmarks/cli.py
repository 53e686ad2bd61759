"""The benchmark's command line (``scripts/benchmark.py`` calls :func:`main`).

Prints ONE JSON document on stdout (progress on stderr); ``--out`` also
writes it atomically after every case, so a run cut off still leaves every
finished case on disk.
"""

from __future__ import annotations

__all__ = ["CPU_DEFAULT_CASES", "DEFAULT_CASES", "SMOKE_CASES", "build_parser",
           "main", "run"]

import argparse
import json
import sys
import time

DEFAULT_CASES = (
    "atlas:128",
    "filters:block5_conv3:128:512",
    "notes:128",
    "filters:block1_conv1:64:64",
    "filters:block3_conv1:64:64",
    "channel:block3_conv1:128:256",
    "gradcam:64:224",
    "activations:64:224",
)
CPU_DEFAULT_CASES = tuple(
    f"filters:{layer}:64:16" for layer in (
        "block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2",
        "block3_conv1", "block3_conv3", "block4_conv1", "block4_conv3",
        "block5_conv1", "block5_conv3")
) + ("gradcam:8:224", "activations:8:224")
SMOKE_CASES = (
    "filters:block1_conv2:16:4",
    "atlas:16",
    "notes:16:1",
    "gradcam:2:32",
    "activations:2:16",
    "loops:block1_conv1:16:4",
    "channel:block1_conv2:16:4",
    "examples:8:32",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmark.py",
        description="Benchmark jaxconvviz against the one-at-a-time method of the "
                    "notes and the peers; one JSON document on stdout.")
    p.add_argument("--smoke", action="store_true",
                   help="tiny VGG16, tiny sizes, every case kind, seconds (CI)")
    p.add_argument("--cases", default=None,
                   help="comma list of cases (default: a GPU or a CPU set)")
    p.add_argument("--dtype", default="float32",
                   choices=("float32", "bfloat16", "both"))
    p.add_argument("--precision", default="default",
                   choices=("default", "high", "highest"),
                   help="jax_default_matmul_precision (GPU float32: default and "
                   "high may use TF32, highest is full FP32); recorded and used "
                   "to pick the dense peak for MFU")
    p.add_argument("--steps", type=int, default=None,
                   help="ascent steps (default 40; 3 in --smoke)")
    p.add_argument("--weights", default="hed", help="hed, random or a weights path")
    p.add_argument("--peers", action="store_true",
                   help="also time PyTorch's one-at-a-time loop, pytorch-grad-cam "
                   "and lucent where installed (absent ones are recorded as such)")
    p.add_argument("--repeat", type=int, default=3, help="timed repeats (median; "
                   "filters cases use --rounds)")
    p.add_argument("--rounds", type=int, default=3,
                   help="filters cases: time every variant once per round, "
                   "interleaved, and report the minimum")
    p.add_argument("--baseline-filters", type=int, default=8,
                   help="filters the one-at-a-time loops are timed on (scaled up)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="filters/atlas cases: skip the one-at-a-time loop (time it "
                   "with the notes case instead)")
    p.add_argument("--no-xla-flops", dest="xla_flops", action="store_false",
                   help="skip XLA's cost analysis (it compiles each layer's step "
                   "program twice)")
    p.add_argument("--atlas-filters", type=int, default=None,
                   help="first N filters per layer in atlas/notes cases")
    p.add_argument("--atlas-layers", default=None,
                   help="comma list of layers in atlas/notes cases")
    p.add_argument("--loop-chunks", default=None,
                   help="comma list of chunk sizes in loops cases")
    p.add_argument("--memory-budget", default=None,
                   help="per-device budget for atlas cases, e.g. 16GB")
    p.add_argument("--gradcam-batch", type=int, default=None,
                   help="images per compiled call in gradcam/activations")
    p.add_argument("--peer-filters", type=int, default=1,
                   help="render cases: filters lucent is timed on (per filter)")
    p.add_argument("--peer-cam-batch", type=int, default=None,
                   help="cam cases: pytorch-grad-cam's batch_size for Score-CAM "
                   "and Ablation-CAM (default: its own)")
    p.add_argument("--torch-threads", type=int, default=None, metavar="N",
                   help="torch.set_num_threads(N) for the PyTorch peers (default: "
                   "PyTorch's own; on a CPU shared with other work, 1 thread "
                   "avoids OpenMP spin-waits: measured 10x faster for ResNet50 "
                   "Grad-CAM under a load of 15 on 2 cores)")
    p.add_argument("--cpu-devices", default="auto", metavar="N",
                   help="split XLA:CPU into N devices (jaxconvviz.use_cpu_cores); "
                   "'auto': one per core; 1: one device")
    p.add_argument("--channel-only", default="auto", choices=("auto", "on", "off"),
                   help="filters/atlas cases: channel_only on, off, or the "
                   "library default (auto)")
    p.add_argument("--own-process", action="store_true",
                   help="this process runs one case (gpu_probe.py): the device's "
                   "peak memory is that case's own")
    p.add_argument("--out", default=None, help="also write the JSON here (updated "
                   "after every case)")
    p.add_argument("--plot-peers", nargs="+", default=None, metavar="JSON",
                   help="draw the peer records (cam, resnet50, render) of benchmark "
                   "JSON files into the PNG given by --out instead of running")
    p.add_argument("--plot", nargs="+", default=None, metavar="JSON",
                   help="draw benchmark JSON files (JSON=LABEL names the device) "
                   "into the PNG given by --out instead of running")
    return p


def run(args) -> dict:
    """Run ``args``' cases; returns the document (also written to
    ``args.out`` after every case)."""
    import jax

    from benchmarks import records as R
    from benchmarks import torch_peers as tp
    from benchmarks.cases import Ctx, run_case
    from benchmarks.targets import evaluate
    from jaxconvviz.backend.cpu import use_cpu_cores

    if args.cpu_devices == "auto":
        use_cpu_cores()
    else:
        use_cpu_cores(int(args.cpu_devices))
    if args.precision != "default":
        jax.config.update("jax_default_matmul_precision", args.precision)
    if args.torch_threads and tp.available("torch"):
        import torch

        torch.set_num_threads(args.torch_threads)
    env = R.environment(args.precision)
    ctx = Ctx(args, env)
    if args.cases:
        cases = [c for c in args.cases.split(",") if c]
    elif args.smoke:
        cases = list(SMOKE_CASES)
    else:
        cases = list(CPU_DEFAULT_CASES if ctx.cpu else DEFAULT_CASES)
    doc = {
        "benchmark": "jaxconvviz", "time": R.now(), "environment": env,
        "dtype": args.dtype, "steps": args.steps, "smoke": bool(args.smoke),
        "weights": ctx.weights, "peers": tp.versions() if args.peers else None,
        "argv": sys.argv[1:], "cases": [], "targets": [],
    }
    t_start = time.perf_counter()
    for text in cases:
        doc["cases"].extend(run_case(ctx, text, own_process=args.own_process))
        doc["elapsed_s"] = time.perf_counter() - t_start
        doc["targets"] = evaluate(doc["cases"], env)
        if args.out:
            R.write_json(doc, args.out)
    return doc


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.plot_peers:
        from benchmarks.plot import plot_peers

        plot_peers(args.plot_peers, args.out or "peers.png")
        return 0
    if args.plot:
        from benchmarks.plot import plot

        plot(args.plot, args.out or "benchmarks.png")
        return 0
    if args.smoke:
        args.steps = args.steps or 3
        args.atlas_layers = args.atlas_layers or "block1_conv1,block1_conv2"
        args.repeat = min(args.repeat, 2)
        args.rounds = 1
        args.baseline_filters = min(args.baseline_filters, 2)
    args.steps = args.steps or 40
    doc = run(args)
    json.dump(doc, sys.stdout, indent=1)
    print()
    return 0
