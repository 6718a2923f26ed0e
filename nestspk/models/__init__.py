"""Encoders and the explicit model registry.

``build_model(name, overrides)`` returns a :class:`SpeakerModel` (front end + encoder).
"""
from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..features import FrontendConfig, LogMelFrontend
from .nested import NestedConfig, NestedSpeakerNet
from .resnet_se import ResNetSE34L, ResNetSEConfig


class SpeakerModel(nn.Module):
    """Waveform (B, T) float32, 16 kHz -> embedding (B, D).

    ``forward`` returns the raw embedding; ``embed`` returns it L2-normalised.
    """

    def __init__(self, name: str, frontend: FrontendConfig, encoder: nn.Module):
        super().__init__()
        self.name = name
        self.frontend_cfg = frontend
        self.frontend = LogMelFrontend(frontend)
        self.encoder = encoder

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.frontend(wav))

    def embed(self, wav: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward(wav), dim=-1)

    @property
    def embed_dim(self) -> int:
        return self.encoder.cfg.embed_dim


def _with_overrides(cfg: Any, overrides: dict | None) -> Any:
    if not overrides:
        return cfg
    known = {f.name for f in fields(cfg)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown model option(s) {sorted(unknown)} for {type(cfg).__name__}; known: {sorted(known)}")
    fixed = {}
    for k, v in overrides.items():
        if isinstance(v, list):  # YAML lists -> tuples (nested for strides)
            v = tuple(tuple(e) if isinstance(e, list) else e for e in v)
        fixed[k] = v
    return replace(cfg, **fixed)


def _nested(overrides: dict | None) -> SpeakerModel:
    cfg = _with_overrides(NestedConfig(), overrides)
    return SpeakerModel("nested", FrontendConfig(n_mels=cfg.n_mels), NestedSpeakerNet(cfg))


def _resnet(overrides: dict | None) -> SpeakerModel:
    cfg = _with_overrides(ResNetSEConfig(), overrides)
    return SpeakerModel("resnetse34l", FrontendConfig(n_mels=cfg.n_mels), ResNetSE34L(cfg))


MODELS: dict[str, Callable[[dict | None], SpeakerModel]] = {
    "nested": _nested,
    "resnetse34l": _resnet,
}


def build_model(name: str, overrides: dict | None = None) -> SpeakerModel:
    """Build an untrained model by registry name ('nested' or 'resnetse34l')."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS)}")
    return MODELS[name](overrides)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["SpeakerModel", "build_model", "count_parameters", "MODELS", "NestedConfig", "ResNetSEConfig"]
