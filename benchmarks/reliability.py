"""Reliability benchmark for GitHub issue #6: fuzzing, threads, long audio, process pool, ``nestspk embed``.

The hypothesis strategies used by ``tests/test_reliability.py`` live here (one source)::

    python benchmarks/reliability.py fuzz --cases 2000
    python benchmarks/reliability.py concurrency --threads 16 --embeds 1000
    python benchmarks/reliability.py long --seconds 10,3600
    python benchmarks/reliability.py pool --repeat 20 --workers 2
    python benchmarks/reliability.py embed-dir --files 2000 --corrupt 5
    python benchmarks/reliability.py report          # benchmarks/results/reliability.{json,md}

Each section merges its figures into ``benchmarks/results/reliability.json``; ``report``
renders the markdown. Real speech comes from ``$NESTSPK_DATA`` (default ``../shared/data``).
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

log = logging.getLogger("reliability")

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("NESTSPK_DATA", REPO.parent / "shared" / "data"))
CLIP_DIR = DATA / "librispeech-snippets" / "train-clean-100"
RESULTS = REPO / "benchmarks" / "results"
SR = 16000
PY = sys.executable

# --------------------------------------------------------------------------- real speech


def clip_paths(n: int | None = None) -> list[Path]:
    """Sorted LibriSpeech snippet paths (FileNotFoundError when the data is absent)."""
    files = sorted(CLIP_DIR.glob("*.flac"))
    if not files:
        raise FileNotFoundError(f"no LibriSpeech snippets under {CLIP_DIR}")
    return files[:n] if n else files


@lru_cache(maxsize=8)
def real_speech(seconds: float = 2.0, index: int = 0) -> np.ndarray:
    """``seconds`` of real 16 kHz speech (float32, read-only) from snippet ``index``."""
    x, sr = sf.read(str(clip_paths()[index]), dtype="float32")
    assert sr == SR, sr
    n = int(seconds * SR)
    x = np.tile(x, -(-n // len(x)))[:n] if n > len(x) else x[:n]
    x = np.ascontiguousarray(x)
    x.setflags(write=False)
    return x


# --------------------------------------------------------------------------- fuzz strategies

SAMPLE_RATES = [16000, 8000, 22050, 44100, 48000, 1000, 768000, 7999, 44101, 12345, 999, 768001, 0, -16000,
                1, 10**9]
"""Sample rates drawn for arrays (all) and written into WAV headers (the positive ones)."""
CONTENTS = ["speech", "dc", "square", "noise", "silence", "nan", "inf", "over"]
ARRAY_DTYPES = ["float32", "float64", "float16", "int16", "int32", "int8", "uint8", "int64", "bool", "complex64"]
FILE_FORMATS = [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"), ("WAV", "FLOAT"), ("WAV", "DOUBLE"),
                ("WAV", "PCM_U8"), ("FLAC", "PCM_16"), ("FLAC", "PCM_24")]
MUTATIONS = ["none", "truncate", "flip", "cut_header", "zero_tail", "random_bytes", "empty"]


@dataclass
class Case:
    """One fuzz input: an in-memory array (``data`` ndarray) or file bytes (``data`` bytes)."""

    kind: str  # "array" | "file"
    data: Any
    sample_rate: int | None
    desc: str
    suffix: str = ".wav"


def _signal(content: str, n: int, channels: int, seed: int) -> np.ndarray:
    """(n, channels) float64 waveform of the given content kind."""
    rng = np.random.default_rng(seed)
    if content == "speech":
        base = np.asarray(real_speech(max(2.0, n / SR), seed % 4), np.float64)
        base = np.resize(base, n)
        x = np.stack([np.roll(base, 37 * c) for c in range(channels)], axis=1)
    elif content == "dc":
        x = np.full((n, channels), rng.uniform(-0.9, 0.9))
    elif content == "square":
        t = np.arange(n)
        x = np.where((t // 40) % 2 == 0, 1.0, -1.0)[:, None].repeat(channels, 1)
    elif content == "noise":
        x = rng.uniform(-1, 1, (n, channels))
    elif content == "silence":
        x = np.zeros((n, channels))
    else:
        x = rng.uniform(-0.5, 0.5, (n, channels))
        if n:
            idx = rng.integers(0, n, size=max(1, n // 1000))
            x[idx, rng.integers(0, channels)] = {"nan": np.nan, "inf": np.inf, "over": 3.5}[content]
    return x


def _to_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype.startswith("float") or dtype == "complex64":
        return x.astype(dtype)
    if dtype == "bool":
        return x > 0
    if dtype == "uint8":
        return (np.clip(np.nan_to_num(x, posinf=1, neginf=-1), -1, 1) * 127 + 128).astype(np.uint8)
    scale = float(min(np.iinfo(dtype).max, 2**62))
    return (np.clip(np.nan_to_num(x, posinf=1, neginf=-1), -1, 1) * scale).astype(dtype)


def _encode(x: np.ndarray, sr: int, fmt: str, subtype: str) -> bytes:
    """Encode (n, channels) float64 in [-1, 1] as WAV/FLAC bytes; falls back to WAV PCM_16."""
    buf = io.BytesIO()
    try:
        sf.write(buf, np.clip(np.nan_to_num(x), -1, 1), sr, format=fmt, subtype=subtype)
    except (sf.SoundFileError, RuntimeError, ValueError):
        buf = io.BytesIO()
        sf.write(buf, np.clip(np.nan_to_num(x), -1, 1), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def strategies():
    """Return the hypothesis strategy of :class:`Case` (imported lazily so the module works without it)."""
    from hypothesis import strategies as st

    lengths = st.sampled_from([0, 1, 2, 100, 7999, 8000, 16000, 24000, 40000])

    @st.composite
    def array_case(draw) -> Case:
        n = draw(lengths)
        ch = draw(st.integers(1, 9))
        content = draw(st.sampled_from(CONTENTS))
        dtype = draw(st.sampled_from(ARRAY_DTYPES))
        sr = draw(st.sampled_from([None] + SAMPLE_RATES))
        layout = draw(st.sampled_from(["1d", "time_ch", "ch_time", "batch1"]))
        x = _to_dtype(_signal(content, n, ch, draw(st.integers(0, 2**16))), dtype)
        if layout == "1d" or ch == 1 and layout != "batch1":
            x = x[:, 0] if layout == "1d" else x
        elif layout == "ch_time":
            x = x.T
        elif layout == "batch1":
            x = x.T[None]
        x = np.ascontiguousarray(x)
        return Case("array", x, sr, f"array {content} {dtype} {layout} shape={x.shape} sr={sr}")

    @st.composite
    def file_case(draw) -> Case:
        mutation = draw(st.sampled_from(MUTATIONS))
        if mutation == "random_bytes":
            data = draw(st.binary(min_size=1, max_size=2048))
            return Case("file", data, None, f"file random {len(data)} bytes", draw(st.sampled_from([".wav", ".flac"])))
        if mutation == "empty":
            return Case("file", b"", None, "file 0 bytes", draw(st.sampled_from([".wav", ".flac"])))
        fmt, subtype = draw(st.sampled_from(FILE_FORMATS))
        ch = draw(st.integers(1, 8))
        sr = draw(st.sampled_from([s for s in SAMPLE_RATES if s > 0]))
        # rarely a file > 20 s, which Verifier streams window by window
        n = draw(st.sampled_from([1, 4000, 8000, 16000, 24000, 21 * SR]))
        content = draw(st.sampled_from(CONTENTS))
        data = _encode(_signal(content, n, ch, draw(st.integers(0, 2**16))), sr, fmt, subtype)
        desc = f"file {fmt}/{subtype} ch={ch} sr={sr} n={n} {content} {mutation}"
        b = bytearray(data)
        if mutation == "truncate":
            cut = draw(st.integers(0, len(b) - 1))
            b = b[:cut]
            desc += f" at {cut}"
        elif mutation == "flip":
            hi = draw(st.sampled_from([64, 512, len(b)]))
            flips = draw(st.lists(st.tuples(st.integers(0, min(hi, len(b)) - 1), st.integers(1, 255)),
                                  min_size=1, max_size=8))
            for pos, val in flips:
                b[pos] ^= val
            desc += f" {flips}"
        elif mutation == "cut_header":
            cut = draw(st.integers(1, min(64, len(b) - 1)))
            b = b[cut:]
            desc += f" first {cut} bytes removed"
        elif mutation == "zero_tail":
            start = draw(st.integers(0, len(b) - 1))
            b[start:] = bytes(len(b) - start)
            desc += f" zeroed from {start}"
        suffix = ".flac" if fmt == "FLAC" else ".wav"
        return Case("file", bytes(b), None, desc, suffix)

    return st.one_of(array_case(), file_case())


# outcome classes: "embedding", "error:<Type>" are fine; everything else is a failure
BAD_PREFIXES = ("crash", "bad_embedding", "unlabelled")


def run_case(verifier, case: Case, workdir: Path, index: int = 0) -> tuple[str, str]:
    """Embed ``case``; return (outcome, detail). Outcome is ``embedding``, ``error:<Type>``,
    ``unlabelled:<Type>`` (nestspk error whose message does not name the input),
    ``bad_embedding`` (non-finite or not unit norm) or ``crash:<Type>`` (any other exception)."""
    from nestspk.errors import NestspkError

    if case.kind == "file":
        path = workdir / f"case_{index}{case.suffix}"
        path.write_bytes(case.data)
        source: Any = str(path)
        label = str(path)
    else:
        source = case.data
        label = "<array shape="
    try:
        emb = verifier.embed(source, sample_rate=case.sample_rate)
    except NestspkError as e:
        msg = str(e)
        if label not in msg:
            return f"unlabelled:{type(e).__name__}", msg[:300]
        return f"error:{type(e).__name__}", msg[:300]
    except Exception as e:  # noqa: BLE001 - the point is to catch anything unexpected
        return f"crash:{type(e).__name__}", f"{e!r}"[:300]
    finally:
        if case.kind == "file":
            path.unlink(missing_ok=True)
    ok = emb.shape == (verifier.embed_dim,) and bool(np.isfinite(emb).all()) \
        and abs(float(np.linalg.norm(emb)) - 1.0) < 1e-4
    return ("embedding", "") if ok else ("bad_embedding", f"shape {emb.shape} norm {np.linalg.norm(emb)}")


def fuzz(verifier, n_cases: int, workdir: Path, seed_db: bool = False) -> dict:
    """Run ``n_cases`` hypothesis-generated cases (derandomized) and count outcomes; never raises on failures."""
    from hypothesis import HealthCheck, Phase, given, settings

    counts: collections.Counter = collections.Counter()
    failures: list[dict] = []
    slowest: list[tuple[float, str]] = []

    @settings(max_examples=n_cases, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategies())
    def one(case: Case) -> None:
        t = time.perf_counter()
        outcome, detail = run_case(verifier, case, workdir, sum(counts.values()))
        dt = time.perf_counter() - t
        slowest.append((dt, case.desc))
        counts[outcome] += 1
        if outcome.startswith(BAD_PREFIXES):
            failures.append({"case": case.desc, "outcome": outcome, "detail": detail})

    t0 = time.perf_counter()
    one()
    slowest.sort(reverse=True)
    return {"cases": sum(counts.values()), "outcomes": dict(counts.most_common()), "failures": failures,
            "crashes": sum(v for k, v in counts.items() if k.startswith(BAD_PREFIXES)),
            "wall_s": round(time.perf_counter() - t0, 1),
            "slowest": [{"s": round(s, 2), "case": d} for s, d in slowest[:5]]}


# --------------------------------------------------------------------------- concurrency


def rss_mb() -> float:
    """Current resident set size (VmRSS) of this process in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def concurrency(verifier, clips: list[np.ndarray], threads: int, embeds: int) -> dict:
    """Embed ``embeds`` inputs (cycling over ``clips``) from ``threads`` threads; compare with serial results."""
    serial = np.stack([verifier.embed(c) for c in clips])
    rss0 = rss_mb()
    idx = [i % len(clips) for i in range(embeds)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        got = list(pool.map(lambda i: (i, verifier.embed(clips[i])), idx))
    wall = time.perf_counter() - t0
    rss1 = rss_mb()
    diff = max(float(np.abs(e - serial[i]).max()) for i, e in got)
    return {"threads": threads, "embeds": embeds, "clips": len(clips),
            "clip_seconds": sorted({round(len(c) / SR, 2) for c in clips}),
            "max_abs_diff": diff, "identical": diff == 0.0, "wall_s": round(wall, 1),
            "rss_before_mb": round(rss0, 1), "rss_after_mb": round(rss1, 1),
            "torch_threads": __import__("torch").get_num_threads()}


# --------------------------------------------------------------------------- long audio


def write_long_flac(path: Path, seconds: float, block_s: float = 60.0) -> float:
    """Write ``seconds`` of tiled real speech (16 kHz mono FLAC) block by block; return the duration."""
    pattern = np.concatenate([sf.read(str(p), dtype="float32")[0] for p in clip_paths(8)])
    total = int(seconds * SR)
    block = int(block_s * SR)
    with sf.SoundFile(str(path), "w", samplerate=SR, channels=1, format="FLAC", subtype="PCM_16") as f:
        pos = 0
        while pos < total:
            n = min(block, total - pos)
            start = pos % len(pattern)
            f.write(np.resize(np.roll(pattern, -start), n))
            pos += n
    return total / SR


def _embed_one(path: str) -> None:
    """(subprocess) Load the model, embed ``path``, print JSON with wall time and peak RSS."""
    import torch  # noqa: F401

    from nestspk import Verifier

    v = Verifier("nested", device="cpu")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    e = v.embed(path)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"path": path, "embed_s": round(wall, 1), "peak_rss_mb": round(peak / 1024, 1),
                      "rss_after_model_load_mb": round(base / 1024, 1), "norm": float(np.linalg.norm(e)),
                      "finite": bool(np.isfinite(e).all())}))


