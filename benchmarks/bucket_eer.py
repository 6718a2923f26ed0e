"""EER cost of length buckets (``nestspk embed --bucket-s``): every trial segment cropped, centred, to a multiple of
the bucket, against the exact segments, same model and trials.

    python benchmarks/bucket_eer.py [--trials weights/lists/test_trials.txt] [--buckets 0.25,0.5,1,2]
                                    [--model nested_4level] [--anchor] [--out DIR]

Scores through :func:`nestspk.evaluation.score_trials` (whole segments, as ``nestspk eval``) on the onnxruntime
fp32 file, 2 threads. Per bucket it prints EER and minDCF(0.01), the share of audio dropped, and the number of
distinct input lengths (the batches that lengths allow: fewer lengths, fuller batches on a GPU). ``--anchor``
also scores Resemblyzer (``pip install resemblyzer``: ``preprocess_wav`` + ``embed_utterance``, its own
preprocessing) on the same segments, exact and with the same buckets.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nestspk.audio import TARGET_SAMPLE_RATE
from nestspk.evaluation import TrialSegments, load_trial_segments, score_trials
from nestspk.metrics import compute_eer, compute_min_dcf
from nestspk.pipeline import crop_to_bucket
from nestspk.runtime.onnx_runtime import OnnxEmbedder


class ResemblyzerEmbedder:
    """The anchor as an Embedder: (B, T) 16 kHz float32 -> (B, 256) L2-normalised, one utterance at a time."""

    embed_dim = 256

    def __init__(self) -> None:
        from resemblyzer import VoiceEncoder, preprocess_wav

        self.encoder = VoiceEncoder(device="cpu", verbose=False)
        self.preprocess = preprocess_wav

    def embed_batch(self, wav: np.ndarray) -> np.ndarray:
        return np.stack([self.encoder.embed_utterance(self.preprocess(w, source_sr=TARGET_SAMPLE_RATE)) for w in wav])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", default="weights/lists/test_trials.txt")
    p.add_argument("--buckets", default="0.25,0.5,1,2", help="bucket lengths in seconds, comma-separated")
    p.add_argument("--model", default="nested_4level")
    p.add_argument("--anchor", action="store_true", help="also score Resemblyzer on the same segments")
    p.add_argument("--out", default=None, help="write results.json and table.md here")
    a = p.parse_args()
    embedder = OnnxEmbedder(a.model, intra_op_threads=2)
    segs = load_trial_segments(a.trials, card=embedder.card)
    total = sum(len(w) for w in segs.waveforms.values())
    rows = []
    systems = [(a.model, embedder)] + ([("Resemblyzer", ResemblyzerEmbedder())] if a.anchor else [])
    for (system, emb), label in ((s, b) for s in systems for b in ["exact"] + a.buckets.split(",")):
        bucket = None if label == "exact" else int(round(float(label) * TARGET_SAMPLE_RATE))
        wavs = segs.waveforms if bucket is None else {k: crop_to_bucket(w, bucket) for k, w in segs.waveforms.items()}
        res = score_trials(emb, TrialSegments(segs.rows, segs.name, wavs, segs.skipped))
        kept = sum(len(w) for w in wavs.values())
        rows.append({"system": system, "bucket_s": label, "eer": compute_eer(res.scores, res.labels)[0],
                     "min_dcf_0.01": compute_min_dcf(res.scores, res.labels, p_target=0.01)[0],
                     "audio_dropped": 1 - kept / total, "distinct_lengths": len({len(w) for w in wavs.values()}),
                     "segments": len(wavs), "trials": len(res.scores)})
    lines = [f"{a.model} on onnxruntime fp32, {segs.name}: {rows[0]['trials']} trials, {rows[0]['segments']} "
             f"segments ({total / TARGET_SAMPLE_RATE / 3600:.2f} h)", "",
             "| system | bucket | EER % | minDCF(0.01) | audio dropped | distinct lengths |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['system']} | {r['bucket_s']} | {100 * r['eer']:.2f} | {r['min_dcf_0.01']:.3f} | "
                     f"{100 * r['audio_dropped']:.2f}% | {r['distinct_lengths']} |")
    print("\n".join(lines))
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "results.json").write_text(json.dumps(rows, indent=1))
        (Path(a.out) / "table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
