"""Fused CUDA inference kernel for the nested connection: ``x + s * relu(group_norm(y))``.

At inference the nested projection ends in GroupNorm -> ReLU -> (Dropout2d, a no-op)
and is added to the level output as ``x + s * prev``. In eager PyTorch that is four
to eight kernels: GroupNorm's CUDA kernel needs an NCHW input (a channels-last tensor
is copied to NCHW and back) and under autocast runs in fp32 (two more casts). Here it
is two Triton kernels that read ``y`` twice and ``x`` once, in either memory layout:

1. per (sample, group, chunk of ``BLOCK_P`` positions): chunk mean and sum of squared
   deviations (two-pass in registers);
2. per (sample, group, chunk): Chan's combination of the chunk statistics (exact
   two-pass variance, fp32), then ``out = x + s * relu((y - mean) * rstd * gamma + beta)``
   with ``s = sigmoid(w)`` computed in the kernel, stored in ``x``'s dtype and layout.

Same math as the eager path (fp32 statistics and arithmetic; the eager path rounds
``prev`` to ``x``'s dtype before the add, this rounds once). An explicit inference
transform (:func:`apply`, done by :func:`nestspk.checkpoints.load_model`); then used only
when Triton is importable, the tensors are on CUDA, autograd is off and the model is not
being traced by ``torch.compile`` (which fuses the eager ops itself). ``NESTSPK_FUSED_NESTED=0``
in the environment, or ``nestspk.models.fused.ENABLED = False``, turns it off (for A/B
benchmarks).
"""
from __future__ import annotations

import os

import torch
from torch import nn

try:  # Triton ships with PyTorch's Linux CUDA wheels; absent on CPU-only installs.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

ENABLED = os.environ.get("NESTSPK_FUSED_NESTED", "1") != "0"
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_TILE_ELEMENTS = 2048  # BLOCK_P * group channels per program


def _spatially_flat_strides(t: torch.Tensor) -> tuple[int, int, int] | None:
    """(batch, channel, position) element strides if H and W flatten to one index, else None."""
    n, c, h, w = t.shape
    sb, sc, sh, sw = t.stride()
    if h > 1 and w > 1 and sh != w * sw:
        return None
    sp = sw if w > 1 else (sh if h > 1 else 1)
    return sb, sc, sp


def can_fuse(y: torch.Tensor, x: torch.Tensor, norm: nn.Module) -> bool:
    """True if :func:`group_norm_relu_add` applies to these tensors in the current context."""
    if not (ENABLED and triton is not None and y.is_cuda and x.device == y.device):
        return False
    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return False
    if not (isinstance(norm, nn.GroupNorm) and norm.affine):
        return False
    if y.dim() != 4 or y.shape != x.shape or y.dtype not in _DTYPES or x.dtype not in _DTYPES:
        return False
    group_channels = y.shape[1] // norm.num_groups
    if group_channels & (group_channels - 1):  # Triton tile dims must be powers of two
        return False
    strides = _spatially_flat_strides(y)
    return strides is not None and strides == _spatially_flat_strides(x) and y.numel() > 0


def apply(model: nn.Module) -> nn.Module:
    """The load-time inference transform: let a nested encoder's eval-mode forward use the fused kernel.

    Sets ``fused_inference`` on the model's nested encoder (``model.encoder`` or ``model`` itself); other
    architectures are returned unchanged. Still per call, :func:`can_fuse` decides (CUDA, Triton, no autograd, not
    compiling, :data:`ENABLED`): ``NESTSPK_FUSED_NESTED=0`` keeps the eager path. :func:`nestspk.checkpoints.load_model`
    applies it, so every runtime that loads shipped weights gets it; a freshly built model does not. Returns ``model``.
    """
    encoder = getattr(model, "encoder", model)
    if hasattr(encoder, "fused_inference"):
        encoder.fused_inference = ENABLED and triton is not None
    return model


