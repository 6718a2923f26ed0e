"""ONNX export and the torch-free OnnxEmbedder (GitHub issue #4).

Real-speech tests read LibriSpeech snippets from ``$NESTSPK_DATA`` (default
``<repo>/../shared/data``) and are skipped when the data is absent.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from nestspk.card import ModelCard, resolve_card, sha256_file, weights_dir
from nestspk.errors import NestspkError, WeightsError
from nestspk.export import main
from nestspk.runtime.onnx_runtime import INPUT_NAME, OUTPUT_NAME, OnnxBackendError, OnnxEmbedder
from torchless import TORCH_LOADED, run_without_torch

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("NESTSPK_DATA", REPO.parent / "shared" / "data"))
CLIP_DIR = DATA / "librispeech-snippets" / "train-clean-100"
SHIPPED = ["nested_4level", "resnetse34l_asp"]
SR = 16000


def _clip_files(n: int) -> list[Path]:
    files = sorted(CLIP_DIR.glob("*.flac"))[:n]
    if not files:
        pytest.skip(f"no LibriSpeech snippets under {CLIP_DIR}")
    return files


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    from nestspk.audio import load_audio

    return [load_audio(str(f)) for f in _clip_files(4)]


def _shipped_card(name: str) -> ModelCard:
    card = ModelCard.load(name)
    if "fp32" not in card.exports:
        pytest.fail(f"{name} card has no fp32 export; run export/export_all.sh")
    return card


def _cos_and_diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min()), float(np.abs(a - b).max())


@pytest.mark.parametrize("name", SHIPPED)
def test_parity_with_torch_on_real_clips(name: str, clips: list[np.ndarray]) -> None:
    import torch

    from nestspk.checkpoints import load_model

    _shipped_card(name)
    model, _ = load_model(name)
    emb = OnnxEmbedder(name, device="cpu", intra_op_threads=2)
    assert emb.providers[0] == "CPUExecutionProvider"
    n = int(1.3 * SR)
    batches = [c[None, :] for c in clips] + [np.stack([c[:n] for c in clips])]
    worst_cos, worst_diff = 1.0, 0.0
    for wav in batches:
        out = emb.embed_batch(wav)
        with torch.inference_mode():
            ref = model.embed(torch.from_numpy(wav)).numpy()
        assert out.dtype == np.float32 and out.shape == ref.shape == (wav.shape[0], emb.embed_dim)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
        c, d = _cos_and_diff(ref, out)
        worst_cos, worst_diff = min(worst_cos, c), max(worst_diff, d)
    log.info("%s parity: cosine min %.8f, max abs diff %.3g", name, worst_cos, worst_diff)
    assert worst_cos >= 0.9999, f"{name}: cosine min {worst_cos:.8f}, max abs diff {worst_diff:.3g}"
    assert worst_diff < 1e-3, f"{name}: max abs diff {worst_diff:.3g} (cosine min {worst_cos:.8f})"


def test_export_has_dynamic_batch_and_time(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    import torch

    from nestspk.models import build_model
    from nestspk.export import export_onnx

    torch.manual_seed(0)
    model = build_model("nested", {"channels": [8, 16, 16, 32], "blocks": [1, 1, 1, 1],
                                   "fusion_dim": 32, "embed_dim": 64}).eval()
    path = export_onnx(model, tmp_path / "tiny.onnx", check=False)
    assert not list(tmp_path.glob("*.data")), "weights must stay inside the .onnx file"
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    log.info("tiny model exported with the %s exporter", meta.get("nestspk.exporter"))
    assert meta["nestspk.frontend_dft"] == "factored"
    (inp,), (outp,) = proto.graph.input, proto.graph.output
    assert (inp.name, outp.name) == (INPUT_NAME, OUTPUT_NAME)
    dims = inp.type.tensor_type.shape.dim
    assert len(dims) == 2 and all(d.dim_param and not d.dim_value for d in dims), dims

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    # 1.3 s -> 131 frames and 9.7 s -> 971 frames: not multiples of the encoder's time stride 4
    for seconds in (1.3, 4.0, 9.7):
        for batch in (1, 3):
            wav = (0.1 * rng.standard_normal((batch, int(seconds * SR)))).astype(np.float32)
            out = sess.run([OUTPUT_NAME], {INPUT_NAME: wav})[0]
            with torch.inference_mode():
                ref = model.embed(torch.from_numpy(wav)).numpy()
            assert out.shape == (batch, 64)
            c, d = _cos_and_diff(ref, out)
            assert c >= 0.9999, f"T={wav.shape}: cosine {c:.8f}, max abs diff {d:.3g}"


def test_export_with_direct_front_end(tmp_path: Path) -> None:
    """--frontend-dft direct (the matmul form torch uses) exports too and matches torch."""
    import onnx
    import onnxruntime as ort
    import torch

    from nestspk.models import build_model
    from nestspk.export import export_onnx

    torch.manual_seed(0)
    model = build_model("nested", {"channels": [8, 16, 16, 32], "blocks": [1, 1, 1, 1],
                                   "fusion_dim": 32, "embed_dim": 64}).eval()
    path = export_onnx(model, tmp_path / "direct.onnx", check=False, frontend_dft="direct")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["nestspk.frontend_dft"] == "direct"
    wav = (0.1 * np.random.default_rng(1).standard_normal((2, int(2.3 * SR)))).astype(np.float32)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run([OUTPUT_NAME], {INPUT_NAME: wav})[0]
    with torch.inference_mode():
        ref = model.embed(torch.from_numpy(wav)).numpy()
    c, d = _cos_and_diff(ref, out)
    assert c >= 0.9999, (c, d)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_onnx_matches_card_sha256(name: str) -> None:
    card = _shipped_card(name)
    path = card.resolve(card.exports["fp32"].file)
    assert path.parent == weights_dir() and path.is_file()
    assert sha256_file(path) == card.exports["fp32"].sha256
    parity = card.exports["fp32"].parity
    assert parity and parity["cosine_min"] >= 0.9999, parity
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert meta.get("nestspk.frontend_dft") == "factored", meta  # the faster front end is what ships


def test_tampered_onnx_is_rejected(tmp_path: Path) -> None:
    card = _shipped_card("nested_4level")
    src = card.resolve(card.exports["fp32"].file)
    shutil.copy(resolve_card("nested_4level"), tmp_path / "nested_4level.json")
    dst = tmp_path / card.exports["fp32"].file
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0x01
    dst.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        OnnxEmbedder(tmp_path / "nested_4level.json")
    dst.write_bytes(src.read_bytes())  # the untouched copy loads
    assert OnnxEmbedder(tmp_path / "nested_4level.json").card.name == "nested_4level"


def test_card_without_onnx_file_is_a_clear_error(tmp_path: Path) -> None:
    raw = json.loads(resolve_card("nested_4level").read_text())
    for k in ("onnx_file", "onnx_sha256", "onnx_parity"):  # card format 1
        raw.pop(k, None)
    raw.get("exports", {}).pop("fp32", None)  # card format 2
    (tmp_path / "c.json").write_text(json.dumps(raw))
    with pytest.raises(WeightsError, match="nestspk-export"):
        OnnxEmbedder(tmp_path / "c.json")


def test_cuda_request_without_cuda_is_a_clear_error() -> None:
    _shipped_card("nested_4level")
    try:
        emb = OnnxEmbedder("nested_4level", device="cuda")
    except OnnxBackendError as e:
        msg = str(e)
        assert "CUDA execution provider is unavailable" in msg and "available providers" in msg, msg
        assert isinstance(e, NestspkError)
    else:  # a machine with a working CUDA EP
        assert emb.providers[0] == "CUDAExecutionProvider"


def test_cuda_session_asks_for_full_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA EP gets use_tf32=0: the graph's front end is a convolution, and TF32 distorts quiet mel bands."""
    import onnxruntime as ort

    _shipped_card("nested_4level")
    seen = {}
    real = ort.InferenceSession

    def recording(path, sess_options=None, providers=None, **kw):
        seen["providers"] = providers
        return real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", recording)
    with pytest.raises(OnnxBackendError):  # the recorded session runs on CPU, which the embedder rejects
        OnnxEmbedder("nested_4level", device="cuda")
    assert seen["providers"][0] == ("CUDAExecutionProvider", {"use_tf32": "0"})


