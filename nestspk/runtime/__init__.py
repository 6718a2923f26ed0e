"""Runtimes: one :class:`Embedder` protocol, a torch and an onnxruntime implementation, one factory.

Every runtime maps a batch of equal-length waveforms ``(B, T)`` float32 at 16 kHz to
``(B, D)`` float32 L2-normalised embeddings and names its :class:`~nestspk.card.ModelCard`.
:func:`make_embedder` builds one from a card; :func:`embed_waveforms` is the one
length-bucketing loop for many 1-D waveforms.

``backend="auto"`` means onnxruntime on CPU (no torch needed) and torch on CUDA.
torch is optional: ``pip install 'nestspk[torch]'``.
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import NestspkError
from ..extras import MissingExtraError

if TYPE_CHECKING:  # pragma: no cover
    from ..card import ModelCard

log = logging.getLogger(__name__)

__all__ = ["Embedder", "TorchEmbedder", "OnnxEmbedder", "OnnxBackendError", "BackendError", "MissingExtraError",
           "BACKENDS", "DEFAULT_CPU_THREADS", "make_embedder", "make_session", "resolve_backend", "parse_device",
           "embed_waveforms", "cuda_driver_present"]

BACKENDS = ("auto", "torch", "onnx")


def _default_cpu_threads() -> int:
    """Intra-op CPU threads used when none are given: half the cores, at most 4, at least 1.

    Measured on a busy 2-core machine (README "CPU threads"): a second thread made clips slower and far less
    predictable under load, because it competes with the other processes for the same cores.
    """
    return max(1, min(4, (os.cpu_count() or 1) // 2))


DEFAULT_CPU_THREADS = _default_cpu_threads()
"""Intra-op threads of both CPU backends unless ``intra_op_threads`` says otherwise."""


class BackendError(NestspkError, RuntimeError):
    """A runtime cannot run as asked (e.g. CUDA asked for on a machine without a usable GPU)."""


@runtime_checkable
class Embedder(Protocol):
    """A speaker-embedding runtime."""

    backend: str
    embed_dim: int
    card: "ModelCard | None"

    def embed_batch(self, wav: np.ndarray) -> np.ndarray:
        """(B, T) float32 waveforms at 16 kHz -> (B, embed_dim) float32, rows L2-normalised."""
        ...


def parse_device(device: str) -> tuple[str, int | None]:
    """``"cpu"`` -> ("cpu", None), ``"cuda"`` -> ("cuda", None), ``"cuda:N"`` -> ("cuda", N); else ValueError."""
    if device == "cpu":
        return "cpu", None
    if device == "cuda":
        return "cuda", None
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        return "cuda", int(device[5:])
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def cuda_driver_present() -> bool:
    """True when the NVIDIA driver library loads (a GPU machine)."""
    import ctypes

    for name in ("libcuda.so.1", "nvcuda.dll"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def _torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_backend(backend: str, device: str) -> tuple[str, str]:
    """``(backend, device)`` with ``"auto"`` resolved: torch on CUDA, onnxruntime on CPU.

    ``device="auto"`` is CUDA when torch (or, for ``backend="onnx"``, onnxruntime-gpu with a driver) can use a
    GPU, else CPU. An explicit ``"cuda"`` without a GPU is kept (the runtime then raises :class:`BackendError`).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if device != "auto":
        parse_device(device)
    if device == "auto":
        if backend == "onnx":
            from .onnx_runtime import import_onnxruntime

            ort = import_onnxruntime()
            # onnxruntime-gpu lists CUDAExecutionProvider even on machines without a GPU: also require the driver.
            cuda = "CUDAExecutionProvider" in ort.get_available_providers() and cuda_driver_present()
        else:
            cuda = _torch_cuda_available()
        device = "cuda" if cuda else "cpu"
    if backend == "auto":
        backend = "torch" if device.startswith("cuda") else "onnx"
    return backend, device


