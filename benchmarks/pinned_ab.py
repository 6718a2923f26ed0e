"""A/B of the CUDA runtime's page-locked input staging (``TorchEmbedder.pinned_staging``), interleaved.

Usage (GPU machine, repo root):
    python -m benchmarks.pinned_ab --models nested,ge2e --mode cuda_graph+channels_last+fp16 --duration 4 \
        --batch 256 --rounds 9 --block 5 --json pinned_ab.json
Each round times ``block`` calls of ``embed_batch`` (numpy in, numpy out) with staging on, then off (order
alternating per round), for every model; prints p50 per call, utt/s, and the per-round ratio off/on, plus the
bare host-to-device copy of one batch from pageable and from page-locked memory.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from .bench import BenchConfig, load_subjects, random_audio


def _time_calls(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def copy_probe(batch: int, duration: float, repeats: int = 10) -> dict:
    """Milliseconds to put one (batch, duration * 16 kHz) float32 batch on the GPU from pageable / pinned memory."""
    host = torch.from_numpy(random_audio(batch, duration, 16000, 1))
    pinned = torch.empty_like(host).pin_memory()
    out = {}
    for name, fn in (("pageable", lambda: host.to("cuda")),
                     ("pinned_copy_then_dma", lambda: pinned.copy_(host).to("cuda", non_blocking=True)),
                     ("pinned_dma_only", lambda: pinned.to("cuda", non_blocking=True))):
        fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        out[name] = 1e3 * statistics.median(ts)
    out["mbytes"] = host.numel() * 4 / 1e6
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="nested,ge2e")
    p.add_argument("--mode", default="cuda_graph+channels_last+fp16")
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--block", type=int, default=5)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.backends.cudnn.benchmark = True
    wav = random_audio(a.batch, a.duration, 16000, 0)
    subjects = load_subjects(BenchConfig(device="cuda", models=tuple(a.models.split(","))))
    res = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "mode": a.mode, "duration_s": a.duration,
           "batch": a.batch, "copy_ms": copy_probe(a.batch, a.duration), "models": {}}
    for subject in subjects:
        emb, _ = subject.embedder("torch", "cuda", a.mode, None)
        for flag in (True, False):  # warm-up: capture the graph, allocate the buffer
            emb.pinned_staging = flag
            for _ in range(3):
                ref = emb.embed_batch(wav)
        on_t, off_t, ratios = [], [], []
        for r in range(a.rounds):
            times = {}
            for flag in ((True, False) if r % 2 == 0 else (False, True)):
                emb.pinned_staging = flag
                times[flag] = _time_calls(lambda: emb.embed_batch(wav), a.block)
            on_t.append(times[True])
            off_t.append(times[False])
            ratios.append(times[False] / times[True])
        emb.pinned_staging = True
        same = float(np.abs(emb.embed_batch(wav) - ref).max())
        row = {"pinned_ms": 1e3 * statistics.median(on_t), "pageable_ms": 1e3 * statistics.median(off_t),
               "pinned_utt_s": a.batch / statistics.median(on_t), "pageable_utt_s": a.batch / statistics.median(off_t),
               "ratio_pageable_over_pinned": statistics.median(ratios), "max_abs_diff": same}
        res["models"][subject.name] = row
        print(subject.name, json.dumps(row))
        emb = None
        torch.cuda.empty_cache()
    print(json.dumps(res["copy_ms"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
