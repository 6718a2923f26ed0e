"""Voice-activity detection (extra ``vad``): Silero's ONNX model run without torch."""
from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest
import soundfile as sf

from nestspk.errors import AudioError
from nestspk.extras import MissingExtraError

try:
    metadata.distribution("silero-vad")
except metadata.PackageNotFoundError:
    pytest.skip("silero-vad (extra 'vad') is not installed", allow_module_level=True)

from nestspk import vad as vadmod  # noqa: E402
from nestspk.vad import SileroVAD, silero_model_path, speech_regions  # noqa: E402

SR = 16000


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD()


@pytest.fixture(scope="module")
def padded(example_files) -> tuple[np.ndarray, int, int]:
    """An example recording with 3 s of silence before and white noise (-40 dBFS) after: (wav, start, end)."""
    x, sr = sf.read(example_files["a1"], dtype="float32")
    assert sr == SR
    noise = (np.random.default_rng(0).standard_normal(3 * SR) * 0.01).astype(np.float32)
    return np.concatenate([np.zeros(3 * SR, np.float32), x, noise]), 3 * SR, 3 * SR + len(x)


def _white_noise_file(tmp_path) -> str:
    path = tmp_path / "noise_only.wav"
    sf.write(path, np.random.default_rng(1).standard_normal(4 * SR).astype(np.float32) * 0.02, SR)
    return str(path)


