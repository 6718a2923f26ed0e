"""nestspk-bench: embedding speed of nested against ResNetSE34L and the peers, timed interleaved.

Run from a source checkout: ``python -m benchmarks.bench ...`` (repo root) or ``nestspk-bench ...``
(a thin entry point that finds this file). What is timed is one call of an embedder users build,
``embed_batch(numpy (B, T) float32 16 kHz) -> numpy (B, D)`` (:mod:`benchmarks.embedders`):
front end, host->device and device->host copies included. There is one sweep, paired: per
workload (backend, mode, threads, duration, batch) every model's embedder is built and warmed up,
then ``--rounds`` rounds each time a block of calls per model, the order reversed every other
round, so host drift hits every model alike. ``x nested`` = that model's time / nested's
(median of the per-round p50 ratios; > 1 means nested is faster). Targets are data:
``benchmarks/targets.yaml``. ``--budget-s`` bounds the whole measurement (blocks shrink, later
workloads are skipped with an error row).
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import peers
from .embedders import NESTSPK_MODELS, build_embedder, canonical_mode, parse_mode, threads_set

log = logging.getLogger("nestspk.bench")

NESTED = "nested"
BASELINE = "resnetse34l"
TARGETS_FILE = Path(__file__).with_name("targets.yaml")
EXACT_TOL = 1e-4  # max (1 - cos) against fp32 eager for a mode to count as exact
DEFAULT_MODELS = (NESTED, BASELINE, *peers.PEERS, "resemblyzer")


@dataclass
class BenchConfig:
    """What to measure: every (backend, mode, threads) x duration x batch is one paired workload."""

    device: str = "cpu"
    backends: tuple[str, ...] = ("torch",)
    models: tuple[str, ...] = DEFAULT_MODELS
    durations: tuple[float, ...] = (8.0,)
    batches: tuple[int, ...] = (1,)
    modes: tuple[str, ...] = ("fp32",)
    torch_threads: tuple[int, ...] = ()  # CPU torch rows; () = torch.get_num_threads()
    ort_threads: tuple[int, ...] = (2,)
    ort_precisions: tuple[str, ...] = ("fp32",)
    rounds: int = 15
    block: int = 20  # calls per model per round (fewer when the budget asks)
    warmup: int = 4
    weights: str = "trained"  # nestspk models: "trained" (shipped) or "random"
    budget_s: float = 0.0  # 0 = unbounded
    seed: int = 0
    sample_rate: int = 16000
    cudnn_benchmark: bool = True
    flops: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- environment


def _git_commit() -> str | None:
    if os.environ.get("NESTSPK_GIT_COMMIT"):
        return os.environ["NESTSPK_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return (out.stdout.strip() or None) if out.returncode == 0 else None
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
    """Versions, device name, CPU count, load average and git commit, stored with every result."""
    import torch

    env: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(), "cpu": _cpu_name(),
                           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                           "git_commit": _git_commit(), "device": device, "loadavg": list(os.getloadavg())}
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
    except ImportError:
        env["onnxruntime"] = None
    env["resemblyzer"] = peers.resemblyzer_available()
    if device.startswith("cuda") and torch.cuda.is_available():
        env.update(device_name=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
        try:
            from nestspk.models import fused

            env["fused_nested_kernel"] = bool(fused.ENABLED and fused.triton is not None)
        except ImportError:
            pass
    else:
        env["device_name"] = env["cpu"]
    return env


# ----------------------------------------------------------------------------- models


@dataclass
class Subject:
    """One model of the sweep: how to build its embedder, its fp32 reference module, its size."""

    name: str
    label: str
    params: int | None
    weights: str
    module: Any = None  # fp32 nn.Module on the device (peers / random weights); None: shipped card
    reference: Any = None  # fp32 module for the cosine check (None: no check)

    def applies(self, backend: str, mode: str, device: str) -> str | None:
        """None when this subject has a row in the workload, else why not (no row is emitted)."""
        if self.name == "resemblyzer":
            return None if (backend == "torch" and mode == "fp32" and not device.startswith("cuda")) else "CPU only"
        if backend == "onnx" and self.module is not None:
            return "ONNX rows use shipped cards only"
        return None

    def embedder(self, backend: str, device: str, mode: str, threads: int | None) -> tuple[Any, str]:
        if self.name == "resemblyzer":
            return peers.ResemblyzerEmbedder(), "resemblyzer.VoiceEncoder"
        module = None if self.module is None else copy.deepcopy(self.module)
        emb = build_embedder(self.name, backend, device, mode, threads=threads, module=module)
        return emb, f"{type(emb).__module__}.{type(emb).__name__}"


def load_subjects(cfg: BenchConfig) -> list[Subject]:
    """The models of ``cfg`` (unavailable ones dropped with a warning; nested first)."""
    import torch

    out: list[Subject] = []
    for name in cfg.models:
        if name in NESTSPK_MODELS:
            from nestspk.models import build_model, fused

            if cfg.weights == "trained":
                from nestspk.checkpoints import load_model

                ref, _ = load_model(name, cfg.device)
                out.append(Subject(name, name, _count(ref), "trained", None, ref))
            else:
                torch.manual_seed(cfg.seed)
                m = fused.apply(build_model(name).eval().to(cfg.device))  # the transform load_model applies
                out.append(Subject(name, name, _count(m), "random", m, m))
        elif name in peers.PEERS:
            m = peers.build_peer(name, cfg.seed).to(cfg.device)
            out.append(Subject(name, peers.LABELS[name], _count(m), "random", m, m))
        elif name == "resemblyzer":
            if not peers.resemblyzer_available():
                log.warning("resemblyzer is not installed: no Resemblyzer row")
                continue
            if cfg.device.startswith("cuda") and "cpu" not in cfg.device:
                continue
            out.append(Subject(name, peers.LABELS[name], peers.resemblyzer_params(), "pretrained (pip)"))
        else:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(DEFAULT_MODELS)}")
    out.sort(key=lambda s: s.name != NESTED)
    return out


def _count(m: Any) -> int:
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------- measurement


def random_audio(batch: int, duration: float, sample_rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((batch, int(round(duration * sample_rate))))).astype(np.float32)


def percentiles(times_ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(times_ms, dtype=np.float64)
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "min_ms": float(a.min())}


def time_calls(fn: Callable[[np.ndarray], Any], wavs: Sequence[np.ndarray], n: int) -> list[float]:
    """Wall-clock ms of ``n`` calls (each returns host numpy, so each call is complete when it returns)."""
    out = []
    for i in range(n):
        x = wavs[i % len(wavs)]
        t = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def cosine_error(fast: np.ndarray, ref: np.ndarray) -> float:
    """max over the batch of ``1 - cos(fast, ref)``."""
    a, b = np.asarray(fast, np.float64), np.asarray(ref, np.float64)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-30)
    return max(0.0, float((1.0 - cos).max()))


def _reference(subject: Subject, wav: np.ndarray, device: str) -> np.ndarray | None:
    if subject.reference is None:
        return None
    import torch

    with torch.inference_mode():
        return subject.reference.embed(torch.from_numpy(wav).to(device)).float().cpu().numpy()


def _flops(subject: Subject, duration: float, cfg: BenchConfig) -> float | None:
    if not cfg.flops or subject.reference is None:
        return None
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    wav = torch.from_numpy(random_audio(1, duration, cfg.sample_rate, 0)).to(cfg.device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        subject.reference.embed(wav)
    return counter.get_total_flops() / 1e9


def _row(s: Subject, backend: str, mode: str, device: str, threads: int | None, duration: float,
         batch: int) -> dict[str, Any]:
    return {"model": s.name, "label": s.label, "weights": s.weights, "params": s.params, "backend": backend,
            "mode": mode, "device": device, "threads": threads, "duration_s": float(duration), "batch": int(batch),
            "p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None, "min_ms": None, "utt_per_s": None,
            "rtf": None, "peak_mb": None, "gflops_per_utt": None, "max_cos_err": None, "exact": None,
            "setup_s": None, "repeats": 0, "rounds": 0, "round_p50_ms": [], "x_nested": None,
            "embedder": None, "error": None}


def _err(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def workloads(cfg: BenchConfig) -> list[tuple[str, str, int | None, float, int]]:
    """(backend, mode, threads, duration, batch) in sweep order."""
    import torch

    cuda = cfg.device.startswith("cuda")
    out = []
    if "torch" in cfg.backends:
        thr = (None,) if cuda else (cfg.torch_threads or (torch.get_num_threads(),))
        out += [("torch", canonical_mode(m), t, d, b) for m in cfg.modes for t in thr
                for d in cfg.durations for b in cfg.batches]
    if "onnx" in cfg.backends:
        out += [("onnx", p, t, d, b) for p in cfg.ort_precisions for t in cfg.ort_threads
                for d in cfg.durations for b in cfg.batches]
    return out


def run_sweep(cfg: BenchConfig, on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """The paired sweep: all models of a workload timed in interleaved rounds; returns the rows."""
    import torch

    cuda = cfg.device.startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda but torch.cuda.is_available() is False")
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    t_start = time.perf_counter()
    subjects = load_subjects(cfg)
    flops = {(s.name, d): _flops(s, d, cfg) for s in subjects for d in cfg.durations}
    plan = workloads(cfg)
    rows: list[dict] = []
    for k, (backend, mode, threads, duration, batch) in enumerate(plan):
        t_wl = time.perf_counter()
        left = cfg.budget_s - (t_wl - t_start) if cfg.budget_s > 0 else math.inf
        share = left / (len(plan) - k)
        live = [s for s in subjects if s.applies(backend, mode, cfg.device) is None]
        wavs = [random_audio(batch, duration, cfg.sample_rate, cfg.seed * 7919 + k * 4 + i) for i in range(3)]
        built: dict[str, tuple[dict, Any]] = {}
        with threads_set(threads if backend == "torch" else None):
            for s in live:
                row = _row(s, backend, mode, cfg.device, threads, duration, batch)
                row["gflops_per_utt"] = flops[(s.name, duration)]
                built[s.name] = (row, None)
                if left <= 0 or (cfg.budget_s > 0 and time.perf_counter() - t_wl > share):
                    row["error"] = "skipped: time budget spent"
                    continue
                try:
                    built[s.name] = (row, _prepare(row, s, backend, mode, threads, wavs, cfg))
                except Exception as e:  # noqa: BLE001 - a failing mode becomes an error row
                    row["error"] = _err(e)
            ready = [(n, r, fn) for n, (r, fn) in built.items() if fn is not None]
            rounds, block = _fit(cfg, ready, share - (time.perf_counter() - t_wl))
            times: dict[str, list[float]] = {n: [] for n, _, _ in ready}
            for rnd in range(rounds):
                if rnd and cfg.budget_s > 0 and time.perf_counter() - t_wl > share:
                    log.warning("budget: %d of %d rounds at %s %s %gs b%d", rnd, rounds, backend, mode, duration, batch)
                    rounds = rnd
                    break
                for name, row, fn in (ready if rnd % 2 == 0 else ready[::-1]):
                    t = time_calls(fn, wavs, block)
                    times[name] += t
                    row["round_p50_ms"].append(float(np.median(t)))
        for name, row, _ in ready:
            row.update(percentiles(times[name]), repeats=len(times[name]), rounds=rounds)
            p50_s = row["p50_ms"] / 1e3
            row["utt_per_s"] = batch / p50_s
            row["rtf"] = p50_s / (batch * duration)
        for row, _ in built.values():
            rows.append(row)
            if on_row:
                on_row(row)
        del built, ready
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    add_ratios(rows)
    return rows


def _prepare(row: dict, s: Subject, backend: str, mode: str, threads: int | None, wavs: list[np.ndarray],
             cfg: BenchConfig) -> Callable[[np.ndarray], Any]:
    """Build, check (cos err against fp32 eager) and warm up one embedder; returns its embed_batch."""
    import torch

    cuda = cfg.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    emb, row["embedder"] = s.embedder(backend, cfg.device, mode, threads)
    fn = emb.embed_batch
    for i in range(max(3, cfg.warmup)):  # >= 3: a TorchEmbedder captures a shape's graph on its second call
        fn(wavs[i % len(wavs)])
    row["setup_s"] = time.perf_counter() - t0
    ref = _reference(s, wavs[0], cfg.device)
    if ref is not None:
        row["max_cos_err"] = cosine_error(fn(wavs[0]), ref)
        row["exact"] = row["max_cos_err"] <= EXACT_TOL
    if cuda:
        row["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    row["_call_s"] = min(time_calls(fn, wavs, 2)) / 1e3
    return fn


def _fit(cfg: BenchConfig, ready: list[tuple[str, dict, Any]], seconds: float) -> tuple[int, int]:
    """(rounds, block) that fit ``seconds`` given each model's measured call time (at least 3 x 1)."""
    per_round_call = sum(r.pop("_call_s", 0.0) for _, r, _ in ready)
    rounds, block = cfg.rounds, cfg.block
    if not ready or not math.isfinite(seconds) or per_round_call <= 0:
        return rounds, block
    fit_calls = seconds / (per_round_call * 1.15)  # ~15 % for the warm-up calls inside each block
    if rounds * block > fit_calls:
        block = max(1, int(fit_calls // rounds))
        if rounds * block > fit_calls:
            rounds = max(3, int(fit_calls))
    return rounds, block


def add_ratios(rows: list[dict], ref: str = NESTED) -> list[dict]:
    """``x_nested`` on every row with a nested row of the same workload: median of per-round p50 ratios."""
    key = lambda r: (r["device"], r["backend"], r["mode"], r["threads"], r["duration_s"], r["batch"])  # noqa: E731
    base = {key(r): r for r in rows if r["model"] == ref and r.get("p50_ms")}
    for r in rows:
        b = base.get(key(r))
        r["x_nested"] = None
        if b is None or r is b or not r.get("p50_ms") or r.get("error"):
            continue
        mine, theirs = r.get("round_p50_ms") or [], b.get("round_p50_ms") or []
        if mine and len(mine) == len(theirs):
            r["x_nested"] = float(np.median([m / t for m, t in zip(mine, theirs)]))
        else:
            r["x_nested"] = r["p50_ms"] / b["p50_ms"]
    return rows


# ----------------------------------------------------------------------------- targets (data: targets.yaml)


def load_targets(path: Path = TARGETS_FILE) -> list[dict]:
    """The targets of ``path`` (ValueError naming the file for a malformed one)."""
    import yaml

    doc = yaml.safe_load(Path(path).read_text())
    targets = doc.get("targets") if isinstance(doc, dict) else None
    if not isinstance(targets, list):
        raise ValueError(f"{path}: expected a mapping with a 'targets' list")
    for i, t in enumerate(targets):
        if t.get("kind") not in TARGET_KINDS:
            raise ValueError(f"{path}: target {i} ({t.get('id')}): kind must be one of {sorted(TARGET_KINDS)}")
    return targets


def _match(r: dict, t: dict) -> bool:
    dev = "cuda" if str(r["device"]).startswith("cuda") else "cpu"
    if t.get("device", dev) != dev or r.get("error") or r.get("p50_ms") is None:
        return False
    for k, field in (("duration_s", "duration_s"), ("batch", "batch"), ("backend", "backend"),
                     ("threads", "threads"), ("mode", "mode")):
        if k in t and r[field] != t[k]:
            return False
    if "max_cos_err" in t and (r.get("max_cos_err") is None or r["max_cos_err"] > t["max_cos_err"]):
        return False
    return True


def _lbl(r: dict) -> str:
    thr = f" {r['threads']}t" if r.get("threads") else ""
    return f"{r['backend']} {r['mode']}{thr}, {r['duration_s']:g} s b{r['batch']}"


def _t_latency(t: dict, rows: list[dict]) -> tuple[bool, str] | None:
    cand = [r for r in rows if r["model"] == t.get("model", NESTED) and _match(r, t)]
    if not cand:
        return None
    best = min(cand, key=lambda r: r["p50_ms"])
    return best["p50_ms"] <= t["max_ms"], f"p50 {best['p50_ms']:.3f} ms ({_lbl(best)})"


def _t_throughput(t: dict, rows: list[dict]) -> tuple[bool, str] | None:
    cand = [r for r in rows if r["model"] == t.get("model", NESTED) and _match(r, t)]
    if not cand:
        return None
    best = max(cand, key=lambda r: r["utt_per_s"])
    ok, detail = best["utt_per_s"] >= t.get("min_utt_s", 0), f"{best['utt_per_s']:.0f} utt/s ({_lbl(best)})"
    for peer in t.get("ahead_of", []):
        prow = [r for r in rows if r["model"] == peer and _match(r, {**t, "max_cos_err": 1.0})]
        if prow:
            p = max(prow, key=lambda r: r["utt_per_s"])
            ok &= best["utt_per_s"] > p["utt_per_s"]
            detail += f"; {peer} best {p['utt_per_s']:.0f} utt/s ({_lbl(p)})"
    return ok, detail


def _t_faster_than_all(t: dict, rows: list[dict]) -> tuple[bool, str] | None:
    cand = [r for r in rows if r["model"] != NESTED and r.get("x_nested") is not None and _match(r, t)
            and r["model"] not in t.get("except", [])]
    if not cand:
        return None
    worst = min(cand, key=lambda r: r["x_nested"])
    n_ok = sum(r["x_nested"] >= 1.0 for r in cand)
    return n_ok == len(cand), (f"{n_ok}/{len(cand)} (model, mode) pairs; worst: {worst['model']} "
                               f"x{worst['x_nested']:.2f} ({_lbl(worst)})")


TARGET_KINDS = {"latency": _t_latency, "throughput": _t_throughput, "faster_than_all": _t_faster_than_all}


def evaluate_targets(rows: list[dict], targets: list[dict] | None = None) -> list[dict]:
    """One ``{id, text, passed, detail, line}`` per target the rows make applicable."""
    if targets is None:
        try:
            targets = load_targets()
        except ImportError:  # a bare device machine without PyYAML: re-evaluate later with --merge
            log.warning("PyYAML is not installed: no targets evaluated (run --merge where it is)")
            return []
    out = []
    for t in targets:
        res = TARGET_KINDS[t["kind"]](t, rows)
        if res is None:
            continue
        ok, detail = res
        out.append({"id": t.get("id"), "text": t["text"], "passed": bool(ok), "detail": detail,
                    "line": f"{'PASS' if ok else 'FAIL'}  {t['text']}: {detail}"})
    return out


# ----------------------------------------------------------------------------- output


def _workload_key(r: dict) -> tuple:
    return (not str(r["device"]).startswith("cuda"), r["backend"], r["duration_s"], r["batch"], r["mode"],
            r["threads"] or 0)


def peer_table(rows: list[dict], markdown: bool = False) -> str:
    """One line per workload, one column per model: p50 ms (batch 1) or utt/s, and ``x nested``."""
    models = list(dict.fromkeys(r["model"] for r in sorted(rows, key=lambda r: r["model"] != NESTED)))
    labels = {r["model"]: r["label"] for r in rows}
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        groups.setdefault(_workload_key(r), {})[r["model"]] = r
    params = {r["model"]: r.get("params") for r in rows}
    head = ["workload"] + [labels[m] + (f" ({params[m] / 1e6:.1f} M)" if params[m] else "") for m in models]
    body = []
    for key in sorted(groups):
        g = groups[key]
        any_r = next(iter(g.values()))
        dev = "cuda" if str(any_r["device"]).startswith("cuda") else "cpu"
        thr = f" {any_r['threads']}t" if any_r["threads"] else ""
        line = [f"{dev} {any_r['backend']} {any_r['mode']}{thr}, {any_r['duration_s']:g} s b{any_r['batch']}"]
        for m in models:
            r = g.get(m)
            if r is None:
                line.append("")
            elif r.get("error"):
                line.append("error" if markdown else "ERR")
            else:
                v = f"{r['p50_ms']:.3f} ms" if r["batch"] == 1 else f"{r['utt_per_s']:,.0f} utt/s"
                line.append(v if m == NESTED or r.get("x_nested") is None else f"{v} (x{r['x_nested']:.2f})")
        body.append(line)
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|---" + "|---:" * len(models) + "|"]
        return "\n".join(out + ["| " + " | ".join(line) + " |" for line in body])
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([fmt(head), "  ".join("-" * w for w in widths)] + [fmt(x) for x in body])


DETAIL_COLUMNS = ("model", "workload", "p50 ms", "p90 ms", "utt/s", "RTF", "peak MB", "cos err", "x nested",
                  "rounds x block", "embedder / error")


def detail_table(rows: list[dict]) -> list[list[str]]:
    out = []
    for r in sorted(rows, key=lambda r: (_workload_key(r), r["model"] != NESTED, r["model"])):
        f = lambda v, spec: "" if v is None else format(v, spec)  # noqa: E731
        tail = f"ERROR {r['error'][:120]}" if r.get("error") else str(r.get("embedder"))
        blk = f"{r['rounds']} x {r['repeats'] // r['rounds']}" if r.get("rounds") else ""
        out.append([r["model"], _lbl(r), f(r["p50_ms"], ".3f"), f(r["p90_ms"], ".3f"), f(r["utt_per_s"], ".1f"),
                    f(r["rtf"], ".2e"), f(r["peak_mb"], ".0f"), f(r["max_cos_err"], ".1e"), f(r["x_nested"], ".2f"),
                    blk, tail])
    return out


def format_markdown(doc: dict) -> str:
    envs = doc["environment"] if isinstance(doc["environment"], list) else [doc["environment"]]
    out = ["# nestspk-bench results", ""]
    for e in envs:
        out.append(f"- {e.get('device')} ({e.get('device_name')}), torch {e.get('torch')}, onnxruntime "
                   f"{e.get('onnxruntime')}, {e.get('cpu_count')} CPUs, git {str(e.get('git_commit'))[:12]}, "
                   f"load {e.get('loadavg', ['?'])[0]}")
    out += ["", "Each cell: p50 per call of `embed_batch` (numpy in, numpy out, front end and copies included; "
            "batch 1 in ms, larger batches in utt/s) and, in brackets, that model's time / nested's "
            "(median of per-round ratios of an interleaved run; > 1 means nested is faster). Peers: "
            "benchmarks/peers.py, random weights.", "", peer_table(doc["rows"], markdown=True), "", "## Rows", "",
            "| " + " | ".join(DETAIL_COLUMNS) + " |", "|---|---" + "|---:" * 8 + "|---|"]
    out += ["| " + " | ".join(c.replace("|", "/") for c in line) + " |" for line in detail_table(doc["rows"])]
    out += ["", "## Targets (benchmarks/targets.yaml)", ""]
    out += [f"- {t['line']}" for t in doc.get("targets", [])] or ["- (no applicable targets)"]
    return "\n".join(out) + "\n"


def build_document(rows: list[dict], env: Any, config: Any) -> dict:
    add_ratios(rows)
    return {"environment": env, "config": config, "rows": rows, "targets": evaluate_targets(rows)}


def write_json(doc: dict, path: str | Path) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(path)


def merge_documents(paths: Sequence[str | Path]) -> dict:
    rows, envs, cfgs = [], [], []
    for p in paths:
        d = json.loads(Path(p).read_text())
        rows += d["rows"]
        envs += d["environment"] if isinstance(d["environment"], list) else [d["environment"]]
        cfgs += d["config"] if isinstance(d["config"], list) else [d["config"]]
    return build_document(rows, envs, cfgs)


# ----------------------------------------------------------------------------- CLI


def _list(s: str, cast: Callable[[str], Any]) -> tuple:
    return tuple(cast(x.strip()) for x in s.split(",") if x.strip())


def _threads(s: str) -> tuple[int, ...]:
    n = os.cpu_count() or 1
    return tuple(dict.fromkeys(n if x == "all" else int(x) for x in _list(s, str)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nestspk-bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--backend", default="torch", choices=("torch", "onnx", "all"))
    p.add_argument("--models", default=",".join(DEFAULT_MODELS))
    p.add_argument("--durations", default="8", help="seconds, comma-separated")
    p.add_argument("--batch", default="1", help="batch sizes, comma-separated")
    p.add_argument("--modes", default="fp32", help="torch modes: fp32, cuda_graph, fp16, bf16, channels_last, "
                                                   "compile, combined with '+' (e.g. cuda_graph+fp16+channels_last)")
    p.add_argument("--torch-threads", default=None, help="CPU torch threads to sweep, e.g. 1,2 (default: current)")
    p.add_argument("--ort-threads", default="2")
    p.add_argument("--ort-precision", default="fp32", help="fp32 and/or int8 (the cards' shipped ONNX files)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--block", type=int, default=20, help="calls per model per round")
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--weights", default="trained", choices=("trained", "random"))
    p.add_argument("--budget-s", type=float, default=0.0, help="bound on the whole measurement (0: none)")
    p.add_argument("--flops", action="store_true", help="count GFLOP per utterance (one extra forward)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="results JSON (rewritten after every workload)")
    p.add_argument("--markdown", default=None)
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON", help="do not measure: combine result JSONs")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    modes = _list(args.modes, str)
    for m in modes:
        parse_mode(m)
    prec = _list(args.ort_precision, str)
    if not prec or set(prec) - {"fp32", "int8"}:
        raise ValueError(f"--ort-precision: choose from fp32,int8 (got {args.ort_precision!r})")
    if args.rounds < 1 or args.block < 1:
        raise ValueError("--rounds and --block must be >= 1")
    return BenchConfig(device=args.device, backends=("torch", "onnx") if args.backend == "all" else (args.backend,),
                       models=_list(args.models, str), durations=_list(args.durations, float),
                       batches=_list(args.batch, int), modes=modes,
                       torch_threads=_threads(args.torch_threads) if args.torch_threads else (),
                       ort_threads=_threads(args.ort_threads), ort_precisions=prec, rounds=args.rounds,
                       block=args.block, warmup=args.warmup, weights=args.weights, budget_s=args.budget_s,
                       seed=args.seed, flops=args.flops)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("torch._dynamo", "torch._inductor", "onnxruntime"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.merge:
        doc = merge_documents(args.merge)
    else:
        try:
            cfg = config_from_args(args)
        except ValueError as e:
            parser.error(str(e))
        env = environment(cfg.device)
        so_far: list[dict] = []

        def save(row: dict) -> None:
            so_far.append(row)
            log.info("%-12s %s: %s", row["model"], _lbl(row), row["error"] or f"p50 {row['p50_ms']:.3f} ms")
            if args.json:
                write_json(build_document(list(so_far), env, cfg.to_dict()), args.json)

        rows = run_sweep(cfg, on_row=save)
        env["loadavg_end"] = list(os.getloadavg())
        doc = build_document(rows, env, cfg.to_dict())
    if args.json:
        write_json(doc, args.json)
    if args.markdown:
        Path(args.markdown).write_text(format_markdown(doc))
    print(peer_table(doc["rows"]))
    print()
    for t in doc["targets"]:
        print(t["line"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
