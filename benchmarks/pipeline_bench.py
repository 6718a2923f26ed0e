"""End-to-end corpus embedding: hours of audio per wall-clock second, and where the time goes.

On a copy of N files of a ../shared/data set (default: 300 of librispeech-test-clean):
1. stages, serially, per file: decode (soundfile read of the whole file), resample (to 16 kHz, only
   files at another rate), prepare (the Verifier's validation and windowing, nestspk.pipeline.file_windows
   minus the decode), transfer (host->device copy of the windows and the embedding back; 0 on CPU) and model
   (the Verifier's model call on the file's windows);
2. `nestspk embed FILES -o out.npy --workers W` in a fresh process for each W, in the order W..., then
   back (wall-clock, start-up included; start-up measured on one file); with ``--bucket-s B`` each of those
   runs is followed by the same command with ``--bucket-s B`` (length buckets: files share model batches);
3. Resemblyzer (when installed) on the same files on the same CPU: preprocess_wav(path) + embed_utterance.
Writes result.json and result.md into --out.

    python -m benchmarks.pipeline_bench --files 300 --workers 0,1,2 --out benchmarks/results/<run>/
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def pick_files(data: Path, n: int) -> list[Path]:
    """Every k-th file of the set's manifest (all speakers represented), n in all."""
    rows = [line.split("\t")[0] for line in (data / "manifest.tsv").read_text().splitlines()[1:] if line.strip()]
    step = max(1, len(rows) // n)
    return [data / r for r in rows[::step][:n]]


def stages(files: list[str], model: str, device: str, backend: str) -> dict:
    import soundfile as sf

    from nestspk import Verifier
    from nestspk.audio import TARGET_SAMPLE_RATE, resample
    from nestspk.pipeline import file_windows

    v = Verifier(model, device=device, backend=backend)
    v._run(file_windows(files[0]))  # warm-up (first call allocates)
    t = {"decode_s": 0.0, "resample_s": 0.0, "prepare_s": 0.0, "transfer_s": 0.0, "model_s": 0.0}
    audio_s = 0.0
    torch = None
    if device.startswith("cuda"):
        import torch
    for f in files:
        t0 = time.perf_counter()
        x, sr = sf.read(f, dtype="float32")
        t1 = time.perf_counter()
        if sr != TARGET_SAMPLE_RATE:
            resample(x if x.ndim == 1 else x.mean(axis=1), sr, TARGET_SAMPLE_RATE)
        t2 = time.perf_counter()
        windows = file_windows(f)  # decodes again: prepare = this minus the decode above
        t3 = time.perf_counter()
        if torch is not None:
            dev = torch.from_numpy(np.stack(windows)).to(device)
            dev.cpu()
            torch.cuda.synchronize()
        t4 = time.perf_counter()
        v._run(windows)
        t5 = time.perf_counter()
        t["decode_s"] += t1 - t0
        t["resample_s"] += t2 - t1
        t["prepare_s"] += max(0.0, (t3 - t2) - (t1 - t0) - (t2 - t1))
        t["transfer_s"] += t4 - t3
        t["model_s"] += t5 - t4
        audio_s += len(x) / sr
    total = sum(t.values())
    return {**t, "audio_s": audio_s, "total_s": total,
            "share": {k: v_ / total for k, v_ in t.items()},
            "model_only_hours_per_s": audio_s / 3600 / t["model_s"]}


def cli_run(files: list[str], workers: int, out: Path, env: dict, batch_size: int, device: str, backend: str,
            bucket_s: float | None = None) -> dict:
    cmd = [sys.executable, "-m", "nestspk", "embed", *files, "-o", str(out), "--quiet", "--device", device,
           "--backend", backend, "--batch-size", str(batch_size), "--workers", str(workers)]
    if bucket_s is not None:
        cmd += ["--bucket-s", str(bucket_s)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"nestspk embed --workers {workers} failed ({p.returncode}): {p.stderr[-500:]}")
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    return {"workers": workers, "bucket_s": bucket_s, "wall_s": wall, "embedded": len(meta["files"]),
            "failed": len(meta["failed"]),
            "command": "nestspk embed <files> -o out.npy --quiet " + " ".join(cmd[cmd.index("--device"):])}


def resemblyzer_run(files: list[str]) -> dict | None:
    try:
        from resemblyzer import VoiceEncoder, preprocess_wav
    except Exception:  # noqa: BLE001 - not installed
        return None
    enc = VoiceEncoder(device="cpu", verbose=False)
    enc.embed_utterance(preprocess_wav(files[0]))
    t0 = time.perf_counter()
    pre = 0.0
    for f in files:
        a = time.perf_counter()
        wav = preprocess_wav(f)
        pre += time.perf_counter() - a
        enc.embed_utterance(wav)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "preprocess_s": pre, "model_s": wall - pre}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "librispeech-test-clean"))
    p.add_argument("--files", type=int, default=300)
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="torch", choices=("torch", "onnx"))
    p.add_argument("--bucket-s", type=float, default=None,
                   help="also time each worker count with nestspk embed --bucket-s (length buckets)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="nestspk-pipe-"))
    try:
        src = pick_files(Path(a.data), a.files)
        files = []
        for k, f in enumerate(src):  # a private copy of the set (never the shared folder itself)
            dst = work / "audio" / f"{k:04d}{f.suffix}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst)
            files.append(str(dst))
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        res: dict = {"data": a.data, "files": len(files), "device": a.device, "backend": a.backend,
                     "batch_size": a.batch_size, "cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg()}
        def save() -> None:  # after every phase, so a run cut short keeps what it measured
            tmp = out / "result.json.tmp"
            tmp.write_text(json.dumps(res, indent=1))
            tmp.replace(out / "result.json")

        res["stages"] = stages(files, "nested", a.device, a.backend)
        save()
        hours = res["stages"]["audio_s"] / 3600
        ws = [int(w) for w in a.workers.split(",")]
        order = ws + ws[-2::-1]  # e.g. 0,1,2,1,0: each worker count timed early and late (host drift)
        startup = cli_run(files[:1], 0, work / "one.npy", env, a.batch_size, a.device, a.backend)
        res["startup_s"] = startup["wall_s"]  # interpreter, imports, model load, one file
        res["cli"] = []
        for k, w in enumerate(order):
            for b in [None] + ([a.bucket_s] if a.bucket_s else []):
                name = f"e{w}_{k}.npy" if b is None else f"b{w}_{k}.npy"
                r = cli_run(files, w, work / name, env, a.batch_size, a.device, a.backend, b)
                r["hours_per_s"] = hours / r["wall_s"]
                r["hours_per_s_after_startup"] = hours / max(r["wall_s"] - res["startup_s"], 1e-9)
                res["cli"].append(r)
                save()
        e = {w: np.load(work / f"e{w}_{order.index(w)}.npy") for w in ws}
        meta = {w: json.loads((work / f"e{w}_{order.index(w)}.npy.json").read_text())["files"] for w in ws}
        ref = dict(zip(meta[ws[0]], e[ws[0]]))
        res["max_abs_diff_vs_workers_%d" % ws[0]] = {
            w: float(max(np.abs(ref[f] - row).max() for f, row in zip(meta[w], e[w]))) for w in ws[1:]}
        res["cli_median"] = {w: float(np.median([r["wall_s"] for r in res["cli"] if r["workers"] == w
                                                 and r["bucket_s"] is None])) for w in ws}
        if a.bucket_s:
            res["cli_median_bucketed"] = {w: float(np.median([r["wall_s"] for r in res["cli"] if r["workers"] == w
                                                              and r["bucket_s"] is not None])) for w in ws}
        rz = resemblyzer_run(files)
        if rz:
            rz["hours_per_s"] = hours / rz["wall_s"]
            best = min(res["cli_median"].values())
            rz["x_nested_pipelined"] = rz["wall_s"] / best  # nestspk's wall-clock includes its start-up
        res["resemblyzer"] = rz
        res["loadavg_end"] = os.getloadavg()
        save()
        (out / "result.md").write_text(render(res))
        print(render(res))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def render(r: dict) -> str:
    s = r["stages"]
    lines = [f"# Corpus embedding: {r['files']} files ({s['audio_s'] / 3600:.3f} h) of {Path(r['data']).name}, "
             f"{r['backend']} on {r['device']}, {r['cpu_count']} CPUs, load {r['loadavg_start'][0]:.1f} -> "
             f"{r['loadavg_end'][0]:.1f}", "",
             "## Where the time goes (serial, per file)", "", "| stage | s | share |", "|---|---:|---:|"]
    for k in ("decode_s", "resample_s", "prepare_s", "transfer_s", "model_s"):
        lines.append(f"| {k[:-2]} | {s[k]:.2f} | {100 * s['share'][k]:.1f} % |")
    lines += ["", f"Model only: {s['model_only_hours_per_s']:.4f} h of audio per second.", "",
              "## Wall-clock (`nestspk embed` in a fresh process per run, in the order listed)", "",
              f"Start-up (interpreter, imports, model load, one file): {r['startup_s']:.1f} s.", "",
              "| workers | --bucket-s | wall s | h audio / s | h audio / s after start-up |", "|---:|---:|---:|---:|---:|"]
    for x in r["cli"]:
        lines.append(f"| {x['workers']} | {x.get('bucket_s') or ''} | {x['wall_s']:.1f} | {x['hours_per_s']:.4f} | "
                     f"{x['hours_per_s_after_startup']:.4f} |")
    rz = r.get("resemblyzer")
    if rz:
        lines.append(f"| Resemblyzer preprocess_wav + embed_utterance (in process, model loaded) | | {rz['wall_s']:.1f} | "
                     f"{rz['hours_per_s']:.4f} | |")
        lines += ["", f"Resemblyzer / best pipelined nestspk wall-clock: x{rz['x_nested_pipelined']:.2f} "
                  f"(Resemblyzer preprocessing {rz['preprocess_s']:.1f} s, model {rz['model_s']:.1f} s)."]
    for k, v in r.items():
        if k.startswith("max_abs_diff"):
            lines += ["", f"Embeddings, max |difference| against {k.rsplit('_', 1)[-1]} workers: {v}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
