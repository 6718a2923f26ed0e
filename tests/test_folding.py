"""The CPU inference transform (BatchNorm folding + channels-last) keeps the shipped models' outputs."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nestspk.checkpoints import load_model  # noqa: E402
from nestspk.models.folding import cpu_inference, fold_batch_norms  # noqa: E402
from nestspk.runtime.torch_runtime import TorchEmbedder  # noqa: E402

SHIPPED = ["nested_4level", "resnetse34l_asp"]


def _speechlike(batch: int = 2, seconds: float = 3.0) -> torch.Tensor:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    x = np.stack([np.sin(2 * np.pi * (120 + 40 * b) * t) * (1 + np.sin(2 * np.pi * 3 * t)) for b in range(batch)])
    return torch.from_numpy((0.1 * x + 0.01 * rng.standard_normal(x.shape)).astype(np.float32))


@pytest.mark.parametrize("name", SHIPPED)
def test_folded_channels_last_model_equals_the_loaded_one(name: str) -> None:
    ref_model, _ = load_model(name)
    model, _ = load_model(name)
    bns = sum(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in model.modules())
    cpu_inference(model)
    left = [k for k, m in model.named_modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    assert bns > 20 and left == ["encoder.pool.attention.2"]  # after a ReLU, not a convolution: stays
    x = _speechlike()
    with torch.inference_mode():
        ref, got = ref_model.embed(x), model.embed(x)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=2e-5)


def test_fold_needs_eval_mode() -> None:
    model, _ = load_model("nested_4level")
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(model.train())


def test_cpu_embedder_uses_the_transform_and_from_model_does_not() -> None:
    emb = TorchEmbedder("nested_4level", device="cpu")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in emb.model.modules())
    plain = TorchEmbedder("nested_4level", device="cpu", cpu_transform=False)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.model.modules())
    trained, _ = load_model("nested_4level")
    wrapped = TorchEmbedder.from_model(trained, device="cpu")
    assert wrapped.model is trained and any(isinstance(m, torch.nn.BatchNorm2d) for m in trained.modules())
    x = _speechlike().numpy()
    np.testing.assert_allclose(emb.embed_batch(x), plain.embed_batch(x), atol=2e-5)
