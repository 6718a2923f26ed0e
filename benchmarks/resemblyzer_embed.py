"""Resemblyzer embeddings (the accuracy anchor, and optional distillation targets), with its own preprocessing.

Resemblyzer (``pip install resemblyzer``; Apache-2.0; GE2E LSTM trained on LibriSpeech + VoxCeleb 1/2) is a
benchmark dependency only. Each input is read as nestspk reads trial entries (16 kHz mono float32), optionally
changed in level (then rounded to int16, as a quieter recording would be), and passed through
``resemblyzer.preprocess_wav`` (volume normalisation + webrtcvad silence trimming) and
``VoiceEncoder.embed_utterance``.

    # teacher targets for training, one row per line of the training list
    python benchmarks/resemblyzer_embed.py list weights/lists/train.txt --out teacher.npy --workers 16
    # anchor embeddings of every entry of some trial lists, at full level and at -20 dB
    python benchmarks/resemblyzer_embed.py trials weights/lists/test_trials.txt --out anchor.npz --level-db 0 -20
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nestspk.corpus import default_data_root, load_segment, read_train_list, read_trials  # noqa: E402

log = logging.getLogger("resemblyzer_embed")
_ENCODER = None


def at_level(wav: np.ndarray, db: float) -> np.ndarray:
    """``wav`` scaled by ``db`` dB and rounded to int16 steps (what a quieter recording holds)."""
    if db == 0:
        return wav
    y = np.clip(wav * 10 ** (db / 20), -1.0, 32767 / 32768)
    return (np.round(y * 32768) / 32768).astype(np.float32)


def _init() -> None:
    global _ENCODER
    import torch
    from resemblyzer import VoiceEncoder

    torch.set_num_threads(1)
    _ENCODER = VoiceEncoder("cpu", verbose=False)


def _embed(job: tuple[str, str, float]) -> np.ndarray:
    from resemblyzer import preprocess_wav

    spec, root, db = job
    wav = preprocess_wav(at_level(load_segment(spec, root), db), source_sr=16000)
    if len(wav) == 0:  # nothing voiced left after trimming: embed the untrimmed input
        wav = at_level(load_segment(spec, root), db)
    return _ENCODER.embed_utterance(wav).astype(np.float32)


def embed_specs(specs: list[str], root: Path, db: float, workers: int) -> np.ndarray:
    with ProcessPoolExecutor(max_workers=workers, initializer=_init) as pool:
        return np.stack(list(pool.map(_embed, [(s, str(root), db) for s in specs], chunksize=8)))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("list", "trials"))
    p.add_argument("files", nargs="+", type=Path, help="a training list (list) or trial lists (trials)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--root", type=Path, default=None, help="data root (default $NESTSPK_DATA or ../shared/data)")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--level-db", type=float, nargs="+", default=[0.0], help="trials: levels to embed at (dB)")
    a = p.parse_args(argv)
    root = a.root or default_data_root()
    if a.mode == "list":
        specs = [path for f in a.files for _, path in read_train_list(f)]
        emb = embed_specs(specs, root, 0.0, a.workers)
        np.save(a.out, emb)
        log.info("%s: %s", a.out, emb.shape)
        return 0
    specs = sorted({s for f in a.files for _, x, y in read_trials(f) for s in (x, y)})
    arrays = {"specs": np.array(specs)}
    for db in a.level_db:
        arrays[f"emb_{db:g}dB"] = embed_specs(specs, root, db, a.workers)
        log.info("%d entries embedded at %g dB", len(specs), db)
    np.savez(a.out, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main())
