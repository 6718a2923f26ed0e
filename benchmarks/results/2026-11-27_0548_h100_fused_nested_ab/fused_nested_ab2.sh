#!/usr/bin/env bash
# Second A/B of the fused nested kernel, aimed at the noisy eager rows: GPU kernel time per call
# (torch.profiler, host-independent) for channels_last+fp16 4 s batch 256, both models, fused on/off;
# then nestspk-bench paired (7 blocks of 15 calls) with NESTSPK_FUSED_NESTED=1/0 alternated twice.
# Usage (device tool, repo root, carry: .whl):  bash benchmarks/fused_nested_ab2.sh
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || true
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
D=/tmp/ab2; mkdir -p $D
for f in 1 0; do for m in nested resnetse34l; do
  NESTSPK_FUSED_NESTED=$f python3 benchmarks/profile_kernels.py --model $m --mode channels_last+fp16 \
    --duration 4 --batch 256 --iters 20 --by-op --top 12 2>&1 | sed "s/^== /== fused=$f /" | head -6
done; done
run() {  # run TAG FUSED ARGS...
  local tag=$1 f=$2; shift 2
  NESTSPK_FUSED_NESTED=$f timeout -k 10 150 python3 -m nestspk.bench --device cuda --backend torch "$@" \
    --json "$D/ab_${tag}_fused${f}.json" -q > /dev/null 2>> "$D/ab.log" || echo "run $tag fused=$f rc=$?"
}
for r in 1 2; do
  if (( r % 2 )); then order="1 0"; else order="0 1"; fi
  for f in $order; do
    run "b${r}" "$f" --durations 4 --batch 256 --repeats 100 --paired 7 --modes channels_last+fp16
    run "l${r}" "$f" --durations 8 --batch 1 --repeats 100 --paired 7 --modes fp32,channels_last,bf16,fp16
  done
done
python3 benchmarks/fused_nested_ab.py $D/ab_*.json | tee "$OUT/fused_nested_ab2.md"
tar czf "$OUT/ab2_json.tgz" -C $D .
