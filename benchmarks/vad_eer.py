"""EER with and without voice-activity detection, on clean, silence-padded and noise-padded trial segments.

For every segment of a trial list (``path`` or ``path@START-END``) four versions are embedded:

- ``clean``: the segment as it is;
- ``silence``: ``--pad`` seconds (3) of digital silence before and after it;
- ``noise_pad``: ``--pad`` seconds of real background noise before and after it, the noise scaled so that
  speech power / noise power is an SNR drawn uniformly from ``--snr`` (5-20 dB); the speech itself stays clean;
- ``noise_bed``: the same noise as one continuous bed under the whole padded segment (speech included).

The noise clip (one of ``<root>/noise/*.flac``, or ``--noise-dir``), its offset and the SNR are drawn per
segment from a generator seeded by ``--seed`` and the segment's spec, so a rerun, or a run on other weights,
corrupts every segment identically. Each version is embedded with ``Verifier(vad=False)`` and
``Verifier(vad=True)``; a segment in which the VAD finds no speech falls back to its plain embedding and is
counted (``vad_fallbacks``). Scores are raw cosines. ``--max-trials`` keeps a random subset of the trials
(same seed, both classes kept in proportion); ``--max-segments`` bounds the embedding cost instead (the
trials among a seeded random set of segments).

    python benchmarks/vad_eer.py --trials weights/lists/test_trials.txt --out benchmarks/results/DATE_vad

writes ``vad_eer.json`` (figures, settings, versions, command) and ``vad_eer.md`` (a table) to ``--out``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from provenance import git_commit  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from nestspk.audio import TARGET_SAMPLE_RATE, load_audio  # noqa: E402
from nestspk.errors import AudioError  # noqa: E402
from nestspk.metrics import compute_eer, compute_min_dcf  # noqa: E402

from nestspk.corpus import default_data_root, load_segment, read_trials  # noqa: E402

log = logging.getLogger("vad_eer")
SR = TARGET_SAMPLE_RATE
CONDITIONS = ("clean", "silence", "noise_pad", "noise_bed")


def _rng(seed: int, spec: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{spec}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def corrupt(wav: np.ndarray, condition: str, noises: list[np.ndarray], rng: np.random.Generator, pad_s: float,
            snr_db: tuple[float, float]) -> tuple[np.ndarray, float | None]:
    """One version of a segment: ``(waveform, snr_db or None)``."""
    if condition == "clean":
        return wav, None
    pad = int(round(pad_s * SR))
    total = len(wav) + 2 * pad
    out = np.zeros(total, dtype=np.float32)
    out[pad:pad + len(wav)] = wav
    if condition == "silence":
        return out, None
    noise = noises[int(rng.integers(len(noises)))]
    reps = -(-total // len(noise))
    noise = np.tile(noise, reps + 1)
    start = int(rng.integers(len(noise) - total))
    bed = noise[start:start + total].astype(np.float64)
    snr = float(rng.uniform(*snr_db))
    p_speech = float(np.mean(wav.astype(np.float64) ** 2))
    p_noise = float(np.mean(bed ** 2))
    bed *= np.sqrt(p_speech / (p_noise * 10 ** (snr / 10)))
    if condition == "noise_pad":
        bed[pad:pad + len(wav)] = 0.0
    mixed = out + bed.astype(np.float32)
    peak = float(np.abs(mixed).max())
    return (mixed / peak * 0.99 if peak > 0.99 else mixed).astype(np.float32), snr


def _relative(path: str) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if REPO in p.parents else path


def _subset(trials: list, max_trials: int | None, seed: int) -> list:
    if not max_trials or max_trials >= len(trials):
        return trials
    rng = np.random.default_rng(seed)
    labels = np.array([t[0] for t in trials])
    keep: list[int] = []
    for lab in (0, 1):
        idx = np.nonzero(labels == lab)[0]
        n = max(1, int(round(max_trials * len(idx) / len(trials))))
        keep += rng.choice(idx, size=min(n, len(idx)), replace=False).tolist()
    return [trials[i] for i in sorted(keep)]


def _segment_budget(trials: list, max_segments: int | None, seed: int) -> list:
    """The trials among at most ``max_segments`` segments: trials taken in a seeded random order while their
    segments fit the budget, then every trial whose two segments are both in the chosen set."""
    if not max_segments:
        return trials
    order = np.random.default_rng(seed).permutation(len(trials))
    chosen: set[str] = set()
    for i in order:
        _, x, y = trials[i]
        if len(chosen | {x, y}) <= max_segments:
            chosen |= {x, y}
        if len(chosen) >= max_segments:
            break
    return [t for t in trials if t[1] in chosen and t[2] in chosen]


def _bootstrap_eer(scores: np.ndarray, labels: np.ndarray, n: int, seed: int) -> tuple[float, float]:
    """95% interval of the EER over ``n`` resamples of the trials (ignores that trials share segments)."""
    rng = np.random.default_rng(seed)
    tar, non = np.nonzero(labels == 1)[0], np.nonzero(labels == 0)[0]
    eers = []
    for _ in range(n):
        idx = np.concatenate([rng.choice(tar, len(tar)), rng.choice(non, len(non))])
        eers.append(compute_eer(scores[idx], labels[idx])[0])
    return float(np.percentile(eers, 2.5)), float(np.percentile(eers, 97.5))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", default=str(REPO / "weights" / "lists" / "test_trials.txt"))
    p.add_argument("--root", default=None, help="folder the trial paths are relative to (default: the data root)")
    p.add_argument("--noise-dir", default=None, help="background-noise .flac/.wav files (default <root>/noise)")
    p.add_argument("--model", default="nested")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--pad", type=float, default=3.0, help="seconds of silence/noise before and after a segment")
    p.add_argument("--snr", type=float, nargs=2, default=(5.0, 20.0), metavar=("LO", "HI"))
    p.add_argument("--conditions", default=",".join(CONDITIONS))
    p.add_argument("--max-trials", type=int, default=None, help="random subset of the trials (both classes kept)")
    p.add_argument("--max-segments", type=int, default=None,
                   help="embed at most this many segments (the cost): the trials among a random set of segments")
    p.add_argument("--bootstrap", type=int, default=200, help="resamples for the EER interval (0: none)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vad-off-only", action="store_true",
                   help="embed without the VAD only (a model comparison; the VAD columns are left out)")
    p.add_argument("--out", required=True, help="result folder (created)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from nestspk.vad import SileroVAD
    from nestspk.verifier import Verifier

    t0 = time.time()
    commit = git_commit()
    root = Path(a.root) if a.root else default_data_root()
    trials = _subset(_segment_budget(read_trials(a.trials), a.max_segments, a.seed), a.max_trials, a.seed)
    if len({t[0] for t in trials}) < 2:
        p.error(f"the selected {len(trials)} trials lack target or non-target trials; raise --max-segments")
    conditions = [c for c in a.conditions.split(",") if c]
    for c in conditions:
        if c not in CONDITIONS:
            p.error(f"unknown condition {c!r}; choose from {CONDITIONS}")
    noise_dir = Path(a.noise_dir) if a.noise_dir else root / "noise"
    noise_files = sorted(f for f in noise_dir.glob("*") if f.suffix.lower() in (".flac", ".wav"))
    if any(c.startswith("noise") for c in conditions) and not noise_files:
        p.error(f"no noise files under {noise_dir}")
    noises = [load_audio(f) for f in noise_files]
    specs = sorted({s for _, x, y in trials for s in (x, y)})
    index = {s: i for i, s in enumerate(specs)}
    log.info("%d trials, %d segments, conditions %s", len(trials), len(specs), conditions)
    segs = {s: load_segment(s, root) for s in specs}
    plain = Verifier(a.model, device=a.device, backend=a.backend)
    vad_model = SileroVAD()
    with_vad = Verifier(a.model, device=a.device, backend=a.backend, vad=vad_model)
    labels = np.array([t[0] for t in trials])
    ia = np.array([index[x] for _, x, _ in trials])
    ib = np.array([index[y] for _, _, y in trials])
    rows = []
    for cond in conditions:
        versions, snrs = [], []
        for s in specs:
            w, snr = corrupt(segs[s], cond, noises, _rng(a.seed, s), a.pad, tuple(a.snr))
            versions.append(w)
            if snr is not None:
                snrs.append(snr)
        emb_plain = plain.embed_batch(versions, batch_size=a.batch_size)
        emb_vad = np.empty_like(emb_plain)
        kept, fallbacks = [], 0
        for i, w in enumerate([] if a.vad_off_only else versions):
            try:
                emb_vad[i] = with_vad.embed(w)
            except AudioError as e:
                log.warning("VAD on %s: %s; using the plain embedding", specs[i], e)
                fallbacks += 1
                emb_vad[i] = emb_plain[i]
                continue
            kept.append(sum(b - s0 for s0, b in vad_model.regions(w)) / len(w))
        for vad, emb in (("off", emb_plain),) + (() if a.vad_off_only else (("on", emb_vad),)):
            scores = np.sum(emb[ia] * emb[ib], axis=1)
            eer, thr = compute_eer(scores, labels)
            row = {"condition": cond, "vad": vad, "eer": eer, "eer_threshold": thr,
                   "min_dcf_0.01": compute_min_dcf(scores, labels, 0.01)[0],
                   "mean_snr_db": float(np.mean(snrs)) if snrs else None,
                   "mean_seconds": float(np.mean([len(w) for w in versions]) / SR)}
            if a.bootstrap:
                row["eer_95ci"] = _bootstrap_eer(scores, labels, a.bootstrap, a.seed)
            if vad == "on":
                row["vad_kept_fraction"] = float(np.mean(kept)) if kept else None
                row["vad_fallbacks"] = fallbacks
            rows.append(row)
            log.info("%s vad=%s: EER %.2f%%", cond, vad, 100 * eer)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import onnxruntime
    from importlib import metadata

    result = {
        "command": " ".join(["python", shlex.quote(_relative(sys.argv[0]))] + [shlex.quote(x) for x in sys.argv[1:]]),
        "git_commit": commit, "model": plain.model_name, "weights_sha256": plain.card.weights.sha256,
        "backend": a.backend, "device": a.device, "trials": str(a.trials), "n_trials": len(trials),
        "n_target": int(labels.sum()), "n_segments": len(specs), "pad_s": a.pad, "snr_db": list(a.snr),
        "noise_files": [f.name for f in noise_files], "seed": a.seed, "vad": repr(vad_model),
        "vad_model": vad_model.path.name, "silero_vad_version": metadata.version("silero-vad"),
        "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
        "wall_s": round(time.time() - t0, 1), "rows": rows,
    }
    (out / "vad_eer.json").write_text(json.dumps(result, indent=1))
    lines = [f"# EER with and without VAD: {result['model']} on {a.trials}", "",
             f"`{result['command']}` at {result['git_commit'][:10]}; {len(trials)} trials ({result['n_target']} "
             f"target), {len(specs)} segments; pad {a.pad} s; SNR U({a.snr[0]:g}, {a.snr[1]:g}) dB; raw cosine; "
             f"{result['vad']} ({result['vad_model']}, silero-vad {result['silero_vad_version']}); "
             f"{result['wall_s']} s.", "",
             "| condition | VAD | EER % | 95% CI (trial bootstrap) | minDCF(0.01) | mean s | VAD kept | fallbacks |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = r.get("eer_95ci")
        kept = r.get("vad_kept_fraction")
        lines.append(f"| {r['condition']} | {r['vad']} | {100 * r['eer']:.2f} | "
                     f"{f'{100 * ci[0]:.2f}-{100 * ci[1]:.2f}' if ci else '-'} | {r['min_dcf_0.01']:.3f} | "
                     f"{r['mean_seconds']:.2f} | {f'{100 * kept:.0f}%' if kept is not None else '-'} | "
                     f"{r.get('vad_fallbacks', '-')} |")
    lines += ["", "The interval resamples trials, which share segments: it is narrower than the truth."]
    (out / "vad_eer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
