"""The onnxruntime backend: :func:`make_session` and :class:`OnnxEmbedder` (numpy + onnxruntime, no torch).

An exported graph maps ``waveform`` (B, T) float32 at 16 kHz to ``embedding`` (B, D)
float32, L2-normalised (front end, encoder and normalisation all inside the graph;
:mod:`nestspk.export` writes it).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path


import numpy as np

from ..audio import TARGET_SAMPLE_RATE
from ..card import PRECISIONS, ModelCard
from ..errors import AudioError, WeightsError
from ..extras import MissingExtraError
from . import BackendError, parse_device

log = logging.getLogger(__name__)

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "MIN_SAMPLES", "MAX_SAMPLES", "OnnxBackendError", "OnnxEmbedder",
           "make_session"]

INPUT_NAME = "waveform"
OUTPUT_NAME = "embedding"
MIN_SAMPLES = 1600
"""Shortest waveform (samples at 16 kHz, 0.1 s) the exported graph is declared and checked for."""
MAX_SAMPLES = TARGET_SAMPLE_RATE * 3600


class OnnxBackendError(BackendError):
    """onnxruntime cannot run the model as asked (e.g. CUDA execution provider unavailable)."""


def import_onnxruntime():
    """The ``onnxruntime`` module (from the ``onnxruntime`` or the ``onnxruntime-gpu`` package)."""
    try:
        import onnxruntime
    except ImportError as e:
        raise MissingExtraError(
            f"the onnx backend needs onnxruntime, which is not installed ({type(e).__name__}: {e}); "
            "install it with: pip install onnxruntime (CPU, a default dependency of nestspk) or "
            "pip install 'nestspk[gpu]' (onnxruntime-gpu; uninstall onnxruntime first)") from e
    return onnxruntime


def make_session(path: str | os.PathLike, device: str = "cpu", intra_op_threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` of ``path`` on ``device`` (``cpu``, ``cuda`` or ``cuda:N``).

    ``intra_op_threads``: onnxruntime intra-op threads (None: onnxruntime's default). On CUDA the session
    must really run on the CUDA execution provider, else :class:`OnnxBackendError`; TF32 is off (the
    front end is a convolution, and TF32 would move the log of quiet mel bands by tenths).
    A file onnxruntime cannot load raises :class:`WeightsError`.
    """
    ort = import_onnxruntime()
    kind, index = parse_device(device)
    if intra_op_threads is not None and int(intra_op_threads) < 1:
        raise ValueError(f"intra_op_threads must be >= 1 or None, got {intra_op_threads!r}")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads is not None:
        so.intra_op_num_threads = int(intra_op_threads)
    cuda_options = {"use_tf32": "0"} if index is None else {"use_tf32": "0", "device_id": str(index)}
    want: list = ([("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"] if kind == "cuda"
                  else ["CPUExecutionProvider"])
    available = ort.get_available_providers()
    try:
        session = ort.InferenceSession(str(path), sess_options=so, providers=want)
    except Exception as e:  # onnxruntime raises its own pybind exception types
        if kind == "cuda":
            raise OnnxBackendError(f"{path}: onnxruntime CUDA execution provider is unavailable ({str(e)[:200]}); "
                                   f"available providers: {available}") from e
        raise WeightsError(f"{path}: onnxruntime cannot load the model ({str(e)[:300]})") from e
    providers = session.get_providers()
    if kind == "cuda" and (not providers or providers[0] != "CUDAExecutionProvider"):
        raise OnnxBackendError(
            f"onnxruntime CUDA execution provider is unavailable (session runs on {providers}; "
            f"available providers: {available}); install onnxruntime-gpu with a matching CUDA/cuDNN "
            "(pip install 'nestspk[gpu]') or use device='cpu'")
    return session


class OnnxEmbedder:
    """Speaker embeddings from a card's ONNX export with onnxruntime; needs neither torch nor a GPU.

    ``card``: a :class:`~nestspk.card.ModelCard` or anything :meth:`ModelCard.load` accepts. The export's
    file is sha256-checked against the card before onnxruntime loads it. ``device``: ``cpu``, ``cuda`` or
    ``cuda:N`` (CUDA execution provider required, else :class:`OnnxBackendError`). ``precision``: ``fp32``
    (matches torch to ~1e-7) or ``int8`` (quantised for CPU; its parity, metrics and operating points are
    in the card's ``exports.int8``).
    """

    backend = "onnx"

    def __init__(self, card: ModelCard | str | os.PathLike = "nested_4level", device: str = "cpu",
                 intra_op_threads: int | None = None, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        parse_device(device)
        self.card: ModelCard = card if isinstance(card, ModelCard) else ModelCard.load(card)
        path = self.card.verified(self.card.export(precision), f"{precision} ONNX file")
        session = make_session(path, device, intra_op_threads)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in outputs]:
            raise WeightsError(f"{path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, got "
                               f"{[i.name for i in inputs]} -> {[o.name for o in outputs]}")
        self.device = device
        self.precision = precision
        self.path: Path = path
        self.session = session
        self.providers: list[str] = session.get_providers()
        self.embed_dim: int = self.card.embed_dim
        log.info("OnnxEmbedder %s on %s (%s)", self.card.name, self.providers[0], path)

    def embed_batch(self, wav: np.ndarray) -> np.ndarray:
        """(B, T) float32 waveforms at 16 kHz -> (B, D) float32 L2-normalised embeddings.

        T must be at least :data:`MIN_SAMPLES`; other dtypes are cast to float32.
        """
        x = np.asarray(wav)
        if x.ndim != 2:
            raise AudioError(f"<array shape={x.shape} dtype={x.dtype}>: embed_batch expects (batch, samples)")
        if x.shape[0] == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        if x.shape[1] < MIN_SAMPLES:
            raise AudioError(f"<array shape={x.shape} dtype={x.dtype}>: need at least {MIN_SAMPLES} samples "
                             f"({MIN_SAMPLES / TARGET_SAMPLE_RATE:.2f} s at {TARGET_SAMPLE_RATE} Hz)")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise AudioError(f"<array shape={x.shape} dtype={x.dtype}>: contains NaN or Inf")
        out = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0].astype(np.float32, copy=False)
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            raise AudioError(f"<array shape={x.shape} dtype={x.dtype}>: item {int(np.argmax(bad))}: {self.path.name} "
                             "returned a non-finite embedding")
        return out

    def __repr__(self) -> str:
        return f"OnnxEmbedder({self.card.name!r}, precision={self.precision!r}, providers={self.providers})"


