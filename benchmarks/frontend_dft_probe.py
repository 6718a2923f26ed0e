"""Front-end DFT probe: ``LogMelFrontend(dft="direct")`` vs ``dft="factored"`` in torch, per device and batch.

    python benchmarks/frontend_dft_probe.py --device cpu --threads 2 --batch 1
    python benchmarks/frontend_dft_probe.py --device cuda --batch 1,64,256 --dtype fp32,fp16

Times the log-mel front end alone (waveform in, normalised log-mel out) on random audio of
``--seconds`` (default 8 s at 16 kHz; 4 s for batches > 1). The two variants are timed in
``--rounds`` interleaved rounds of ``--repeats`` calls (CUDA: one CUDA-event span per round divided
by the calls; CPU: median of per-call wall times); prints the median over rounds and the
factored/direct ratio of the per-round figures, plus the max abs difference of the outputs.
Under fp16 the front end runs inside ``torch.autocast`` as it does in nestspk-bench's fp16 modes.
The ONNX side of the comparison is in benchmarks/README.md (onnxruntime, CPU).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from nestspk.features import FrontendConfig, LogMelFrontend


def _time_cpu(fn, x: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _time_cuda(fn, x: torch.Tensor, repeats: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn(x)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", default="1")
    p.add_argument("--dtype", default="fp32", help="comma list of fp32, fp16, bf16 (autocast)")
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cfg = FrontendConfig()
    fes = {name: LogMelFrontend(cfg, dft=name).to(dev).eval() for name in ("direct", "factored")}
    timer = _time_cuda if dev.type == "cuda" else _time_cpu
    print(f"device {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}), torch "
          f"{torch.__version__}, threads {torch.get_num_threads()}")
    print("| batch | seconds | dtype | direct ms | factored ms | factored / direct | max abs diff |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    gen = torch.Generator().manual_seed(0)
    for batch in [int(b) for b in args.batch.split(",")]:
        seconds = args.seconds or (8.0 if batch == 1 else 4.0)
        x = (torch.randn(batch, int(seconds * cfg.sample_rate), generator=gen) * 0.1).to(dev)
        for dtype in args.dtype.split(","):
            amp = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]

            def run(fe, x=x, amp=amp):
                with torch.inference_mode(), torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                    return fe(x)

            outs = {n: run(fe).float() for n, fe in fes.items()}
            diff = (outs["direct"] - outs["factored"]).abs().max().item()
            per = {n: [] for n in fes}
            for _ in range(args.rounds):
                for n, fe in fes.items():
                    for _ in range(3):
                        run(fe)
                    per[n].append(timer(lambda w, fe=fe: run(fe), x, args.repeats))
            ratio = statistics.median(f / d for f, d in zip(per["factored"], per["direct"]))
            print(f"| {batch} | {seconds:g} | {dtype} | {statistics.median(per['direct']):.3f} | "
                  f"{statistics.median(per['factored']):.3f} | {ratio:.3f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
