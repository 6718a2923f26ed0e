"""Top CUDA kernels of one model/mode/workload (torch.profiler), to see where GPU time goes.

Usage (GPU machine, repo root):
    python benchmarks/profile_kernels.py --model nested --mode channels_last+fp16 --duration 4 --batch 256
Prints the top kernels by total CUDA time over ``--iters`` calls and the share of each torch op.
"""
from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from nestspk.bench import load_bench_model, make_torch_runner, random_audio


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="nested")
    p.add_argument("--mode", default="fp16")
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args()
    torch.backends.cudnn.benchmark = True
    model, _ = load_bench_model(a.model)
    model = model.cuda()
    wav = random_audio(a.batch, a.duration, 16000, 0, "cuda")
    runner = make_torch_runner(model, a.mode, wav, warmup=10)
    for _ in range(10):
        runner.fn(wav)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(a.iters):
            runner.fn(wav)
        torch.cuda.synchronize()
    print(f"== {a.model} {a.mode} {a.duration:g} s batch {a.batch}, {a.iters} calls")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=a.top, max_name_column_width=70))


if __name__ == "__main__":
    main()
