"""NestedSpeakerNet: a 4-level encoder whose levels also receive earlier levels' outputs.

Level ``k`` (for ``k`` in ``nested_levels``) gets the outputs of levels ``1..k-1``,
each aligned to its own (freq, time) grid, concatenated, projected
(1x1 conv -> norm -> ReLU -> Dropout2d) and added as ``x + weight * prev``
where ``weight = sigmoid(w)`` with ``w`` learnable (or a fixed number).

Alignment: strides are fixed, so the ratio between two levels' grids is a known
integer and ``F.adaptive_avg_pool2d`` equals ``F.avg_pool2d(kernel=ratio)``.
The encoder crops its input to a multiple of its total time stride so this holds
for every input length. The seed's pre-fix variants (BatchNorm on the nested paths,
bilinear-interpolation alignment), kept to reproduce the old collapse, are
training-only: :mod:`nestspk.train.seed_variants`.

Multi-scale fusion: each level's output is averaged over frequency, pooled to
the last level's time grid, concatenated and mixed by a 1x1 conv before pooling.
Input: normalised log-mel (B, n_mels, frames); output (B, embed_dim), not L2-normalised.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import fused
from .pooling import make_pooling
from .resnet_se import SEBasicBlock


@dataclass
class NestedConfig:
    n_mels: int = 80
    channels: tuple[int, ...] = (16, 32, 64, 128)
    blocks: tuple[int, ...] = (2, 3, 4, 2)
    # (freq, time) stride of each level's first block; the stem adds (2, 1).
    strides: tuple[tuple[int, int], ...] = ((2, 1), (2, 2), (2, 2), (1, 1))
    nested_levels: tuple[int, ...] = (2, 3, 4)  # 1-based levels that receive earlier outputs
    nested_norm: str = "group"  # "group"; "batch" (seed pre-fix): nestspk.train.seed_variants only
    align: str = "adaptive_pool"  # "adaptive_pool"; "interpolate" (seed pre-fix): nestspk.train.seed_variants only
    nested_weight: str = "learnable"  # "learnable" sigmoid(w) or "fixed"
    nested_weight_init: float = 0.3  # w at init; sigmoid(0.3) = 0.574
    fixed_weight: float = 0.5
    dropout: float = 0.1
    fusion: bool = True
    fusion_dim: int = 256
    pooling: str = "asp"
    embed_dim: int = 512

    def to_dict(self) -> dict:
        return asdict(self)


class NestedProjection(nn.Module):
    """Aligns earlier levels to (H, W), concatenates, 1x1 conv -> GroupNorm -> ReLU -> Dropout2d."""

    def __init__(self, c_in: int, c_out: int, ratios: list[tuple[int, int]], cfg: NestedConfig):
        super().__init__()
        self.ratios = ratios
        self.proj = nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, bias=False),
            self.make_norm(cfg, c_out),
            nn.ReLU(inplace=True),
            nn.Dropout2d(cfg.dropout),
        )

    def make_norm(self, cfg: NestedConfig, channels: int) -> nn.Module:
        return nn.GroupNorm(8, channels)

    def aligned(self, earlier: list[torch.Tensor], like: torch.Tensor,
                cache: dict[tuple[int, int, int], torch.Tensor] | None = None) -> torch.Tensor:
        """Earlier levels pooled to ``like``'s (H, W) grid and concatenated on channels.

        ``cache`` (optional) maps (source level, rh, rw) to an already pooled tensor: levels with
        the same grid (level 4 has stride 1) pool each earlier output only once, and a coarser
        pool starts from a cached finer one (mean of 2x2 means of a 2x2-pooled map == the 4x4 mean;
        floor sizes agree too), which reads 4x less of level 1's large map.
        """
        aligned = []
        for j, (feat, (rh, rw)) in enumerate(zip(earlier, self.ratios)):
            if rh != 1 or rw != 1:
                feat = _pool_from_cache(feat, j, rh, rw, cache)
            aligned.append(feat)
        return torch.cat(aligned, dim=1)

    def forward(self, earlier: list[torch.Tensor], like: torch.Tensor,
                cache: dict[tuple[int, int, int], torch.Tensor] | None = None) -> torch.Tensor:
        return self.proj(self.aligned(earlier, like, cache))

    def after_conv(self, y: torch.Tensor) -> torch.Tensor:
        """The layers after the 1x1 conv (norm -> ReLU -> Dropout2d) applied to its output ``y``."""
        for layer in list(self.proj)[1:]:
            y = layer(y)
        return y


def _pool_from_cache(feat: torch.Tensor, source: int, rh: int, rw: int,
                     cache: dict[tuple[int, int, int], torch.Tensor] | None) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(feat, (H // rh, W // rw))`` for integer ratios, reusing ``cache``."""
    if cache is None:
        return F.avg_pool2d(feat, kernel_size=(rh, rw))
    key = (source, rh, rw)
    if key not in cache:
        finer = [(ah, aw) for (j, ah, aw) in cache if j == source and rh % ah == 0 and rw % aw == 0]
        if finer:
            ah, aw = max(finer, key=lambda r: r[0] * r[1])
            cache[key] = F.avg_pool2d(cache[(source, ah, aw)], kernel_size=(rh // ah, rw // aw))
        else:
            cache[key] = F.avg_pool2d(feat, kernel_size=(rh, rw))
    return cache[key]


class NestedSpeakerNet(nn.Module):
    """Normalised log-mel (B, n_mels, frames) -> embedding (B, embed_dim)."""

    projection = NestedProjection
    """The nested-path module class (the training-only seed variants substitute their own)."""

    def check_config(self, cfg: NestedConfig) -> None:
        """ValueError for options this architecture does not build."""
        if cfg.nested_norm != "group" or cfg.align != "adaptive_pool":
            raise ValueError(
                f"nested_norm={cfg.nested_norm!r}, align={cfg.align!r}: the shipped architecture uses 'group' and "
                "'adaptive_pool'; the seed's pre-fix variants ('batch', 'interpolate') are training-only: "
                "model 'nested_seed' in nestspk-train (nestspk.train.seed_variants)")
        if cfg.nested_weight not in ("learnable", "fixed"):
            raise ValueError(f"unknown nested_weight {cfg.nested_weight!r}")

    def __init__(self, cfg: NestedConfig):
        super().__init__()
        self.check_config(cfg)
        self.cfg = cfg
        ch = cfg.channels
        self.stem = nn.Sequential(
            nn.Conv2d(1, ch[0], 3, stride=(2, 1), padding=1, bias=False), nn.BatchNorm2d(ch[0]), nn.ReLU(inplace=True)
        )
        # cumulative (freq, time) stride at each level output, relative to the stem output
        cum = []
        fh, fw = 1, 1
        for s in cfg.strides:
            fh, fw = fh * s[0], fw * s[1]
            cum.append((fh, fw))
        self.time_stride = cum[-1][1]
        self.freq_out = cfg.n_mels // 2 // cum[-1][0]
        if cfg.n_mels % (2 * cum[-1][0]):
            raise ValueError("n_mels must be divisible by the total frequency stride")

        self.levels = nn.ModuleList()
        c_in = ch[0]
        for c, n, s in zip(ch, cfg.blocks, cfg.strides):
            blocks = [SEBasicBlock(c_in, c, tuple(s))] + [SEBasicBlock(c, c) for _ in range(n - 1)]
            self.levels.append(nn.Sequential(*blocks))
            c_in = c

        self.nested = nn.ModuleDict()
        self.nested_w = nn.ParameterDict()
        for k in cfg.nested_levels:
            if not 2 <= k <= len(ch):
                raise ValueError(f"nested level {k} out of range 2..{len(ch)}")
            i = k - 1
            ratios = [(cum[i][0] // cum[j][0], cum[i][1] // cum[j][1]) for j in range(i)]
            self.nested[str(k)] = self.projection(sum(ch[:i]), ch[i], ratios, cfg)
            if cfg.nested_weight == "learnable":
                self.nested_w[str(k)] = nn.Parameter(torch.tensor(float(cfg.nested_weight_init)))

        if cfg.fusion:
            self.fusion_ratios = [cum[-1][1] // c[1] for c in cum]
            self.fuse = nn.Sequential(
                nn.Conv1d(sum(ch), cfg.fusion_dim, 1, bias=False), nn.BatchNorm1d(cfg.fusion_dim), nn.ReLU(inplace=True)
            )
            pool_in = cfg.fusion_dim
        else:
            pool_in = ch[-1]
        self.pool = make_pooling(cfg.pooling, pool_in)
        self.fc = nn.Linear(self.pool.out_dim, cfg.embed_dim)
        self.level_names = [f"level{i + 1}" for i in range(len(ch))]
        # each level's output (after its nested input is added) passes through one of these no-ops: a place for
        # forward hooks (training telemetry, nestspk.train.telemetry); no parameters, no effect on the graph
        self.level_outputs = nn.ModuleList(nn.Identity() for _ in ch)
        self.fused_inference = False  # set by the load-time transform nestspk.models.fused.apply

    def nested_weight(self, level: int) -> torch.Tensor | float:
        """The weight that scales level ``level``'s nested input (sigmoid(w) or the fixed value)."""
        if self.cfg.nested_weight == "fixed":
            return self.cfg.fixed_weight
        return torch.sigmoid(self.nested_w[str(level)])

    def nested_weight_value(self, level: int) -> float:
        """``nested_weight(level)`` as a Python float (for logging)."""
        w = self.nested_weight(level)
        return float(w.detach()) if torch.is_tensor(w) else float(w)

    def _add_nested(self, level: int, x: torch.Tensor, earlier: list[torch.Tensor],
                    cache: dict[tuple[int, int, int], torch.Tensor]) -> torch.Tensor:
        """``x + nested_weight(level) * projection(earlier levels)``."""
        proj = self.nested[str(level)]
        inputs = proj.aligned(earlier, x, cache)
        if self.training:
            prev = proj.proj(inputs)
        else:
            y = proj.proj[0](inputs)
            norm = proj.proj[1]
            if self.fused_inference and fused.can_fuse(y, x, norm):
                w_logit = self.nested_w[str(level)] if self.cfg.nested_weight == "learnable" else None
                return fused.group_norm_relu_add(y, x, norm, w_logit, self.cfg.fixed_weight)
            # Under autocast GroupNorm runs in fp32; without this cast the sum (and every later
            # level, pooling and concat) is promoted to fp32. No-op in fp32. Training keeps the
            # promotion so the recorded fp16 runs stay reproducible.
            prev = proj.after_conv(y).to(x.dtype)
        return x + self.nested_weight(level) * prev

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        frames = feats.shape[-1] - feats.shape[-1] % self.time_stride
        x = self.stem(feats[..., :frames].unsqueeze(1))
        outs: list[torch.Tensor] = []
        pooled: dict[tuple[int, int, int], torch.Tensor] = {}
        for i, level in enumerate(self.levels):
            x = level(x)
            key = str(i + 1)
            if key in self.nested:
                x = self._add_nested(i + 1, x, outs, pooled)
            x = self.level_outputs[i](x)
            outs.append(x)
        if self.cfg.fusion:
            pooled = []
            for feat, r in zip(outs, self.fusion_ratios):
                t = feat.mean(dim=2)
                if r != 1:
                    t = F.avg_pool1d(t, kernel_size=r)
                pooled.append(t)
            h = self.fuse(torch.cat(pooled, dim=1))
        else:
            h = x.mean(dim=2)
        return self.fc(self.pool(h))
