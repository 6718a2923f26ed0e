import threading

import numpy as np
import pytest
import soundfile as sf
import torch

from nestspk import AudioError, GalleryError, Verifier
from nestspk.verifier import LONG_AUDIO_S, VerificationResult


def test_examples_same_and_different(nested_verifier, example_files):
    same = nested_verifier.verify(example_files["a1"], example_files["a2"])
    diff = nested_verifier.verify(example_files["a1"], example_files["b"])
    assert isinstance(same, VerificationResult)
    assert same.same_speaker and not diff.same_speaker
    assert same.score > diff.score
    assert same.threshold == nested_verifier.card.operating_points["raw"]["eer"]  # exactly the card's EER point


def test_embed_inputs_agree(nested_verifier, example_files):
    path = example_files["a1"]
    x, sr = sf.read(path, dtype="float32")
    e_file = nested_verifier.embed(path)
    e_np = nested_verifier.embed(x, sample_rate=sr)
    e_t = nested_verifier.embed(torch.from_numpy(x), sample_rate=sr)
    e_int = nested_verifier.embed(np.round(x * 32768).astype(np.int16), sample_rate=sr)  # the file's own samples
    assert e_file.shape == (512,) and e_file.dtype == np.float32
    assert np.linalg.norm(e_file) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(e_file, e_np, atol=1e-6)
    np.testing.assert_allclose(e_file, e_t, atol=1e-6)
    assert float(e_file @ e_int) > 0.99999


def test_stereo_and_other_rates(nested_verifier, example_files, tmp_path):
    x, sr = sf.read(example_files["a1"], dtype="float32")
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([x, x], axis=1), sr)
    e = nested_verifier.embed(example_files["a1"])
    assert float(e @ nested_verifier.embed(stereo)) > 0.9999
    # 44.1 kHz copy of the same audio: resampled back to 16 kHz internally
    import torchaudio.functional as AF

    y = AF.resample(torch.from_numpy(x), 16000, 44100).numpy()
    assert float(e @ nested_verifier.embed(y, sample_rate=44100)) > 0.99


def test_embed_batch_equals_one_by_one(nested_verifier, librispeech_files):
    files = librispeech_files[:5]
    wavs = [sf.read(f, dtype="float32")[0][: 16000 * n] for f, n in zip(files, [2, 3, 2, 5, 3])]
    batched = nested_verifier.embed_batch(wavs, batch_size=2)
    single = np.stack([nested_verifier.embed(w) for w in wavs])
    assert batched.shape == (5, 512)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    with pytest.raises(TypeError):
        nested_verifier.embed_batch(wavs[0])


def test_long_audio_windows_and_streaming(nested_verifier, librispeech_files, tmp_path):
    x = np.concatenate([sf.read(f, dtype="float32")[0] for f in librispeech_files[:3]])
    while len(x) / 16000 <= LONG_AUDIO_S + 5:  # short stand-in clips on machines without the corpora
        x = np.concatenate([x, x[::-1]])
    path = tmp_path / "long.flac"
    sf.write(path, x, 16000)
    streamed = nested_verifier.embed(path)  # streamed from disk in windows
    in_memory = nested_verifier.embed(x)  # windows of the loaded array
    np.testing.assert_allclose(streamed, in_memory, atol=1e-4)
    with pytest.raises(AudioError, match="file is 16000 Hz"):
        nested_verifier.embed(path, sample_rate=8000)
    silent = tmp_path / "silent_long.flac"
    sf.write(silent, np.zeros(16000 * 30, np.float32), 16000)
    with pytest.raises(AudioError, match="silent_long.flac: silent"):
        nested_verifier.embed(silent)


def test_bad_inputs_name_the_input(nested_verifier, tmp_path):
    with pytest.raises(AudioError, match="missing.wav"):
        nested_verifier.embed(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="silent"):
        nested_verifier.embed(np.zeros(16000, np.float32))
    with pytest.raises(AudioError, match="NaN"):
        nested_verifier.embed(np.full(16000, np.nan, np.float32))
    with pytest.raises(AudioError, match="too short"):
        nested_verifier.embed(np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 0.1)
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    with pytest.raises(AudioError, match="corrupt.wav"):
        nested_verifier.verify(bad, bad)


def test_thread_safety_8_threads(nested_verifier, librispeech_files):
    wavs = [sf.read(f, dtype="float32")[0][:16000] for f in librispeech_files[:8]]
    serial = [nested_verifier.embed(w) for w in wavs]
    results: dict[int, np.ndarray] = {}

    def work(i):
        results[i] = nested_verifier.embed(wavs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        np.testing.assert_allclose(results[i], serial[i], atol=1e-6)


def test_enroll_identify_gallery_round_trip(nested_verifier, example_files, tmp_path):
    v = Verifier("nested", device="cpu")
    with pytest.raises(GalleryError):
        v.identify(example_files["a2"])
    v.enroll("s121", example_files["a1"])
    v.enroll("s1221", [example_files["b"]])
    top = v.identify(example_files["a2"], top_k=2)
    assert [n for n, _ in top][0] == "s121" and top[0][1] > top[1][1]
    path = tmp_path / "gallery.npz"
    v.save_gallery(path)
    w = Verifier("nested", device="cpu")
    w.load_gallery(path)
    assert w.identify(example_files["a2"], top_k=2) == top
    with pytest.raises(GalleryError):
        Verifier("resnetse34l", device="cpu").load_gallery(path)


def test_operating_points_from_the_card(example_files):
    v = Verifier("nested", device="cpu")
    strict = Verifier("nested", device="cpu", threshold="far_0.001")
    points = v.card.operating_points["raw"]
    assert v.threshold == points["eer"]
    assert strict.threshold == points["far_0.001"] > points["far_0.01"] > v.threshold
    asn = Verifier("nested", device="cpu", score_norm="asnorm", threshold="far_0.01")
    assert asn.threshold == v.card.operating_points["asnorm"]["far_0.01"]
    r = asn.verify(example_files["a1"], example_files["a2"])
    assert r.same_speaker and r.llr is None  # calibration is fitted on raw scores only
    with pytest.raises(ValueError, match="operating point"):
        Verifier("nested", device="cpu", threshold="far_0.5")


def test_baseline_selectable_and_threshold_override(example_files):
    v = Verifier("resnetse34l", device="cpu", threshold=0.99)
    assert v.model_name == "resnetse34l_asp" and v.embed_dim == 512
    assert not v.verify(example_files["a1"], example_files["a2"]).same_speaker
    with pytest.raises(ValueError):
        Verifier(backend="tensorrt")


def test_zero_windows_inside_a_long_input_add_nothing_on_both_backends(speech) -> None:
    """A stretch of digital silence inside a long recording: torch gives its windows a zero embedding and the ONNX
    graph 0/0; both backends skip them, so the result is finite and the same."""
    import numpy as np

    from nestspk import Verifier

    x = np.concatenate([np.tile(speech, 3), np.zeros(16000 * 20, np.float32), np.tile(speech, 2)])
    a = Verifier("nested", device="cpu", backend="onnx").embed(x)
    b = Verifier("nested", device="cpu", backend="torch").embed(x)
    assert np.isfinite(a).all() and float(a @ b) > 0.9999
