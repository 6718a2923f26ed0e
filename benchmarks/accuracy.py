"""Accuracy table: nestspk encoders beside the anchors, on the same trials, with speaker-bootstrap intervals.

Systems (any of):
  * a nestspk model name or card path (embedded through ``nestspk.Verifier``, the path users call);
  * ``mfcc``: an untrained MFCC mean+std vector (19 cepstra without c0; centred on 300 training recordings);
  * ``resemblyzer=FILE.npz``: embeddings written by ``benchmarks/resemblyzer_embed.py trials ...`` (its own
    preprocessing; ``--level-db 0 -20``).
Lists: names of ``weights/lists/<name>_trials.txt``. For the lists in ``--level-lists`` a *level-mismatch* variant is
scored too: side 2 of every trial at ``--level-db`` dB (rounded to int16 steps, as a quieter recording holds it).
Each cell: EER % [95% interval from 1000 speaker-bootstrap resamples] and minDCF (p_target 0.01).

    python benchmarks/accuracy.py --systems nested_4level resnetse34l_asp mfcc resemblyzer=anchor.npz \\
        --out benchmarks/results/2026-12-02_accuracy
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from nestspk.corpus import default_data_root, load_segment, read_train_list, read_trials, speaker_of, split_segment  # noqa: E402
from nestspk.metrics import compute_eer, compute_min_dcf  # noqa: E402
from resemblyzer_embed import at_level  # noqa: E402

log = logging.getLogger("accuracy")
LISTS = REPO / "weights" / "lists"


def speaker_key(spec: str) -> str:
    """Speaker of a trial entry: from a LibriSpeech/FSDD file name, else the folder below the set."""
    path = Path(split_segment(spec)[0])
    return speaker_of(path) or path.parts[1]


def weighted_eer(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    """EER where each trial counts ``weights`` times (weights 0 drop it)."""
    order = np.argsort(-scores, kind="stable")
    y, w = labels[order], weights[order]
    tp = np.cumsum(w * y)
    fp = np.cumsum(w * (1 - y))
    p, n = tp[-1], fp[-1]
    if p == 0 or n == 0:
        return float("nan")
    frr = 1 - tp / p  # accepting everything down to each score
    far = fp / n
    k = int(np.argmin(np.abs(frr - far)))
    return float((frr[k] + far[k]) / 2)


def bootstrap_eer(scores: np.ndarray, labels: np.ndarray, spk: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the EER over resampled speakers (a trial counts m(s1) * m(s2) times; targets m(s))."""
    speakers, idx = np.unique(spk, return_inverse=True)
    idx = idx.reshape(spk.shape)
    rng = np.random.default_rng(seed)
    eers = []
    for _ in range(n):
        m = np.bincount(rng.integers(0, len(speakers), len(speakers)), minlength=len(speakers)).astype(float)
        w = np.where(labels == 1, m[idx[:, 0]], m[idx[:, 0]] * m[idx[:, 1]])
        eers.append(weighted_eer(scores, labels, w))
    lo, hi = np.nanpercentile(eers, [2.5, 97.5])
    return float(lo), float(hi)


