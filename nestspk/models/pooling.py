"""Temporal pooling layers: (B, C, T) -> (B, D)."""
from __future__ import annotations

import torch
from torch import nn


class AttentiveStatsPool(nn.Module):
    """Attentive statistics pooling (Okabe et al., 2018): (B, C, T) -> (B, 2C).

    Channel-wise attention over time; returns the attention-weighted mean and
    standard deviation concatenated.
    """

    def __init__(self, channels: int, hidden: int = 128):
        super().__init__()
        self.attention = nn.Sequential(
            nn.Conv1d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden),
            nn.Conv1d(hidden, channels, 1),
            nn.Softmax(dim=2),
        )
        self.out_dim = 2 * channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.attention(x)
        mu = torch.sum(x * w, dim=2)
        var = torch.sum(x * x * w, dim=2) - mu * mu
        sg = torch.sqrt(var.clamp(min=1e-5))
        return torch.cat([mu, sg], dim=1)


class SelfAttentivePool(nn.Module):
    """Self-attentive pooling (SAP): (B, C, T) -> (B, C), a weighted mean over time."""

    def __init__(self, channels: int, hidden: int = 128):
        super().__init__()
        self.attention = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.Tanh(), nn.Conv1d(hidden, 1, 1))
        self.out_dim = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.attention(x), dim=2)
        return torch.sum(x * w, dim=2)


def make_pooling(kind: str, channels: int) -> nn.Module:
    if kind == "asp":
        return AttentiveStatsPool(channels)
    if kind == "sap":
        return SelfAttentivePool(channels)
    raise ValueError(f"unknown pooling {kind!r}; choose 'asp' or 'sap'")
