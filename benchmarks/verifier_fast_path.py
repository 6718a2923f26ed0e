"""Verifier(device="cuda") end-to-end latency: eager vs the CUDA-graph fast path (8 s, batch 1).

    python benchmarks/verifier_fast_path.py [--repeats 100]

Times Verifier.embed_batch on numpy input (host->device copy, front end, encoder, device->host copy
included) and reports the cosine between the two paths' embeddings.
"""
import argparse
import json
import time

import numpy as np
import torch

from nestspk import Verifier


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--seconds", type=float, default=8.0)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    res = {"device": torch.cuda.get_device_name(0), "seconds": a.seconds, "repeats": a.repeats, "rows": []}
    for model in ("nested", "resnetse34l"):
        for graphs in (False, True):
            v = Verifier(model, device="cuda", cuda_graphs=graphs)
            x = (rng.standard_normal((1, int(16000 * a.seconds))) * 0.1).astype(np.float32)
            ref = Verifier(model, device="cuda", cuda_graphs=False)
            for _ in range(5):
                e = v.embedder.embed_batch(x)
            times = []
            for _ in range(a.repeats):
                x = (rng.standard_normal((1, int(16000 * a.seconds))) * 0.1).astype(np.float32)
                t0 = time.perf_counter()
                e = v.embedder.embed_batch(x)
                times.append((time.perf_counter() - t0) * 1000)
            cos = float(np.sum(e * ref.embedder.embed_batch(x)))
            row = {"model": model, "path": "cuda_graph" if graphs else "eager", "p50_ms": float(np.median(times)),
                   "p90_ms": float(np.percentile(times, 90)), "cos_vs_eager": cos}
            res["rows"].append(row)
            print(json.dumps(row))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
