"""The seed's pre-fix nested variants, kept only to reproduce the collapse the research reported (training-only).

``model: nested_seed`` in a training config (``nestspk/configs/nested_seed_prefix*.yaml``) builds a
:class:`~nestspk.models.nested.NestedSpeakerNet` whose nested paths may use BatchNorm (``nested_norm: batch``) and
bilinear interpolation to align earlier levels (``align: interpolate``) instead of the shipped GroupNorm and
adaptive average pooling. The shipped models never use these; the library's registry does not know this name.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..features import FrontendConfig
from ..models import SpeakerModel, _with_overrides, build_model
from ..models.nested import NestedConfig, NestedProjection, NestedSpeakerNet

SEED_MODEL = "nested_seed"


class SeedNestedProjection(NestedProjection):
    """The nested path with the seed's options: ``nested_norm`` group or batch, ``align`` pool or interpolate."""

    def __init__(self, c_in: int, c_out: int, ratios: list[tuple[int, int]], cfg: NestedConfig):
        self.align = cfg.align
        super().__init__(c_in, c_out, ratios, cfg)

    def make_norm(self, cfg: NestedConfig, channels: int) -> nn.Module:
        if cfg.nested_norm == "batch":
            return nn.BatchNorm2d(channels)
        return super().make_norm(cfg, channels)

    def aligned(self, earlier: list[torch.Tensor], like: torch.Tensor, cache=None) -> torch.Tensor:
        if self.align != "interpolate":
            return super().aligned(earlier, like, cache)
        return torch.cat([F.interpolate(f, size=like.shape[2:], mode="bilinear", align_corners=False)
                          for f in earlier], dim=1)


class SeedNestedSpeakerNet(NestedSpeakerNet):
    """:class:`NestedSpeakerNet` that also builds the seed's pre-fix options."""

    projection = SeedNestedProjection

    def check_config(self, cfg: NestedConfig) -> None:
        if cfg.nested_norm not in ("group", "batch"):
            raise ValueError(f"unknown nested_norm {cfg.nested_norm!r}; choose 'group' or 'batch'")
        if cfg.align not in ("adaptive_pool", "interpolate"):
            raise ValueError(f"unknown align {cfg.align!r}; choose 'adaptive_pool' or 'interpolate'")
        if cfg.nested_weight not in ("learnable", "fixed"):
            raise ValueError(f"unknown nested_weight {cfg.nested_weight!r}")


def build_training_model(name: str, options: dict | None = None) -> SpeakerModel:
    """:func:`nestspk.models.build_model`, plus ``nested_seed`` (the seed's variants) for training runs."""
    if name != SEED_MODEL:
        return build_model(name, options)
    cfg = _with_overrides(NestedConfig(), options)
    return SpeakerModel("nested", FrontendConfig(n_mels=cfg.n_mels), SeedNestedSpeakerNet(cfg))
