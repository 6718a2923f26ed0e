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
import os
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .audio import SILENCE_PEAK, TARGET_SAMPLE_RATE, audio_info, iter_windows, load_audio
from .checkpoints import DEFAULT_MODEL
from .errors import AudioError, GalleryError, NestspkError

log = logging.getLogger(__name__)

LONG_AUDIO_S = 20.0
WINDOW_S = 10.0
HOP_S = 5.0
LONG_AUDIO_BATCH = 8  # windows per forward pass when streaming a long file (bounds peak memory)

AudioInput = Any  # str | os.PathLike | np.ndarray | torch.Tensor


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
        self._gallery: dict[str, np.ndarray] = {}
        self._gallery_counts: dict[str, int] = {}
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
        embs = self._runtime.embed_batch(np.stack(windows))
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
        cal = self.card.get("calibration")
        llr = None
        if cal and cal.get("raw_or_asnorm", "raw") == ("asnorm" if self._cohort is not None else "raw"):
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
