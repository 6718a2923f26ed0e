"""Host (CPU) cost of the fused nested kernel in eager mode, where batch-1 calls are launch-bound.

In one process, alternates ``nestspk.models.fused.ENABLED`` on/off in ``--rounds`` rounds of ``--calls`` synchronised
calls of the nested model (8 s, batch 1 by default) per mode, and also times the launch of the nested connection
alone (fused kernel vs the eager ops, no synchronisation: host time per call).
Usage (GPU machine, repo root): python benchmarks/fused_host_probe.py [--modes fp32,channels_last,fp16]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from nestspk.bench import load_bench_model, make_torch_runner, random_audio
from nestspk.models import fused


def _p50_ms(fn, wav, calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn(wav)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default="fp32,channels_last,fp16")
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--calls", type=int, default=50)
    a = p.parse_args()
    model, _ = load_bench_model("nested")
    model = model.cuda()
    wav = random_audio(a.batch, a.duration, 16000, 0, "cuda")
    print(f"{torch.cuda.get_device_name()}, nested, {a.duration:g} s batch {a.batch}, "
          f"{a.rounds} rounds x {a.calls} calls, p50 ms per round")
    for mode in a.modes.split(","):
        runner = make_torch_runner(model, mode, wav, warmup=10)
        res = {True: [], False: []}
        for r in range(a.rounds):
            for on in ((True, False) if r % 2 == 0 else (False, True)):
                fused.ENABLED = on
                _p50_ms(runner.fn, wav, 5)
                res[on].append(_p50_ms(runner.fn, wav, a.calls))
        fused.ENABLED = True
        ratios = [x / y for x, y in zip(res[True], res[False])]
        print(f"{mode:16s} on {statistics.median(res[True]):.3f}  off {statistics.median(res[False]):.3f}  "
              f"on/off median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")

    # launch cost of the nested connection alone (level-2 shape at 8 s, batch 1), no synchronisation
    enc = model.encoder
    norm = enc.nested["2"].proj[1]
    w = enc.nested_w["2"]
    y = torch.randn(a.batch, 32, 10, int(a.duration * 100 // 2), device="cuda")
    x = torch.randn_like(y)

    def eager_ops():
        return x + torch.sigmoid(w) * enc.nested["2"].after_conv(y).to(x.dtype)

    def fused_op():
        return fused.group_norm_relu_add(y, x, norm, w, 0.0)

    with torch.inference_mode():
        for name, fn in (("eager ops", eager_ops), ("fused kernel", fused_op)) * 2:
            for _ in range(50):
                fn()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(1000):
                fn()
            host = (time.perf_counter() - t0) / 1000 * 1e6
            torch.cuda.synchronize()
            print(f"nested connection, {name:12s}: {host:6.1f} us host time per call (no sync)")


if __name__ == "__main__":
    main()