def long_audio(durations_s: list[float], workdir: Path) -> dict:
    out: dict = {}
    for seconds in durations_s:
        label = f"{seconds / 3600:g}h" if seconds >= 3600 else f"{seconds:g}s"
        p = workdir / f"long_{label}.flac"
        t0 = time.perf_counter()
        write_long_flac(p, seconds)
        w = time.perf_counter() - t0
        r = subprocess.run([PY, __file__, "_embed-one", str(p)], capture_output=True, text=True, check=True)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        res.update(seconds=seconds, file_mb=round(p.stat().st_size / 2**20, 1), write_s=round(w, 1))
        out[label] = res
        p.unlink()
        log.info("long %s: %s", label, res)
    return out


# --------------------------------------------------------------------------- process pool


def pool(repeat: int, workers: int) -> dict:
    ex = sorted(str(p) for p in (REPO / "examples").glob("*.flac"))
    cmd = [PY, "examples/process_pool.py", *ex, "--repeat", str(repeat), "--workers", str(workers)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True)
    line = [s for s in r.stdout.splitlines() if "files/s" in s][-1]
    res = json.loads([s for s in r.stdout.splitlines() if s.startswith("{")][-1])
    res.update(command="python " + " ".join(["examples/process_pool.py", "examples/*.flac", "--repeat",
                                             str(repeat), "--workers", str(workers)]), line=line,
               cpu_count=os.cpu_count())
    return res


