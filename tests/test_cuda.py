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


@pytest.mark.parametrize("cuda_graphs", [True, False])
def test_pinned_staging_keeps_concurrent_calls_apart(cuda_graphs):
    """Batches above PINNED_MIN_BYTES share one page-locked buffer: threads must still get their own results."""
    from concurrent.futures import ThreadPoolExecutor

    from nestspk.runtime import make_embedder
    from nestspk.runtime.torch_runtime import PINNED_MIN_BYTES

    emb = make_embedder("nested_4level", backend="torch", device="cuda", cuda_graphs=cuda_graphs)
    rng = np.random.default_rng(0)
    batches = [(0.1 * rng.standard_normal((8, 64000))).astype(np.float32) for _ in range(6)]
    assert batches[0].nbytes >= PINNED_MIN_BYTES
    want = [emb.embed_batch(b) for b in batches for _ in range(2)][1::2]  # second call: replayed graph
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(emb.embed_batch, batches * 4))
    for i, g in enumerate(got):
        np.testing.assert_allclose(g, want[i % len(batches)], atol=1e-5)
    assert emb._pinned is not None and emb._pinned.is_pinned()
