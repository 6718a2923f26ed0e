#!/usr/bin/env bash
# The CPU target row (ONNX Runtime, 2 threads, 8 s, batch 1; fp32 and the shipped int8 file) measured N times,
# SLEEP seconds apart, each run paired (nested and baseline interleaved); prints one line per run and a summary.
# Usage (repo root): bash benchmarks/cpu_ort2_repeats.sh [N=5] [SLEEP=20] [OUTDIR=/tmp/cpu_ort2]
set -euo pipefail
N=${1:-5}; SLEEP=${2:-20}; DIR=${3:-/tmp/cpu_ort2}
mkdir -p "$DIR"
for i in $(seq 1 "$N"); do
  nestspk-bench --device cpu --backend onnx --durations 8 --batch 1 --ort-threads 2 --ort-precision fp32,int8 \
    --paired 5 --repeats 100 --onnx-dir "$DIR/onnx" --json "$DIR/run$i.json" -q > /dev/null 2>&1
  (( i < N )) && sleep "$SLEEP"
done
python3 - "$DIR" "$N" <<'PY'
import json, statistics, sys
d, n = sys.argv[1], int(sys.argv[2])
per = {}
for i in range(1, n + 1):
    doc = json.load(open(f"{d}/run{i}.json"))
    line = []
    for r in doc["rows"]:
        if r.get("p50_ms"):
            per.setdefault((r["model"], r["mode"]), []).append(r["p50_ms"])
            line.append(f"{r['model']} {r['mode']} {r['p50_ms']:.2f}")
    print(f"run {i} (load {(doc['environment'].get('loadavg') or ['?'])[0]}): " + ", ".join(line))
for (m, mode), v in sorted(per.items()):
    print(f"{m:12s} {mode}: p50 per run min {min(v):.2f} / median {statistics.median(v):.2f} / max {max(v):.2f} ms")
PY
