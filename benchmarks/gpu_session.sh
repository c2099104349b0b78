#!/usr/bin/env bash
# The GPU work of issue 9 (measured side), in one device call:
#   run(command="BUNDLE=1 bash benchmarks/gpu_session.sh", timeout_s=600)
# ONLY="ceilings decode" runs just the steps whose labels start with those words.
# On the lent machine python3 already has torch, triton, typer, rich and nvidia-ml-py; perfscope
# runs from the working tree (PYTHONPATH). Results are one JSON per step, named after the
# device. With BUNDLE=1 (for the device tool, which fetches at most 8 files from $OUT) they are
# written to a staging folder and packed into $OUT/gpu-session-<gpu>-<date>.tar.gz at the end,
# with the session's log beside it; without it they land in $OUT (default reports/measured).
# Commit the useful ones under reports/measured/.
#
# Every step has its own timeout and the whole session a deadline (DEADLINE_S, default 540 s,
# under the device call's 600 s): a step that would start past it is skipped, so what ran is
# always fetched back. Each step logs its exit status and time; a failure does not stop the
# others. Large outputs are checked on the device or on a subset of rows (no float64 copies
# of 65536 x 8192 tensors on the host).
set -u
# the spec of a GPU by its nvidia-smi name: NVL and PCIe boards before the SXM ones whose
# names they contain ("NVIDIA H200 NVL" also matches *H200*)
spec_for() {
  case "$1" in
    *H200*NVL*) echo h200-nvl ;; *H200*) echo h200-sxm ;;
    *H100*NVL*) echo h100-nvl ;; *H100*PCIe*) echo h100-pcie ;; *H100*) echo h100-sxm ;;
    *A100*SXM*40GB*) echo a100-sxm-40gb ;; *A100*SXM*) echo a100-sxm-80gb ;;
    *A100*PCIE*80GB*|*A100*80GB*PCIe*) echo a100-pcie-80gb ;;
    *L40S*) echo l40s ;; *B200*) echo b200 ;;
    *) echo local ;;
  esac
}
if [[ "${1:-}" == "--spec-for" ]]; then spec_for "$2"; exit 0; fi  # for tests
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-reports/measured}
DEADLINE_S=${DEADLINE_S:-540}
mkdir -p "$OUT"
start=$(date +%s)
name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
gpu=$(echo "$name" | tr ' /' '--')
hw=$(spec_for "$name")
stamp=$(date -u +%Y%m%d)
if [[ "${BUNDLE:-0}" == 1 ]]; then
  FINAL=$OUT
  OUT=$(mktemp -d)
  exec 2> >(tee "$FINAL/gpu-session-$gpu-$stamp.log" >&2)
fi
echo "device: $name -> --hw $hw" >&2

# step SECONDS LABEL COMMAND...: run with a timeout unless the deadline has passed, or unless
# ONLY (space-separated labels' first words) leaves it out
step() {
  local limit=$1 label=$2
  shift 2
  if [[ -n "${ONLY:-}" && " $ONLY " != *" ${label%% *} "* ]]; then return; fi
  local now=$(( $(date +%s) - start ))
  if (( now + 10 > DEADLINE_S )); then
    echo "[skipped: deadline, ${now}s used] $label" >&2
    return
  fi
  (( limit > DEADLINE_S - now )) && limit=$(( DEADLINE_S - now ))
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "[exit $rc, $(( $(date +%s) - t0 ))s of ${limit}s] $label" >&2
}

nvidia-smi --query-gpu=name,pci.bus_id,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu \
    --format=csv >&2
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" >&2

# In order of what the device time is best spent on (the deadline skips from the end).
# the roof of this machine: every dtype (fp8 with and without fast accumulation), 3 rounds
step 120 "ceilings" python3 -m perfscope bench ceilings --device cuda --full --format json \
    --save "$OUT/local-$gpu.toml" -o "$OUT/ceilings-$gpu-$stamp.json"
