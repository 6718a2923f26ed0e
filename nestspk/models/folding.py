"""CPU inference transform: fold each BatchNorm that follows a convolution into that convolution.

``y = bn(conv(x))`` with running statistics is an affine map of ``conv(x)`` per channel, so it equals one
convolution with scaled weights and a bias. :func:`cpu_inference` folds every such pair of the shipped
architectures (``conv1``/``bn1`` and ``conv2``/``bn2`` attribute pairs, ``Sequential(conv, bn, ...)``) and puts
the model in channels-last layout: 1.24x faster for nested on 2 CPU threads (oneDNN runs channels-last convolutions
without reorders and no longer makes a BatchNorm pass), with outputs equal up to float32 rounding
(``benchmarks/results/2026-12-04_torch_cpu_fold/``). The state dict changes, so it is applied to models
loaded for inference only (:class:`nestspk.runtime.torch_runtime.TorchEmbedder` on CPU), never to a model being
trained or exported.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batch_norms", "cpu_inference"]

_CONV = (nn.Conv1d, nn.Conv2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def fold_batch_norms(model: nn.Module) -> int:
    """In place: fold every BatchNorm directly after a convolution into it and replace the norm with Identity.

    Needs eval mode (the running statistics are what is folded). Returns the number of norms folded.
    """
    if model.training:
        raise ValueError("fold_batch_norms needs a model in eval mode (it folds the running statistics)")
    folded = 0
    for module in list(model.modules()):
        for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2")):
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, _CONV) and isinstance(bn, _BN):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
                folded += 1
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], _CONV) and isinstance(module[i + 1], _BN):
                    module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
                    folded += 1
    return folded


def cpu_inference(model: nn.Module) -> nn.Module:
    """The CPU inference transform: :func:`fold_batch_norms`, then channels-last weights. Returns ``model``."""
    fold_batch_norms(model)
    return model.to(memory_format=torch.channels_last)
