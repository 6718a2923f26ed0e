"""CUDA-only checks (skipped without a GPU; run on the device machine)."""
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("model", ["nested", "resnetse34l"])
def test_cuda_graph_fast_path_matches_eager_and_cpu(model, librispeech_files):
    import soundfile as sf

    from nestspk import Verifier

    wavs = [sf.read(f, dtype="float32")[0][:16000 * 3] for f in librispeech_files[:4]]
    cpu = Verifier(model, device="cpu").embed_batch(wavs)
    v = Verifier(model, device="cuda")
    assert v._runtime.use_graphs
    first = v.embed_batch(wavs)     # eager (shape seen once)
    second = v.embed_batch(wavs)    # captured + replayed
    third = v.embed_batch(wavs[::-1])[::-1]  # replay with new data
    assert v._runtime._graphs, "no CUDA graph was captured"
    for e in (first, second, third):
        cos = np.sum(e * cpu, axis=1)
        assert cos.min() > 1 - 1e-4, cos
    np.testing.assert_allclose(second, first, atol=1e-5)
    np.testing.assert_allclose(third, first, atol=1e-5)


def test_onnx_cuda_backend_or_clear_error():
    from nestspk import Verifier
    from nestspk.errors import NestspkError

    try:
        v = Verifier("nested", backend="onnx", device="cuda")
    except NestspkError as e:
        assert "CUDA" in str(e)
        pytest.skip(f"onnxruntime CUDA EP unavailable here: {e}")
    assert v._runtime.providers[0] == "CUDAExecutionProvider"


def test_inference_groupnorm_runs_in_the_autocast_dtype(monkeypatch):
    """CUDA autocast would run GroupNorm in fp32 (cast in, cast out); at inference the nested GroupNorms get fp16."""
    import torch.nn.functional as F

    from nestspk.models.nested import NestedConfig, NestedSpeakerNet

    torch.manual_seed(0)
    net = NestedSpeakerNet(NestedConfig()).cuda().eval()
    seen = []
    real = F.group_norm

    def spy(x, *a, **kw):
        seen.append(x.dtype)
        return real(x, *a, **kw)

    monkeypatch.setattr(F, "group_norm", spy)
    feats = torch.randn(2, 80, 300, device="cuda")
    with torch.no_grad():
        ref = net(feats)
        seen.clear()
        with torch.autocast("cuda", dtype=torch.float16):
            low = net(feats)
    assert seen == [torch.float16] * 3
    assert F.cosine_similarity(ref, low.float()).min() > 0.999