def test_sequence_and_streaming_models_agree(padded):
    wav = padded[0]
    p_seq = SileroVAD(model="sequence").probabilities(wav)
    p_str = SileroVAD(model="streaming").probabilities(wav)
    assert p_seq.shape == p_str.shape == (-(-len(wav) // 512),)
    np.testing.assert_allclose(p_seq, p_str, atol=1e-5)
    assert p_seq.max() > 0.9 and p_seq[: 2 * SR // 512].max() < 0.1  # speech found, leading silence not


def test_regions_inside_the_speech(vad, padded):
    wav, start, end = padded
    regions = vad.regions(wav)
    assert regions, "no speech found in a real recording"
    assert regions == sorted(regions) and all(a < b for a, b in regions)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(regions, regions[1:]))
    # the recording ends mid-word: Silero's hangover runs ~0.45 s into the noise after it
    assert regions[0][0] >= start - 0.1 * SR and regions[-1][1] <= end + 0.6 * SR
    kept = sum(b - a for a, b in regions)
    assert 0.5 * (end - start) < kept <= end - start + 0.6 * SR
    speech = vad.speech(wav)
    assert speech.dtype == np.float32 and len(speech) == kept


@pytest.mark.parametrize("opts", [{}, {"threshold": 0.3}, {"min_silence_duration_ms": 300, "speech_pad_ms": 100},
                                  {"min_speech_duration_ms": 1000, "threshold": 0.7, "neg_threshold": 0.6}])
def test_regions_equal_silero_reference(padded, opts):
    """Our torch-free state machine gives Silero's own get_speech_timestamps regions."""
    pytest.importorskip("torch")
    silero = pytest.importorskip("silero_vad")
    import torch

    wav = padded[0]
    ref = silero.get_speech_timestamps(torch.from_numpy(wav), silero.load_silero_vad(onnx=True), **opts)
    ours = SileroVAD(threshold=opts.get("threshold", 0.5), neg_threshold=opts.get("neg_threshold"),
                     min_speech_ms=opts.get("min_speech_duration_ms", 250),
                     min_silence_ms=opts.get("min_silence_duration_ms", 100),
                     speech_pad_ms=opts.get("speech_pad_ms", 30)).regions(wav)
    assert ours == [(d["start"], d["end"]) for d in ref]


def test_speech_regions_rule():
    p = np.array([0.0] + [0.9] * 8 + [0.2] * 5 + [0.9] * 9 + [0.2] * 5)
    n = len(p) * 512
    # min_silence 100 ms: 5 low frames (the 5th is 2048 samples after the 1st) end a region, at the 1st low frame;
    # pad 0 keeps the frame edges exact
    assert speech_regions(p, n, speech_pad_ms=0) == [(512, 9 * 512), (14 * 512, 23 * 512)]
    # a longer min_silence bridges the gap (and the last region runs to the end)
    assert speech_regions(p, n, min_silence_ms=300, speech_pad_ms=0) == [(512, n)]
    # regions shorter than min_speech are dropped; padding 30 ms = 480 samples widens the rest
    assert speech_regions(p, n, min_speech_ms=300, speech_pad_ms=0) == []
    assert speech_regions(p, n) == [(32, 9 * 512 + 480), (14 * 512 - 480, 23 * 512 + 480)]
    assert speech_regions(np.zeros(10), 5120) == []


def test_no_speech_raises_naming_the_input(vad, tmp_path):
    path = _white_noise_file(tmp_path)
    with pytest.raises(AudioError, match="noise_only.wav: no speech found"):
        vad.speech_batch([path])
    arr = np.random.default_rng(2).standard_normal(3 * SR).astype(np.float32) * 0.02
    with pytest.raises(AudioError, match=r"<array shape=\(48000,\) dtype=float32>: no speech"):
        vad.speech_batch([arr])


def test_too_little_speech_raises(vad, speech):
    wav = np.concatenate([np.zeros(SR, np.float32), speech[: int(0.6 * SR)], np.zeros(SR, np.float32)])
    regions = vad.regions(wav)
    kept = sum(b - a for a, b in regions)
    if regions and kept >= 0.5 * SR:
        pytest.skip(f"the VAD kept {kept / SR:.2f} s of a 0.6 s snippet")
    with pytest.raises(AudioError, match="speech"):
        vad.speech(wav, "snippet")


def test_missing_extra_names_it(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(vadmod.metadata, "distribution", missing)
    with pytest.raises(MissingExtraError, match=r"nestspk\[vad\]"):
        SileroVAD()


def test_runs_without_torch(tmp_path):
    """nestspk.vad imports and runs with torch made unimportable (the silero_vad package needs torch; we do not)."""
    code = ("import sys; sys.modules['torch'] = None; sys.modules['silero_vad'] = None\n"
            "import numpy as np, soundfile as sf\n"
            "from nestspk.vad import SileroVAD\n"
            "x, _ = sf.read('examples/speaker_1221.flac', dtype='float32')\n"
            "print(len(SileroVAD().regions(x)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(_repo()))
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 1


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent


def test_model_file_located_without_importing_the_package():
    path = silero_model_path("streaming")
    assert path.name == "silero_vad.onnx" and path.is_file()


@pytest.fixture(scope="module")
def vad_verifier():
    from nestspk import Verifier

    return Verifier("nested", device="cpu", vad=True)


def test_verifier_vad_embeds_only_speech(vad_verifier, nested_verifier, padded, vad):
    wav = padded[0]
    with_vad = vad_verifier.embed(wav)
    np.testing.assert_allclose(with_vad, nested_verifier.embed(vad.speech(wav)), atol=1e-6)
    assert float(with_vad @ nested_verifier.embed(wav)) < 0.9999  # the padding changed the plain embedding
    assert vad_verifier.embed_batch([wav, wav]).shape == (2, vad_verifier.embed_dim)


def test_verifier_vad_no_speech_names_file(vad_verifier, tmp_path, example_files):
    path = _white_noise_file(tmp_path)
    with pytest.raises(AudioError, match="noise_only.wav"):
        vad_verifier.verify(str(example_files["a1"]), path)


def test_cli_embed_vad_records_setting_and_guards_resume(example_files, tmp_path, capsys):
    from nestspk.cli import main

    out = tmp_path / "e.npy"
    args = ["embed", str(example_files["a1"]), str(example_files["b"]), "-o", str(out), "--quiet", "--device", "cpu"]
    assert main(args + ["--vad"]) == 0
    assert json.loads((tmp_path / "e.npy.json").read_text())["vad"] is True
    capsys.readouterr()
    assert main(args + ["--resume"]) == 2
    assert "same --vad setting" in capsys.readouterr().err
    assert main(["verify", str(example_files["a1"]), str(example_files["a2"]), "--device", "cpu", "--vad",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["same_speaker"] is True
