"""Which encoder stages to quantise: int8 variants of the shipped nested fp32 export, timed interleaved.

    python benchmarks/int8_scopes_probe.py [--threads 2] [--rounds 7] [--out DIR]

Builds one int8 file per variant with :func:`nestspk.quantize.quantize_onnx` (same calibration as
``nestspk-export --int8``: 48 crops of 8 s from ``weights/lists/train.txt``), then reports for each file its
cosine to the fp32 export on 24 real 8 s clips of LibriSpeech test-clean (held-out speakers; every 13th
file of at least 8 s) and its p50 per
8 s call on onnxruntime CPU, all files interleaved in ``--rounds`` rounds (``ort_cpu_probe._interleaved_p50``).
Needs the data under ``$NESTSPK_DATA`` (default ``../shared/data``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

STAGES_234 = ("encoder.levels.1", "encoder.levels.2", "encoder.levels.3")
ALL_STAGES = ("encoder.levels", "encoder.stem")
VARIANTS = {  # name: (ops, scopes)
    "every stage, + pools and concats (shipped before 2026-12-04)":
        (("Conv", "Mul", "Add", "AveragePool", "GlobalAveragePool", "Concat"), ALL_STAGES),
    "every stage, convs only": (("Conv",), ALL_STAGES),
    "stages 2-4, convs/adds/SE": (("Conv", "Mul", "Add", "GlobalAveragePool"), STAGES_234),
    "stages 3-4, convs/adds/SE (shipped from 2026-12-04)": (("Conv", "Mul", "Add", "GlobalAveragePool"),
                                                            STAGES_234[1:]),
    "stages 2-4, convs only": (("Conv",), STAGES_234),
    "stages 3-4, convs only": (("Conv",), STAGES_234[1:]),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", default=None, help="write results.json here")
    a = p.parse_args()
    import onnxruntime as ort
    from ort_cpu_probe import _interleaved_p50, _session

    from nestspk.audio import load_audio
    from nestspk.card import ModelCard
    from nestspk.corpus import read_train_list
    from nestspk.quantize import calibration_crops, quantize_onnx

    data = Path(os.environ.get("NESTSPK_DATA", REPO.parent / "shared" / "data"))
    card = ModelCard.load("nested_4level")
    fp32 = card.resolve(card.export("fp32").file)
    crops = calibration_crops(read_train_list(REPO / "weights" / "lists" / "train.txt"), data, count=48, seconds=8.0)
    clips = []
    for f in sorted((data / "librispeech-test-clean").rglob("*.opus"))[::13]:  # every 13th file of >= 8 s
        w = load_audio(str(f))
        if len(w) >= 128000:
            clips.append(w[:128000])
        if len(clips) == 24:
            break
    ref_sess = _session(str(fp32), a.threads)
    ref = np.concatenate([ref_sess.run(None, {"waveform": c[None]})[0] for c in clips])
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {"fp32 (reference)": ref_sess}
        for i, (name, (ops, scopes)) in enumerate(VARIANTS.items()):
            path = quantize_onnx(fp32, Path(tmp) / f"v{i}.onnx", crops, ops=ops, scopes=scopes)
            sess = _session(str(path), a.threads)
            got = np.concatenate([sess.run(None, {"waveform": c[None]})[0] for c in clips])
            cos = np.sum(got * ref, axis=1)
            rows[name] = {"cos_min": float(cos.min()), "cos_mean": float(cos.mean())}
            sessions[name] = sess
        p50 = _interleaved_p50(sessions, clips[0][None], warmup=5, calls=20, rounds=a.rounds)
    base = np.array(p50["every stage, + pools and concats (shipped before 2026-12-04)"])
    print(f"{len(clips)} clips of 8 s, {a.threads} threads, {a.rounds} interleaved rounds x 20 calls; onnxruntime "
          f"{ort.__version__}")
    print("| variant | p50 ms (median of rounds) | x old int8 (median of per-round ratios) | cos min | cos mean |")
    print("|---|---:|---:|---:|---:|")
    for name, ms in p50.items():
        r = rows.setdefault(name, {})
        r.update(p50_ms=float(np.median(ms)), x_old_int8=float(np.median(np.array(ms) / base)), rounds_ms=ms)
        print(f"| {name} | {r['p50_ms']:.2f} | {r['x_old_int8']:.3f} | {r.get('cos_min', 1.0):.5f} | "
              f"{r.get('cos_mean', 1.0):.5f} |")
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
