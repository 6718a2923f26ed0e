"""The user-facing API: ``Verifier`` embeds, verifies and identifies speakers.

Any input accepted by :func:`nestspk.audio.load_audio` works: a file path
(WAV/FLAC/OGG, any sample rate, mono or multi-channel), a numpy array or a torch
tensor (``sample_rate`` defaults to 16 kHz for arrays). Audio longer than
``LONG_AUDIO_S`` (20 s) is embedded as the average of ``WINDOW_S`` (10 s) windows
with ``HOP_S`` (5 s) hop (the last window aligned to the end); files that long are
streamed from disk, so memory stays bounded for hour-long recordings.
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .audio import SILENCE_PEAK, TARGET_SAMPLE_RATE, audio_info, iter_windows, load_audio
from .card import PRECISIONS, ModelCard
from .errors import AudioError, GalleryError, NestspkError
from .runtime import BACKENDS, Embedder, make_embedder, resolve_backend

log = logging.getLogger(__name__)

LONG_AUDIO_S = 20.0
WINDOW_S = 10.0
HOP_S = 5.0
LONG_AUDIO_BATCH = 8  # windows per forward pass when streaming a long file (bounds peak memory)

AudioInput = Any  # str | os.PathLike | np.ndarray | torch.Tensor


@dataclass(frozen=True)
class VerificationResult:
    """One verification decision: ``same_speaker`` is ``score >= threshold``; ``bool(result)`` is ``same_speaker``.

    ``score`` is the raw cosine of the two embeddings, in [-1, 1], or with ``score_norm="asnorm"`` the
    AS-normalised score: each side's cosine standardised against its closest cohort speakers and averaged,
    so it is unbounded (non-target trials centre near 0 with spread about 1; targets are typically > 2).
    ``threshold`` is on the same scale. ``llr`` is the calibrated log-likelihood ratio when the model card
    carries a calibration for that scale, else None.
    """

    score: float
    same_speaker: bool
    threshold: float
    llr: float | None = None

    def __bool__(self) -> bool:
        return bool(self.same_speaker)


class Verifier:
    """Speaker verification with a trained encoder.

    Args:
        model: shipped model name (``"nested"``/``"nested_4level"``, ``"resnetse34l"``/``"resnetse34l_asp"``),
            a path to a model card ``.json`` (weights named in it, beside it) or a :class:`~nestspk.card.ModelCard`.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Asking for CUDA on a
            machine without a usable GPU raises :class:`~nestspk.runtime.BackendError`.
        backend: ``"auto"`` (default: onnxruntime on CPU, needing no torch; torch on CUDA), ``"torch"`` or
            ``"onnx"``. A backend whose package is missing raises an error naming the extra to install.
        threshold: decision threshold: a number on the score scale (finite; within [-1, 1] for raw cosine), or
            an operating point measured on the dev trials and stored in the card: ``"eer"`` (the default),
            ``"far_0.01"`` or ``"far_0.001"`` (false-accept rate 1% / 0.1%). With ``precision="int8"`` the
            int8 file's own operating points are used when the card has them.
        score_norm: ``None`` or ``"asnorm"`` (adaptive s-norm with the cohort shipped next to the weights).
        intra_op_threads: CPU intra-op threads of either backend (default
            :data:`~nestspk.runtime.DEFAULT_CPU_THREADS`; torch's setting is process-wide).
        precision: ``"fp32"`` (default, exact) or ``"int8"``: the quantised ONNX file for CPU (onnx backend;
            its cosine to fp32, EER and operating points are in the card's ``exports.int8``).
        cuda_graphs: torch on CUDA: replay repeated input shapes as CUDA graphs (default True).
    """

    def __init__(self, model: "str | os.PathLike | ModelCard" = "nested", device: str = "auto",
                 backend: str = "auto", threshold: float | str | None = None, score_norm: str | None = None,
                 intra_op_threads: int | None = None, precision: str = "fp32", cuda_graphs: bool = True):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if score_norm not in (None, "asnorm"):
            raise ValueError(f"score_norm must be None or 'asnorm', got {score_norm!r}")
        if precision != "fp32":
            if backend == "torch":
                raise ValueError(f"precision={precision!r} needs backend='onnx' (the {precision} model is an "
                                 "ONNX Runtime file)")
            backend = "onnx"
        options: dict[str, Any] = {"intra_op_threads": intra_op_threads}
        resolved, _ = resolve_backend(backend, device)
        if resolved == "onnx":
            if precision != "fp32":
                options["precision"] = precision
        else:
            options["cuda_graphs"] = cuda_graphs
        card = model if isinstance(model, ModelCard) else ModelCard.load(model)
        self.embedder: Embedder = make_embedder(card, backend=resolved, device=device, **options)
        self.backend: str = self.embedder.backend
        self.precision = precision
        self.device: str = str(self.embedder.device)
        self.card: ModelCard = card
        self.model_name: str = card.name
        self.embed_dim: int = card.embed_dim
        self.score_norm = score_norm
        self._cohort = None
        if score_norm == "asnorm":
            from .scoring import Cohort

            self._cohort = Cohort.from_card(card)
        self.threshold = self._resolve_threshold(threshold)
        self._gallery: dict[str, np.ndarray] = {}
        self._gallery_counts: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def _runtime(self) -> Embedder:
        """The embedder (earlier private name; use :attr:`embedder`)."""
        return self.embedder

    @property
    def scale(self) -> str:
        """Score scale of :meth:`verify`: ``"raw"`` (cosine) or ``"asnorm"``."""
        return "asnorm" if self._cohort is not None else "raw"

    def _resolve_threshold(self, threshold: float | str | None) -> float:
        if threshold is None:
            threshold = "eer"
        if isinstance(threshold, str):
            return self.card.threshold(threshold, self.scale, self.precision)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)):
            raise TypeError(f"threshold must be a number or an operating-point name, got {threshold!r:.80}")
        t = float(threshold)
        if not math.isfinite(t):
            raise ValueError(f"threshold must be finite, got {t}")
        if self.scale == "raw" and not -1.0 <= t <= 1.0:
            raise ValueError(f"threshold {t} is outside [-1, 1], the range of raw cosine scores "
                             "(AS-norm scores are unbounded: pass score_norm='asnorm' for those)")
        return t

    def __repr__(self) -> str:
        extra = f", precision={self.precision!r}" if self.precision != "fp32" else ""
        return f"Verifier(model={self.model_name!r}, backend={self.backend!r}, device={self.device!r}{extra})"

    # -- embedding -----------------------------------------------------------------
    def _is_long_file(self, audio: AudioInput, sample_rate: int | None) -> bool:
        if isinstance(audio, (str, os.PathLike)):
            frames, sr, _ = audio_info(audio)
            if sample_rate is not None and sample_rate != sr:
                raise AudioError(f"{audio}: sample_rate={sample_rate} Hz given but the file is {sr} Hz "
                                 "(pass sample_rate=None for files)")
            return frames / sr > LONG_AUDIO_S
        return False

    @staticmethod
    def _split_windows(wav: np.ndarray) -> list[np.ndarray]:
        """A loaded 16 kHz waveform -> itself, or WINDOW_S windows if longer than LONG_AUDIO_S."""
        n = len(wav)
        if n <= LONG_AUDIO_S * TARGET_SAMPLE_RATE:
            return [wav]
        win, hop = int(WINDOW_S * TARGET_SAMPLE_RATE), int(HOP_S * TARGET_SAMPLE_RATE)
        starts = list(range(0, n - win + 1, hop))
        if starts[-1] + win < n:
            starts.append(n - win)
        return [wav[s:s + win] for s in starts]

    def _run(self, windows: list[np.ndarray]) -> np.ndarray:
        embs = self.embedder.embed_batch(np.stack(windows))
        if not np.isfinite(embs).all():
            raise NestspkError("the encoder produced a non-finite embedding; please report this input")
        return embs.astype(np.float64)

    def embed(self, audio: AudioInput, sample_rate: int | None = None) -> np.ndarray:
        """One input -> L2-normalised embedding, shape (embed_dim,), float32."""
        return self.embed_batch([audio], sample_rate=sample_rate)[0]

    def embed_batch(self, audios: Sequence[AudioInput], sample_rate: int | None = None,
                    batch_size: int = 32) -> np.ndarray:
        """Many inputs -> (N, embed_dim) float32, rows L2-normalised.

        Windows of equal length are batched together (length bucketing without
        padding), so results equal embedding each input on its own. Long files are
        streamed window by window, so memory does not grow with their duration.
        """
        if isinstance(audios, (str, os.PathLike, np.ndarray)) or hasattr(audios, "detach"):
            raise TypeError("embed_batch takes a list of inputs; use embed() for a single one")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        sums = np.zeros((len(audios), self.embed_dim), dtype=np.float64)
        buckets: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)
        for i, audio in enumerate(audios):
            if self._is_long_file(audio, sample_rate):
                buf: list[np.ndarray] = []
                peak = 0.0
                for w in iter_windows(audio, WINDOW_S, HOP_S):
                    peak = max(peak, float(np.abs(w).max()))
                    buf.append(w)
                    if len(buf) == min(batch_size, LONG_AUDIO_BATCH):
                        sums[i] += self._run(buf).sum(axis=0)
                        buf = []
                if buf:
                    sums[i] += self._run(buf).sum(axis=0)
                if peak < SILENCE_PEAK:
                    raise AudioError(f"{audio}: silent (peak {peak:.3g} < {SILENCE_PEAK:g})")
                continue
            for w in self._split_windows(load_audio(audio, sample_rate)):
                buckets[len(w)].append((i, w))
        for group in buckets.values():
            for k in range(0, len(group), batch_size):
                chunk = group[k:k + batch_size]
                for (i, _), e in zip(chunk, self._run([w for _, w in chunk])):
                    sums[i] += e
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return (sums / np.maximum(norms, 1e-12)).astype(np.float32)

    # -- verification ----------------------------------------------------------------
    def score_embeddings(self, emb_a: np.ndarray, emb_b: np.ndarray) -> np.ndarray | float:
        """Cosine score(s) of L2-normalised embeddings (D,) or (N, D); AS-normalised if enabled."""
        a, b = np.atleast_2d(emb_a), np.atleast_2d(emb_b)
        s = np.sum(a * b, axis=1)
        if self._cohort is not None:
            s = self._cohort.normalize(s, a, b)
        return float(s[0]) if np.ndim(emb_a) == 1 else s

    def verify(self, a: AudioInput, b: AudioInput, sample_rate: int | None = None) -> VerificationResult:
        """Are ``a`` and ``b`` spoken by the same person?"""
        ea, eb = self.embed_batch([a, b], sample_rate=sample_rate)
        score = float(self.score_embeddings(ea, eb))
        cal = self.card.calibration
        llr = None
        if cal and cal.get("raw_or_asnorm", "raw") == self.scale:
            llr = float(cal["a"] * score + cal["b"])
        return VerificationResult(score=score, same_speaker=score >= self.threshold, threshold=self.threshold, llr=llr)

    # -- identification ------------------------------------------------------------------
    def enroll(self, name: str, recordings: Iterable[AudioInput] | AudioInput, sample_rate: int | None = None) -> None:
        """Add (or extend) speaker ``name`` in the in-memory gallery from one or more recordings."""
        if not isinstance(name, str) or not name.strip():
            raise GalleryError(f"speaker name must be a non-empty string, got {name!r}")
        if isinstance(recordings, (str, os.PathLike, np.ndarray)) or hasattr(recordings, "detach"):
            recordings = [recordings]
        recordings = list(recordings)
        if not recordings:
            raise GalleryError(f"enroll({name!r}): no recordings given")
        embs = self.embed_batch(recordings, sample_rate=sample_rate)
        with self._lock:
            n_old = self._gallery_counts.get(name, 0)
            total = embs.sum(axis=0) + (self._gallery[name] * n_old if n_old else 0)
            self._gallery_counts[name] = n_old + len(embs)
            self._gallery[name] = (total / self._gallery_counts[name]).astype(np.float32)

    def identify(self, audio: AudioInput, top_k: int = 5, sample_rate: int | None = None) -> list[tuple[str, float]]:
        """Gallery speakers ranked by score: up to ``top_k`` ``(name, score)`` pairs, best first."""
        with self._lock:
            if not self._gallery:
                raise GalleryError("the gallery is empty; enroll() speakers first")
            names = list(self._gallery)
            centroids = np.stack([self._gallery[n] for n in names])
        centroids = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
        e = self.embed(audio, sample_rate)
        scores = self.score_embeddings(np.repeat(e[None], len(names), 0), centroids)
        order = np.argsort(-scores)[:top_k]
        return [(names[i], float(scores[i])) for i in order]

    @property
    def speakers(self) -> list[str]:
        return list(self._gallery)

    def save_gallery(self, path: str | os.PathLike) -> None:
        """Write the gallery to ``path`` (.npz: names, centroid sums and counts; no pickle)."""
        with self._lock:
            names = list(self._gallery)
            emb = np.stack([self._gallery[n] for n in names]) if names else np.zeros((0, self.embed_dim), np.float32)
            counts = np.array([self._gallery_counts[n] for n in names], dtype=np.int64)
        meta = json.dumps({"format": "nestspk-gallery/1", "model": self.model_name, "embed_dim": self.embed_dim})
        with open(path, "wb") as f:
            np.savez(f, names=np.array(names, dtype=np.str_), embeddings=emb.astype(np.float32), counts=counts,
                     meta=np.array(meta))

    def load_gallery(self, path: str | os.PathLike) -> None:
        """Replace the gallery by the one saved at ``path``; rejects malformed files and other models'."""
        try:
            with np.load(path, allow_pickle=False) as z:
                names, emb, counts, meta = z["names"], z["embeddings"], z["counts"], json.loads(str(z["meta"]))
        except (OSError, ValueError, KeyError, json.JSONDecodeError, EOFError) as e:
            raise GalleryError(f"{path}: not a nestspk gallery file ({type(e).__name__}: {e})") from e
        if not isinstance(meta, dict):
            raise GalleryError(f"{path}: not a nestspk gallery file (meta is not a JSON object)")
        if meta.get("format") != "nestspk-gallery/1":
            raise GalleryError(f"{path}: unknown gallery format {meta.get('format')!r}")
        if meta.get("model") != self.model_name:
            raise GalleryError(f"{path}: gallery was made with model {meta.get('model')!r}, this verifier uses {self.model_name!r}")
        if names.ndim != 1 or emb.ndim != 2 or emb.shape != (len(names), self.embed_dim) or counts.shape != names.shape:
            raise GalleryError(f"{path}: inconsistent shapes names {names.shape}, embeddings {emb.shape}, counts {counts.shape}")
        if names.dtype.kind != "U" or emb.dtype.kind != "f" or counts.dtype.kind not in "iu":
            raise GalleryError(f"{path}: wrong dtypes names {names.dtype}, embeddings {emb.dtype}, counts {counts.dtype}")
        if len(set(names.tolist())) != len(names):
            raise GalleryError(f"{path}: duplicate speaker names")
        if not np.isfinite(emb).all() or (counts < 1).any():
            raise GalleryError(f"{path}: non-finite embeddings or invalid counts")
        with self._lock:
            self._gallery = {str(n): emb[i].astype(np.float32) for i, n in enumerate(names)}
            self._gallery_counts = {str(n): int(counts[i]) for i, n in enumerate(names)}
