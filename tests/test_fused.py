"""The fused nested-connection kernel (nestspk.models.fused) against the eager ops.

Runs on CUDA, or on CPU under Triton's interpreter (``TRITON_INTERPRET=1 pytest tests/test_fused.py``);
skipped where Triton is not installed (CPU-only torch wheels do not ship it).
"""
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nestspk.models import build_model, fused

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
pytestmark = pytest.mark.skipif(
    fused.triton is None or not (torch.cuda.is_available() or INTERPRET),
    reason="needs Triton and CUDA (or TRITON_INTERPRET=1)",
)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _reference(y, x, norm, w_logit, fixed):
    """In float64, NCHW (PyTorch's fp32 channels-last CPU GroupNorm is itself ~1e-4 off at mean 30)."""
    d = torch.float64
    y = y.to(d).contiguous()
    prev = F.relu(F.group_norm(y, norm.num_groups, norm.weight.to(d), norm.bias.to(d), norm.eps))
    s = torch.sigmoid(w_logit.to(d)) if w_logit is not None else fixed
    return (x.to(d) + s * prev).float()


@pytest.mark.parametrize("channels,shape", [(32, (3, 10, 50)), (64, (2, 5, 25)), (128, (1, 5, 7)), (16, (2, 40, 97))])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("learned", [True, False])
def test_kernel_matches_eager(channels, shape, layout, dtype, learned):
    torch.manual_seed(channels + shape[2])
    b, h, w = shape
    norm = nn.GroupNorm(8, channels).to(DEVICE)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.3, 0.3)
    # an offset mean: the variance must not come from E[y^2] - E[y]^2
    y = (torch.randn(b, channels, h, w, device=DEVICE) * 2 + 30).to(dtype)
    x = torch.randn(b, channels, h, w, device=DEVICE).to(dtype)
    if layout == "channels_last":
        y, x = y.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    w_logit = torch.tensor(0.3, device=DEVICE) if learned else None
    with torch.no_grad():
        out = fused.group_norm_relu_add(y, x, norm, w_logit, 0.5)
        ref = _reference(y, x, norm, w_logit, 0.5)
    assert out.dtype == x.dtype and out.stride() == x.stride()
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)


def test_can_fuse_guards():
    norm = nn.GroupNorm(8, 32).to(DEVICE)
    y = torch.randn(2, 32, 4, 6, device=DEVICE)
    x = torch.randn_like(y)
    with torch.no_grad():
        assert fused.can_fuse(y, x, norm) == (DEVICE == "cuda")  # the interpreter is not used by the model
        assert not fused.can_fuse(y, x, nn.BatchNorm2d(32))
        assert not fused.can_fuse(y, x[:, :, :, :5], norm)
        assert not fused.can_fuse(y, x.transpose(2, 3).contiguous().transpose(2, 3), norm)
    assert not fused.can_fuse(y, x, norm)  # autograd on: eager path


@pytest.mark.skipif(not torch.cuda.is_available(), reason="model-level check needs CUDA")
@pytest.mark.parametrize("mode", ["fp32", "channels_last", "fp16", "channels_last+fp16"])
def test_nested_model_fused_vs_eager(mode, monkeypatch):
    torch.manual_seed(0)
    model = fused.apply(build_model("nested").cuda().eval())  # the load-time transform load_model applies
    if "channels_last" in mode:
        model = model.to(memory_format=torch.channels_last)
    wav = torch.randn(4, 16000 * 3, device="cuda") * 0.1
    autocast = torch.autocast("cuda", dtype=torch.float16, enabled="fp16" in mode)
    calls = []
    real = fused.group_norm_relu_add
    monkeypatch.setattr(fused, "group_norm_relu_add", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.inference_mode(), autocast:
        fast = model.embed(wav).float()
    monkeypatch.setattr(fused, "ENABLED", False)
    with torch.inference_mode(), autocast:
        eager = model.embed(wav).float()
    assert len(calls) == 3
    cos = (fast * eager).sum(-1)
    assert cos.min() > 1 - (1e-6 if "fp16" not in mode else 1e-4), cos

