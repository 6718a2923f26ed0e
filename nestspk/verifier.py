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
import os
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from .audio import (HOP_S, LONG_AUDIO_S, WINDOW_S, AudioSource, SpeechCheck,  # noqa: F401 (re-exported)
                    describe_input, open_audio)
from .checkpoints import DEFAULT_MODEL
from .errors import AudioError, GalleryError, InputError, NestspkError
from .gallery import UNKNOWN, Gallery  # noqa: F401 (UNKNOWN re-exported)

log = logging.getLogger(__name__)

LONG_AUDIO_BATCH = 8  # windows per forward pass when streaming a long file (bounds peak memory)

AudioInput = Any  # str | os.PathLike | bytes | BinaryIO | np.ndarray | torch.Tensor
_SINGLE_INPUT = (str, bytes, bytearray, memoryview, os.PathLike, np.ndarray)


@dataclass(frozen=True)
class VerificationResult:
    """Cosine ``score`` in [-1, 1]; ``same_speaker`` is ``score >= threshold``.

    ``llr`` is the calibrated log-likelihood ratio when the model card carries a calibration.
    """

    score: float
    same_speaker: bool
    threshold: float
    llr: float | None = None


class TorchEmbedder:
    """PyTorch runtime: (B, T) float32 16 kHz numpy -> (B, D) L2-normalised numpy.

    On CUDA, a shape seen for the second time is captured into a CUDA graph and
    replayed from then on (``cuda_graphs=True``): the same fp32 kernels without
    the per-kernel launch cost, which dominates at batch 1. Up to
    ``max_graphs`` shapes are kept (least recently used dropped).
    """

    def __init__(self, model: str | os.PathLike = DEFAULT_MODEL, device: str = "cpu",
                 cuda_graphs: bool = True, max_graphs: int = 8):
        import torch

        from .checkpoints import load_model

        self.torch = torch
        self.device = torch.device(device)
        self.model, self.card = load_model(model, device)
        self.use_graphs = cuda_graphs and self.device.type == "cuda"
        self.max_graphs = max_graphs
        self._graphs: dict[tuple[int, int], tuple[Any, Any, Any]] = {}
        self._seen: set[tuple[int, int]] = set()
        self._graph_lock = threading.Lock()

    def _graph_for(self, shape: tuple[int, int]):
        torch = self.torch
        if shape in self._graphs:
            self._graphs[shape] = self._graphs.pop(shape)  # most recently used last
            return self._graphs[shape]
        if shape not in self._seen:
            self._seen.add(shape)
            return None
        static_in = torch.zeros(shape, device=self.device)
        static_in.normal_(std=0.1)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(2):
                self.model.embed(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            static_out = self.model.embed(static_in)
        if len(self._graphs) >= self.max_graphs:
            self._graphs.pop(next(iter(self._graphs)))
        self._graphs[shape] = (graph, static_in, static_out)
        return self._graphs[shape]

    def embed_batch(self, wav: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
        if self.use_graphs:
            with self._graph_lock:
                entry = self._graph_for(tuple(x.shape))
                if entry is not None:
                    graph, static_in, static_out = entry
                    static_in.copy_(x.to(self.device, non_blocking=True))
                    graph.replay()
                    return static_out.float().cpu().numpy()
        with torch.inference_mode():
            return self.model.embed(x.to(self.device)).float().cpu().numpy()


def _resolve_device(device: str, backend: str) -> str:
    if device != "auto":
        if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
        return device
    if backend == "torch":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    import onnxruntime as ort

    # onnxruntime-gpu lists CUDAExecutionProvider even on machines without a GPU: also require the driver.
    return "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() and _cuda_driver_present() else "cpu"


def _cuda_driver_present() -> bool:
    """True when the NVIDIA driver library loads (a GPU machine)."""
    import ctypes

    for name in ("libcuda.so.1", "nvcuda.dll"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


class Verifier:
    """Speaker verification with a trained encoder.

    Args:
        model: shipped model name (``"nested"``/``"nested_4level"``, ``"resnetse34l"``/``"resnetse34l_asp"``)
            or a path to a model card ``.json`` (weights file named in it, next to it).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        backend: ``"torch"`` or ``"onnx"`` (onnxruntime; needs no torch).
        threshold: decision threshold: a number on the score scale, or an operating point measured on the
            dev trials and stored in the card: ``"eer"`` (default), ``"far_0.01"`` or ``"far_0.001"``
            (false-accept rate 1% / 0.1%).
        score_norm: ``None`` or ``"asnorm"`` (adaptive s-norm with the cohort shipped next to the weights).
        intra_op_threads: onnxruntime intra-op threads (onnx backend only).
        precision: ``"fp32"`` (default, exact) or ``"int8"``: the quantised ONNX file for CPU (onnx backend only;
            about 1.5x faster on 2 CPU threads; its cosine to fp32 and EER are in the card's ``onnx_int8_*`` keys).
    """

    def __init__(self, model: str | os.PathLike = "nested", device: str = "auto", backend: str = "torch",
                 threshold: float | str | None = None, score_norm: str | None = None,
                 intra_op_threads: int | None = None, precision: str = "fp32"):
        if backend not in ("torch", "onnx"):
            raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
        if precision not in ("fp32", "int8"):
            raise ValueError(f"precision must be 'fp32' or 'int8', got {precision!r}")
        if precision == "int8" and backend != "onnx":
            raise ValueError("precision='int8' needs backend='onnx' (the int8 model is an ONNX Runtime file)")
        if score_norm not in (None, "asnorm"):
            raise ValueError(f"score_norm must be None or 'asnorm', got {score_norm!r}")
        self.backend = backend
        self.precision = precision
        self.device = _resolve_device(device, backend)
        if backend == "torch":
            self._runtime = TorchEmbedder(model, self.device)
        else:
            from .onnx import OnnxBackendError, OnnxEmbedder

            try:
                self._runtime = OnnxEmbedder(model, device=self.device, intra_op_threads=intra_op_threads,
                                             precision=precision)
            except OnnxBackendError as e:
                if device != "auto":
                    raise
                log.warning("onnxruntime cannot use CUDA here (%s); running on CPU", str(e)[:200])
                self.device = "cpu"
                self._runtime = OnnxEmbedder(model, device="cpu", intra_op_threads=intra_op_threads,
                                             precision=precision)
        self.card: dict = self._runtime.card
        self.model_name: str = self.card["name"]
        self.embed_dim: int = int(self.card["embed_dim"])
        self.score_norm = score_norm
        self._cohort = None
        if score_norm == "asnorm":
            from .scoring import Cohort

            self._cohort = Cohort.from_card(self.card)
        self.threshold = self._resolve_threshold(threshold)
        self.gallery = Gallery(self.embed_dim, self.model_name)
        self.speech_check = True  # reject inputs without speech-like content (see nestspk.audio.SpeechCheck)
        self._lock = threading.Lock()

    def _resolve_threshold(self, threshold: float | str | None) -> float:
        scale = "asnorm" if self._cohort is not None else "raw"
        if threshold is None:
            if scale == "raw":
                return float(self.card["threshold"])
            threshold = "eer"
        if isinstance(threshold, str):
            points = self.card.get("operating_points", {}).get(scale, {})
            if threshold not in points:
                raise ValueError(f"unknown operating point {threshold!r} for {scale} scores of {self.model_name}; "
                                 f"the card has {sorted(points)} (or pass a number)")
            return float(points[threshold])
        return float(threshold)

    def __repr__(self) -> str:
        extra = f", precision={self.precision!r}" if self.precision != "fp32" else ""
        return f"Verifier(model={self.model_name!r}, backend={self.backend!r}, device={self.device!r}{extra})"

    # -- embedding -----------------------------------------------------------------
    def _run(self, windows: list[np.ndarray]) -> np.ndarray:
        embs = self._runtime.embed_batch(np.stack(windows))
        if not np.isfinite(embs).all():
            raise NestspkError("the encoder produced a non-finite embedding; please report this input")
        return embs.astype(np.float64)

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
        cal = self.card.get("calibration")
        llr = None
        if cal and cal.get("raw_or_asnorm", "raw") == ("asnorm" if self._cohort is not None else "raw"):
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
