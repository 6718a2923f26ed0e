#!/usr/bin/env bash
# DDP scaling benchmark: training samples/s on 1 GPU and on 2 GPUs (DDP) with the same global batch.
# Usage (device tool, 2-GPU machine, repo root as cwd, carry: .data .whl):
#   bash benchmarks/device_ddp.sh [CONFIG] [EPOCHS] [STEPS_PER_EPOCH]     (default nested_4level 3 100)
# .data/ holds a copy of ../shared/data/librispeech-snippets; .whl/ the soundfile/cffi/pycparser wheels.
# Writes $OUT/ddp_scaling.json, $OUT/ddp_scaling.md and each run's logs/CSVs (no checkpoints).
# Throughput = steps_per_epoch * global batch / train_seconds (epochs.csv; training loop only, no dev
# evaluation), median over epochs >= 2 (epoch 1 includes cuDNN autotuning). Total ~4-5 minutes.
# CPU dry run of the plumbing (gloo): DEVICE=cpu NGPU=2 OUT=/tmp/o bash benchmarks/device_ddp.sh smoke 2 3
set -u
DEVICE=${DEVICE:-cuda}; RUNS=${RUNS:-/tmp/nestspk_ddp_runs}
CONFIG=${1:-nested_4level}; EPOCHS=${2:-3}; STEPS=${3:-100}
OUT=${OUT:-$PWD/ddp_out}; mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD NESTSPK_DATA=$PWD/${DATA_DIR:-.data}
fi
export PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpus.txt"
  NGPU=${NGPU:-$(nvidia-smi -L | wc -l)}
else
  echo "$DEVICE" > "$OUT/gpus.txt"; NGPU=${NGPU:-1}
fi
# TRAIN_MANIFEST: a smaller manifest when the carried data must be cut to fit the device tool's 64 MiB
COMMON=(--config "$CONFIG" --device "$DEVICE" --no-progress --set "data.train_manifest=${TRAIN_MANIFEST:-weights/lists/train.txt}"
        --set "optim.epochs=$EPOCHS" --set "optim.steps_per_epoch=$STEPS" --set optim.patience=1000)

run() {  # run NAME N_GPUS
  local name=$1 n=$2 t0 rc
  rm -rf "$RUNS/$name"; t0=$(date +%s)
  if [ "$n" -eq 1 ]; then
    CUDA_VISIBLE_DEVICES=0 timeout 240 $PY -m nestspk.train "${COMMON[@]}" --out "$RUNS/$name" > "$OUT/$name.log" 2>&1
  else  # nestspk-train --gpus N re-launches itself through torchrun
    timeout 240 $PY -m nestspk.train --gpus "$n" "${COMMON[@]}" --out "$RUNS/$name" > "$OUT/$name.log" 2>&1
  fi
  rc=$?
  echo "$name: exit $rc, $(( $(date +%s) - t0 )) s wall"; echo "$rc $(( $(date +%s) - t0 ))" > "$OUT/$name.rc"
  tail -3 "$OUT/$name.log"
  mkdir -p "$OUT/$name"; cp "$RUNS/$name"/*.csv "$RUNS/$name"/*.json "$OUT/$name/" 2>/dev/null
}

run gpu1 1
if [ "$NGPU" -ge 2 ]; then run gpu2 2; else echo "only $NGPU GPU(s): skipping the 2-GPU run"; fi

$PY - "$OUT" "$CONFIG" "$STEPS" <<'EOF'
import csv, json, statistics, sys
from pathlib import Path
out, config, steps = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
batch = json.loads((out / "gpu1" / "config.json").read_text())["optim"]["batch_size"]
gpus = (out / "gpus.txt").read_text().strip().splitlines()
res = {"config": config, "global_batch": batch, "steps_per_epoch": steps, "gpu": gpus[0] if gpus else "?", "runs": {}}
for n in (1, 2):
    d = out / f"gpu{n}"
    if not (d / "epochs.csv").exists():
        continue
    rows = list(csv.DictReader(open(d / "epochs.csv")))
    secs = [float(r["train_seconds"]) for r in rows]
    steady = secs[1:] or secs
    rc, wall = (out / f"gpu{n}.rc").read_text().split()
    summ = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
    res["runs"][n] = {"gpus": n, "per_gpu_batch": batch // n, "exit": int(rc), "wall_s": int(wall),
                      "train_seconds_per_epoch": secs, "samples_per_s": steps * (batch // n) * n / statistics.median(steady),
                      "final_loss": float(rows[-1]["loss"]), "final_dev_eer": float(rows[-1]["dev_eer"]),
                      "status": summ.get("status")}
if 1 in res["runs"] and 2 in res["runs"]:
    s = res["runs"][2]["samples_per_s"] / res["runs"][1]["samples_per_s"]
    res["speedup_2gpu"], res["scaling_efficiency_2gpu"] = s, s / 2
(out / "ddp_scaling.json").write_text(json.dumps(res, indent=1))
md = [f"# DDP scaling: {config}, global batch {batch}, {steps} steps/epoch ({res['gpu']})", "",
      "| GPUs | batch/GPU | samples/s (median, epochs >= 2) | speedup | efficiency | s/epoch (train loop) | final loss | dev EER | exit |",
      "|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
for n, r in res["runs"].items():
    sp = r["samples_per_s"] / res["runs"][1]["samples_per_s"] if 1 in res["runs"] else float("nan")
    md.append(f"| {n} | {r['per_gpu_batch']} | {r['samples_per_s']:.1f} | {sp:.2f}x | {100 * sp / n:.0f}% | "
              f"{', '.join(f'{x:.2f}' for x in r['train_seconds_per_epoch'])} | {r['final_loss']:.3f} | "
              f"{100 * r['final_dev_eer']:.2f}% | {r['exit']} |")
(out / "ddp_scaling.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
# the device tool brings back at most 8 files: pack the per-run logs/CSVs into one archive
(cd "$OUT" && tar -czf ddp_runs.tgz gpus.txt gpu1* gpu2* 2>/dev/null && rm -rf gpus.txt gpu1 gpu1.* gpu2 gpu2.*)
ls -la "$OUT"