def test_silent_cpu_fallback_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime may fall back to CPU without raising; the embedder must notice."""
    import onnxruntime as ort

    real = ort.InferenceSession

    def cpu_only(path, sess_options=None, providers=None, **kw):
        return real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", cpu_only)
    with pytest.raises(OnnxBackendError, match="CUDA execution provider is unavailable"):
        OnnxEmbedder("nested_4level", device="cuda")


def test_embed_batch_rejects_bad_shapes() -> None:
    from nestspk.errors import AudioError

    emb = OnnxEmbedder("nested_4level")
    with pytest.raises(AudioError):
        emb.embed_batch(np.zeros(16000, dtype=np.float32))
    with pytest.raises(AudioError):
        emb.embed_batch(np.zeros((1, 100), dtype=np.float32))
    assert emb.embed_batch(np.zeros((0, 16000), dtype=np.float32)).shape == (0, emb.embed_dim)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_files_embed_digital_silence_finitely(name: str, precision: str) -> None:
    """The Verifier's speech check rejects silence first, but a direct embed_batch user gets a finite vector."""
    got = OnnxEmbedder(name, precision=precision).embed_batch(np.zeros((1, 32000), dtype=np.float32))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_non_finite_output_is_an_error_naming_the_item(monkeypatch: pytest.MonkeyPatch) -> None:
    from nestspk.errors import AudioError

    emb = OnnxEmbedder("nested_4level")
    real = emb.session.run

    def nan_in_second_row(names, feed):
        out = real(names, feed)
        out[0][1, 3] = np.nan
        return out

    monkeypatch.setattr(emb.session, "run", nan_in_second_row)
    with pytest.raises(AudioError, match=r"item 1: nested_4level\.onnx returned a non-finite embedding"):
        emb.embed_batch(np.random.default_rng(0).standard_normal((3, 16000)).astype(np.float32))


