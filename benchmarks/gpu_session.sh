#!/usr/bin/env bash
# The GPU work of issue "Measured side", in one device call (see ../.library/device/METHOD.md):
#   run(command="bash benchmarks/gpu_session.sh", timeout_s=600)
# On the lent machine python3 already has torch, triton, typer, rich and nvidia-ml-py; perfscope
# runs from the working tree (PYTHONPATH). Results land in $OUT (fetched back), one JSON per
# section, named after the device; commit them under reports/measured/.
set -u
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-reports/measured}
mkdir -p "$OUT"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' /' '--')
hw=$(case "$gpu" in *H200*) echo h200-sxm ;; *H100*) echo h100-sxm ;; *A100*) echo a100-sxm-80gb ;;
     *) echo local ;; esac)
stamp=$(date -u +%Y%m%d)
ps() { python3 -m perfscope "$@"; echo "[exit $?] perfscope $*" >&2; }

nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu \
    --format=csv >&2
python3 -m pytest -q -m gpu tests/ 2>&1 | tail -5
ps bench ceilings --device cuda --full --format json --save "$OUT/local-$gpu.toml" \
    -o "$OUT/ceilings-$gpu-$stamp.json"
ps bench ops --device cuda --full --model llama-3.1-8b --hw "$hw" --phase prefill \
    --seq-len 2048 --batch 1 --format json -o "$OUT/ops-prefill2048-$gpu-$stamp.json"
for b in 1 8 64 256; do
  ps bench ops --device cuda --full --model llama-3.1-8b --hw "$hw" --phase decode --batch "$b" \
      --context-len 2048 --no-sweep --format json -o "$OUT/ops-decode-b$b-$gpu-$stamp.json"
done
ps bench kernels --device cuda --full --format json -o "$OUT/kernels-$gpu-$stamp.json"
python3 benchmarks/bench_fused_norm.py --device cuda 2>&1 | tail -4
ls -la "$OUT"
