"""Reliability benchmark for GitHub issue #6: fuzzing, threads, long audio, process pool, ``nestspk embed``.

The hypothesis strategies live in ``tests/fuzz_strategies.py`` (one source, shared with the tests)::

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
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fuzz_strategies import (  # noqa: E402  (the hypothesis strategies: one source, shared with the tests)
    NONSPEECH, Case, Pipe, _gallery_bytes, _tensor, clip_paths, extended_strategies, real_speech, strategies)

# outcome classes: "embedding", "error:<Type>" are fine; everything else is a failure
BAD_PREFIXES = ("crash", "bad_embedding", "unlabelled", "nonspeech_accepted", "bad_cli", "bad_gallery")


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


def _labelled(e: BaseException, label: str | None) -> str:
    from nestspk.errors import NestspkError

    if not isinstance(e, NestspkError):
        return f"crash:{type(e).__name__}"
    if label is not None and label not in str(e):
        return f"unlabelled:{type(e).__name__}"
    return f"error:{type(e).__name__}"


def _check_embedding(verifier, emb: np.ndarray) -> tuple[str, str]:
    ok = emb.shape == (verifier.embed_dim,) and bool(np.isfinite(emb).all()) \
        and abs(float(np.linalg.norm(emb)) - 1.0) < 1e-4
    return ("embedding", "") if ok else ("bad_embedding", f"shape {emb.shape} norm {np.linalg.norm(emb)}")


def run_any(ctx: dict, case: Case, index: int) -> tuple[str, str]:
    """Run a case of any kind; outcome classes as :func:`run_case`, plus ``nonspeech_accepted``,
    ``bad_cli:<what>`` (exit status not 0/2, more than one error line, or an input changed) and
    ``bad_gallery`` (a valid file rejected)."""
    verifier, workdir = ctx["verifier"], ctx["workdir"]
    if case.kind in ("array", "file"):
        return run_case(verifier, case, workdir, index)
    try:
        return _RUNNERS[case.kind](ctx, case, index)
    except Exception as e:  # noqa: BLE001 - anything escaping a runner is a crash
        return f"crash:{type(e).__name__}", f"{e!r}"[:300]


def _run_source(ctx: dict, case: Case, index: int) -> tuple[str, str]:
    verifier, workdir = ctx["verifier"], ctx["workdir"]
    how, data = case.suffix, case.data
    from nestspk.audio import describe_input

    path = workdir / f"src_{index}.flac"
    if how in ("path", "bytes_path"):
        path.write_bytes(data)
        source: Any = str(path) if how == "path" else os.fsencode(str(path))
    elif how == "bytes":
        source = data  # short NUL-free bytes are a path by the documented rule; the label says which
    elif how == "bytesio":
        source = io.BytesIO(data)
    else:
        source = Pipe(data)
    label = describe_input(source)
    try:
        emb = verifier.embed(source)
    except Exception as e:  # noqa: BLE001
        return _labelled(e, label), str(e)[:300]
    finally:
        path.unlink(missing_ok=True)
    return _check_embedding(verifier, emb)


def _run_content(ctx: dict, case: Case, index: int) -> tuple[str, str]:
    verifier = ctx["verifier"]
    try:
        emb = verifier.embed(case.data)
    except Exception as e:  # noqa: BLE001
        return _labelled(e, "<array shape="), str(e)[:300]
    if case.suffix in NONSPEECH:
        return "nonspeech_accepted", case.desc
    return _check_embedding(verifier, emb)


def _run_tensor(ctx: dict, case: Case, index: int) -> tuple[str, str]:
    verifier = ctx["verifier"]
    x = np.asarray(real_speech(1.0, index % 4))
    try:
        source = _tensor(case.data, x)
    except Exception as e:  # noqa: BLE001 - this torch build cannot make the tensor: not our failure
        return "skipped", f"{case.data}: {e!r}"[:200]
    try:
        emb = verifier.embed(source)
    except Exception as e:  # noqa: BLE001
        return _labelled(e, None), str(e)[:300]
    return _check_embedding(verifier, emb)


def _run_gallery(ctx: dict, case: Case, index: int) -> tuple[str, str]:
    from nestspk.gallery import Gallery

    path = ctx["workdir"] / f"gallery_{index}.npz"
    path.write_bytes(_gallery_bytes(case.data, np.random.default_rng(case.sample_rate)))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        g = Gallery.load(path, model="nested_4level", dim=512)
    except Exception as e:  # noqa: BLE001
        out = _labelled(e, str(path))
        if case.data == "valid" and out.startswith("error:"):
            return "bad_gallery", str(e)[:300]
        return out, str(e)[:200]
    finally:
        path.unlink(missing_ok=True)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    if case.data not in ("valid", "fortran") or grown > 100:
        return "bad_gallery", f"{case.data} loaded ({len(g)} speakers, RSS +{grown:.0f} MiB)"
    return "ok", ""


def _run_card(ctx: dict, case: Case, index: int) -> tuple[str, str]:
    from nestspk import Verifier

    kind, key, value = case.data
    card = json.loads((REPO / "weights" / "nested_4level.json").read_text())
    d = ctx["workdir"] / f"card_{index}"
    d.mkdir()
    (d / "nested_4level.pt").symlink_to(REPO / "weights" / "nested_4level.pt")
    text: str
    if kind == "drop_key":
        card.pop(key, None)
        text = json.dumps(card)
    elif kind == "wrong_type":
        card[key] = value
        text = json.dumps(card)
    elif kind == "not_object":
        text = json.dumps([card])
    elif kind == "not_json":
        text = json.dumps(card)[:-7]
    elif kind == "empty":
        text = ""
    elif kind == "deep":
        text = "[" * 100000 + "]" * 100000
    elif kind == "unknown_arch":
        card["model"] = str(value)
        text = json.dumps(card)
    elif kind == "bad_sha":
        card["sha256"] = "0" * 64
        text = json.dumps(card)
    else:
        card["weights_file"] = "missing.pt"
        text = json.dumps(card)
    p = d / "card.json"
    p.write_text(text)
    try:
        Verifier(str(p), device="cpu", backend="torch")
    except Exception as e:  # noqa: BLE001
        out = _labelled(e, None)
        if out.startswith("error:") and str(p) not in str(e) and "nested_4level" not in str(e):
            out = f"unlabelled:{type(e).__name__}"
        return out, str(e)[:200]
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return "ok", "card accepted"


def _cli_verifier(ctx: dict):
    """The fuzz Verifier for every CLI case (no model load per case); a second model for resume checks."""
    def make(a, threshold=None):
        if a.model not in ("nested", "nested_4level"):
            if ctx.get("other") is None:
                from nestspk import Verifier

                ctx["other"] = Verifier(a.model, device="cpu")
            return ctx["other"]
        v = ctx["verifier"]
        if threshold is not None:
            v._resolve_threshold(threshold)
        return v
    return make


def _run_trials(ctx: dict, case: Case, index: int) -> tuple[str, str]:
    rng = np.random.default_rng(case.sample_rate)
    d = ctx["workdir"] / f"trials_{index}"
    d.mkdir()
    wav = d / "a.wav"
    sf.write(wav, real_speech(1.0, 0), SR)
    wav2 = d / "b.wav"
    sf.write(wav2, real_speech(1.0, 1), SR)
    a, b = str(wav), str(wav2)
    text = {"comments_only": "# x\n\n# y\n", "short_line": f"1 {a}\n", "bad_label": f"2 {a} {b}\n",
            "bad_segment": f"1 {a}@0-x {b}\n0 {a} {b}\n", "neg_segment": f"1 {a}@0.5-0.1 {b}\n0 {a} {b}\n",
            "empty": "", "binary": rng.bytes(200).decode("latin-1"), "ok": f"1 {a} {a}\n0 {a} {b}\n"}[case.data]
    trials = d / "t.txt"
    trials.write_text(text, encoding="latin-1")
    out = _cli_outcome(ctx, ["eval", "--trials", str(trials), "--root", str(d), "--device", "cpu", "--quiet"], [], d,
                       expect_ok=case.data == "ok", label=str(trials))
    shutil.rmtree(d, ignore_errors=True)
    return out


def _cli_outcome(ctx: dict, argv: list[str], inputs: list[Path], workdir: Path, expect_ok: bool | None,
                 label: str | None = None) -> tuple[str, str]:
    import contextlib

    from nestspk import cli

    before = {p: p.read_bytes() for p in inputs if p.is_file()}
    err, out = io.StringIO(), io.StringIO()
    real = cli._verifier
    cli._verifier = _cli_verifier(ctx)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                rc = cli.main(argv)
            except SystemExit as e:
                rc = e.code
    except Exception as e:  # noqa: BLE001
        return f"crash:{type(e).__name__}", f"{argv}: {e!r}"[:300]
    finally:
        cli._verifier = real
    changed = [str(p) for p, b in before.items() if not p.is_file() or p.read_bytes() != b]
    lines = [s for s in err.getvalue().splitlines() if "error" in s]
    if changed:
        return "bad_cli:clobbered", f"{argv}: {changed}"
    if rc not in (0, 2):
        return f"bad_cli:rc{rc}", f"{argv}: {err.getvalue()[-300:]}"
    if rc == 2 and (len(lines) != 1 or "Traceback" in err.getvalue()):
        return "bad_cli:message", f"{argv}: {err.getvalue()[-300:]}"
    if label is not None and rc == 2 and label not in err.getvalue():
        return "bad_cli:unlabelled", f"{argv}: {err.getvalue()[-300:]}"
    if expect_ok is True and rc != 0:
        return "bad_cli:rejected", f"{argv}: {err.getvalue()[-300:]}"
    if expect_ok is False and rc == 0:
        return "bad_cli:accepted", f"{argv}"
    return ("ok" if rc == 0 else "error:cli"), ""


def _run_cli(ctx: dict, case: Case, index: int) -> tuple[str, str]:
    rng = np.random.default_rng(case.sample_rate)
    d = ctx["workdir"] / f"cli_{index}"
    d.mkdir()
    files = []
    for k in range(3):
        p = d / f"in{k}.flac"
        sf.write(p, real_speech(0.6 + 0.2 * k, k), SR)
        files.append(p)
    txt = d / "notes.txt"
    txt.write_text("keep")
    out = d / "e.npy"
    kind = case.data
    base = ["embed", "--device", "cpu", "--quiet"]
    ins = [str(f) for f in files]
    expect: bool | None = False
    if kind == "dup_inputs":
        argv, expect = base + [ins[0], ins[2], ins[0], ins[1], "-o", str(out)], True
    elif kind == "self_overwrite":
        argv = base + ins + ["-o", ins[int(rng.integers(0, 3))]] + (["--force"] if rng.random() < 0.5 else [])
    elif kind == "sidecar_overwrite":
        side_victim = d / "v.npy.json"
        side_victim.write_text("{}")
        files.append(side_victim)
        argv = base + ins + [str(side_victim), "-o", str(d / "v.npy")]
    elif kind == "text_file":
        argv = base + ins + ["-o", str(txt)]
        files.append(txt)
    elif kind == "out_dir":
        argv = base + ins + ["-o", str(d)]
    elif kind == "under_file":
        argv = base + ins + ["-o", str(txt / "e.npy")]
        files.append(txt)
    elif kind == "missing_dir":
        argv = base + ins + ["-o", str(d / "no" / "e.npy")]
    elif kind == "bad_batch":
        argv = base + ins + ["-o", str(out), "--batch-size", str(rng.choice(["0", "-3", "1.5", "x", ""]))]
    elif kind == "bad_threshold":
        argv = ["verify", ins[0], ins[1], "--device", "cpu", "--threshold",
                str(rng.choice(["nan", "inf", "-inf", "2.0", "True", "1e309", "", "far_0.5"]))]
    elif kind == "missing_input":
        argv = base + [ins[0], str(d / "nope.wav"), "-o", str(out)]
    elif kind in ("resume_other_model", "resume_tampered", "resume_malformed"):
        first = _cli_outcome(ctx, base + ins[:2] + ["-o", str(out)], files, d, True)
        if first[0] != "ok":
            shutil.rmtree(d, ignore_errors=True)
            return first
        side = d / "e.npy.json"
        if kind == "resume_tampered":
            arr = np.load(out)
            arr[0, int(rng.integers(0, arr.shape[1]))] += 0.5
            np.save(out, arr)
        elif kind == "resume_malformed":
            side.write_text(str(rng.choice(["{", "[]", "null", '{"model": 1}', '{"model": "nested_4level", "files": [1]}'])))
        argv = base + ins + ["-o", str(out), "--resume"] + (["--model", "resnetse34l"] if kind == "resume_other_model" else [])
        files += [out, side]
    elif kind == "unknown_option":
        argv = base + ins + ["-o", str(out), "--frobnicate"]
    elif kind == "score_norm_on_embed":
        argv = base + ins + ["-o", str(out), "--score-norm", "asnorm"]
    else:
        argv, expect = base + ins + ["-o", str(out)], True
    res = _cli_outcome(ctx, argv, files, d, expect)
    if kind == "dup_inputs" and res[0] == "ok":
        meta = json.loads((d / "e.npy.json").read_text())
        if meta["files"] != [ins[0], ins[2], ins[1]] or np.load(out).shape[0] != 3:
            res = ("bad_cli:misaligned", f"{meta['files']} rows {np.load(out).shape}")
    shutil.rmtree(d, ignore_errors=True)
    return res


_RUNNERS = {"stream": _run_source, "source": _run_source, "content": _run_content, "tensor": _run_tensor,
            "gallery": _run_gallery, "card": _run_card, "trials": _run_trials, "cli": _run_cli}

_KILL_SAVER = """
import sys, numpy as np
sys.path.insert(0, {repo!r})
from nestspk.gallery import Gallery
g = Gallery(512, model="m")
e = np.random.default_rng(0).standard_normal((3000, 512)); e /= np.linalg.norm(e, axis=1, keepdims=True)
for i in range(3000):
    g.enroll(f"spk{{i}}", e[i:i + 1])
