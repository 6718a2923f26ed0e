"""``nestspk-bench``: end-to-end embedding speed of the nested model and the ResNetSE34L baseline.

What is timed is one call ``waveform tensor (B, T) in -> L2-normalised embedding (B, 512) out``,
front end included, with the input already on the device. Per row (model, backend, mode,
threads, duration, batch) the harness runs a warm-up, then ``--repeats`` timed calls on fresh
random audio (``0.1 * randn``), and reports median / p90 / p99 latency, throughput
(``batch / median``), real-time factor (``median / (batch * duration)``), peak memory,
parameters and FLOPs per utterance, and for accelerated modes the worst cosine error of the
embedding against fp32 eager on the same input.

Backends and modes
    torch (CUDA): ``fp32`` (eager), ``channels_last``, ``bf16`` / ``fp16`` (autocast),
    ``cuda_graph`` (static-shape capture, replayed), ``compile``
    (``torch.compile(mode="reduce-overhead")``); modifiers combine with ``+``
    (``cuda_graph+bf16``, ``channels_last+fp16``).
    torch (CPU): ``fp32`` eager with ``torch.get_num_threads()`` threads (``bf16``,
    ``channels_last`` and ``compile`` also work).
    onnx: ONNX Runtime on the exported model, ``--ort-threads`` intra-op threads each
    (CPU execution provider; CUDA provider on ``--device cuda`` when installed).
    ``--ort-precision fp32,int8`` adds rows (mode ``int8``) for the shipped int8 file named
    in the model card (:mod:`nestspk.quantize`); its cos err is against fp32 torch.

Timing: CUDA events around each call, with the device synchronised before every call, so
each number is an isolated request's latency including kernel-launch overhead; on CPU
``time.perf_counter``. Peak memory: ``torch.cuda.max_memory_allocated`` (absolute, weights
included) on CUDA; on CPU the increase of the process's peak RSS during the row
(``/proc/self/status`` VmHWM after resetting it through ``/proc/self/clear_refs``).

``--merge a.json b.json`` re-renders the table, targets, markdown and plot from earlier
runs' JSON without measuring (benchmarks/device_bench.sh uses it to combine its sweeps).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

BASELINE = "resnetse34l"
NESTED = "nested"
SEED_TARGET_MS = 28.8  # the seed's reported latency of the nested net (28.83 ms)
CUDA_B1_TARGET_MS = 1.0
CUDA_THROUGHPUT_TARGET = 20000.0  # utt/s at 4 s, best batch
CPU_ORT_TARGET_MS = 15.0  # ONNX Runtime, 2 threads, 8 s, batch 1
EXACT_TOL = 1e-4  # max (1 - cosine) against fp32 eager for a mode to count as exact

MODIFIERS = ("cuda_graph", "compile", "channels_last", "bf16", "fp16")  # canonical spelling order
DEFAULT_CUDA_MODES = ("fp32", "channels_last", "bf16", "fp16", "cuda_graph", "compile")
DEFAULT_CPU_MODES = ("fp32",)
TABLE_COLUMNS = ("model", "backend", "mode", "thr", "dur s", "batch", "p50 ms", "p90 ms", "p99 ms",
                 "utt/s", "RTF", "peak MB", "cos err", "nest/base")


# ----------------------------------------------------------------------------- config


@dataclass
class BenchConfig:
    """What to measure. Lists are swept as a full grid per model and backend."""

    device: str = "cpu"
    backends: tuple[str, ...] = ("torch",)
    models: tuple[str, ...] = (NESTED, BASELINE)
    durations: tuple[float, ...] = (2.0, 4.0, 8.0, 20.0)
    batches: tuple[int, ...] = (1,)
    modes: tuple[str, ...] = DEFAULT_CPU_MODES
    ort_threads: tuple[int, ...] = (1,)
    ort_precisions: tuple[str, ...] = ("fp32",)  # "int8": the shipped quantised file of the card
    torch_threads: tuple[int, ...] = ()  # CPU torch rows: intra-op threads to sweep; () = torch.get_num_threads()
    repeats: int = 50
    warmup: int = 10
    compile_timeout_s: float = 300.0
    weights: str = "trained"  # "trained" (shipped weights when available) or "random"
    seed: int = 0
    sample_rate: int = 16000
    exact_tol: float = EXACT_TOL
    cudnn_benchmark: bool = True
    onnx_dir: str | None = None
    opset: int = 18
    rounds: int = 0  # > 0: paired mode, models interleaved in this many rounds per workload (run_paired)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_mode(mode: str) -> frozenset[str]:
    """``"cuda_graph+bf16"`` -> ``{"cuda_graph", "bf16"}``; ``"fp32"`` / ``"eager"`` -> empty set."""
    parts = {p.strip() for p in mode.split("+") if p.strip()} - {"fp32", "eager"}
    unknown = parts - set(MODIFIERS)
    if unknown:
        raise ValueError(f"unknown mode component(s) {sorted(unknown)} in {mode!r}; "
                         f"known: fp32, {', '.join(MODIFIERS)} (combine with '+')")
    if {"bf16", "fp16"} <= parts:
        raise ValueError(f"mode {mode!r}: choose one of bf16 / fp16")
    if {"cuda_graph", "compile"} <= parts:
        raise ValueError(f"mode {mode!r}: compile (reduce-overhead) already uses CUDA graphs")
    return frozenset(parts)


def canonical_mode(mode: str) -> str:
    """A stable spelling of a mode: components in MODIFIERS order, ``fp32`` when plain."""
    parts = parse_mode(mode)
    return "+".join(m for m in MODIFIERS if m in parts) or "fp32"


# ----------------------------------------------------------------------------- environment


def _git_commit() -> str | None:
    """$NESTSPK_GIT_COMMIT if set (a copied working tree's .git may be stale), else ``git rev-parse HEAD``."""
    if os.environ.get("NESTSPK_GIT_COMMIT"):
        return os.environ["NESTSPK_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str) -> dict[str, Any]:
    """Versions, device name, CPU count and git commit, stored with every result."""
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "git_commit": _git_commit() or os.environ.get("NESTSPK_GIT_COMMIT"),
        "device": device,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["ort_providers"] = ort.get_available_providers()
    except ImportError:
        env["onnxruntime"] = None
    if device.startswith("cuda") and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
        env["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        env["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        from .models import fused

        env["fused_nested_kernel"] = bool(fused.ENABLED and fused.triton is not None)
        env["triton"] = getattr(fused.triton, "__version__", None)
    else:
        env["device_name"] = env["cpu"]
    return env


# ----------------------------------------------------------------------------- measurement helpers


def percentiles(times_ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(times_ms, dtype=np.float64)
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "min_ms": float(a.min())}


def _read_status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class CpuPeakMemory:
    """Peak RSS increase (MB) over a block, from /proc (no psutil); ``None`` where unavailable."""

    def __enter__(self) -> "CpuPeakMemory":
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.reset = True
        except OSError:
            self.reset = False
        self.rss0 = _read_status_kb("VmRSS")
        self.hwm0 = _read_status_kb("VmHWM")
        self.peak_mb: float | None = None
        return self

    def __exit__(self, *exc: Any) -> None:
        hwm = _read_status_kb("VmHWM")
        base = self.rss0 if self.reset else self.hwm0
        if hwm is not None and base is not None:
            self.peak_mb = max(hwm - base, 0) / 1024.0


def count_flops(fn: Callable[[torch.Tensor], torch.Tensor], wav: torch.Tensor) -> int | None:
    """FLOPs of one call, counted with ``torch.utils.flop_counter.FlopCounterMode``."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            fn(wav)
        return int(counter.get_total_flops())
    except Exception as e:  # noqa: BLE001 - FLOPs are informative only
        log.warning("FLOP counting failed: %s", e)
        return None


def cosine_error(fast: torch.Tensor, ref: torch.Tensor) -> float:
    """max over the batch of ``1 - cos(fast, ref)``."""
    cos = F.cosine_similarity(fast.detach().float().cpu(), ref.detach().float().cpu(), dim=-1)
    return max(0.0, float((1.0 - cos).max()))


def random_audio(batch: int, duration: float, sample_rate: int, seed: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    wav = 0.1 * torch.randn(batch, int(round(duration * sample_rate)), generator=g)
    return wav.to(device)


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the main thread after ``seconds`` (no-op off the main thread / on Windows)."""
    usable = seconds > 0 and hasattr(signal, "setitimer") and \
        __import__("threading").current_thread() is __import__("threading").main_thread()
    if not usable:
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise TimeoutError(f"exceeded the {seconds:.0f} s time limit")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------------------- model loading


class _Embed(nn.Module):
    """``model.embed`` as a module forward (for torch.compile and ONNX export)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.model.embed(wav)


def load_bench_model(name: str, weights: str = "trained") -> tuple[nn.Module, str]:
    """(model in eval mode on CPU, weights label). Falls back to random init if no weights ship."""
    from .models import build_model

    if weights == "trained":
        from .checkpoints import ALIASES, load_model

        # the installed package's weights, else the repo's weights/ (PYTHONPATH use without install)
        repo_card = Path(__file__).resolve().parents[1] / "weights" / f"{ALIASES.get(name, name)}.json"
        err: Exception | None = None
        for source in (name, repo_card):
            try:
                model, card = load_model(source)
                return model.eval(), card.name
            except Exception as e:  # noqa: BLE001 - speed does not depend on training
                err = err or e
        log.warning("no trained weights for %s (%s); using random init", name, err)
    torch.manual_seed(0)
    return build_model(name).eval(), "random"


def export_onnx_file(model: nn.Module, path: Path, opset: int = 18, example: torch.Tensor | None = None) -> Path:
    """Export waveform -> normalised embedding to ONNX.

    Without ``example``: dynamic batch and length, through :func:`nestspk.onnx.export_onnx` when
    present, else ``torch.onnx.export(dynamo=True)``. With ``example``: a static-shape export for
    that input shape only (the fallback when a model does not export with dynamic shapes).
    """
    model = copy.deepcopy(model).cpu().eval()
    if example is None:
        try:
            from .export import export_onnx
        except ImportError:
            export_onnx = None
        if export_onnx is not None:
            export_onnx(model, str(path), opset=opset)
            return path
        log.info("nestspk.onnx not available; exporting with torch.onnx.export(dynamo=True)")
    wav = (0.1 * torch.randn(2, 32000)) if example is None else example.detach().cpu()
    dyn = None if example is not None else {"wav": {0: "batch", 1: "samples"}, "embedding": {0: "batch"}}
    with _quiet_export():
        torch.onnx.export(_Embed(model), (wav,), str(path), dynamo=True, opset_version=opset,
                          input_names=["wav"], output_names=["embedding"], dynamic_axes=dyn,
                          external_data=False, verbose=False)
    return path


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the exporter's INFO chatter and warnings (its errors still raise)."""
    import warnings

    names = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._export")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, lv in levels.items():
            logging.getLogger(n).setLevel(lv)


# ----------------------------------------------------------------------------- runners


@dataclass
class Runner:
    """A callable that embeds a waveform on the benchmark device, plus its setup cost."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    setup_s: float = 0.0
    cleanup: Callable[[], None] = field(default=lambda: None)


def _autocast(parts: frozenset[str], device_type: str, cache_enabled: bool = True):
    if "bf16" in parts:
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16, cache_enabled=cache_enabled)
    if "fp16" in parts:
        return torch.autocast(device_type=device_type, dtype=torch.float16, cache_enabled=cache_enabled)
    return contextlib.nullcontext()


def make_torch_runner(model: nn.Module, mode: str, example: torch.Tensor, warmup: int,
                      compile_timeout_s: float = 300.0) -> Runner:
    """Build the timed callable for one torch mode and input shape (captures / compiles here)."""
    parts = parse_mode(mode)
    dev = example.device
    if dev.type != "cuda" and ({"cuda_graph", "fp16"} & parts):
        raise ValueError(f"mode {mode!r} needs a CUDA device")
    if "channels_last" in parts:
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    t0 = time.perf_counter()

    if "compile" in parts:
        from torch import _dynamo

        _dynamo.reset()
        cmode = "reduce-overhead" if dev.type == "cuda" else "default"
        compiled = torch.compile(_Embed(model), mode=cmode, dynamic=False)
        mark = getattr(torch.compiler, "cudagraph_mark_step_begin", lambda: None)

        def fn(wav: torch.Tensor) -> torch.Tensor:
            mark()
            with torch.no_grad(), _autocast(parts, dev.type):
                return compiled(wav)

        with time_limit(compile_timeout_s):
            for _ in range(max(3, warmup)):
                fn(example)
            _sync(dev)
        return Runner(fn, time.perf_counter() - t0, cleanup=_dynamo.reset)

    def eager(wav: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), _autocast(parts, dev.type, cache_enabled="cuda_graph" not in parts):
            return model.embed(wav)

    if "cuda_graph" not in parts:
        return Runner(eager)

    static_in = example.clone()
    side = torch.cuda.Stream(device=dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        for _ in range(3):
            eager(static_in)
    torch.cuda.current_stream(dev).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = eager(static_in)
    torch.cuda.synchronize(dev)

    def replay(wav: torch.Tensor) -> torch.Tensor:
        static_in.copy_(wav)
        graph.replay()
        return static_out

    return Runner(replay, time.perf_counter() - t0, cleanup=graph.reset)  # frees the graph's memory pool


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_torch(fn: Callable[[torch.Tensor], torch.Tensor], wavs: Sequence[torch.Tensor],
               warmup: int) -> list[float]:
    """Per-call latency in ms: CUDA events with a sync before each call, else perf_counter."""
    dev = wavs[0].device
    for i in range(warmup):
        fn(wavs[i % len(wavs)])
    _sync(dev)
    times: list[float] = []
    if dev.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for wav in wavs:
            torch.cuda.synchronize(dev)
            start.record()
            fn(wav)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for wav in wavs:
            t = time.perf_counter()
            fn(wav)
            times.append((time.perf_counter() - t) * 1e3)
    return times


def make_ort_session(path: Path, threads: int, device: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("onnxruntime has no CUDAExecutionProvider here (CPU build?)")
        providers = [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]  # as OnnxEmbedder
    else:
        providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), so, providers=providers)


# ----------------------------------------------------------------------------- the sweep


def _row_base(model: str, weights: str, backend: str, mode: str, device: str, threads: int | None,
              duration: float, batch: int, params: int) -> dict[str, Any]:
    return {"model": model, "weights": weights, "backend": backend, "mode": mode, "device": device,
            "threads": threads, "duration_s": float(duration), "batch": int(batch), "params": params,
            "p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None, "min_ms": None,
            "utt_per_s": None, "rtf": None, "peak_mb": None, "gflops_per_utt": None,
            "max_cos_err": None, "exact": None, "setup_s": None, "repeats": 0, "note": None, "error": None}


def _finish(row: dict, times: list[float]) -> dict:
    row.update(percentiles(times))
    row["repeats"] = len(times)
    p50_s = row["p50_ms"] / 1e3
    row["utt_per_s"] = row["batch"] / p50_s if p50_s > 0 else None
    row["rtf"] = p50_s / (row["batch"] * row["duration_s"])
    return row


def run_benchmark(cfg: BenchConfig, on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """Measure every (model, backend, mode/threads, duration, batch) of ``cfg``; returns the rows.

    A failing row (OOM, compile error/timeout, missing provider) is recorded with ``error`` set
    instead of aborting the sweep. ``on_row`` is called after every row (for incremental saving).
    """
    dev = torch.device(cfg.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda but torch.cuda.is_available() is False")
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    rows: list[dict] = []
    seed = cfg.seed

    def emit(row: dict) -> None:
        rows.append(row)
        if row["error"]:
            log.warning("%s %s %s %.1fs b%d: %s", row["model"], row["backend"], row["mode"],
                        row["duration_s"], row["batch"], row["error"])
        else:
            log.info("%-11s %-5s %-26s thr=%-4s %5.1fs b%-4d p50 %9.3f ms  %10.1f utt/s", row["model"],
                     row["backend"], row["mode"], row["threads"] or "-", row["duration_s"], row["batch"],
                     row["p50_ms"], row["utt_per_s"])
        if on_row:
            on_row(row)

    onnx_tmp = None
    for name in cfg.models:
        cpu_model, weights = load_bench_model(name, cfg.weights)
        from .models import count_parameters

        params = count_parameters(cpu_model)
        model = cpu_model.to(dev)
        flops: dict[float, int | None] = {}
        for duration in cfg.durations:
            flops[duration] = count_flops(model.embed, random_audio(1, duration, cfg.sample_rate, 0, cfg.device))

        def gflops(d: float) -> float | None:
            return flops[d] / 1e9 if flops.get(d) is not None else None

        if "torch" in cfg.backends:
            default_threads = torch.get_num_threads()
            thread_list = (cfg.torch_threads or (default_threads,)) if dev.type == "cpu" else (None,)
            for mode in cfg.modes:
                mode = canonical_mode(mode)
                for threads in thread_list:
                    if threads is not None:
                        torch.set_num_threads(threads)
                    try:
                        for duration in cfg.durations:
                            for batch in cfg.batches:
                                seed += 1
                                row = _row_base(name, weights, "torch", mode, cfg.device, threads,
                                                duration, batch, params)
                                row["gflops_per_utt"] = gflops(duration)
                                emit(_torch_row(row, model, mode, cfg, seed))
                    finally:
                        torch.set_num_threads(default_threads)

        if "onnx" in cfg.backends:
            emit_rows = _onnx_rows(name, weights, params, gflops, cpu_model, model, cfg, seed)
            seed += 1000
            if onnx_tmp is None and cfg.onnx_dir is None:
                onnx_tmp = tempfile.TemporaryDirectory(prefix="nestspk-bench-")
            for row in emit_rows(Path(cfg.onnx_dir or onnx_tmp.name)):
                emit(row)
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    if onnx_tmp is not None:
        onnx_tmp.cleanup()
    return rows


def run_paired(cfg: BenchConfig, on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """Like :func:`run_benchmark`, but every model is timed in the same time window.

    Per workload (backend, mode, threads, duration, batch) all models' runners are built first;
    then ``cfg.rounds`` rounds each run a block of ``ceil(repeats / rounds)`` calls per model,
    the model order reversed every other round. Host drift (other tenants, clock changes) then
    hits every model alike, so ``nest/base`` ratios are comparable even where absolute numbers
    drift. Rows also carry ``round_p50_ms`` (one median per round). ``peak_mb`` is taken while
    building and warming up each model's runner (on CUDA it includes every loaded model's weights,
    a few MB).
    """
    dev = torch.device(cfg.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda but torch.cuda.is_available() is False")
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    from .models import count_parameters

    models: dict[str, tuple[nn.Module, nn.Module, str, int]] = {}
    flops: dict[tuple[str, float], int | None] = {}
    for name in cfg.models:
        cpu_model, weights = load_bench_model(name, cfg.weights)
        model = copy.deepcopy(cpu_model).to(dev) if dev.type == "cuda" else cpu_model
        models[name] = (cpu_model, model, weights, count_parameters(cpu_model))
        for d in cfg.durations:
            flops[(name, d)] = count_flops(model.embed, random_audio(1, d, cfg.sample_rate, 0, cfg.device))
    block = max(1, math.ceil(cfg.repeats / cfg.rounds))
    rows: list[dict] = []
    onnx_tmp = tempfile.TemporaryDirectory(prefix="nestspk-bench-") if "onnx" in cfg.backends and not cfg.onnx_dir else None
    onnx_dir = Path(cfg.onnx_dir or (onnx_tmp.name if onnx_tmp else "."))
    onnx_paths: dict[str, Path] = {}

    workloads: list[tuple[str, str, int | None]] = []
    if "torch" in cfg.backends:
        thread_list = (cfg.torch_threads or (torch.get_num_threads(),)) if dev.type == "cpu" else (None,)
        workloads += [("torch", canonical_mode(m), t) for m in cfg.modes for t in thread_list]
    if "onnx" in cfg.backends:
        workloads += [("onnx", p, t) for p in cfg.ort_precisions for t in cfg.ort_threads]
    default_threads = torch.get_num_threads()
    seed = cfg.seed
    for backend, mode, threads in workloads:
        for duration in cfg.durations:
            for batch in cfg.batches:
                seed += 1
                wavs = [random_audio(batch, duration, cfg.sample_rate, seed * 7919 + k, cfg.device) for k in range(4)]
                built: dict[str, tuple[dict, Callable | None, Runner | None]] = {}
                if backend == "torch" and threads is not None:
                    torch.set_num_threads(threads)
                try:
                    for name, (cpu_model, model, weights, params) in models.items():
                        row = _row_base(name, weights, backend, mode, cfg.device, threads, duration, batch, params)
                        row.update(gflops_per_utt=(flops[(name, duration)] or 0) / 1e9 or None, rounds=cfg.rounds,
                                   note="paired")
                        fn, runner = None, None
                        try:
                            fn, runner = _paired_runner(row, backend, mode, threads, cpu_model, model, weights,
                                                        wavs, cfg, onnx_paths, onnx_dir)
                        except Exception as e:  # noqa: BLE001 - becomes an error row
                            row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
                        built[name] = (row, fn, runner)
                    times: dict[str, list[float]] = {n: [] for n in built}
                    live = [n for n, (_, fn, _) in built.items() if fn is not None]
                    for r in range(cfg.rounds):
                        for name in (live if r % 2 == 0 else live[::-1]):
                            t = time_torch(built[name][1], [wavs[i % len(wavs)] for i in range(block)], warmup=2)
                            times[name] += t
                            built[name][0].setdefault("round_p50_ms", []).append(float(np.median(t)))
                    for name, (row, fn, _) in built.items():
                        if fn is not None:
                            _finish(row, times[name])
                        rows.append(row)
                        if on_row:
                            on_row(row)
                finally:
                    torch.set_num_threads(default_threads)
                    for _, _, runner in built.values():
                        if runner is not None:
                            runner.cleanup()
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                        torch.cuda.empty_cache()
    if onnx_tmp is not None:
        onnx_tmp.cleanup()
    return rows


def _paired_runner(row: dict, backend: str, mode: str, threads: int | None, cpu_model: nn.Module,
                   model: nn.Module, weights: str, wavs: list[torch.Tensor], cfg: BenchConfig,
                   onnx_paths: dict[str, Path], onnx_dir: Path) -> tuple[Callable, Runner | None]:
    """Build and warm up one model's timed callable for :func:`run_paired`; fills cos err and peak memory."""
    dev = torch.device(cfg.device)
    runner = None
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    if backend == "onnx":  # export (or find) the file outside the memory measurement
        if mode == "int8":
            path, err = _shipped_int8(weights)
            if err:
                raise RuntimeError(err)
        else:
            if row["model"] not in onnx_paths:
                onnx_paths[row["model"]] = export_onnx_file(cpu_model, onnx_dir / f"{row['model']}_{weights}.onnx",
                                                            cfg.opset)
            path = onnx_paths[row["model"]]
    mem = CpuPeakMemory() if dev.type == "cpu" else contextlib.nullcontext()
    with mem:
        if backend == "torch":
            runner = make_torch_runner(model, mode, wavs[0], cfg.warmup, cfg.compile_timeout_s)
            fn, row["setup_s"] = runner.fn, runner.setup_s
            out = fn(wavs[0]).detach().float().clone()
        else:
            sess = make_ort_session(path, threads, cfg.device)
            in_name = sess.get_inputs()[0].name

            def fn(w: torch.Tensor) -> np.ndarray:
                return sess.run(None, {in_name: w.detach().cpu().numpy()})[0]

            out = torch.from_numpy(fn(wavs[0]))
        _sync(dev)
        with torch.inference_mode():
            ref = model.embed(wavs[0])
        row["max_cos_err"] = cosine_error(out.to(ref.device), ref)
        row["exact"] = row["max_cos_err"] <= cfg.exact_tol
        for i in range(cfg.warmup):
            fn(wavs[i % len(wavs)])
        _sync(dev)
    row["peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else mem.peak_mb
    return fn, runner


def _torch_row(row: dict, model: nn.Module, mode: str, cfg: BenchConfig, seed: int) -> dict:
    dev = torch.device(cfg.device)
    runner = None
    try:
        wavs = [random_audio(row["batch"], row["duration_s"], cfg.sample_rate, seed, cfg.device)]
        # fresh audio per repeat set: a few distinct inputs cycled over the repeats
        wavs += [random_audio(row["batch"], row["duration_s"], cfg.sample_rate, seed * 7919 + k, cfg.device)
                 for k in range(1, 4)]
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        mem = CpuPeakMemory() if dev.type == "cpu" else contextlib.nullcontext()
        with mem:
            runner = make_torch_runner(model, mode, wavs[0], cfg.warmup, cfg.compile_timeout_s)
            out = runner.fn(wavs[0]).detach().clone()
            _sync(dev)
            with torch.inference_mode():
                ref = model.embed(wavs[0])
            row["max_cos_err"] = cosine_error(out, ref)
            row["exact"] = row["max_cos_err"] <= cfg.exact_tol
            times = time_torch(runner.fn, [wavs[i % len(wavs)] for i in range(cfg.repeats)], cfg.warmup)
        row["setup_s"] = runner.setup_s
        _finish(row, times)
        row["peak_mb"] = (torch.cuda.max_memory_allocated(dev) / 2**20) if dev.type == "cuda" else mem.peak_mb
    except Exception as e:  # noqa: BLE001 - a failing mode becomes an error row
        row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
    finally:
        if runner is not None:
            runner.cleanup()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.empty_cache()
    return row


def _onnx_rows(name: str, weights: str, params: int, gflops: Callable[[float], float | None],
               cpu_model: nn.Module, model: nn.Module, cfg: BenchConfig, seed: int):
    """Generator factory: export once per model (per shape if dynamic export fails), one row per
    (duration, batch, threads)."""

    def gen(folder: Path) -> Iterator[dict]:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            row = _row_base(name, weights, "onnx", "fp32", cfg.device, None, 0.0, 0, params)
            row["error"] = f"onnxruntime not installed ({e})"
            yield row
            return
        dynamic: Path | None = folder / f"{name}_{weights}.onnx"
        t0 = time.perf_counter()
        try:
            if not dynamic.is_file():
                export_onnx_file(cpu_model, dynamic, cfg.opset)
        except Exception as e:  # noqa: BLE001
            log.warning("%s: dynamic-shape ONNX export failed (%s: %s); exporting one static shape per "
                        "workload instead", name, type(e).__name__, str(e).strip().splitlines()[-1][:200])
            dynamic = None
        dyn_export_s = time.perf_counter() - t0
        s = seed
        for duration in cfg.durations:
            for batch in cfg.batches:
                s += 1
                wavs = [random_audio(batch, duration, cfg.sample_rate, s * 7919 + k, "cpu") for k in range(4)]
                path, note, export_s, export_err = dynamic, "dynamic shapes", dyn_export_s, None
                if path is None:
                    path = folder / f"{name}_{weights}_b{batch}_{int(round(duration * cfg.sample_rate))}.onnx"
                    note = "static-shape export"
                    t0 = time.perf_counter()
                    try:
                        if not path.is_file():
                            export_onnx_file(cpu_model, path, cfg.opset, example=wavs[0])
                    except Exception as e:  # noqa: BLE001
                        export_err = f"export failed: {type(e).__name__}: {str(e).strip().splitlines()[-1][:250]}"
                    export_s = time.perf_counter() - t0
                for precision in cfg.ort_precisions:
                    for threads in cfg.ort_threads:
                        row = _row_base(name, weights, "onnx", precision, cfg.device, threads, duration, batch, params)
                        row.update(gflops_per_utt=gflops(duration), setup_s=export_s, note=note)
                        run_path, err = path, export_err
                        if precision == "int8":
                            row.update(setup_s=0.0, note="shipped int8 file")
                            run_path, err = _shipped_int8(weights)
                        if err:
                            row["error"] = err
                            yield row
                            continue
                        try:
                            sess = make_ort_session(run_path, threads, cfg.device)
                            yield _ort_measure(row, sess, [w.numpy() for w in wavs], model, cfg)
                        except Exception as e:  # noqa: BLE001
                            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                            yield row

    return gen


def _shipped_int8(weights: str) -> tuple[Path | None, str | None]:
    """(path of the card's sha256-checked int8 ONNX file, None) or (None, why not)."""
    if weights == "random":
        return None, "int8 rows need the shipped trained weights (--weights trained)"
    try:
        from .card import ModelCard

        card = ModelCard.load(weights)
        return card.verified(card.export("int8"), "int8 ONNX file"), None
    except Exception as e:  # noqa: BLE001 - becomes an error row
        return None, f"{type(e).__name__}: {str(e)[:300]}"


def _ort_measure(row: dict, sess: Any, wavs: list[np.ndarray], model: nn.Module, cfg: BenchConfig) -> dict:
    in_name = sess.get_inputs()[0].name
    with CpuPeakMemory() as mem:
        out = sess.run(None, {in_name: wavs[0]})[0]
        with torch.inference_mode():
            ref = model.embed(torch.from_numpy(wavs[0]).to(cfg.device))
        row["max_cos_err"] = cosine_error(torch.from_numpy(out), ref)
        row["exact"] = row["max_cos_err"] <= cfg.exact_tol
        for i in range(max(2, cfg.warmup // 2)):
            sess.run(None, {in_name: wavs[i % len(wavs)]})
        times = []
        for i in range(cfg.repeats):
            x = wavs[i % len(wavs)]
            t = time.perf_counter()
            sess.run(None, {in_name: x})
            times.append((time.perf_counter() - t) * 1e3)
    _finish(row, times)
    row["peak_mb"] = mem.peak_mb
    return row


# ----------------------------------------------------------------------------- analysis


def _pair_key(row: dict) -> tuple:
    return (row["device"], row["backend"], row["mode"], row["threads"], row["duration_s"], row["batch"])


def add_ratios(rows: list[dict], baseline: str = BASELINE) -> list[dict]:
    """Set ``ratio_vs_baseline`` on every non-baseline row with a matching baseline row.

    Plain runs: ``p50 / baseline p50``. Paired runs (both rows carry ``round_p50_ms`` of the same
    length, see :func:`run_paired`): the median over rounds of ``round p50 / baseline round p50``,
    which compares the models within each round, so a host slowdown that hits only some rounds
    shifts one ratio, not the estimate. ``ratio_pooled_p50`` keeps ``p50 / baseline p50`` there.
    """
    base = {_pair_key(r): r for r in rows if r["model"] == baseline and not r.get("error") and r.get("p50_ms")}
    for r in rows:
        b = base.get(_pair_key(r))
        ok = r["model"] != baseline and b is not None and r.get("p50_ms") and not r.get("error")
        r["ratio_vs_baseline"] = None
        if not ok:
            continue
        pooled = r["p50_ms"] / b["p50_ms"]
        mine, theirs = r.get("round_p50_ms"), b.get("round_p50_ms")
        if mine and theirs and len(mine) == len(theirs) and all(x > 0 for x in theirs):
            r["ratio_vs_baseline"] = float(np.median([m / t for m, t in zip(mine, theirs)]))
            r["ratio_pooled_p50"] = pooled
        else:
            r["ratio_vs_baseline"] = pooled
    return rows


def _ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not r.get("error") and r.get("p50_ms") is not None]


def _label(r: dict) -> str:
    thr = f" {r['threads']}t" if r.get("threads") else ""
    return f"{r['backend']} {r['mode']}{thr}"


def best_row(rows: list[dict], model: str, device: str, duration: float, batch: int,
             exact_only: bool = False, tol: float = EXACT_TOL) -> dict | None:
    """Lowest-p50 successful row for a workload (optionally only exact modes)."""
    cands = [r for r in _ok(rows) if r["model"] == model and r["device"] == device
             and math.isclose(r["duration_s"], duration) and r["batch"] == batch]
    if exact_only:
        cands = [r for r in cands if r.get("max_cos_err") is not None and r["max_cos_err"] <= tol]
    return min(cands, key=lambda r: r["p50_ms"]) if cands else None


def fastest_exact_mode(rows: list[dict], model: str = NESTED, device: str = "cuda", duration: float = 8.0,
                       batch: int = 1, tol: float = EXACT_TOL) -> str | None:
    """The fastest mode whose embedding matches fp32 eager within ``1 - cos <= tol`` (e.g. ``"torch cuda_graph"``)."""
    r = best_row(rows, model, device, duration, batch, exact_only=True, tol=tol)
    return _label(r) if r else None


@dataclass
class Target:
    """One PASS/FAIL line."""

    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name}: {self.detail}"


def _dev_kind(device: str) -> str:
    return "cuda" if str(device).startswith("cuda") else "cpu"


def _cos_note(r: dict) -> str:
    e = r.get("max_cos_err")
    if e is None:
        return ""
    return ", exact" if e <= EXACT_TOL else f", cos err {e:.1e}"


def evaluate_targets(rows: list[dict]) -> list[Target]:
    """PASS/FAIL against the issue's targets, for those the rows make applicable."""
    rows = _ok(rows)
    out: list[Target] = []
    devices = sorted({r["device"] for r in rows}, key=lambda d: (_dev_kind(d) != "cuda", d))
    for device in devices:
        kind = _dev_kind(device)
        best = best_row(rows, NESTED, device, 8.0, 1)
        if best is not None:
            out.append(Target(f"seed target {SEED_TARGET_MS} ms ({kind}, nested, 8 s, batch 1, best mode)",
                              best["p50_ms"] <= SEED_TARGET_MS,
                              f"p50 {best['p50_ms']:.3f} ms with {_label(best)}{_cos_note(best)}"))
            if kind == "cuda":
                out.append(Target(f"CUDA 8 s batch 1 nested p50 <= {CUDA_B1_TARGET_MS:g} ms (best mode)",
                                  best["p50_ms"] <= CUDA_B1_TARGET_MS,
                                  f"p50 {best['p50_ms']:.3f} ms with {_label(best)}{_cos_note(best)}"))
            exact = best_row(rows, NESTED, device, 8.0, 1, exact_only=True)
            if exact is not None and exact is not best:
                out.append(Target(f"  (best exact mode, {kind}, 8 s, batch 1)", exact["p50_ms"] <= SEED_TARGET_MS
                                  if kind == "cpu" else exact["p50_ms"] <= CUDA_B1_TARGET_MS,
                                  f"p50 {exact['p50_ms']:.3f} ms with {_label(exact)}"))
        # nested <= baseline, one line per (backend, mode, threads)
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            if r["device"] == device and r["model"] == NESTED and r.get("ratio_vs_baseline") is not None:
                groups.setdefault((r["backend"], r["mode"], r["threads"]), []).append(r)
        for (backend, mode, threads), grp in sorted(groups.items(), key=lambda kv: str(kv[0])):
            worst = max(grp, key=lambda r: r["ratio_vs_baseline"])
            n_ok = sum(r["ratio_vs_baseline"] <= 1.0 for r in grp)
            thr = f", {threads} threads" if threads else ""
            out.append(Target(f"nested <= baseline latency ({kind}, {backend} {mode}{thr})", n_ok == len(grp),
                              f"{n_ok}/{len(grp)} workloads; worst ratio {worst['ratio_vs_baseline']:.3f} "
                              f"at {worst['duration_s']:g} s batch {worst['batch']}"))
        if kind == "cuda":
            thr_rows = [r for r in rows if r["device"] == device and r["model"] == NESTED
                        and math.isclose(r["duration_s"], 4.0)]
            if thr_rows:
                top = max(thr_rows, key=lambda r: r["utt_per_s"])
                base = [r for r in rows if r["device"] == device and r["model"] == BASELINE
                        and math.isclose(r["duration_s"], 4.0)]
                bnote = ""
                if base:
                    btop = max(base, key=lambda r: r["utt_per_s"])
                    bnote = f"; baseline best {btop['utt_per_s']:.0f} utt/s ({_label(btop)}, batch {btop['batch']})"
                out.append(Target(f"CUDA 4 s best-batch throughput >= {CUDA_THROUGHPUT_TARGET:.0f} utt/s (nested)",
                                  top["utt_per_s"] >= CUDA_THROUGHPUT_TARGET,
                                  f"{top['utt_per_s']:.0f} utt/s with {_label(top)}, batch {top['batch']}{bnote}"))
        if kind == "cpu":
            ort2 = [r for r in rows if r["device"] == device and r["model"] == NESTED and r["backend"] == "onnx"
                    and r["threads"] == 2 and math.isclose(r["duration_s"], 8.0) and r["batch"] == 1]
            for r in sorted(ort2, key=lambda r: r["mode"]):
                out.append(Target(f"CPU ONNX 2 threads 8 s nested p50 <= {CPU_ORT_TARGET_MS:g} ms ({r['mode']})",
                                  r["p50_ms"] <= CPU_ORT_TARGET_MS, f"p50 {r['p50_ms']:.2f} ms{_cos_note(r)}"))
    return out


# ----------------------------------------------------------------------------- output


def _fmt(v: Any, spec: str) -> str:
    return "" if v is None else format(v, spec)


def _mode_rank(mode: str) -> int:
    first = mode.split("+")[0]
    if mode == "fp32":
        return 0
    return MODIFIERS.index(first) + 1 if first in MODIFIERS else len(MODIFIERS) + 1  # int8 last


def sort_rows(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (_dev_kind(r["device"]) != "cuda", r["device"], r["backend"],
                                       _mode_rank(r["mode"]),
                                       r["mode"], r["threads"] or 0, r["duration_s"], r["batch"],
                                       r["model"] != NESTED, r["model"]))


def table_rows(rows: list[dict]) -> list[list[str]]:
    out = []
    for r in sort_rows(rows):
        head = [r["model"], f"{r['backend']}/{_dev_kind(r['device'])}", r["mode"], _fmt(r["threads"], "d"),
                f"{r['duration_s']:g}", str(r["batch"])]
        if r.get("error"):
            out.append(head + [f"ERROR {r['error'][:90]}"])
            continue
        out.append(head + [_fmt(r["p50_ms"], ".3f"), _fmt(r["p90_ms"], ".3f"), _fmt(r["p99_ms"], ".3f"),
                           _fmt(r["utt_per_s"], ".1f"), _fmt(r["rtf"], ".2e"), _fmt(r["peak_mb"], ".1f"),
                           _fmt(r["max_cos_err"], ".1e"), _fmt(r.get("ratio_vs_baseline"), ".3f")])
    return out


def format_table(rows: list[dict]) -> str:
    """Fixed-width text table (error rows carry their message instead of numbers)."""
    body = table_rows(rows)
    widths = [len(c) for c in TABLE_COLUMNS]
    for line in body:
        if not line[-1].startswith("ERROR"):
            widths = [max(w, len(c)) for w, c in zip(widths, line)]
    fmt_line = lambda cells: "  ".join(c.rjust(w) if i >= 3 else c.ljust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(cells, widths)))
    lines = [fmt_line(TABLE_COLUMNS), "  ".join("-" * w for w in widths)]
    for line in body:
        if line[-1].startswith("ERROR"):
            lines.append(fmt_line(line[:6]) + "  " + line[-1])
        else:
            lines.append(fmt_line(line))
    return "\n".join(lines)


def model_summary(rows: list[dict]) -> str:
    """``model: params, GFLOP per utterance at each duration``."""
    info: dict[str, dict] = {}
    for r in rows:
        d = info.setdefault(r["model"], {"params": r.get("params"), "weights": r.get("weights"), "gflops": {}})
        if r.get("gflops_per_utt") is not None:
            d["gflops"][r["duration_s"]] = r["gflops_per_utt"]
    lines = []
    for m, d in info.items():
        g = ", ".join(f"{v:.2f} @ {k:g} s" for k, v in sorted(d["gflops"].items()))
        p = f"{d['params'] / 1e6:.2f} M params" if d["params"] else "params ?"
        lines.append(f"{m} ({d['weights']}): {p}; GFLOP/utt {g or '?'}")
    return "\n".join(lines)


def _fmt_load(v: Any) -> str:
    return f"{v[0]:.1f}" if v else "?"


def format_markdown(doc: dict) -> str:
    rows, env = doc["rows"], doc["environment"]
    envs = env if isinstance(env, list) else [env]
    out = ["# nestspk-bench results", ""]
    for e in envs:
        out.append(f"- device: {e.get('device')} ({e.get('device_name')}), torch {e.get('torch')}, "
                   f"onnxruntime {e.get('onnxruntime')}, {e.get('cpu_count')} CPUs ({e.get('cpu')}), "
                   f"torch threads {e.get('torch_threads')}, git {str(e.get('git_commit'))[:12]}, "
                   f"load average {_fmt_load(e.get('loadavg'))} at start / {_fmt_load(e.get('loadavg_end'))} at end"
                   + (f", fused nested kernel {'on' if e['fused_nested_kernel'] else 'off'}"
                      if "fused_nested_kernel" in e else ""))
    out += ["", "Latency in ms per call (waveform in, normalised embedding out, front end included); "
            "RTF = p50 / (batch x duration); cos err = max (1 - cos) vs fp32 eager; "
            "nest/base = nested p50 / baseline p50 for the same backend, mode, threads, duration and batch "
            "(rows timed with --paired: the median over rounds of the per-round p50 ratio).", ""]
    out.append("| " + " | ".join(TABLE_COLUMNS) + " |")
    out.append("|" + "|".join("---" if i < 3 else "---:" for i in range(len(TABLE_COLUMNS))) + "|")
    for line in table_rows(rows):
        if line[-1].startswith("ERROR"):
            line = line[:6] + [line[-1].replace("|", "/")] + [""] * (len(TABLE_COLUMNS) - 7)
        out.append("| " + " | ".join(line) + " |")
    out += ["", "```", model_summary(rows), "```", "", "## Targets", ""]
    out += [f"- {t['line']}" for t in doc.get("targets", [])] or ["- (no applicable targets)"]
    return "\n".join(out) + "\n"


def plot_latency(rows: list[dict], path: str | Path) -> bool:
    """p50 vs duration at batch 1, one line per model/backend/mode (a panel per device). False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed; no plot written")
        return False
    ok = [r for r in _ok(rows) if r["batch"] == 1]
    devices = sorted({r["device"] for r in ok}, key=lambda d: (_dev_kind(d) != "cuda", d))
    if not devices:
        log.warning("no batch-1 rows to plot")
        return False
    fig, axes = plt.subplots(1, len(devices), figsize=(6.5 * len(devices), 4.8), squeeze=False)
    for ax, device in zip(axes[0], devices):
        labels = sorted({_label(r) for r in ok if r["device"] == device})
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, lab in enumerate(labels):
            for model, style in ((NESTED, "-o"), (BASELINE, "--s")):
                pts = sorted((r["duration_s"], r["p50_ms"]) for r in ok
                             if r["device"] == device and r["model"] == model and _label(r) == lab)
                if pts:
                    ax.plot(*zip(*pts), style, color=colors[i % len(colors)], ms=4, label=f"{model} {lab}")
        ax.set_yscale("log")
        ax.set_xlabel("utterance duration (s)")
        ax.set_ylabel("p50 latency (ms), batch 1")
        ax.set_title(f"{_dev_kind(device)}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("nestspk-bench: end-to-end embedding latency (solid: nested, dashed: ResNetSE34L)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def build_document(rows: list[dict], environment_: Any, config: Any) -> dict:
    add_ratios(rows)
    targets = evaluate_targets(rows)
    return {"environment": environment_, "config": config, "rows": rows,
            "targets": [{"name": t.name, "passed": t.passed, "detail": t.detail, "line": t.line()} for t in targets]}


def _write_json(doc: dict, path: str | Path) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(path)


def merge_documents(paths: Sequence[str | Path]) -> dict:
    """Combine several result JSONs (rows concatenated, environments/configs listed)."""
    rows, envs, cfgs = [], [], []
    for p in paths:
        d = json.loads(Path(p).read_text())
        rows += d["rows"]
        envs += d["environment"] if isinstance(d["environment"], list) else [d["environment"]]
        cfgs += d["config"] if isinstance(d["config"], list) else [d["config"]]
    return build_document(rows, envs, cfgs)


# ----------------------------------------------------------------------------- CLI


def _floats(s: str) -> tuple[float, ...]:
    return tuple(float(x) for x in s.split(",") if x.strip())


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(",") if x.strip())


def _threads(s: str) -> tuple[int, ...]:
    n = os.cpu_count() or 1
    vals = [n if x.strip() == "all" else int(x) for x in s.split(",") if x.strip()]
    return tuple(dict.fromkeys(v for v in vals if 1 <= v <= n)) or (n,)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nestspk-bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    p.add_argument("--backend", default="torch", choices=("torch", "onnx", "all"))
    p.add_argument("--models", default=f"{NESTED},{BASELINE}")
    p.add_argument("--durations", default="2,4,8,20", help="seconds, comma-separated")
    p.add_argument("--batch", default="1", help="batch sizes, comma-separated")
    p.add_argument("--modes", default=None,
                   help=f"torch modes, comma-separated; components {', '.join(MODIFIERS)} combine with '+' "
                        f"(default cuda: {','.join(DEFAULT_CUDA_MODES)}; cpu: {','.join(DEFAULT_CPU_MODES)})")
    p.add_argument("--ort-threads", default="1,2,all", help="ONNX Runtime intra-op threads ('all' = CPU count)")
    p.add_argument("--ort-precision", default="fp32",
                   help="comma-separated: fp32 (exported here) and/or int8 (the card's shipped int8 file)")
    p.add_argument("--torch-threads", default=None,
                   help="CPU torch intra-op threads to sweep, e.g. 1,all (default: torch.get_num_threads())")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--paired", type=int, default=0, metavar="ROUNDS",
                   help="time the models interleaved, in ROUNDS alternating blocks per workload (robust "
                        "nested/baseline ratios on a noisy host); 0 = one model after the other")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--compile-timeout", type=float, default=300.0, help="seconds per torch.compile row")
    p.add_argument("--weights", default="trained", choices=("trained", "random"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--onnx-dir", default=None, help="keep exported .onnx files here (default: a temp dir)")
    p.add_argument("--json", default=None, help="write results JSON (updated after every row)")
    p.add_argument("--markdown", default=None)
    p.add_argument("--plot", default=None, help="PNG of p50 vs duration at batch 1")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="do not measure: combine these result JSONs and write the outputs")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def _precisions(text: str) -> tuple[str, ...]:
    out = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in out if p not in ("fp32", "int8")]
    if bad or not out:
        raise ValueError(f"--ort-precision: choose from fp32,int8 (got {text!r})")
    return out


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    dev = torch.device(args.device)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip()) if args.modes else (
        DEFAULT_CUDA_MODES if dev.type == "cuda" else DEFAULT_CPU_MODES)
    for m in modes:
        parse_mode(m)
    if args.paired < 0:
        raise ValueError("--paired must be >= 0")
    if args.paired and any("compile" in parse_mode(m) for m in modes):
        raise ValueError("--paired does not time compile modes (compiling the second model resets the first's "
                         "dynamo caches); run them without --paired")
    if args.repeats < 1:
        raise ValueError("--repeats must be >= 1")
    return BenchConfig(
        device=args.device, backends=("torch", "onnx") if args.backend == "all" else (args.backend,),
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        durations=_floats(args.durations), batches=_ints(args.batch), modes=modes,
        ort_threads=_threads(args.ort_threads), ort_precisions=_precisions(args.ort_precision),
        torch_threads=_threads(args.torch_threads) if args.torch_threads else (), repeats=args.repeats, warmup=args.warmup,
        compile_timeout_s=args.compile_timeout, weights=args.weights, seed=args.seed, onnx_dir=args.onnx_dir,
        rounds=args.paired)


def write_outputs(doc: dict, args: argparse.Namespace) -> None:
    if args.json:
        _write_json(doc, args.json)
    if args.markdown:
        Path(args.markdown).write_text(format_markdown(doc))
    if args.plot and plot_latency(doc["rows"], args.plot):
        log.info("wrote %s", args.plot)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("torch._dynamo", "torch._inductor", "torch.onnx", "onnxscript", "onnx_ir", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.merge:
        doc = merge_documents(args.merge)
    else:
        try:
            cfg = config_from_args(args)
        except ValueError as e:
            build_parser().error(str(e))
        env = environment(cfg.device)
        log.info("nestspk-bench on %s (%s)", cfg.device, env.get("device_name"))

        def save(_row: dict) -> None:
            if args.json:
                _write_json(build_document(list(rows_so_far), env, cfg.to_dict()), args.json)

        rows_so_far: list[dict] = []
        run = run_paired if cfg.rounds > 0 else run_benchmark
        rows = run(cfg, on_row=lambda r: (rows_so_far.append(r), save(r)))
        env["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        doc = build_document(rows, env, cfg.to_dict())
    write_outputs(doc, args)
    print(model_summary(doc["rows"]))
    print()
    print(format_table(doc["rows"]))
    print()
    for t in doc["targets"]:
        print(t["line"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
