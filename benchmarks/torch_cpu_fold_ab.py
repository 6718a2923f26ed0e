"""A/B of the CPU inference transform (BatchNorm folding + channels-last) in TorchEmbedder, interleaved.

    python -m benchmarks.torch_cpu_fold_ab [--threads 2] [--seconds 8] [--rounds 9] [--block 10] [--out DIR]

For each shipped model: ``TorchEmbedder(name, device="cpu", cpu_transform=True / False)``, one ``embed_batch``
of a (1, seconds * 16000) clip per call, the two variants timed in alternating blocks for ``--rounds`` rounds;
prints each p50 (median of round medians), the median of per-round ratios off / on, and max |difference|.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--block", type=int, default=10)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    import torch

    from nestspk.runtime.torch_runtime import TorchEmbedder

    torch.set_num_threads(a.threads)
    x = (0.1 * np.random.default_rng(0).standard_normal((1, int(a.seconds * 16000)))).astype(np.float32)
    res = {"threads": a.threads, "seconds": a.seconds, "rounds": a.rounds, "block": a.block,
           "torch": torch.__version__, "models": {}}
    for name in ("nested_4level", "resnetse34l_asp"):
        emb = {"on": TorchEmbedder(name, device="cpu", cpu_transform=True),
               "off": TorchEmbedder(name, device="cpu", cpu_transform=False)}
        out = {k: e.embed_batch(x) for k, e in emb.items()}
        med: dict[str, list[float]] = {"on": [], "off": []}
        for r in range(a.rounds):
            for k in (("on", "off") if r % 2 == 0 else ("off", "on")):
                for _ in range(2):
                    emb[k].embed_batch(x)
                ts = []
                for _ in range(a.block):
                    t0 = time.perf_counter()
                    emb[k].embed_batch(x)
                    ts.append((time.perf_counter() - t0) * 1e3)
                med[k].append(float(np.median(ts)))
        ratio = float(np.median(np.array(med["off"]) / np.array(med["on"])))
        res["models"][name] = {"p50_on_ms": float(np.median(med["on"])), "p50_off_ms": float(np.median(med["off"])),
                               "off_over_on": ratio, "max_abs_diff": float(np.abs(out["on"] - out["off"]).max()),
                               "rounds_on": med["on"], "rounds_off": med["off"]}
        m = res["models"][name]
        print(f"{name}: transform on {m['p50_on_ms']:.2f} ms, off {m['p50_off_ms']:.2f} ms, off/on x{ratio:.3f}, "
              f"max |diff| {m['max_abs_diff']:.1e}")
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "ab.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
