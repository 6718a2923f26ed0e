#!/usr/bin/env bash
# The paired sweep with peers on one GPU of the device tool (python -m benchmarks.bench): nested, ResNetSE34L,
# ECAPA-TDNN C=1024 / C=512, ResNet34 and the GE2E LSTM timed interleaved, each through the embedder users build.
#   1. cuda_b1:      8 s batch 1 in eager fp32, CUDA graph fp32, CUDA graph fp16
#   2. cuda_batch:   4 s batches 128/256/512, CUDA graph + channels-last + fp16 (best-batch throughput)
#   3. cuda_compile: 8 s batch 1, torch.compile (inductor, default mode) captured in the runtime's CUDA graph
#                    (nested and ResNetSE34L), only with the budget left after 1 and 2 (compiling takes tens of s)
# then merges them: bench.json + bench.md (peer table with x nested, targets of benchmarks/targets.yaml).
# Usage (device tool, repo root, carry: .whl):   bash benchmarks/device_bench.sh [BUDGET_S] [DEVICE]
#   BUDGET_S (default 200) bounds the whole script from its start: every step gets --budget-s (the sweep shrinks its
#   blocks and skips workloads to fit) and a hard timeout; a step that cannot start with >= 25 s left is skipped.
#   The default keeps the run, with start-up and wheel install, under 4 minutes of wall-clock on an H200.
#   DEVICE=cpu (validation on a CPU machine): tiny shapes, eager fp32 only, random weights for speed.
# Files in $OUT (at most 6): cuda_b1.json cuda_batch.json cuda_compile.json bench.json bench.md bench.log
set -u
BUDGET=${1:-200}; DEVICE=${2:-cuda}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
start=$SECONDS
LOG=$OUT/bench.log
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >> "$LOG" 2>&1 || echo "warning: wheel install failed (the benchmark does not need them)" | tee -a "$LOG"
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
export NESTSPK_GIT_COMMIT=${NESTSPK_GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
PY=${PYTHON:-python3}
BENCH="$PY -m benchmarks.bench"
MODELS=nested,resnetse34l,ecapa1024,ecapa512,resnet34,ge2e
left() { echo $(( BUDGET - (SECONDS - start) )); }
step() {  # step NAME SHARE_S ARGS...: one sweep bounded by min(SHARE_S, budget left)
  local name=$1 share=$2; shift 2
  local t; t=$(left); (( t > share )) && t=$share
  if (( t < 25 )); then echo "== $name skipped: $(left) s of budget left" | tee -a "$LOG"; return; fi
  echo "== $name (budget ${t} s, $(left) s left)" | tee -a "$LOG"
  # the sweep's own budget leaves ~15 s for interpreter start-up, model loading and cuDNN autotuning
  timeout -k 5 "$t" $BENCH "$@" --budget-s $(( t - 15 )) --json "$OUT/$name.json" -q >> "$LOG" 2>&1
  echo "== $name rc=$? after $((SECONDS - start)) s" | tee -a "$LOG"
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null; nproc
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} 2>&1 | tee -a "$LOG"

if [ "$DEVICE" = cpu ]; then
  step cuda_b1 60 --device cpu --models $MODELS --weights random --durations 0.5 --batch 1 --modes fp32 \
    --rounds 3 --block 2
  step cuda_batch 40 --device cpu --models $MODELS --weights random --durations 0.5 --batch 2,4 --modes fp32 \
    --rounds 3 --block 1
else
  step cuda_b1 95 --device "$DEVICE" --models $MODELS --durations 8 --batch 1 --rounds 15 --block 20 \
    --modes fp32,cuda_graph,cuda_graph+fp16
  step cuda_batch 60 --device "$DEVICE" --models $MODELS --durations 4 --batch 128,256,512 --rounds 7 --block 4 \
    --modes cuda_graph+channels_last+fp16
  step cuda_compile 60 --device "$DEVICE" --models nested,resnetse34l --durations 8 --batch 1 --rounds 9 --block 20 \
    --modes compile+cuda_graph
fi

rm -f "$OUT"/*.tmp
parts=(); for n in cuda_b1 cuda_batch cuda_compile; do [ -s "$OUT/$n.json" ] && parts+=("$OUT/$n.json"); done
echo "== total $((SECONDS - start)) s; merging ${#parts[@]} part(s)" | tee -a "$LOG"
if (( ${#parts[@]} )); then
  $BENCH --merge "${parts[@]}" --json "$OUT/bench.json" --markdown "$OUT/bench.md" -q 2>> "$LOG"
else
  echo "no results; see bench.log"; tail -40 "$LOG"
fi
echo "== done after $((SECONDS - start)) s" | tee -a "$LOG"
