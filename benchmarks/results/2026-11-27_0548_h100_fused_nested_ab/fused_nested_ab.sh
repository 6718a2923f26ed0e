#!/usr/bin/env bash
# A/B of the fused nested-connection kernel (nestspk/models/fused.py) on one GPU: the CUDA tests, then
# nestspk-bench with NESTSPK_FUSED_NESTED=1 and =0 alternated in ROUNDS rounds (order flipped each round),
# nested and baseline paired inside every run; prints nested/baseline and nested p50 per workload, on vs off.
# Usage (device tool, repo root, carry: .whl):   bash benchmarks/fused_nested_ab.sh [ROUNDS]
set -u
ROUNDS=${1:-2}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || true
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 -c "import torch, triton; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'triton', triton.__version__)"
python3 -m pytest -q -p no:cacheprovider tests/test_fused.py tests/test_cuda.py tests/test_models.py 2>&1 | tail -4
run() {  # run TAG FUSED ARGS...
  local tag=$1 f=$2; shift 2
  NESTSPK_FUSED_NESTED=$f timeout -k 10 200 python3 -m nestspk.bench --device cuda --backend torch "$@" \
    --json "$OUT/ab_${tag}_fused${f}.json" -q > /dev/null 2>> "$OUT/ab.log" || echo "run $tag fused=$f rc=$?"
}
for r in $(seq 1 "$ROUNDS"); do
  if (( r % 2 )); then order="1 0"; else order="0 1"; fi
  for f in $order; do
    run "b${r}" "$f" --durations 4 --batch 64,256 --repeats 50 --paired 3 --modes channels_last+fp16,cuda_graph+fp16,fp16
    run "l${r}" "$f" --durations 8 --batch 1 --repeats 100 --paired 3 --modes fp32,channels_last,fp16,cuda_graph,cuda_graph+fp16
  done
done
python3 benchmarks/fused_nested_ab.py "$OUT"/ab_*.json | tee "$OUT/fused_nested_ab.md"
