"""The user-facing API: ``Verifier`` embeds, verifies and identifies speakers.

Any input accepted by :func:`nestspk.audio.open_audio` works: a file path (any format
soundfile reads, any sample rate, mono or multi-channel), encoded file ``bytes``, a binary file
object, a numpy array or a torch tensor (``sample_rate`` defaults to 16 kHz for arrays). Audio
longer than ``LONG_AUDIO_S`` (20 s) is embedded as the average of ``WINDOW_S`` (10 s) windows
with ``HOP_S`` (5 s) hop (the last window aligned to the end; :func:`nestspk.audio.plan_segments`,
the same for arrays and files); files that long are streamed, so memory stays bounded for
hour-long recordings.

Inputs must hold some speech-like content (:class:`nestspk.audio.SpeechCheck`: energy above the
floor, energy in the speech band, a non-noise spectrum, a varying level); digital silence with a
click, white noise or mains hum raise :class:`~nestspk.errors.AudioError` instead of an embedding
(set ``Verifier.speech_check = False`` to embed anything). In a batch, errors name the item index.
"""
from __future__ import annotations

import logging
import math
import os
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from .audio import (HOP_S, LONG_AUDIO_S, WINDOW_S, AudioSource, SpeechCheck,  # noqa: F401 (re-exported)
                    describe_input, open_audio)
from .card import PRECISIONS, ModelCard
from .errors import AudioError, GalleryError, InputError, NestspkError
from .gallery import UNKNOWN, Gallery  # noqa: F401 (UNKNOWN re-exported)
from .runtime import BACKENDS, Embedder, make_embedder, resolve_backend

log = logging.getLogger(__name__)

LONG_AUDIO_BATCH = 8  # windows per forward pass when streaming a long file (bounds peak memory)

