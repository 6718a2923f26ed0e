"""CPU intra-op threads under load: per-clip latency of both backends with 1 and 2 threads, interleaved.

    PYTHONPATH=. python benchmarks/cpu_threads.py [--rounds 7] [--calls 5] [--seconds 8]

Each round times ``--calls`` single-clip ``embed_batch`` calls per (backend, threads) in turn, so a change in the
machine's load hits every setting alike. Prints one JSON line per setting: median and p90 ms, and the worst call.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()

    import torch

    from nestspk.audio import load_audio
    from nestspk.runtime import make_embedder

    wav = load_audio("examples/speaker_121_session1.flac")[: int(args.seconds * 16000)][None]
    embedders = {}
    for t in args.threads:
        embedders[("onnx", t)] = make_embedder("nested", backend="onnx", device="cpu", intra_op_threads=t)
    torch_e = make_embedder("nested", backend="torch", device="cpu", intra_op_threads=args.threads[0])
    times: dict[tuple[str, int], list[float]] = {k: [] for k in [*embedders, *[("torch", t) for t in args.threads]]}
    for e in embedders.values():
        e.embed_batch(wav)
    torch_e.embed_batch(wav)
    for _ in range(args.rounds):
        for key in times:
            backend, t = key
            if backend == "torch":
                torch.set_num_threads(t)
                e = torch_e
            else:
                e = embedders[key]
            e.embed_batch(wav)  # warm the thread pool at this setting
            for _ in range(args.calls):
                t0 = time.perf_counter()
                e.embed_batch(wav)
                times[key].append((time.perf_counter() - t0) * 1e3)
    for (backend, t), ms in times.items():
        a = np.array(ms)
        print(json.dumps({"backend": backend, "threads": t, "clip_s": args.seconds, "calls": len(a),
                          "median_ms": round(float(np.median(a)), 1), "p90_ms": round(float(np.percentile(a, 90)), 1),
                          "max_ms": round(float(a.max()), 1)}))


if __name__ == "__main__":
    main()
