"""The embedders the benchmark times: the objects users build, never a harness-private runtime.

Every benchmark row times ``embedder.embed_batch(numpy (B, T) float32) -> numpy (B, D)``, the call
:class:`nestspk.Verifier` makes, host->device copy and device->host copy included.

Where they come from:
- ``nestspk.runtime.make_embedder(card, backend, device, **options)`` when it exists (the runtime
  redesign); ``cuda_graphs`` is its public option, precision / layout are passed only when asked.
- Until then: the Verifier's own ``nestspk.verifier.TorchEmbedder`` (CUDA-graph capture and replay
  included) and ``nestspk.onnx.OnnxEmbedder``; peers and random-weight models go through
  :class:`ModuleEmbedder`, a TorchEmbedder built around a given module, so they are captured and
  replayed by the same code as nested.

Modes (``+``-combined): ``fp32`` (eager), ``cuda_graph``, ``fp16`` / ``bf16`` (autocast),
``channels_last``, ``compile`` (``torch.compile`` of ``embed``; combined with ``cuda_graph`` the
compiled kernels are captured by the runtime's graph code). ONNX rows: mode ``fp32`` or ``int8``
(the card's shipped files).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

NESTSPK_MODELS = ("nested", "resnetse34l")
MODIFIERS = ("cuda_graph", "compile", "channels_last", "bf16", "fp16")  # canonical spelling order


class Embedder(Protocol):
    embed_dim: int

    def embed_batch(self, wav: np.ndarray) -> np.ndarray: ...


def parse_mode(mode: str) -> frozenset[str]:
    """``"cuda_graph+fp16"`` -> ``{"cuda_graph", "fp16"}``; ``"fp32"`` / ``"eager"`` -> empty set."""
    parts = {p.strip() for p in mode.split("+") if p.strip()} - {"fp32", "eager"}
    unknown = parts - set(MODIFIERS)
    if unknown:
        raise ValueError(f"unknown mode component(s) {sorted(unknown)} in {mode!r}; "
                         f"known: fp32, {', '.join(MODIFIERS)} (combine with '+')")
    if {"bf16", "fp16"} <= parts:
        raise ValueError(f"mode {mode!r}: choose one of bf16 / fp16")
    return frozenset(parts)


def canonical_mode(mode: str) -> str:
    """A stable spelling of a mode: components in MODIFIERS order, ``fp32`` when plain."""
    if mode in ("int8",):
        return mode
    parts = parse_mode(mode)
    return "+".join(m for m in MODIFIERS if m in parts) or "fp32"


def _runtime_make_embedder():
    """``nestspk.runtime.make_embedder`` once the runtime redesign has landed, else None."""
    try:
        from nestspk.runtime import make_embedder
    except ImportError:
        return None
    return make_embedder


def _torch_embedder_class():
    """The Verifier's torch embedder class (runtime package first, then today's verifier module)."""
    try:
        from nestspk.runtime import TorchEmbedder  # type: ignore[attr-defined]
    except ImportError:
        from nestspk.verifier import TorchEmbedder
    return TorchEmbedder


class _Wrapped:
    """A module stand-in for a TorchEmbedder: ``to`` / ``eval`` pass through, ``embed_dim`` forwarded."""

    model: Any

    @property
    def embed_dim(self) -> int:
        return self.model.embed_dim

    def to(self, *args: Any, **kwargs: Any) -> "_Wrapped":
        self.model = self.model.to(*args, **kwargs)
        return self

    def eval(self) -> "_Wrapped":
        self.model.eval()
        return self


class _PrecisionModel(_Wrapped):
    """``embed`` of a module under autocast (``fp16`` / ``bf16``), output cast back to float32."""

    def __init__(self, model: Any, dtype: Any):
        self.model, self.dtype = model, dtype

    def embed(self, wav: Any) -> Any:
        import torch

        with torch.autocast(device_type=wav.device.type, dtype=self.dtype, cache_enabled=False):
            return self.model.embed(wav).float()


class _CompiledModel(_Wrapped):
    """``embed`` through ``torch.compile`` (default mode: the runtime's graph code does the capture)."""

    def __init__(self, model: Any):
        import torch

        self.model = model
        self.embed = torch.compile(model.embed, dynamic=False)


def _transform(model: Any, parts: frozenset[str]) -> Any:
    """Apply layout, precision and compile components to a loaded module (the object TorchEmbedder calls)."""
    import torch

    if "channels_last" in parts:
        model = model.to(memory_format=torch.channels_last)
    if "fp16" in parts or "bf16" in parts:
        model = _PrecisionModel(model, torch.float16 if "fp16" in parts else torch.bfloat16)
    if "compile" in parts:
        model = _CompiledModel(model)
    return model


def module_embedder(module: Any, device: str, cuda_graphs: bool, max_graphs: int = 8) -> Any:
    """A TorchEmbedder around an already built module (peers, random weights): same capture/replay code."""
    import threading

    import torch

    cls = _torch_embedder_class()
    if hasattr(cls, "from_model"):  # the runtime package's TorchEmbedder
        return cls.from_model(module, device=device, cuda_graphs=cuda_graphs)
    emb = cls.__new__(cls)  # today's nestspk.verifier.TorchEmbedder: same attributes as its __init__ sets
    emb.torch = torch
    emb.device = torch.device(device)
    emb.model = module.to(emb.device).eval() if hasattr(module, "to") and hasattr(module, "eval") else module
    emb.card = {"name": getattr(module, "name", type(module).__name__)}
    emb.use_graphs = cuda_graphs and emb.device.type == "cuda"
    emb.max_graphs = max_graphs
    emb._graphs, emb._seen, emb._graph_lock = {}, set(), threading.Lock()
    emb.embed_dim = getattr(module, "embed_dim", None)
    return emb


def build_embedder(model: str, backend: str, device: str, mode: str, *, threads: int | None = None,
                   module: Any = None) -> Any:
    """The embedder for one benchmark row.

    ``model``: a shipped nestspk model name ('nested', 'resnetse34l') or any label when ``module``
    (an ``nn.Module`` with ``embed``) is given. ``backend``: 'torch' or 'onnx'.
    """
    if backend == "onnx":
        if module is not None:
            raise ValueError(f"{model}: ONNX rows need a shipped card (no export of random/peer modules)")
        make = _runtime_make_embedder()
        if make is not None:
            return make(model, backend="onnx", device=device, intra_op_threads=threads, precision=mode)
        from nestspk.onnx import OnnxEmbedder

        return OnnxEmbedder(model, device=device, intra_op_threads=threads, precision=mode)
    if backend != "torch":
        raise ValueError(f"unknown backend {backend!r}")
    parts = parse_mode(mode)
    if "cuda_graph" in parts and not device.startswith("cuda"):
        raise ValueError(f"mode {mode!r} needs a CUDA device")
    graphs = "cuda_graph" in parts
    extra = parts - {"cuda_graph"}
    if module is None:
        make = _runtime_make_embedder()
        if make is not None:  # the harness sets CPU threads itself: pass them so make_embedder keeps them
            import torch

            cpu_threads = None if device.startswith("cuda") else (threads or torch.get_num_threads())
            emb = make(model, backend="torch", device=device, cuda_graphs=graphs, intra_op_threads=cpu_threads)
        else:
            emb = _torch_embedder_class()(model, device=device, cuda_graphs=graphs)
        if extra:
            emb.model = _transform(emb.model, extra)
        return emb
    return module_embedder(_transform(module.to(device).eval(), extra), device, graphs)


@contextlib.contextmanager
def threads_set(n: int | None):
    """Temporarily set torch's intra-op threads (no-op for None)."""
    if n is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
