import pytest
import torch
import torch.nn.functional as F

from nestspk.models import MODELS, build_model, count_parameters
from nestspk.models.nested import NestedSpeakerNet


@pytest.mark.parametrize("name", ["nested", "resnetse34l"])
@pytest.mark.parametrize("seconds", [1.0, 2.37])
def test_shapes(name, seconds):
    m = build_model(name).eval()
    with torch.no_grad():
        y = m(torch.randn(2, int(16000 * seconds)) * 0.1)
    assert y.shape == (2, 512) and torch.isfinite(y).all()
    assert torch.allclose(m.embed(torch.randn(1, 16000)).norm(dim=1), torch.ones(1), atol=1e-5)


def test_registry_and_parameter_counts():
    assert set(MODELS) == {"nested", "resnetse34l"}
    counts = {n: count_parameters(build_model(n)) for n in MODELS}
    # the architectures as documented in README (exact counts)
    assert counts == {"nested": 1_289_895, "resnetse34l": 1_519_452}
    with pytest.raises(ValueError, match="unknown model"):
        build_model("lstm")
    with pytest.raises(ValueError, match="unknown model option"):
        build_model("nested", {"nrom": "group"})


def test_nested_switches_reproduce_seed_variants():
    from nestspk.train.seed_variants import build_training_model

    seed = {"nested_norm": "batch", "align": "interpolate", "nested_weight": "fixed"}
    with pytest.raises(ValueError, match="training-only"):  # the shipped architecture has no collapse switches
        build_model("nested", seed)
    pre = build_training_model("nested_seed", seed).encoder
    assert isinstance(pre.nested["3"].proj[1], torch.nn.BatchNorm2d)
    assert pre.nested_weight(3) == 0.5 and len(pre.nested_w) == 0
    x = torch.randn(2, 80, 203)
    pooled = build_training_model("nested_seed", {**seed, "align": "adaptive_pool"}).encoder.eval()
    interp = build_training_model("nested_seed", seed).encoder.eval()
    interp.load_state_dict(pooled.state_dict())  # same parameters, only the alignment differs
    with torch.no_grad():
        assert not torch.allclose(pooled(x), interp(x), atol=1e-4)
    assert count_parameters(build_training_model("nested_seed", {})) == 1_289_895
    fixed = build_model("nested").encoder
    assert isinstance(fixed.nested["3"].proj[1], torch.nn.GroupNorm)
    assert abs(fixed.nested_weight_value(2) - torch.sigmoid(torch.tensor(0.3)).item()) < 1e-6
    only3 = build_model("nested", {"nested_levels": [3], "fusion": False}).encoder
    assert list(only3.nested) == ["3"] and not hasattr(only3, "fuse")
    with pytest.raises(ValueError):
        build_model("nested", {"align": "bicubic"})
    with pytest.raises(ValueError, match="unknown align"):
        build_training_model("nested_seed", {"align": "bicubic"})


def test_avg_pool_alignment_equals_adaptive_avg_pool():
    enc: NestedSpeakerNet = build_model("nested").encoder.eval()
    proj = enc.nested["4"]
    feats = [torch.randn(2, 16, 20, 48), torch.randn(2, 32, 10, 24), torch.randn(2, 64, 5, 12)]
    like = torch.randn(2, 128, 5, 12)
    ours = [F.avg_pool2d(f, kernel_size=r) if r != (1, 1) else f for f, r in zip(feats, proj.ratios)]
    ref = [F.adaptive_avg_pool2d(f, like.shape[2:]) for f in feats]
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-6)


def test_nested_gradients_reach_every_level():
    m = build_model("nested")
    m.train()
    y = m(torch.randn(4, 16000) * 0.1)
    y.pow(2).mean().backward()
    enc = m.encoder
    for k, w in enc.nested_w.items():
        assert w.grad is not None and torch.isfinite(w.grad).all(), k
    for lvl in enc.levels:
        g = next(lvl.parameters()).grad
        assert g is not None and g.abs().sum() > 0


def test_pooled_feature_cache_is_exact_and_used(monkeypatch):
    """Levels 3 and 4 share one grid: each earlier level is pooled once, and level 1's 4x4 pool starts
    from its cached 2x2 pool; same output as pooling every input from scratch."""
    from nestspk.models import nested as nested_mod

    torch.manual_seed(0)
    net = NestedSpeakerNet(nested_mod.NestedConfig()).eval()
    feats = torch.randn(2, 80, 203)
    calls = []
    real_pool = F.avg_pool2d

    def counting_pool(x, kernel_size, *a, **kw):
        calls.append(tuple(kernel_size))
        return real_pool(x, kernel_size, *a, **kw)

    monkeypatch.setattr(nested_mod.F, "avg_pool2d", counting_pool)
    with torch.no_grad():
        cached = net(feats)
    n_cached = len(calls)
    cached_kernels = list(calls)
    original = nested_mod.NestedProjection.aligned
    monkeypatch.setattr(nested_mod.NestedProjection, "aligned",
                        lambda self, earlier, like, cache=None: original(self, earlier, like, None))
    calls.clear()
    with torch.no_grad():
        uncached = net(feats)
    torch.testing.assert_close(cached, uncached, rtol=1e-5, atol=1e-5)
    assert n_cached < len(calls)  # level 4 reused level 3's pooled inputs
    assert cached_kernels == [(2, 2), (2, 2), (2, 2)]  # L1 -> L2 grid, L1 (2x2 cached) -> L3 grid, L2 -> L3
    assert (4, 4) in calls


def test_chained_pool_equals_adaptive_pool_for_odd_sizes():
    from nestspk.models.nested import _pool_from_cache

    torch.manual_seed(0)
    x = torch.randn(2, 3, 43, 37, dtype=torch.float64)
    cache: dict = {}
    _pool_from_cache(x, 0, 2, 2, cache)
    chained = _pool_from_cache(x, 0, 4, 4, cache)
    torch.testing.assert_close(chained, F.adaptive_avg_pool2d(x[..., :40, :36], (10, 9)))
    torch.testing.assert_close(chained, F.avg_pool2d(x, (4, 4)))


def test_residual_keeps_autocast_dtype_at_inference():
    torch.manual_seed(0)
    from nestspk.models.nested import NestedConfig

    net = NestedSpeakerNet(NestedConfig()).eval()
    seen = {}

    def hook(module, inputs, output):
        seen["level4_in"] = inputs[0].dtype

    net.levels[3].register_forward_hook(hook)
    # CUDA autocast runs GroupNorm in fp32; CPU autocast does not, so make the norm return fp32 here
    for proj in net.nested.values():
        proj.proj[1].register_forward_hook(lambda module, inputs, output: output.float())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        net(torch.randn(1, 80, 120))
    assert seen["level4_in"] == torch.bfloat16
    net.train()  # training keeps the promotion (the recorded fp16 runs)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        net(torch.randn(2, 80, 120))
    assert seen["level4_in"] == torch.float32


def test_fusion_is_a_load_time_transform(monkeypatch):
    """A freshly built model runs the eager path; load_model applies the transform; ENABLED=False keeps it off."""
    from nestspk.checkpoints import load_model
    from nestspk.models import fused

    assert build_model("nested").encoder.fused_inference is False
    loaded, _ = load_model("nested_4level", "cpu")
    assert loaded.encoder.fused_inference is (fused.ENABLED and fused.triton is not None)
    monkeypatch.setattr(fused, "ENABLED", False)
    assert fused.apply(build_model("nested")).encoder.fused_inference is False
    base, _ = load_model("resnetse34l_asp", "cpu")
    assert not hasattr(base.encoder, "fused_inference")  # other architectures are left as they are