print("ready", flush=True)
while True:
    g.save({path!r})
"""


def kill_during_save(n: int, workdir: Path) -> dict:
    """SIGKILL a process that saves a 3000-speaker gallery in a loop, ``n`` times at random moments; after each
    kill the file must load and hold either the previous or the new gallery."""
    from nestspk.gallery import Gallery

    path = workdir / "killed.npz"
    g = Gallery(512, model="m")
    g.enroll("previous", np.eye(512, dtype=np.float32)[:1])
    g.save(path)
    rng = np.random.default_rng(0)
    counts: collections.Counter = collections.Counter()
    for _ in range(n):
        p = subprocess.Popen([PY, "-c", _KILL_SAVER.format(repo=str(REPO), path=str(path))], stdout=subprocess.PIPE,
                             text=True)
        p.stdout.readline()
        time.sleep(float(rng.uniform(0, 0.4)))
        p.send_signal(signal.SIGKILL)
        p.wait()
        try:
            h = Gallery.load(path, model="m", dim=512)
            counts["ok_previous" if h.speakers == ["previous"] else "ok_new" if len(h) == 3000 else "bad_content"] += 1
        except Exception as e:  # noqa: BLE001
            counts[f"crash:{type(e).__name__}"] += 1
    return {"kills": n, "outcomes": dict(counts), "stale_tmp_files": len(list(workdir.glob(".killed.npz.*")))}


def fuzz(verifier, n_cases: int, workdir: Path, kinds: str = "audio", kills: int = 0) -> dict:
    """Run ``n_cases`` hypothesis-generated cases (derandomized) and count outcomes; never raises on failures.

    ``kinds="audio"``: the audio strategies of issue 6 (arrays and files); ``"all"``: every issue-17 kind too
    (:func:`extended_strategies`). ``kills``: also SIGKILL a gallery save that many times.
    """
    from hypothesis import HealthCheck, Phase, given, settings

    counts: collections.Counter = collections.Counter()
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures: list[dict] = []
    slowest: list[tuple[float, str]] = []
    ctx = {"verifier": verifier, "workdir": workdir}

    @settings(max_examples=n_cases, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategies() if kinds == "audio" else extended_strategies(kinds))
    def one(case: Case) -> None:
        t = time.perf_counter()
        outcome, detail = run_any(ctx, case, sum(counts.values()))
        dt = time.perf_counter() - t
        slowest.append((dt, case.desc))
        counts[outcome] += 1
        by_kind[case.kind][outcome] += 1
        if outcome.startswith(BAD_PREFIXES):
            failures.append({"case": case.desc, "outcome": outcome, "detail": detail})

    t0 = time.perf_counter()
    cpu0 = time.process_time()
    one()
    slowest.sort(reverse=True)
    res = {"cases": sum(counts.values()), "kinds": kinds, "outcomes": dict(counts.most_common()),
           "by_kind": {k: dict(v.most_common()) for k, v in sorted(by_kind.items())}, "failures": failures,
           "crashes": sum(v for k, v in counts.items() if k.startswith(BAD_PREFIXES)),
           "raw_exceptions": sum(v for k, v in counts.items() if k.startswith("crash")),
           "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - cpu0, 1),
           "slowest": [{"s": round(s, 2), "case": d} for s, d in slowest[:5]]}
    if kills:
        res["kill_during_save"] = k = kill_during_save(kills, workdir)
        bad = sum(v for o, v in k["outcomes"].items() if not o.startswith("ok"))
        res["cases"] += kills
        res["crashes"] += bad
    return res


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


# --------------------------------------------------------------------------- speech-content check


def speech_false_rejections(per_corpus: int) -> dict:
    """Run :class:`nestspk.audio.SpeechCheck` over real speech: every file and trial segment of
    weights/lists/*.txt, examples/*.flac and ``per_corpus`` random files (seed 0) of each Opus corpus;
    count rejections (false rejections: all of it is speech). The noise corpus is run too, for reference."""
    import random

    from nestspk.audio import SpeechCheck
    from nestspk.corpus import load_segment

    specs = sorted({s for f in (REPO / "weights" / "lists").glob("*.txt") for line in f.read_text().splitlines()
                    for s in line.split()[1:]})
    extra: list[str] = []
    for corpus in ["librispeech-test-clean", "librispeech-train-clean-5", "speechocean762", "arabic-speech-commands",
                   "commonvoice-fa"]:
        fs = sorted((DATA / corpus).rglob("*.opus"))
        random.Random(0).shuffle(fs)
        extra += [str(p.relative_to(DATA)) for p in fs[:per_corpus]]
    groups = {"list_files": sorted({s.split("@")[0] for s in specs}), "list_segments": [s for s in specs if "@" in s],
              "corpora_sample": extra, "examples": [str(p) for p in sorted((REPO / "examples").glob("*.flac"))],
              "noise_reference": [str(p.relative_to(DATA)) for p in sorted((DATA / "noise").glob("*.flac"))]}
    out: dict = {}
    for group, items in groups.items():
        rejected, load_errors, measures = [], 0, []
        for spec in items:
            try:
                x = load_segment(spec, DATA)
            except Exception:  # noqa: BLE001 - unloadable inputs are counted, not judged
                load_errors += 1
                continue
            c = SpeechCheck()
            c.add(x)
            measures.append(c.measures())
            if (why := c.problem()) is not None:
                rejected.append({"input": spec, "why": why})
        ext = {k: [round(min(m[k] for m in measures), 4), round(max(m[k] for m in measures), 4)]
               for k in (measures[0] if measures else {})}
        out[group] = {"inputs": len(items), "load_errors": load_errors, "rejected": len(rejected),
                      "rejections": rejected[:20], "measure_ranges": ext}
        log.info("%s: %d inputs, %d rejected", group, len(items), len(rejected))
    speech_groups = [g for g in out if g != "noise_reference"]
    out["false_rejections"] = sum(out[g]["rejected"] for g in speech_groups)
    out["speech_inputs"] = sum(out[g]["inputs"] - out[g]["load_errors"] for g in speech_groups)
    return out


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
    s.add_argument("--kinds", default="audio",
                   help="audio: arrays and files (issue 6); all: every issue-17 kind as well; or a comma list of "
                        "stream,source,content,tensor,gallery,card,trials,cli")
    s.add_argument("--kills", type=int, default=0, help="also SIGKILL a gallery save this many times")
    s.add_argument("--out", default=None, help="write the raw JSON here instead of merging into results/reliability.json")
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
    s = sub.add_parser("speech", help="false rejections of the speech-content check on real speech")
    s.add_argument("--per-corpus", type=int, default=100, help="random files per Opus corpus")
    s.add_argument("--out", default=None, help="write the raw JSON here")
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
    if a.cmd == "speech":
        res = speech_false_rejections(a.per_corpus)
        res["command"] = command
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(res, indent=1))
        log.info("speech: %d false rejections of %d speech inputs", res["false_rejections"], res["speech_inputs"])
        return 0
    with tempfile.TemporaryDirectory(prefix="nestspk_rel_") as tmp:
        work = Path(tmp)
        if a.cmd in ("fuzz", "concurrency"):
            from nestspk import Verifier

            v = Verifier("nested", device="cpu")
            if a.cmd == "fuzz":
                res = fuzz(v, a.cases, work, a.kinds, a.kills)
                if a.out:
                    res["command"] = command
                    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
                    Path(a.out).write_text(json.dumps(res, indent=1, default=float))
                    log.info("fuzz: %s", json.dumps({k: res[k] for k in ("cases", "crashes", "outcomes")}))
                    return 0
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
