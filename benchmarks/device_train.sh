#!/usr/bin/env bash
# Trains several configs in parallel on one GPU of the device tool and packs the runs into $OUT.
# Usage (device tool, repo root, carry: .data .whl):
#   bash benchmarks/device_train.sh MINUTES CONFIG [CONFIG ...]
# .data/ holds a copy of ../shared/data/librispeech-snippets; .whl/ the soundfile/cffi/pycparser wheels.
set -u
MIN=$1; shift
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD NESTSPK_DATA=$PWD/.data PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
pids=()
for c in "$@"; do
  python3 -m nestspk.train --config "$c" --out "runs/$c" --device cuda --max-minutes "$MIN" --no-progress > "runs_$c.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for c in "$@"; do
  echo "== $c"; grep -E "epoch|Error|error|diverged" "runs_$c.log" | tail -4
  cp "runs_$c.log" "runs/$c/train.log"
  # everything but the resumable optimizer checkpoint, which is too big to bring back for every run
  tar -czf "$OUT/$c.tgz" --exclude=last.pt -C runs "$c"
done
ls -la "$OUT"
