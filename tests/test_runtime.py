"""Runtimes (nestspk.runtime): the Embedder protocol, make_embedder, devices, optional torch, thresholds."""
from __future__ import annotations

import numpy as np
import pytest

from nestspk import Verifier
from nestspk.card import ModelCard
from nestspk.cli import main as cli_main
from nestspk.errors import NestspkError
from nestspk.runtime import (BackendError, Embedder, embed_waveforms, make_embedder, parse_device,
                             resolve_backend)
from nestspk.verifier import VerificationResult
from torchless import TORCH_LOADED, run_without_torch

def test_both_backends_are_embedders_and_agree(speech: np.ndarray) -> None:
    card = ModelCard.load("nested")
    torch_e = make_embedder(card, backend="torch", device="cpu")
    onnx_e = make_embedder(card, backend="onnx", device="cpu")
    import nestspk.runtime as rt

    assert isinstance(torch_e, rt.TorchEmbedder) and isinstance(onnx_e, rt.OnnxEmbedder)
    for e in (torch_e, onnx_e):
        assert isinstance(e, Embedder) and e.card is card and e.embed_dim == card.embed_dim
    x = np.stack([speech, speech[::-1].copy()])
    a, b = torch_e.embed_batch(x), onnx_e.embed_batch(x)
    assert a.dtype == b.dtype == np.float32 and a.shape == (2, 512)
    assert np.sum(a * b, axis=1).min() > 0.9999


def test_auto_backend_is_onnx_on_cpu_and_torch_on_cuda() -> None:
    assert resolve_backend("auto", "cpu") == ("onnx", "cpu")
    assert resolve_backend("auto", "cuda:1") == ("torch", "cuda:1")
    assert Verifier(device="cpu").backend == "onnx"


def test_devices_and_options_are_validated() -> None:
    assert parse_device("cuda:3") == ("cuda", 3) and parse_device("cpu") == ("cpu", None)
    for bad in ("gpu", "cuda:", "cuda:x", "CPU"):
        with pytest.raises(ValueError):
            parse_device(bad)
    with pytest.raises(TypeError, match="cuda_graphs"):
        make_embedder("nested", backend="onnx", device="cpu", cuda_graphs=False)
    with pytest.raises(ValueError, match="backend"):
        make_embedder("nested", backend="tensorrt", device="cpu")


def test_intra_op_threads_reach_both_backends() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        make_embedder("nested", backend="torch", device="cpu", intra_op_threads=1)
        assert torch.get_num_threads() == 1
        onnx_e = make_embedder("nested", backend="onnx", device="cpu", intra_op_threads=1)
        assert onnx_e.session.get_session_options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(before)


def test_cuda_without_a_gpu_is_a_clear_error(capsys: pytest.CaptureFixture[str], example_files) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine")
    with pytest.raises(BackendError, match="CUDA") as ei:
        Verifier(device="cuda")
    assert isinstance(ei.value, NestspkError)
    rc = cli_main(["verify", str(example_files["a1"]), str(example_files["b"]), "--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("nestspk: error:") and "CUDA" in err and len(err.splitlines()) == 1, err


def test_embed_waveforms_buckets_and_keeps_order(speech: np.ndarray) -> None:
    class Counting:
        backend, card, embed_dim = "test", None, 2
        calls: list = []

        def embed_batch(self, wav: np.ndarray) -> np.ndarray:
            self.calls.append(wav.shape)
            out = np.stack([wav[:, 0], wav[:, -1]], axis=1)
            return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

    wavs = [speech[:16000] + 1, speech[:20000] + 2, speech[:16000] + 3]
    e = Counting()
    out = embed_waveforms(e, wavs, batch_size=8)
    assert sorted(e.calls) == [(1, 20000), (2, 16000)]
    for w, row in zip(wavs, out):
        v = np.array([w[0], w[-1]])
        np.testing.assert_allclose(row, v / np.linalg.norm(v), rtol=1e-6)


def test_threshold_is_validated() -> None:
    for bad in (float("nan"), float("inf"), 1.5, -1.01):
        with pytest.raises(ValueError, match="threshold"):
            Verifier(device="cpu", threshold=bad)
    with pytest.raises(TypeError):
        Verifier(device="cpu", threshold=True)
    assert Verifier(device="cpu", threshold=1.0).threshold == 1.0
    assert Verifier(device="cpu", score_norm="asnorm", threshold=2.5).threshold == 2.5  # AS-norm: unbounded


def test_result_truth_value_is_the_decision() -> None:
    assert bool(VerificationResult(0.9, True, 0.3)) is True
    assert bool(VerificationResult(0.1, False, 0.3)) is False


def test_onnx_verifier_and_cli_without_torch(example_files) -> None:
    a1, a2, b = (str(example_files[k]) for k in ("a1", "a2", "b"))
    res = run_without_torch(f"""
        from nestspk import Verifier
        from nestspk.cli import main
        from nestspk.extras import MissingExtraError

        v = Verifier(device="cpu")
        assert v.backend == "onnx", v
        assert v.verify({a1!r}, {a2!r}) and not v.verify({a1!r}, {b!r})
        try:
            Verifier(device="cpu", backend="torch")
        except MissingExtraError as e:
            assert "pip install 'nestspk[torch]'" in str(e), e
        else:
            raise AssertionError("the torch backend loaded without torch")
        assert main(["verify", {a1!r}, {a2!r}, "--json"]) == 0
        loaded = {TORCH_LOADED}
        assert not loaded, loaded
        print("ok")
    """)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stdout + res.stderr[-3000:]