def group_norm_relu_add(y: torch.Tensor, x: torch.Tensor, norm: nn.GroupNorm,
                        w_logit: torch.Tensor | None, fixed_scale: float = 0.0) -> torch.Tensor:
    """``x + s * relu(norm(y))`` for (B, C, H, W) CUDA tensors of the same shape and layout.

    ``s = sigmoid(w_logit)`` (a one-element tensor) or ``fixed_scale`` if ``w_logit`` is None.
    Returns a new tensor with ``x``'s dtype and memory layout. Check :func:`can_fuse` first.
    """
    if y.is_cuda and y.device.index != torch.cuda.current_device():
        with torch.cuda.device(y.device):  # Triton launches on the current device
            return group_norm_relu_add(y, x, norm, w_logit, fixed_scale)
    batch, channels, h, w = y.shape
    groups = norm.num_groups
    group_channels = channels // groups
    positions = h * w
    block_p = max(1, min(_TILE_ELEMENTS // group_channels, triton.next_power_of_2(positions)))
    chunks = triton.cdiv(positions, block_p)
    stride_b, stride_c, stride_p = _spatially_flat_strides(y)
    stats = torch.empty((batch * groups, chunks, 2), device=y.device, dtype=torch.float32)
    out = torch.empty_like(x)
    grid = (batch * groups, chunks)
    _chunk_stats_kernel[grid](
        y, stats, groups, positions, stride_b, stride_c, stride_p,
        GROUP_CHANNELS=group_channels, BLOCK_P=block_p,
    )
    scale_ptr = w_logit if w_logit is not None else norm.weight
    _normalize_relu_add_kernel[grid](
        y, x, out, stats, norm.weight, norm.bias, scale_ptr, float(fixed_scale),
        groups, positions, chunks, stride_b, stride_c, stride_p, float(norm.eps),
        GROUP_CHANNELS=group_channels, BLOCK_P=block_p, CHUNKS_P2=triton.next_power_of_2(chunks),
        LEARNED_SCALE=w_logit is not None,
    )
    return out


if triton is not None:
    # The position count changes with every input length but only bounds the masks: not specialised on
    # (fewer compilations). Strides stay specialised (== 1 and divisibility by 16 give vectorised loads).
    _LENGTH_ARGS = ["positions"]

    @triton.jit
    def _tile_offsets(pid_group, pid_chunk, num_groups, positions, stride_b, stride_c, stride_p,
                      GROUP_CHANNELS: tl.constexpr, BLOCK_P: tl.constexpr):
        b = pid_group // num_groups
        g = pid_group % num_groups
        rows = pid_chunk * BLOCK_P + tl.arange(0, BLOCK_P)
        chans = g * GROUP_CHANNELS + tl.arange(0, GROUP_CHANNELS)
        offsets = (b.to(tl.int64) * stride_b
                   + chans[None, :].to(tl.int64) * stride_c
                   + rows[:, None].to(tl.int64) * stride_p)
        mask = (rows[:, None] < positions) & (chans[None, :] >= 0)
        return offsets, mask, chans

    @triton.jit(do_not_specialize=_LENGTH_ARGS)
    def _chunk_stats_kernel(y_ptr, stats_ptr, num_groups, positions, stride_b, stride_c, stride_p,
                            GROUP_CHANNELS: tl.constexpr, BLOCK_P: tl.constexpr):
        pid_group = tl.program_id(0)
        pid_chunk = tl.program_id(1)
        offsets, mask, _ = _tile_offsets(pid_group, pid_chunk, num_groups, positions, stride_b, stride_c,
                                         stride_p, GROUP_CHANNELS, BLOCK_P)
        v = tl.load(y_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        count = tl.minimum(positions - pid_chunk * BLOCK_P, BLOCK_P) * GROUP_CHANNELS
        mean = tl.sum(tl.sum(v, axis=1), axis=0) / count
        d = tl.where(mask, v - mean, 0.0)
        m2 = tl.sum(tl.sum(d * d, axis=1), axis=0)
        out = stats_ptr + (pid_group * tl.num_programs(1) + pid_chunk) * 2
        tl.store(out, mean)
        tl.store(out + 1, m2)

    @triton.jit(do_not_specialize=_LENGTH_ARGS + ["chunks"])
    def _normalize_relu_add_kernel(y_ptr, x_ptr, out_ptr, stats_ptr, gamma_ptr, beta_ptr, scale_ptr, fixed_scale,
                                   num_groups, positions, chunks, stride_b, stride_c, stride_p, eps,
                                   GROUP_CHANNELS: tl.constexpr, BLOCK_P: tl.constexpr, CHUNKS_P2: tl.constexpr,
                                   LEARNED_SCALE: tl.constexpr):
        pid_group = tl.program_id(0)
        pid_chunk = tl.program_id(1)
        # Chan et al.: combine the chunks' (count, mean, M2) into the group's mean and variance.
        idx = tl.arange(0, CHUNKS_P2)
        valid = idx < chunks
        base = stats_ptr + pid_group * chunks * 2
        means = tl.load(base + idx * 2, mask=valid, other=0.0)
        m2s = tl.load(base + idx * 2 + 1, mask=valid, other=0.0)
        counts = tl.where(valid, tl.minimum(positions - idx * BLOCK_P, BLOCK_P) * GROUP_CHANNELS, 0).to(tl.float32)
        total = positions * GROUP_CHANNELS
        mean = tl.sum(counts * means, axis=0) / total
        dev = means - mean
        var = (tl.sum(m2s, axis=0) + tl.sum(counts * dev * dev, axis=0)) / total
        rstd = 1.0 / tl.sqrt(var + eps)

        offsets, mask, chans = _tile_offsets(pid_group, pid_chunk, num_groups, positions, stride_b, stride_c,
                                             stride_p, GROUP_CHANNELS, BLOCK_P)
        a = tl.load(gamma_ptr + chans).to(tl.float32) * rstd
        shift = tl.load(beta_ptr + chans).to(tl.float32) - mean * a
        if LEARNED_SCALE:
            s = 1.0 / (1.0 + tl.exp(-tl.load(scale_ptr).to(tl.float32)))
        else:
            s = fixed_scale
        v = tl.load(y_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        h = tl.maximum(v * a[None, :] + shift[None, :], 0.0)
        xv = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + offsets, (xv + s * h).to(out_ptr.dtype.element_ty), mask=mask)
