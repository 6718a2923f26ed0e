"""Pipelined corpus embedding: files decoded in worker processes while the model embeds batches.

:func:`embed_files` yields ``(path, embedding or None, error or None)`` for every input file. Decoding
(soundfile read, downmix, resampling, validation, splitting into windows) runs in ``workers``
processes, at most ``prefetch`` files ahead of the model; the main process groups the windows by
exact length (equal lengths need no padding, so each file's embedding is the one
:meth:`nestspk.Verifier.embed_batch` gives it, up to float32 rounding of the batch composition) and
runs a model batch as soon as a length has ``batch_size`` windows, or, when ``max_pending`` windows
wait, for the length with the most windows. A file's embedding is the normalised sum of its
windows' embeddings, as in the Verifier; results come in completion order, not input order.

Files of distinct lengths share no batch, so on a GPU whole files up to 20 s run at about batch 1. With
``bucket_s`` each window is first cropped, centred, to a whole number of ``bucket_s`` seconds
(:func:`crop_to_bucket`): at most ``bucket_s`` of audio is dropped per window, lengths fall into a few buckets,
and batches fill across files. The embeddings then differ from the Verifier's (the EER effect is measured in
``benchmarks/results/2026-12-04_bucket_eer/``).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections import deque
from typing import Iterable, Iterator, Sequence

import numpy as np

from .audio import TARGET_SAMPLE_RATE, SpeechCheck, open_audio
from .errors import NestspkError

log = logging.getLogger(__name__)


def file_windows(path: str, speech_check: bool = True) -> list[np.ndarray]:
    """The 16 kHz windows the Verifier embeds for one file: the same plan, validation and speech check
    as :meth:`nestspk.Verifier.embed_batch` (long files streamed window by window)."""
    src = open_audio(path)
    plan = src.plan()
    if not plan.windowed:
        windows = [src.read()]
    else:
        windows = list(src.windows(plan.starts, plan.window))
    if speech_check:
        check = SpeechCheck()
        covered = 0  # each sample once, not once per overlapping window
        for w, s0 in zip(windows, plan.starts):
            if s0 + len(w) > covered:
                check.add(w[max(covered - s0, 0):])
                covered = s0 + len(w)
        check.check(src.label)
    return windows


def crop_to_bucket(wav: np.ndarray, bucket: int) -> np.ndarray:
    """The centred part of ``wav`` (T,) whose length is the largest multiple of ``bucket`` samples (``wav`` itself
    when it is shorter than one bucket or already a multiple): a view, no copy."""
    keep = len(wav) - len(wav) % bucket
    if keep == 0 or keep == len(wav):
        return wav
    start = (len(wav) - keep) // 2
    return wav[start:start + keep]


def _decode(path: str) -> tuple[str, list[np.ndarray] | None, str | None]:
    """Worker task: (path, windows, None) or (path, None, error message) for a bad file."""
    try:
        return path, file_windows(path), None
    except NestspkError as e:
        return path, None, str(e)


def _worker_init() -> None:
    # decoding is single-threaded per file; keep BLAS/OpenMP pools from oversubscribing the cores
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"


class _Decoder:
    """Ordered decoding of ``paths``: in a process pool (``workers`` >= 1, bounded look-ahead) or inline (0)."""

    def __init__(self, paths: Sequence[str], workers: int, prefetch: int):
        self.paths, self.workers, self.prefetch = list(paths), workers, max(1, prefetch)
        self.pool = mp.get_context("spawn").Pool(workers, initializer=_worker_init) if workers > 0 else None

    def __iter__(self) -> Iterator[tuple[str, list[np.ndarray] | None, str | None]]:
        if self.pool is None:
            yield from map(_decode, self.paths)
            return
        todo = iter(self.paths)
        inflight: deque = deque()
        for p in todo:
            inflight.append(self.pool.apply_async(_decode, (p,)))
            if len(inflight) >= self.prefetch:
                break
        while inflight:
            res = inflight.popleft().get()
            nxt = next(todo, None)
            if nxt is not None:
                inflight.append(self.pool.apply_async(_decode, (nxt,)))
            yield res

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


def embed_files(verifier, paths: Iterable[str], workers: int = 2, batch_size: int = 32,
                prefetch: int | None = None, max_pending: int | None = None, bucket_s: float | None = None
                ) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
    """Embed audio files with decoding in ``workers`` processes overlapped with model batches.

    Args:
        verifier: a :class:`nestspk.Verifier` (its backend and device run the model, in this process).
        paths: audio files.
        workers: decoding processes (0: decode in this process, nothing overlapped).
        batch_size: windows per model batch (windows of one length only).
        prefetch: files decoded ahead of the model (default ``4 * max(workers, 1)``).
        max_pending: decoded windows waiting for a batch before the fullest length is run anyway
            (default ``2 * batch_size``).
        bucket_s: crop each window, centred, to a multiple of this many seconds so that files share batches
            (:func:`crop_to_bucket`; None: exact lengths, embeddings as the Verifier's).

    Yields:
        ``(path, embedding (D,) float32, None)`` or ``(path, None, message)`` for a file that cannot be embedded
        (unreadable, too short, silent: the :class:`NestspkError` message), in completion order.
    """
    if workers < 0 or batch_size < 1:
        raise ValueError(f"workers must be >= 0 and batch_size >= 1, got {workers}, {batch_size}")
    if bucket_s is not None and not (0.01 <= bucket_s <= 60):
        raise ValueError(f"bucket_s must be between 0.01 and 60 seconds, got {bucket_s!r}")
    bucket = int(round(bucket_s * TARGET_SAMPLE_RATE)) if bucket_s is not None else None
    paths = [os.fspath(p) for p in paths]
    max_pending = max_pending or 2 * batch_size
    decoder = _Decoder(paths, workers, prefetch or 4 * max(workers, 1))
    sums: dict[int, np.ndarray] = {}  # keyed by input position: a path listed twice is embedded twice
    left: dict[int, int] = {}
    buckets: dict[int, list[tuple[int, np.ndarray]]] = {}
    pending = 0

    def run(length: int) -> Iterator[tuple[str, np.ndarray, None]]:
        nonlocal pending
        group = buckets.pop(length)
        pending -= len(group)
        for k in range(0, len(group), batch_size):
            chunk = group[k:k + batch_size]
            for (i, _), e in zip(chunk, verifier._run([w for _, w in chunk])):
                sums[i] = sums[i] + e if i in sums else e
                left[i] -= 1
                if left[i] == 0:
                    s = sums.pop(i)
                    del left[i]
                    yield paths[i], (s / max(float(np.linalg.norm(s)), 1e-12)).astype(np.float32), None

    try:
        for i, (path, windows, err) in enumerate(decoder):
            if err is not None:
                yield path, None, err
                continue
            left[i] = len(windows)
            for w in windows:
                if bucket is not None:
                    w = crop_to_bucket(w, bucket)
                buckets.setdefault(len(w), []).append((i, w))
                pending += 1
            for length in [n for n, g in buckets.items() if len(g) >= batch_size]:
                yield from run(length)
            while pending > max_pending:
                yield from run(max(buckets, key=lambda n: len(buckets[n])))
        while buckets:
            yield from run(max(buckets, key=lambda n: len(buckets[n])))
    finally:
        decoder.close()