def test_onnx_embedder_runs_without_torch() -> None:
    clip = _clip_files(1)[0]
    _shipped_card("nested_4level")
    res = run_without_torch(f"""
        import numpy as np
        from nestspk.audio import load_audio
        from nestspk.runtime.onnx_runtime import OnnxEmbedder

        emb = OnnxEmbedder("nested_4level", intra_op_threads=2)
        wav = load_audio({str(clip)!r})
        out = emb.embed_batch(np.stack([wav, wav]))
        assert out.shape == (2, 512) and out.dtype == np.float32, out.shape
        assert abs(float(np.linalg.norm(out[0])) - 1.0) < 1e-5
        loaded = {TORCH_LOADED}
        assert not loaded, loaded
        print("ok", emb.providers[0])
    """)
    assert res.returncode == 0 and "ok CPUExecutionProvider" in res.stdout, res.stdout + res.stderr[-3000:]


def test_cli_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", "no_such_model", "--no-parity"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("nestspk-export: error:") and "\n" not in err and "no_such_model" in err


def test_auto_device_uses_cpu_when_cuda_cannot_run(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """onnxruntime-gpu lists CUDAExecutionProvider on GPU-less machines; device='auto' must still work."""
    import nestspk.runtime as runtime_mod
    from nestspk.verifier import Verifier

    if runtime_mod.cuda_driver_present():
        pytest.skip("a GPU machine: auto may pick CUDA")
    assert Verifier(backend="onnx").device == "cpu"
    # driver present but the CUDA EP cannot load (e.g. cuDNN missing): warn and run on CPU
    monkeypatch.setattr(runtime_mod, "cuda_driver_present", lambda: True)
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with caplog.at_level(logging.WARNING, logger="nestspk.runtime"):
        v = Verifier(backend="onnx")
    assert v.device == "cpu" and v.embedder.providers == ["CPUExecutionProvider"]
    assert "running on CPU" in caplog.text
    with pytest.raises(OnnxBackendError):
        Verifier(backend="onnx", device="cuda")