_TORCH_OPTIONS = ("cuda_graphs", "max_graphs", "intra_op_threads", "pinned_staging")
_ONNX_OPTIONS = ("intra_op_threads", "precision")


def make_embedder(card: "ModelCard | str | os.PathLike" = "nested_4level", backend: str = "auto",
                  device: str = "auto", **options: Any) -> Embedder:
    """The :class:`Embedder` of ``card`` on ``backend`` (``auto``, ``torch``, ``onnx``) and ``device``.

    Options: ``intra_op_threads`` (both backends; default :data:`DEFAULT_CPU_THREADS` on CPU), ``cuda_graphs``,
    ``max_graphs`` and ``pinned_staging`` (torch), ``precision`` (onnx: ``fp32`` or ``int8``). With ``backend="auto"`` a card
    without an fp32 ONNX export runs on torch. Unknown options raise TypeError naming the known ones.
    """
    from ..card import ModelCard

    card = card if isinstance(card, ModelCard) else ModelCard.load(card)
    asked, asked_device = backend, device
    backend, device = resolve_backend(backend, device)
    if asked == "auto" and backend == "onnx" and "fp32" not in card.exports and "precision" not in options:
        log.info("%s: the card names no ONNX export; using the torch backend", card.name)
        backend = "torch"
    known = _TORCH_OPTIONS if backend == "torch" else _ONNX_OPTIONS
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"option(s) {unknown} do not apply to the {backend} backend; it takes {list(known)}")
    if options.get("intra_op_threads") is None and not device.startswith("cuda"):
        options["intra_op_threads"] = DEFAULT_CPU_THREADS
    if backend == "torch":
        from .torch_runtime import TorchEmbedder

        return TorchEmbedder(card, device=device, **options)
    from .onnx_runtime import OnnxBackendError, OnnxEmbedder

    try:
        return OnnxEmbedder(card, device=device, **options)
    except OnnxBackendError as e:
        if asked_device != "auto":
            raise
        log.warning("onnxruntime cannot use CUDA here (%s); running on CPU", str(e)[:200])
        if options.get("intra_op_threads") is None:
            options["intra_op_threads"] = DEFAULT_CPU_THREADS
        return OnnxEmbedder(card, device="cpu", **options)


def make_session(path: str | os.PathLike, device: str = "cpu", intra_op_threads: int | None = None):
    """An onnxruntime session on ``cpu``/``cuda``/``cuda:N``; see :func:`nestspk.runtime.onnx_runtime.make_session`."""
    from .onnx_runtime import make_session as _make

    return _make(path, device, intra_op_threads)


def embed_waveforms(embedder: Embedder, wavs: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """Embed 1-D 16 kHz waveforms, batching those of equal length (no padding); rows keep the input order.

    Returns ``(N, embed_dim)`` float32 L2-normalised rows; NestspkError if the runtime returns non-finite values.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = np.empty((len(wavs), embedder.embed_dim), dtype=np.float32)
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, w in enumerate(wavs):
        by_len[len(w)].append(i)
    for length in sorted(by_len):
        idx = by_len[length]
        for j in range(0, len(idx), batch_size):
            chunk = idx[j:j + batch_size]
            emb = np.asarray(embedder.embed_batch(np.stack([wavs[i] for i in chunk])), dtype=np.float32)
            if not np.isfinite(emb).all():
                raise NestspkError("the encoder produced a non-finite embedding; please report this input")
            out[chunk] = emb
    return out


def __getattr__(name: str) -> Any:
    """``TorchEmbedder`` / ``OnnxEmbedder`` / ``OnnxBackendError``, imported on first use (torch only when asked)."""
    if name == "TorchEmbedder":
        from .torch_runtime import TorchEmbedder

        return TorchEmbedder
    if name in ("OnnxEmbedder", "OnnxBackendError"):
        from . import onnx_runtime

        return getattr(onnx_runtime, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