# --------------------------------------------------------------------------- nestspk embed over a directory


def make_embed_dir(root: Path, n_files: int, n_corrupt: int, seconds: float = 1.0) -> tuple[list[str], list[str]]:
    """Write ``n_files`` short real-speech FLACs (+ ``n_corrupt`` broken ones) under ``root``; return (good, bad)."""
    root.mkdir(parents=True, exist_ok=True)
    srcs = clip_paths(32)
    good, bad = [], []
    n = int(seconds * SR)
    for i in range(n_files):
        x, _ = sf.read(str(srcs[i % len(srcs)]), dtype="float32")
        off = (i // len(srcs)) * 1601 % max(1, len(x) - n)
        p = root / f"spk{i % len(srcs):02d}" / f"utt{i:05d}.flac"
        p.parent.mkdir(exist_ok=True)
        sf.write(str(p), x[off:off + n], SR, format="FLAC")
        good.append(str(p))
    kinds = [b"", b"RIFF\x24\x00\x00\x00WAVEfmt ", os.urandom(3000), b"fLaC\x00\x00\x00\x22" + bytes(30)]
    for j in range(n_corrupt):
        ext = ".flac" if j % 2 else ".wav"
        p = root / "bad" / f"corrupt{j}{ext}"
        p.parent.mkdir(exist_ok=True)
        if j % len(kinds) == 3 or j >= len(kinds):  # silent but valid, or very short: rejected by load_audio
            sf.write(str(p), np.zeros(SR, np.float32) if j % 2 else np.ones(100, np.float32) * 0.1, SR)
        else:
            p.write_bytes(kinds[j % len(kinds)])
        bad.append(str(p))
    return sorted(good), sorted(bad)


def check_embed_output(out: Path, good: list[str], bad: list[str]) -> dict:
    """Check the .npy + .json written by ``nestspk embed``: every good file exactly once, bad ones failed."""
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    arr = np.load(out, allow_pickle=False)
    files = meta["files"]
    return {"rows": int(arr.shape[0]), "files_listed": len(files), "unique_files": len(set(files)),
            "good_all_once": sorted(files) == sorted(good) and len(files) == len(set(files)) == arr.shape[0],
            "failed_listed": sorted(meta.get("failed", {})) == sorted(bad),
            "finite_unit_norm": bool(np.isfinite(arr).all() and np.allclose(np.linalg.norm(arr, axis=1), 1, atol=1e-4))}


def embed_dir(n_files: int, n_corrupt: int, workdir: Path, kill_after: float, kill_at: int) -> dict:
    root = workdir / "clips"
    good, bad = make_embed_dir(root, n_files, n_corrupt)
    out = workdir / "emb.npy"
    cmd = [PY, "-m", "nestspk", "embed", str(root), "-o", str(out), "--device", "cpu"]
    res: dict = {"files": n_files, "corrupt": n_corrupt, "kill_at": kill_at, "command": "nestspk embed DIR -o emb.npy --device cpu"}
    # 1) interrupted run: SIGINT after kill_after seconds
    t0 = time.perf_counter()
    # a background shell starts us with SIGINT ignored; give the child the default so Python raises KeyboardInterrupt
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    side = out.with_name(out.name + ".json")
    while p.poll() is None:  # interrupt once kill_after seconds passed or `kill_at` files are saved
        time.sleep(0.1)
        try:
            saved = len(json.loads(side.read_text())["files"]) if side.exists() else 0
        except (ValueError, KeyError):
            saved = 0
        if time.perf_counter() - t0 > kill_after or saved >= kill_at:
            p.send_signal(signal.SIGINT)
            break
    _, err1 = p.communicate()
    rows1 = int(np.load(out).shape[0]) if out.exists() else 0
    res["interrupted"] = {"after_s": round(time.perf_counter() - t0, 1), "returncode": p.returncode,
                          "rows_saved": rows1,
                          "tqdm_last": [s for s in err1.replace("\r", "\n").splitlines() if "file/s" in s][-1:]}
    # 2) resume
    t1 = time.perf_counter()
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    res["resumed"] = {"returncode": r.returncode, "wall_s": round(time.perf_counter() - t1, 1),
                      "stdout": r.stdout.strip()[-300:],
                      "failed_report": [s.strip()[:160] for s in r.stderr.splitlines() if s.startswith("  ")],
                      "tqdm_last": [s for s in r.stderr.replace("\r", "\n").splitlines() if "file/s" in s][-1:]}
    res["resumed"].update(check_embed_output(out, good, bad))
    total = res["interrupted"]["after_s"] + res["resumed"]["wall_s"]
    res["files_per_s_incl_restart"] = round((n_files + n_corrupt) / total, 1)
    return res


# --------------------------------------------------------------------------- report


def _merge(section: str, value: dict, command: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "reliability.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    value["command"] = value.get("command_override") or command
    data[section] = value
    data.setdefault("_machine", {})["cpu_count"] = os.cpu_count()
    path.write_text(json.dumps(data, indent=1, default=float))
    render()


def render() -> None:
    """Write benchmarks/results/reliability.md from reliability.json."""
    d = json.loads((RESULTS / "reliability.json").read_text())
    L = ["# Reliability (GitHub issue #6)", "",
         f"Machine: {d['_machine']['cpu_count']} CPU cores (shared, busy), torch CPU, model `nested_4level`, "
         "device cpu. Figures are regenerated by the command shown with each section "
         "(run from the repository root); raw numbers in `reliability.json`.", ""]
    if "fuzz" in d:
        f = d["fuzz"]
        L += ["## Fuzzing audio loading + embed", "", f"`{f['command']}`", "",
              f"{f['cases']} hypothesis cases (derandomized) in {f['wall_s']} s; **{f['crashes']} failures** "
              "(crash = exception that is not a NestspkError, unlabelled = NestspkError not naming the input, "
              "bad_embedding = non-finite / not unit norm).", "", "| outcome | cases |", "|---|---|"]
        L += [f"| {k} | {v} |" for k, v in f["outcomes"].items()]
        L += ["", "Slowest cases: " + "; ".join(f"{s['s']} s ({s['case'][:70]})" for s in f["slowest"][:3]), ""]
        if f["failures"]:
            L += ["Failures:", ""] + [f"- {x['outcome']}: {x['case']} — {x['detail'][:150]}" for x in f["failures"][:20]]
            L.append("")
    for note in d.get("_notes", []):
        L += [note, ""]
    if "concurrency" in d:
        c = d["concurrency"]
        L += ["## One Verifier shared by threads", "", f"`{c['command']}`", "",
              f"{c['threads']} threads, {c['embeds']} embeds of {c['clips']} real clips ({c['clip_seconds']} s), "
              f"torch threads {c['torch_threads']}: max abs diff vs serial = **{c['max_abs_diff']:g}** "
              f"({'bit-identical' if c['identical'] else 'not bit-identical'}), wall {c['wall_s']} s. "
              f"VmRSS before {c['rss_before_mb']} MiB, after {c['rss_after_mb']} MiB.", ""]
    if "long" in d:
        lg = d["long"]
        L += ["## Long audio (streamed 10 s windows, hop 5 s)", ""] + [f"`{c}`" for c in lg["commands"]] + ["",
              "| file | duration | FLAC size | embed time | peak RSS (ru_maxrss) | RSS after model load |",
              "|---|---|---|---|---|---|"]
        for k, v in lg.items():
            if isinstance(v, dict):
                L.append(f"| {k} | {v['seconds']:g} s | {v['file_mb']} MiB | {v['embed_s']} s | "
                         f"{v['peak_rss_mb']} MiB | {v['rss_after_model_load_mb']} MiB |")
        L.append("")
    if "pool" in d:
        p = d["pool"]
        L += ["## Process pool (examples/process_pool.py)", "", f"`{p['command']}`", "",
              f"{p['files']} files ({p['audio_s']:.0f} s of audio) with {p['workers']} worker processes "
              f"(torch.set_num_threads(1) each) on {p['cpu_count']} cores: **{p['files_per_s']:.2f} files/s** "
              f"({p['audio_s_per_s']:.1f} s of audio per second), {p['failed']} failed."]
        if "single_worker" in p:
            L.append(f"Reference, one worker: `{p['single_worker']['command']}` -> {p['single_worker']['line']}")
        L.append("")
    if "embed_dir" in d:
        e = d["embed_dir"]
        r, i = e["resumed"], e["interrupted"]
        L += ["## `nestspk embed` over a directory", "", f"`{e['command']}`", "",
              f"{e['files']} one-second real-speech FLACs + {e['corrupt']} corrupt files. "
              f"First run sent SIGINT once >= {e.get('kill_at')} files were saved ({i['after_s']} s; exit {i['returncode']}, "
              f"{i['rows_saved']} rows saved); rerun with `--resume`: exit {r['returncode']}, {r['rows']} rows, "
              f"every good file exactly once: **{r['good_all_once']}**, all corrupt files reported: "
              f"**{r['failed_listed']}**; unit-norm finite: {r['finite_unit_norm']}.", "",
              f"Last tqdm line of the interrupted run: `{(i['tqdm_last'] or [''])[0].strip()}`; "
              f"of the resumed run: `{(r['tqdm_last'] or [''])[0].strip()}`", "",
              "Failures reported at the end:", ""] + [f"    {s}" for s in r["failed_report"] if "file/s" not in s] + [
              "", f"Throughput over both runs (including two model loads): {e['files_per_s_incl_restart']} files/s.", ""]
    if "_caveats" in d:
        L += ["## Caveats", ""] + [f"- {c}" for c in d["_caveats"]] + [""]
    (RESULTS / "reliability.md").write_text("\n".join(L))


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("fuzz")
    s.add_argument("--cases", type=int, default=2000)
    s = sub.add_parser("concurrency")
    s.add_argument("--threads", type=int, default=16)
    s.add_argument("--embeds", type=int, default=1000)
    s = sub.add_parser("long")
    s.add_argument("--seconds", default="10,3600", help="comma-separated durations")
    s = sub.add_parser("pool")
    s.add_argument("--repeat", type=int, default=20)
    s.add_argument("--workers", type=int, default=os.cpu_count())
    s = sub.add_parser("embed-dir")
    s.add_argument("--files", type=int, default=2000)
    s.add_argument("--corrupt", type=int, default=5)
    s.add_argument("--kill-after", type=float, default=60.0, help="SIGINT after this many seconds ...")
    s.add_argument("--kill-at", type=int, default=800, help="... or once this many files are saved")
    sub.add_parser("report")
    s = sub.add_parser("_embed-one")
    s.add_argument("path")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    command = "python benchmarks/reliability.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if a.cmd == "_embed-one":
        _embed_one(a.path)
        return 0
    if a.cmd == "report":
        render()
        return 0
    with tempfile.TemporaryDirectory(prefix="nestspk_rel_") as tmp:
        work = Path(tmp)
        if a.cmd in ("fuzz", "concurrency"):
            from nestspk import Verifier

            v = Verifier("nested", device="cpu")
            if a.cmd == "fuzz":
                res = fuzz(v, a.cases, work)
            else:
                clips = [real_speech(1.0 + 0.25 * (i % 5), i) for i in range(10)]
                res = concurrency(v, clips, a.threads, a.embeds)
        elif a.cmd == "long":
            res = long_audio([float(x) for x in a.seconds.split(",")], work)
            old = json.loads((RESULTS / "reliability.json").read_text()).get("long", {}) \
                if (RESULTS / "reliability.json").exists() else {}
            cmds = old.get("commands", []) + [command]
            res = {**{k: v for k, v in old.items() if isinstance(v, dict)}, **res, "commands": cmds}
        elif a.cmd == "pool":
            res = pool(a.repeat, a.workers)
            res["command_override"] = res.pop("command")
        else:
            res = embed_dir(a.files, a.corrupt, work, a.kill_after, a.kill_at)
            res.pop("command")
        log.info("%s: %s", a.cmd, json.dumps(res, default=float)[:2000])
        _merge(a.cmd.replace("-", "_"), res, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
