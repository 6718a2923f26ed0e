"""Embed many files on many CPU cores: one Verifier per worker process, one torch thread each.

    python examples/process_pool.py examples/*.flac --repeat 20 --workers 2

Prints files/s and a JSON summary line. Failed files (nestspk errors) are reported, not fatal.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

_verifier = None


def _init(model: str) -> None:
    """Worker initializer: single-threaded torch and one Verifier per process."""
    global _verifier
    import torch

    torch.set_num_threads(1)
    from nestspk import Verifier

    _verifier = Verifier(model, device="cpu")


def _embed(path: str) -> tuple[str, np.ndarray | None, str, float]:
    """(path, embedding or None, error message, audio seconds) for one file."""
    import soundfile as sf

    from nestspk.errors import NestspkError

    try:
        info = sf.info(path)
        seconds = info.frames / info.samplerate
        return path, _verifier.embed(path), "", seconds
    except (NestspkError, RuntimeError) as e:  # RuntimeError: soundfile cannot even read the header
        return path, None, str(e), 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="+", help="audio files or directories")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--repeat", type=int, default=1, help="process the list this many times (throughput test)")
    p.add_argument("--model", default="nested")
    p.add_argument("--chunksize", type=int, default=4)
    a = p.parse_args(argv)
    files: list[str] = []
    for item in a.inputs:
        q = Path(item)
        files += sorted(str(f) for f in q.rglob("*") if f.suffix.lower() in (".wav", ".flac", ".ogg")) \
            if q.is_dir() else [item]
    files = files * a.repeat
    with ProcessPoolExecutor(max_workers=a.workers, initializer=_init, initargs=(a.model,)) as pool:
        pool.submit(len, "warm-up").result()  # start workers (model loading) before timing
        list(pool.map(_embed, files[: a.workers], chunksize=1))  # first call per worker is slow
        t0 = time.perf_counter()
        results = list(pool.map(_embed, files, chunksize=a.chunksize))
        wall = time.perf_counter() - t0
    failed = [(f, err) for f, e, err, _ in results if e is None]
    audio_s = sum(s for *_, s in results)
    print(f"{len(files)} files ({audio_s:.0f} s of audio) with {a.workers} workers in {wall:.1f} s: "
          f"{len(files) / wall:.2f} files/s, {audio_s / wall:.1f} s of audio per second")
    for f, err in failed:
        print(f"failed: {err}", file=sys.stderr)
    print(json.dumps({"files": len(files), "workers": a.workers, "wall_s": round(wall, 2),
                      "files_per_s": len(files) / wall, "audio_s": audio_s, "audio_s_per_s": audio_s / wall,
                      "failed": len(failed)}))
    return 0 if len(failed) < len(files) else 2


if __name__ == "__main__":
    sys.exit(main())
