#!/usr/bin/env bash
# nestspk-bench on one GPU of the device tool: CUDA batch-1 latency for every mode, a 4 s batch
# sweep of the fastest modes, CPU torch/ONNX Runtime on the host's cores, torch.compile at 8 s
# batch 1 if time is left; then one merged table (printed last), JSON, markdown and a plot in $OUT.
# Usage (device tool, repo root, carry: .whl):   bash benchmarks/device_bench.sh [BUDGET_S]
# BUDGET_S (default 330) bounds the whole measurement; each step also has its own timeout and
# every step writes its JSON after each row, so a step cut short still returns its rows.
# Files in $OUT (8): cuda_b1.json cuda_batch.json cpu.json cuda_compile.json bench.json bench.md
#                    bench_latency.png bench.log
set -u
BUDGET=${1:-330}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || echo "warning: wheel install failed (soundfile is not needed by the benchmark)"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
export NESTSPK_GIT_COMMIT=${NESTSPK_GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
LOG=$OUT/bench.log
BENCH="python3 -m nestspk.bench"
start=$SECONDS
left() { echo $(( BUDGET - (SECONDS - start) )); }
step() {  # step NAME MAX_S ARGS...: run one sweep with a timeout of min(MAX_S, budget left)
  local name=$1 max=$2; shift 2
  local t; t=$(left); (( t > max )) && t=$max
  if (( t < 20 )); then echo "== $name skipped: $(left) s of budget left" | tee -a "$LOG"; return; fi
  echo "== $name (timeout ${t} s, $(left) s of budget left)" | tee -a "$LOG"
  timeout -k 10 "$t" $BENCH "$@" --json "$OUT/$name.json" -q >> "$LOG" 2>&1
  local rc=$?
  echo "== $name rc=$rc after $((SECONDS - start)) s" | tee -a "$LOG"
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
  python3 -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
  python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
  python3 -c "import matplotlib; print('matplotlib', matplotlib.__version__)" 2>&1 | tail -1
} 2>&1 | tee -a "$LOG"

# 1. batch 1, every duration, every mode (eager, layouts, autocast, CUDA graphs)
#    paired: nested and baseline interleaved in 21 blocks of 2 calls per workload, so host drift cancels in the ratio
#    (eager batch 1 is host-bound; with 5 blocks of 20 calls its median ratio still moved 0.91-1.13 between runs)
step cuda_b1 170 --device cuda --backend torch --durations 2,4,8,20 --batch 1 --repeats 30 --paired 21 \
  --modes fp32,channels_last,bf16,fp16,cuda_graph,cuda_graph+bf16,cuda_graph+fp16
# 2. throughput: 4 s, batches 16/64/256 (batch 1 is in step 1) for the modes that can be fastest there
step cuda_batch 130 --device cuda --backend torch --durations 4 --batch 16,64,256 --repeats 30 --paired 21 \
  --modes fp16,channels_last+fp16,cuda_graph,cuda_graph+bf16,cuda_graph+fp16
# 3. CPU of this host: torch eager (all threads) and ONNX Runtime fp32 + shipped int8 with 1, 2 and all threads
step cpu 120 --device cpu --backend all --durations 4,8 --batch 1 --repeats 20 --paired 13 --ort-threads 1,2,all \
  --ort-precision fp32,int8
# 4. torch.compile(mode="reduce-overhead") at 8 s batch 1, with what is left
step cuda_compile 150 --device cuda --backend torch --durations 8 --batch 1 --repeats 50 --modes compile \
  --compile-timeout 60

rm -f "$OUT"/*.tmp
parts=(); for n in cuda_b1 cuda_batch cpu cuda_compile; do [ -s "$OUT/$n.json" ] && parts+=("$OUT/$n.json"); done
echo "== total $((SECONDS - start)) s; merging ${#parts[@]} part(s)" | tee -a "$LOG"
ls -la "$OUT" >> "$LOG"
if (( ${#parts[@]} )); then
  $BENCH --merge "${parts[@]}" --json "$OUT/bench.json" --markdown "$OUT/bench.md" --plot "$OUT/bench_latency.png" -q \
    2>>"$LOG"
else
  echo "no results; see bench.log"; tail -40 "$LOG"
fi
