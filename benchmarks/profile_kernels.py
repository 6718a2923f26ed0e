"""Top CUDA kernels of one model/mode/workload (torch.profiler), to see where GPU time goes.

Usage (GPU machine, repo root):
    python -m benchmarks.profile_kernels --model nested --mode cuda_graph+channels_last+fp16 --duration 4 --batch 256
Profiles the embedder the benchmark times (benchmarks/embedders.py: the Verifier's, numpy in and out; peers too)
and prints the top kernels by total CUDA time over ``--iters`` calls and the share of each torch op.
"""
from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from .bench import BenchConfig, load_subjects, random_audio


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="nested")
    p.add_argument("--mode", default="fp16")
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--by-op", action="store_true",
                   help="instead: GPU time per torch op and input shapes (self CUDA time, per call), full names")
    a = p.parse_args()
    torch.backends.cudnn.benchmark = True
    (subject,) = load_subjects(BenchConfig(device="cuda", models=(a.model,)))
    emb, _ = subject.embedder("torch", "cuda", a.mode, None)
    wav = random_audio(a.batch, a.duration, 16000, 0)
    for _ in range(10):
        emb.embed_batch(wav)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU], record_shapes=a.by_op) as prof:
        for _ in range(a.iters):
            emb.embed_batch(wav)
        torch.cuda.synchronize()
    print(f"== {a.model} {a.mode} {a.duration:g} s batch {a.batch}, {a.iters} calls")
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    print(f"GPU kernel time: {sum(e.self_device_time_total for e in kernels) / a.iters / 1e3:.3f} ms per call "
          f"({sum(e.count for e in kernels) // a.iters} kernels)")
    if not a.by_op:
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=a.top, max_name_column_width=70))
        return
    rows = [e for e in prof.key_averages(group_by_input_shape=True)
            if e.self_device_time_total > 0 and not e.key.startswith(("void ", "sm", "cudnn", "Memcpy", "Memset"))]
    rows.sort(key=lambda e: -e.self_device_time_total)
    total = sum(e.self_device_time_total for e in rows)
    print(f"GPU time under torch ops: {total / a.iters / 1e3:.3f} ms per call")
    for e in rows[:a.top]:
        print(f"{e.self_device_time_total / a.iters / 1e3:7.3f} ms {e.count // a.iters:4d}x  {e.key:28s} "
              f"{str(e.input_shapes)[:150]}")


if __name__ == "__main__":
    main()
