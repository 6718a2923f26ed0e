#!/usr/bin/env bash
# Eager CUDA rows (host-bound at batch 1) with many paired rounds, so the nested/baseline median is stable:
# ROUNDS alternating blocks of REPEATS calls per model per workload (nestspk-bench --paired).
# Usage (device tool, repo root, carry: .whl):  bash benchmarks/eager_rounds.sh [ROUNDS] [REPEATS]
set -u
ROUNDS=${1:-21}; REPEATS=${2:-30}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl > /dev/null 2>&1 || true
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
B="python3 -m nestspk.bench --device cuda --backend torch --paired $ROUNDS --repeats $REPEATS -q"
timeout -k 10 280 $B --durations 2,4,8,20 --batch 1 --modes fp32,channels_last,bf16,fp16 --json "$OUT/eager_b1.json" > /dev/null
timeout -k 10 150 $B --durations 4 --batch 16,64,256 --modes fp16,fp32 --json "$OUT/eager_batch.json" > /dev/null
python3 -m nestspk.bench --merge "$OUT"/eager_b1.json "$OUT"/eager_batch.json --markdown "$OUT/eager_rounds.md" -q > /dev/null
grep -E "nest/base|^\| nested" "$OUT/eager_rounds.md" | cut -d'|' -f2-8,15; grep -E "^- (PASS|FAIL)" "$OUT/eager_rounds.md"
