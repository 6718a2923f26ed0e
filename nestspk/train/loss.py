"""Additive angular margin softmax (AAM-softmax / ArcFace) for speaker classification.

``safe=True`` (default) is the numerically safe form nestspk trains with:
cosines are computed in float32 with autocast disabled and clamped to
``[-1 + eps, 1 - eps]`` before ``sin = sqrt(1 - cos^2)``.

``safe=False`` reproduces the common formulation (voxceleb_trainer's
``sqrt((1 - cos^2).clamp(0, 1))`` under autocast). Its gradient
``d sin / d cos = -cos / sin`` is infinite when a cosine reaches exactly 1.0,
which fp16 rounding makes happen as soon as a training sample lies within
~5e-4 of its class centre -- i.e. once the network fits the few training
classes well. One such sample turns the whole gradient into inf/NaN and
gradient-norm clipping cannot help (clip coefficient = 5 / inf = 0 and 0 * inf = NaN).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class AAMSoftmax(nn.Module):
    """Embeddings (B, D) and integer labels (B,) -> (mean loss, top-1 accuracy in %)."""

    def __init__(self, embed_dim: int, n_classes: int, margin: float = 0.2, scale: float = 30.0,
                 safe: bool = True, eps: float = 1e-4):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, embed_dim))
        nn.init.xavier_normal_(self.weight, gain=1.0)
        self.m, self.s, self.safe, self.eps = margin, scale, safe, eps
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.th = math.cos(math.pi - margin)
        self.mm = math.sin(math.pi - margin) * margin

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(emb, dim=1), F.normalize(self.weight, dim=1))

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.safe:
            with torch.autocast(device_type=emb.device.type, enabled=False):
                cos = self.cosine(emb.float()).clamp(-1.0 + self.eps, 1.0 - self.eps)
                sin = torch.sqrt(1.0 - cos * cos)
                logits = self._logits(cos, sin, labels)
                loss = F.cross_entropy(logits, labels)
        else:
            cos = self.cosine(emb)
            sin = torch.sqrt((1.0 - cos * cos).clamp(0, 1))
            logits = self._logits(cos, sin, labels)
            loss = F.cross_entropy(logits.float(), labels)
        acc = (cos.detach().argmax(dim=1) == labels).float().mean() * 100.0
        return loss, acc

    def _logits(self, cos: torch.Tensor, sin: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        phi = cos * self.cos_m - sin * self.sin_m
        phi = torch.where(cos - self.th > 0, phi, cos - self.mm)
        one_hot = F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return self.s * (one_hot * phi + (1.0 - one_hot) * cos)


class DistillLoss(nn.Module):
    """``weight * mean(1 - cos(W emb, target))``: a linear projection of the embedding towards a teacher's."""

    def __init__(self, embed_dim: int, target_dim: int, weight: float):
        super().__init__()
        self.proj = nn.Linear(embed_dim, target_dim, bias=False)
        self.weight = weight

    def forward(self, emb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=emb.device.type, enabled=False):
            cos = F.cosine_similarity(self.proj(emb.float()), targets.float(), dim=1)
        return self.weight * (1.0 - cos).mean()