# a whole decode step of Llama-3.1-8B in a CUDA graph, and a 2048-token prefill, beside the
# prediction: the per-kernel overhead of this architecture
step 90 "decode-step" python3 benchmarks/bench_decode_step.py --device cuda --model llama-3.1-8b \
    --hw "$hw" --batches 1,8,32,64 --context-len 2048 --prefill 2048 \
    --json "$OUT/decode-step-$gpu-$stamp.json"
# the same step through torch.compile (its elementwise kernels fused, its own CUDA graphs), the
# method of gpt-fast's published decode figures (the A100 fit in hw_specs)
step 240 "decode-compiled" python3 benchmarks/bench_decode_step.py --device cuda --compile \
    --model llama-3.1-8b --hw "$hw" --batches 1,32 --context-len 2048 \
    --json "$OUT/decode-compiled-$gpu-$stamp.json"
# GPU tests: the gpu-marked ones, and the Triton kernels compiled (not interpreted)
step 120 "pytest-gpu" python3 -m pytest -q -x -m gpu tests/ -p no:cacheprovider
step 90 "pytest-triton" python3 -m pytest -q -x tests/test_measure_triton.py -p no:cacheprovider
# a model's ops beside the spec roof: decode at batch 1 with the batch sweep (graphs with
# rotated weights: these GEMMs fit in L2), prefill, decode at batch 64
step 60 "ops-decode-b1" python3 -m perfscope bench ops --device cuda --quick --model llama-3.1-8b --hw "$hw" \
    --phase decode --batch 1 --context-len 2048 --format json -o "$OUT/ops-decode-b1-$gpu-$stamp.json"
step 75 "ops-prefill" python3 -m perfscope bench ops --device cuda --full --model llama-3.1-8b --hw "$hw" \
    --phase prefill --seq-len 2048 --batch 1 --format json -o "$OUT/ops-prefill2048-$gpu-$stamp.json"
# reference kernels, torch and Triton, at the full shapes (checked on a subset on the host)
step 75 "kernels" python3 -m perfscope bench kernels --device cuda --full --format json -o "$OUT/kernels-$gpu-$stamp.json"
# the real model (transformers, random weights, 4 layers) under torch.profiler
step 90 "torch-profile" python3 -m perfscope profile --torch-model --model llama-3.1-8b --hw "$hw" --device cuda \
    --layers 4 --isl 2048 --format json -o "$OUT/torch-profile-$gpu-$stamp.json"
step 45 "ops-decode-b64" python3 -m perfscope bench ops --device cuda --quick --model llama-3.1-8b --hw "$hw" \
    --phase decode --batch 64 --context-len 2048 --no-sweep --format json \
    -o "$OUT/ops-decode-b64-$gpu-$stamp.json"
step 45 "ops-decode-w8a8" python3 -m perfscope bench ops --device cuda --quick --model llama-3.1-8b --hw "$hw" \
    --phase decode --batch 1 --context-len 2048 --no-sweep --weight-dtype int8 --act-dtype int8 \
    --format json -o "$OUT/ops-decode-w8a8-b1-$gpu-$stamp.json"
step 45 "fused-norm" python3 benchmarks/bench_fused_norm.py --device cuda --rounds 2
# the Triton decode-attention launches (tile, tl.dot, warps, stages) and split counts over
# batch and context: the measurements behind DECODE_LAUNCH and decode_splits' constants
step 300 "decode-tune" python3 benchmarks/tune_decode_attention.py \
    --json "$OUT/decode-attn-tune-$gpu-$stamp.json"
ls -la "$OUT" >&2
echo "session: $(( $(date +%s) - start ))s" >&2
if [[ "${BUNDLE:-0}" == 1 ]]; then
  tar czf "$FINAL/gpu-session-$gpu-$stamp.tar.gz" -C "$OUT" .
fi
