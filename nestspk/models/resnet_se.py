"""ResNetSE34L + attentive statistics pooling (the baseline).

Layout as in voxceleb_trainer's ResNetSE34L: SE basic blocks [3, 4, 6, 3] with
filters [16, 32, 64, 128], a 7x7 stem with stride (2, 1), mean over frequency,
ASP and a 512-d linear embedding. Input: normalised log-mel (B, n_mels, frames).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .pooling import make_pooling


class SEBasicBlock(nn.Module):
    """3x3 -> BN -> ReLU -> 3x3 -> BN -> squeeze-excitation, plus a (projected) identity."""

    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int] = (1, 1), reduction: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(c_out, max(c_out // reduction, 4), 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(max(c_out // reduction, 4), c_out, 1),
            nn.Sigmoid(),
        )
        self.downsample = None
        if stride != (1, 1) or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out * self.se(out)
        return self.relu(out + residual)


@dataclass
class ResNetSEConfig:
    n_mels: int = 40
    layers: tuple[int, ...] = (3, 4, 6, 3)
    filters: tuple[int, ...] = (16, 32, 64, 128)
    pooling: str = "asp"
    embed_dim: int = 512

    def to_dict(self) -> dict:
        return asdict(self)


class ResNetSE34L(nn.Module):
    """Normalised log-mel (B, n_mels, frames) -> embedding (B, embed_dim), not L2-normalised."""

    def __init__(self, cfg: ResNetSEConfig):
        super().__init__()
        self.cfg = cfg
        f = cfg.filters
        self.conv1 = nn.Conv2d(1, f[0], 7, stride=(2, 1), padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(f[0])
        self.relu = nn.ReLU(inplace=True)
        strides = [(1, 1), (2, 2), (2, 2), (1, 1)]
        layers = []
        c_in = f[0]
        for n, c, s in zip(cfg.layers, f, strides):
            blocks = [SEBasicBlock(c_in, c, s)] + [SEBasicBlock(c, c) for _ in range(n - 1)]
            layers.append(nn.Sequential(*blocks))
            c_in = c
        self.layers = nn.ModuleList(layers)
        self.pool = make_pooling(cfg.pooling, f[-1])
        self.fc = nn.Linear(self.pool.out_dim, cfg.embed_dim)
        self.level_names = [f"layer{i + 1}" for i in range(len(layers))]

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(feats.unsqueeze(1))))
        for layer in self.layers:
            x = layer(x)
        x = x.mean(dim=2)  # over frequency -> (B, C, T)
        return self.fc(self.pool(x))
