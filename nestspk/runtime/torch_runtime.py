"""The PyTorch backend: :class:`TorchEmbedder` (optional CUDA-graph replay on CUDA)."""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any

import numpy as np

from ..card import ModelCard
from ..extras import require
from . import BackendError, parse_device

log = logging.getLogger(__name__)

__all__ = ["TorchEmbedder", "PINNED_MIN_BYTES"]

PINNED_MIN_BYTES = 1 << 20
"""Batches from this size (bytes) are copied to a CUDA device through a page-locked staging buffer."""


def _torch_device(device: str):
    """A ``torch.device`` for ``cpu``/``cuda``/``cuda:N``; :class:`BackendError` when CUDA cannot run here."""
    torch = require("torch", "torch", "the torch backend")
    kind, index = parse_device(device)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise BackendError(f"device {device!r} asked for, but torch sees no usable CUDA GPU here "
                               f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); use device='cpu'")
        if index is not None and index >= torch.cuda.device_count():
            raise BackendError(f"device {device!r} asked for, but torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    return torch.device(device)


class TorchEmbedder:
    """PyTorch runtime: (B, T) float32 16 kHz numpy -> (B, D) float32 L2-normalised numpy.

    ``card``: a :class:`~nestspk.card.ModelCard` or anything :meth:`ModelCard.load` accepts; or pass an
    already built ``model`` (e.g. one being trained) with :meth:`from_model`.
    ``cuda_graphs``: on CUDA, a shape seen for the second time is captured into a CUDA graph and replayed
    from then on: the same fp32 kernels without the per-kernel launch cost, which dominates at batch 1.
    Up to ``max_graphs`` shapes are kept (least recently used dropped).
    ``pinned_staging``: on CUDA, batches of at least :data:`PINNED_MIN_BYTES` are copied to the GPU through a
    reused page-locked buffer (calls on one embedder are then serialised; results are unchanged).
    ``intra_op_threads``: ``torch.set_num_threads`` on CPU (process-wide in PyTorch; None leaves it).
    ``cpu_transform``: on CPU, weights loaded from a card get :func:`nestspk.models.folding.cpu_inference`
    (BatchNorms folded into their convolutions, channels-last; same outputs up to float32 rounding; nested 1.24x
    faster).
    """

    backend = "torch"

    def __init__(self, card: ModelCard | str | os.PathLike = "nested_4level", device: str = "cpu",
                 cuda_graphs: bool = True, max_graphs: int = 8, intra_op_threads: int | None = None,
                 model: Any = None, pinned_staging: bool = True, cpu_transform: bool = True):
        torch = require("torch", "torch", "the torch backend")
        self.torch = torch
        self.device = _torch_device(device)
        if intra_op_threads is not None:
            if int(intra_op_threads) < 1:
                raise ValueError(f"intra_op_threads must be >= 1 or None, got {intra_op_threads!r}")
            if self.device.type == "cpu" and torch.get_num_threads() != int(intra_op_threads):
                log.info("torch.set_num_threads(%d) (process-wide)", int(intra_op_threads))
                torch.set_num_threads(int(intra_op_threads))
        if model is None:
            from ..checkpoints import load_model

            self.model, self.card = load_model(card, str(self.device))
            if self.device.type == "cpu" and cpu_transform:
                from ..models.folding import cpu_inference

                cpu_inference(self.model)
        else:
            self.model = model.to(self.device).eval()
            self.card = card if isinstance(card, ModelCard) or card is None else ModelCard.load(card)
        self.embed_dim: int = int(self.model.embed_dim)
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be >= 1, got {max_graphs}")
        self.cuda_graphs = bool(cuda_graphs) and self.device.type == "cuda"
        self.max_graphs = max_graphs
        self._graphs: dict[tuple[int, int], tuple[Any, Any, Any]] = {}
        self._seen: set[tuple[int, int]] = set()
        self._graph_lock = threading.Lock()
        self._call_lock = threading.Lock() if self.device.type == "cuda" else contextlib.nullcontext()
        self.pinned_staging = bool(pinned_staging)
        self._pinned = None  # page-locked staging buffer for host-to-device copies (CUDA)

    @classmethod
    def from_model(cls, model: Any, device: str = "cpu", card: ModelCard | None = None,
                   cuda_graphs: bool = False) -> "TorchEmbedder":
        """Wrap an in-memory :class:`~nestspk.models.SpeakerModel` (put in eval mode on ``device``; as built, without
        the fused CUDA kernel that :func:`nestspk.models.fused.apply` enables and loaded shipped weights have)."""
        return cls(card, device=device, cuda_graphs=cuda_graphs, model=model)

    @property
    def use_graphs(self) -> bool:
        """Alias of ``cuda_graphs`` (the attribute's earlier name)."""
        return self.cuda_graphs

    @use_graphs.setter
    def use_graphs(self, value: bool) -> None:
        self.cuda_graphs = bool(value) and self.device.type == "cuda"

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
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.device(self.device), torch.cuda.stream(side), torch.inference_mode():
            for _ in range(2):
                self.model.embed(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(self.device), torch.inference_mode(), torch.cuda.graph(graph):
            static_out = self.model.embed(static_in)
        if len(self._graphs) >= self.max_graphs:
            self._graphs.pop(next(iter(self._graphs)))
        self._graphs[shape] = (graph, static_in, static_out)
        return self._graphs[shape]

    def _to_device(self, x):
        """``x`` (CPU) on the model's device. On CUDA a batch of at least :data:`PINNED_MIN_BYTES` goes through a
        reused page-locked buffer: a copy from pageable memory is staged by the driver in small pieces and runs at
        a fraction of the bus speed. The caller reads the result back (a synchronising copy) before the next call
        reuses the buffer."""
        if self.device.type != "cuda":
            return x
        if not self.pinned_staging or x.numel() * x.element_size() < PINNED_MIN_BYTES:
            return x.to(self.device)
        with self._graph_lock, self.torch.inference_mode():  # the buffer is only ever written in inference mode
            buf = self._pinned
            if buf is None or buf.numel() < x.numel():
                buf = self._pinned = self.torch.empty(x.numel(), dtype=x.dtype, pin_memory=True)
            staged = buf[:x.numel()].view(x.shape)
            staged.copy_(x)
            return staged.to(self.device, non_blocking=True)

    def embed_batch(self, wav: np.ndarray) -> np.ndarray:
        """(B, T) float32 waveforms at 16 kHz -> (B, D) float32 L2-normalised embeddings."""
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
        with self._call_lock:  # on CUDA one call at a time: no capture overlaps another call; one staging buffer
            if self.cuda_graphs:
                with self._graph_lock:
                    entry = self._graph_for(tuple(x.shape))
                if entry is not None:
                    graph, static_in, static_out = entry
                    static_in.copy_(self._to_device(x))
                    graph.replay()
                    return static_out.float().cpu().numpy()
            with torch.inference_mode():
                return self.model.embed(self._to_device(x)).float().cpu().numpy()

    def __repr__(self) -> str:
        name = self.card.name if self.card is not None else type(self.model).__name__
        return f"TorchEmbedder({name!r}, device={str(self.device)!r}, cuda_graphs={self.cuda_graphs})"