class MfccMeanStd:
    """Untrained baseline: mean and std over frames of MFCC 1..19 (40 log-mel bins of nestspk's front end)."""

    def __init__(self, root: Path, n_centre: int = 300):
        import torch

        from nestspk.features import FrontendConfig, LogMelFrontend

        self.torch = torch
        self.fe = LogMelFrontend(FrontendConfig(n_mels=40))
        n = torch.arange(40, dtype=torch.float64)
        self.dct = torch.cos(torch.pi / 40 * (n[None, :] + 0.5) * torch.arange(1, 20, dtype=torch.float64)[:, None]).float()
        rows = read_train_list(LISTS / "train.txt")
        pick = np.random.default_rng(0).choice(len(rows), size=min(n_centre, len(rows)), replace=False)
        self.centre = np.mean([self._raw(load_segment(rows[i][1], root)) for i in pick], axis=0)

    def _raw(self, wav: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            lm = self.fe.log_mel(self.torch.from_numpy(wav)[None])[0]  # (40, frames)
            c = self.dct @ lm
            return self.torch.cat([c.mean(1), c.std(1)]).numpy()

    def __call__(self, wavs: list[np.ndarray]) -> np.ndarray:
        e = np.stack([self._raw(w) for w in wavs]) - self.centre
        return e / np.linalg.norm(e, axis=1, keepdims=True)


class NpzEmbeddings:
    """Precomputed embeddings per (spec, level) from resemblyzer_embed.py."""

    def __init__(self, path: Path):
        z = np.load(path)
        self.index = {s: i for i, s in enumerate(z["specs"])}
        self.emb = {k[4:-2]: z[k] for k in z.files if k.startswith("emb_")}

    def lookup(self, specs: list[str], db: float) -> np.ndarray:
        e = self.emb[f"{db:g}"][[self.index[s] for s in specs]]
        return e / np.linalg.norm(e, axis=1, keepdims=True)


_CACHE: dict[tuple[int, str, float], np.ndarray] = {}


def embed_all(system, specs: list[str], db: float, root: Path) -> np.ndarray:
    """Embeddings of ``specs`` at ``db`` dB, each computed once per system."""
    if isinstance(system, NpzEmbeddings):
        return system.lookup(specs, db)
    todo = [s for s in dict.fromkeys(specs) if (id(system), s, db) not in _CACHE]
    for k in range(0, len(todo), 64):
        chunk = todo[k:k + 64]
        wavs = [at_level(load_segment(s, root), db) for s in chunk]
        embs = system(wavs) if isinstance(system, MfccMeanStd) else system.embed_batch(wavs)
        _CACHE.update({(id(system), s, db): e for s, e in zip(chunk, embs)})
    return np.stack([_CACHE[(id(system), s, db)] for s in specs])


def score_list(system, trials, root: Path, db2: float | None) -> dict:
    if db2 is None:  # both sides at full level: embed every entry once
        every = sorted({s for _, a, b in trials for s in (a, b)})
        e1 = e2 = dict(zip(every, embed_all(system, every, 0.0, root)))
    else:
        side1, side2 = sorted({a for _, a, _ in trials}), sorted({b for _, _, b in trials})
        e1 = dict(zip(side1, embed_all(system, side1, 0.0, root)))
        e2 = dict(zip(side2, embed_all(system, side2, db2, root)))
    scores = np.array([float(e1[a] @ e2[b]) for _, a, b in trials])
    labels = np.array([y for y, _, _ in trials])
    spk = np.array([(speaker_key(a), speaker_key(b)) for _, a, b in trials])
    eer, _ = compute_eer(scores, labels)
    lo, hi = bootstrap_eer(scores, labels, spk)
    return {"eer": eer, "eer_ci95": [lo, hi], "min_dcf_0.01": compute_min_dcf(scores, labels, 0.01)[0],
            "trials": len(trials), "targets": int(labels.sum()), "speakers": len(np.unique(spk))}


def make_system(spec: str, root: Path, backend: str):
    if spec == "mfcc":
        return "mfcc", MfccMeanStd(root)
    if spec.startswith("resemblyzer="):
        return "resemblyzer", NpzEmbeddings(Path(spec.split("=", 1)[1]))
    from nestspk import Verifier

    return spec, Verifier(spec, device="cpu", backend=backend)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", nargs="+", default=[])
    p.add_argument("--merge", nargs="+", type=Path, default=[],
                   help="results.json files of earlier runs to put in the same table (their commands are kept)")
    p.add_argument("--lists", nargs="+", default=["test", "test_2s", "speechocean", "speechocean_2s", "fsdd"])
    p.add_argument("--level-lists", nargs="*", default=["test", "speechocean"])
    p.add_argument("--level-db", type=float, default=-20.0)
    p.add_argument("--backend", default="onnx", help="backend of the nestspk systems (onnx or torch)")
    p.add_argument("--root", type=Path, default=None)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    root = a.root or default_data_root()
    results: dict = {}
    earlier = []
    for f in a.merge:
        prev = json.loads(f.read_text())
        earlier.append(prev["meta"])
        for label, row in prev["results"].items():
            results.setdefault(label, {}).update(row)
    for spec in a.systems:
        name, system = make_system(spec, root, a.backend)
        for lst in a.lists:
            trials = read_trials(LISTS / f"{lst}_trials.txt")
            variants = [(lst, None)] + ([(f"{lst} @{a.level_db:g} dB", a.level_db)] if lst in a.level_lists else [])
            for label, db in variants:
                r = score_list(system, trials, root, db)
                results.setdefault(label, {})[name] = r
                log.info("%s | %s: EER %.2f%% [%.2f, %.2f] minDCF %.3f", label, name, 100 * r["eer"],
                         100 * r["eer_ci95"][0], 100 * r["eer_ci95"][1], r["min_dcf_0.01"])
    a.out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    meta = {"date": dt.date.today().isoformat(), "git_commit": commit, "command": "python benchmarks/accuracy.py " + " ".join(argv or sys.argv[1:]),
            "backend": a.backend, "level_db": a.level_db, "merged": earlier}
    (a.out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    names = list(dict.fromkeys(n for r in results.values() for n in r))
    lines = ["| trials | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, row in results.items():
        first = next(iter(row.values()))
        cells = [f"{100 * row[n]['eer']:.2f} [{100 * row[n]['eer_ci95'][0]:.1f}-{100 * row[n]['eer_ci95'][1]:.1f}] / "
                 f"{row[n]['min_dcf_0.01']:.3f}" if n in row else "" for n in names]
        lines.append(f"| {label} ({first['speakers']} spk, {first['targets']}/{first['trials']}) | " + " | ".join(cells) + " |")
    (a.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
