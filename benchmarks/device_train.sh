#!/usr/bin/env bash
# Trains several configs in parallel on one GPU of the device tool and packs the runs into $OUT.
# Usage (device tool, repo root, carry: .data .whl):
#   bash benchmarks/device_train.sh MINUTES RUN=CONFIG[,EXTRA_ARG...] ...
#   e.g. bash benchmarks/device_train.sh 7.8 nested_s1=nested_4level,--seed,1 base_s1=resnetse34l_asp,--seed,1
# DATA_DIR (default .data) holds a copy of ../shared/data/librispeech-snippets; .whl/ the soundfile/cffi/pycparser wheels.
set -u
MIN=$1; shift
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD NESTSPK_DATA=$PWD/${DATA_DIR:-.data} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
pids=(); names=()
for spec in "$@"; do
  run=${spec%%=*}; IFS=, read -r -a args <<< "${spec#*=}"
  names+=("$run")
  python3 -m nestspk.train --config "${args[@]}" --out "runs/$run" --device cuda --max-minutes "$MIN" --no-progress > "runs_$run.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for run in "${names[@]}"; do
  echo "== $run"; grep -E "epoch|Error|error|diverged" "runs_$run.log" | tail -3
  cp "runs_$run.log" "runs/$run/train.log"
  # everything but the resumable optimizer checkpoint, which is too big to bring back for every run
  tar -czf "$OUT/$run.tgz" --exclude=last.pt -C runs "$run"
done
ls -la "$OUT"
