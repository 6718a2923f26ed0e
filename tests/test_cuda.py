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
    assert v.embedder.cuda_graphs
    first = v.embed_batch(wavs)     # eager (shape seen once)
    second = v.embed_batch(wavs)    # captured + replayed
    third = v.embed_batch(wavs[::-1])[::-1]  # replay with new data
    assert v.embedder._graphs, "no CUDA graph was captured"
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
    assert v.embedder.providers[0] == "CUDAExecutionProvider"


def test_cuda_index_and_graph_option():
    from nestspk import Verifier

    v = Verifier("nested", device="cuda:0", cuda_graphs=False)
    assert v.backend == "torch" and v.device == "cuda:0" and not v.embedder.cuda_graphs