AudioInput = Any  # str | os.PathLike | bytes | BinaryIO | np.ndarray | torch.Tensor
_SINGLE_INPUT = (str, bytes, bytearray, memoryview, os.PathLike, np.ndarray)


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
        vad: ``True`` embeds only the speech regions found by Silero VAD (extra ``vad``; see :mod:`nestspk.vad`),
            or a configured :class:`~nestspk.vad.SileroVAD`. Inputs are then read whole (no streaming).
    """

    def __init__(self, model: "str | os.PathLike | ModelCard" = "nested", device: str = "auto",
                 backend: str = "auto", threshold: float | str | None = None, score_norm: str | None = None,
                 intra_op_threads: int | None = None, precision: str = "fp32", cuda_graphs: bool = True,
                 vad: Any = False):
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
        self.gallery = Gallery(self.embed_dim, self.model_name)
        self.speech_check = True  # reject inputs without speech-like content (see nestspk.audio.SpeechCheck)
        self._lock = threading.Lock()
        self._vad = None
        if vad is not False and vad is not None:
            from .vad import make_vad

            self._vad = make_vad(vad)

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
    def _run(self, windows: list[np.ndarray]) -> np.ndarray:
        """Embeddings of equal-length windows, float64; a window of digital silence (all zeros) adds nothing to
        its input's sum (a zero row: what the torch model gives it; the ONNX graph would give 0/0)."""
        x = np.stack(windows)
        live = np.abs(x).max(axis=1) > 0
        embs = np.zeros((len(x), self.embed_dim), dtype=np.float64)
        if live.any():
            embs[live] = self.embedder.embed_batch(np.ascontiguousarray(x[live]))
        if not np.isfinite(embs).all():
            raise NestspkError("the encoder produced a non-finite embedding; please report this input")
        return embs

    def embed(self, audio: AudioInput, sample_rate: int | None = None) -> np.ndarray:
        """One input -> L2-normalised embedding, shape (embed_dim,), float32."""
        return self._embed_all([audio], sample_rate, 32, single=True)[0]

    def embed_batch(self, audios: Iterable[AudioInput], sample_rate: int | None = None,
                    batch_size: int = 32) -> np.ndarray:
        """Many inputs (any iterable, generators included) -> (N, embed_dim) float32, rows L2-normalised.

        Plan, then batch, then reduce: every input is opened and validated first (one header read
        per file), so a bad item fails before any compute, with an AudioError naming its index.
        Windows of equal length are batched together (length bucketing without padding), so
        results equal embedding each input on its own. Long files are streamed window by window,
        so memory does not grow with their duration.
        """
        if isinstance(audios, _SINGLE_INPUT) or hasattr(audios, "detach") or hasattr(audios, "read"):
            raise InputError(f"embed_batch takes a list of inputs, got one {describe_input(audios)}; "
                             "use embed() for a single input")
        try:
            items = list(audios)
        except TypeError as e:
            raise InputError(f"embed_batch takes an iterable of inputs, got {type(audios).__name__}") from e
        return self._embed_all(items, sample_rate, batch_size, single=False)

    def _embed_all(self, items: list[AudioInput], sample_rate: int | None, batch_size: int,
                   single: bool) -> np.ndarray:
        batch_size = _positive_int(batch_size, "batch_size")
        n = len(items)

        def where(i: int) -> str:
            return "" if single else f"item {i} of {n}: "

        plans: list[tuple[AudioSource, Any]] = []
        for i, audio in enumerate(items):  # plan: open + validate every input (headers only for files)
            try:
                src = open_audio(audio, sample_rate)
                if self._vad is not None:  # only the speech regions, labelled as the input
                    src = open_audio(self._vad.speech(src.read(), src.label), name=src.label)
            except AudioError as e:
                raise AudioError(f"{where(i)}{e}") from e
            plans.append((src, src.plan()))
        sums = np.zeros((n, self.embed_dim), dtype=np.float64)
        buckets: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)
        for i, (src, plan) in enumerate(plans):
            try:
                if plan.windowed:  # batch: long inputs stream their windows in groups
                    sums[i] = self._embed_windows(src, plan, min(batch_size, LONG_AUDIO_BATCH))
                    continue
                wav = src.read()
                self._check_speech([wav], src.label)
            except AudioError as e:
                raise AudioError(f"{where(i)}{e}") from e
            buckets[len(wav)].append((i, wav))
        for group in buckets.values():
            for k in range(0, len(group), batch_size):
                chunk = group[k:k + batch_size]
                for (i, _), e in zip(chunk, self._run([w for _, w in chunk])):
                    sums[i] += e
        norms = np.linalg.norm(sums, axis=1, keepdims=True)  # reduce: mean direction of the windows
        return (sums / np.maximum(norms, 1e-12)).astype(np.float32)

    def _embed_windows(self, src: AudioSource, plan: Any, group: int) -> np.ndarray:
        total = np.zeros(self.embed_dim, dtype=np.float64)
        check = SpeechCheck()
        buf: list[np.ndarray] = []
        covered = 0  # the speech check sees each sample once, not once per overlapping window
        for w, s in zip(src.windows(plan.starts, plan.window), plan.starts):  # windows first: its end checks run
            if s + len(w) > covered:
                check.add(w[max(covered - s, 0):])
                covered = s + len(w)
            buf.append(w)
            if len(buf) == group:
                total += self._run(buf).sum(axis=0)
                buf = []
        if buf:
            total += self._run(buf).sum(axis=0)
        if self.speech_check:
            check.check(src.label)
        return total

    def _check_speech(self, wavs: list[np.ndarray], label: str) -> None:
        if self.speech_check:
            check = SpeechCheck()
            for w in wavs:
                check.add(w)
            check.check(label)

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
        """Add (or extend) speaker ``name`` in the gallery from one or more recordings (running mean)."""
        from .gallery import check_name

        check_name(name)
        if isinstance(recordings, _SINGLE_INPUT) or hasattr(recordings, "detach") or hasattr(recordings, "read"):
            recordings = [recordings]
        try:
            recordings = list(recordings)
        except TypeError as e:
            raise InputError(f"enroll({name!r:.80}): recordings must be an input or an iterable of inputs,"
                             f" got {type(recordings).__name__}") from e
        if not recordings:
            raise GalleryError(f"enroll({name!r:.80}): no recordings given")
        embs = self._embed_all(recordings, sample_rate, 32, single=len(recordings) == 1)
        self.gallery.enroll(name, embs)

    def remove(self, name: str) -> None:
        """Forget speaker ``name``; GalleryError if it is not enrolled."""
        self.gallery.remove(name)

    def identify(self, audio: AudioInput, top_k: int = 5, sample_rate: int | None = None,
                 threshold: float | str | None = None) -> list[tuple[str, float]]:
        """Gallery speakers ranked by score: up to ``top_k`` ``(name, score)`` pairs, best first.

        With ``threshold`` (a number on this verifier's score scale, or an operating point such as
        ``"eer"``), only speakers scoring ``>= threshold`` are returned, and ``[("<unknown>", best
        score)]`` (:data:`nestspk.gallery.UNKNOWN`) when none does. With AS-norm every enrolled
        speaker is scored and re-ranked on the normalised scale.
        """
        top_k = _positive_int(top_k, "top_k")
        thr = None if threshold is None else self._resolve_threshold(threshold)
        g = self.gallery  # one gallery throughout, even if load_gallery() swaps it meanwhile
        if len(g) == 0:
            raise GalleryError("the gallery is empty; enroll() speakers first")
        e = self.embed(audio, sample_rate)
        if self._cohort is None:
            scores, names = g.search(e, top_k)
        else:
            _, names = g.search(e, len(g))
            cents = np.stack([g.centroid(nm) for nm in names])
            cents /= np.linalg.norm(cents, axis=1, keepdims=True)
            scores = np.asarray(self.score_embeddings(np.repeat(e[None], len(names), 0), cents))
            order = np.argsort(-scores, kind="stable")[:top_k]
            scores, names = scores[order], [names[i] for i in order]
        from .gallery import apply_threshold

        return apply_threshold([(nm, float(sc)) for nm, sc in zip(names, scores)], thr)

    @property
    def speakers(self) -> list[str]:
        """Enrolled speaker names, in enrolment order."""
        return self.gallery.speakers

    def save_gallery(self, path: str | os.PathLike) -> None:
        """Write the gallery to ``path`` (.npz, no pickle) atomically; see :meth:`nestspk.gallery.Gallery.save`."""
        self.gallery.save(path)

    def load_gallery(self, path: str | os.PathLike) -> None:
        """Replace the gallery by the one saved at ``path``; GalleryError (gallery unchanged) for a missing,
        malformed or oversized file, or one made with another model."""
        self.gallery = Gallery.load(path, model=self.model_name, dim=self.embed_dim)


def _positive_int(v: Any, what: str) -> int:
    """``v`` as int when it is a positive integer (not bool); InputError otherwise."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or int(v) < 1:
        raise InputError(f"{what} must be a positive int; got {v!r:.80}")
    return int(v)
