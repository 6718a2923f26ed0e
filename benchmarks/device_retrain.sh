#!/usr/bin/env bash
# Retraining on the device tool's GPU (one H200), with a corpus that does not fit one call's 64 MiB carry.
# Everything lives outside the repository copy (/tmp), which survives back-to-back calls while the machine is warm.
#
#   call 1..4: bash benchmarks/device_retrain.sh stage .stage/sN      (carry .stage/sN: a ~44 MB shard of the files
#              named by weights/lists/train.txt + dev_trials.txt + noise/, paths relative to the data root, made by
#              benchmarks/stage_shards.py; a teacher.npy put in a shard is used instead of computing it there)
#   call 4:    bash benchmarks/device_retrain.sh start MINUTES 'RUN=CONFIG[;ARG...]' ...   (carry .whl too)
#              installs the carried wheels, decodes the training list once (nestspk-train pack), computes the
#              Resemblyzer teacher targets (benchmarks/resemblyzer_embed.py), then starts every run in its own
#              process session (setsid), so it keeps training between calls; RUN names ending in _d wait for the
#              teacher. Each run pauses (resumably) after MINUTES.
#   resume:    bash benchmarks/device_retrain.sh resume MINUTES 'RUN=CONFIG[;ARG...]' ...  (stop all, continue these)
#   every call: bash benchmarks/device_retrain.sh wait SECONDS     (progress; packs the runs into $OUT at the end)
set -u
cmd=$1; shift
export NESTSPK_DATA=/tmp/nsdata PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 PYTHONPATH=/tmp/site:/tmp/nscode
case $cmd in
stage)
  mkdir -p /tmp/nsdata && cp -r "$1"/. /tmp/nsdata/ && rm -rf "$1"
  echo "staged: $(find /tmp/nsdata -type f | wc -l) files, $(du -sh /tmp/nsdata | cut -f1)"
  nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader ;;
start)
  MIN=$1; shift
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  rm -rf /tmp/nscode && mkdir -p /tmp/nscode/weights /tmp/runs && cp -r nestspk benchmarks /tmp/nscode/ \
    && cp -r weights/lists /tmp/nscode/weights/
  cd /tmp/nscode || exit 1
  t0=$(date +%s)
  python3 -m nestspk.train pack --list weights/lists/train.txt --out /tmp/nsdata/pack --workers 16 || exit 1
  echo "pack: $(( $(date +%s) - t0 )) s"
  if [ -f /tmp/nsdata/teacher.npy ]; then  # computed elsewhere and carried in a shard
    echo "teacher targets carried: $(python3 -c 'import numpy; print(numpy.load("/tmp/nsdata/teacher.npy").shape)')" \
      | tee /tmp/runs/teacher.log
  else
    setsid nohup bash -c "python3 benchmarks/resemblyzer_embed.py list weights/lists/train.txt \
      --out /tmp/nsdata/teacher.tmp.npy --workers 14 > /tmp/runs/teacher.log 2>&1 \
      && mv /tmp/nsdata/teacher.tmp.npy /tmp/nsdata/teacher.npy" < /dev/null > /dev/null 2>&1 &
  fi
  for spec in "$@"; do
    run=${spec%%=*}; args=${spec#*=}; args=${args//;/ }
    wait_teacher=""
    [[ $run == *_d* ]] && wait_teacher="while [ ! -f /tmp/nsdata/teacher.npy ]; do sleep 2; done;"
    setsid nohup bash -c "$wait_teacher python3 -m nestspk.train --config $args --out /tmp/runs/$run --device cuda \
      --max-minutes $MIN --no-progress --set data.pack=/tmp/nsdata/pack > /tmp/runs/$run.log 2>&1" \
      < /dev/null > /dev/null 2>&1 &
    echo "started $run: $args"
  done ;;
resume)
  # stop every run, then continue the named ones from their last.pt for MINUTES more
  MIN=$1; shift
  pkill -f "python3 -m [n]estspk.train" ; sleep 3
  cd /tmp/nscode || exit 1
  for spec in "$@"; do
    run=${spec%%=*}; args=${spec#*=}; args=${args//;/ }
    setsid nohup bash -c "python3 -m nestspk.train --config $args --out /tmp/runs/$run --device cuda \
      --max-minutes $MIN --no-progress --set data.pack=/tmp/nsdata/pack >> /tmp/runs/$run.log 2>&1" \
      < /dev/null > /dev/null 2>&1 &
    echo "resumed $run: $args"
  done ;;
wait)
  end=$(( $(date +%s) + $1 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    running=$(pgrep -f "nestspk.train --config" | wc -l)
    [ "$running" -eq 0 ] && [ -f /tmp/nsdata/teacher.npy ] && break
    sleep 20
  done
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  tail -2 /tmp/runs/teacher.log
  cd /tmp/runs || exit 1
  for log in *.log; do echo "== $log"; grep -E "epoch|Error|error|diverged|Traceback" "$log" | tail -2; done
  for d in */; do
    run=${d%/}
    cp "$run.log" "$run/train.log" 2>/dev/null
    # weights only for the candidates; the collapse runs bring back telemetry
    ex=(--exclude=last.pt --exclude=tb); [[ $run == prefix* || $run == fixed* ]] && ex+=(--exclude=best.pt)
    tar -czf "$OUT/$run.tgz" "${ex[@]}" "$run"
  done
  ls -la "$OUT" ;;
esac
