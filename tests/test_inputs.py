"""Input sources, one validation path for every length, unknown-length streams, segmentation,
exotic tensors, batch errors and the speech-content check (issue 17 items 1, 3, 8, 12-16; issue 16.5)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nestspk.audio import (AUDIO_SUFFIXES, SpeechCheck, audio_info, check_speech, iter_windows, load_audio,
                           open_audio, plan_segments, window_starts)
from nestspk.errors import AudioError, InputError, NestspkError

import fuzz_strategies as fs
from conftest import reliability_bench

rel = reliability_bench()

SR = 16000


def _flac_bytes(x: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="FLAC")
    return buf.getvalue()


unknown_length_flac = fs.unknown_length_flac


@pytest.fixture(scope="module")
def long_speech(speech: np.ndarray) -> np.ndarray:
    """21 s of real speech (tiled), just over the 20 s streaming limit."""
    return np.tile(speech, 6)[: 21 * SR].copy()


# --------------------------------------------------------------------------- unknown length (17.1)


def test_unknown_length_flac_loads_streams_and_counts(tmp_path: Path, speech: np.ndarray) -> None:
    p = tmp_path / "pipe.flac"
    p.write_bytes(unknown_length_flac(speech))
    assert sf.info(str(p)).frames == 2**63 - 1  # what libsndfile reports for such a stream
    ref = load_audio(_flac_bytes(speech))
    np.testing.assert_array_equal(load_audio(p), ref)
    assert audio_info(p) == (len(speech), SR, 1)
    wins = list(iter_windows(p, 1.0, 0.5))
    assert len(wins) == len(window_starts(len(speech), SR, SR // 2))
    np.testing.assert_array_equal(wins[-1], ref[-SR:])


def test_window_starts_are_lazy_for_huge_lengths() -> None:
    s = window_starts(2**63 - 1, 160000, 80000)  # used to build a list of ~1e14 ints (MemoryError)
    assert len(s) > 10**13 and s[0] == 0 and s[1] == 80000 and s[-1] == 2**63 - 1 - 160000


def test_plan_same_for_arrays_and_files(tmp_path: Path, long_speech: np.ndarray) -> None:
    p = tmp_path / "long.flac"
    sf.write(p, long_speech, SR)
    a, f = open_audio(long_speech).plan(), open_audio(p).plan()
    assert a.windowed and f.windowed and list(a.starts) == list(f.starts) == [0, 80000, 160000, 176000]
    assert not plan_segments(20 * SR).windowed and plan_segments(20 * SR + 1).windowed


# --------------------------------------------------------------------------- one validation path (17.8)


def test_long_files_get_the_same_validation(tmp_path: Path, long_speech: np.ndarray) -> None:
    loud = tmp_path / "int16_as_float.wav"
    sf.write(loud, long_speech * 32767, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="must lie within"):
        list(iter_windows(loud, 10.0, 5.0))
    over = tmp_path / "overshoot.wav"
    sf.write(over, long_speech / np.abs(long_speech).max() * 1.5, SR, subtype="FLOAT")
    assert max(float(np.abs(w).max()) for w in iter_windows(over, 10.0, 5.0)) <= 1.0  # clipped as documented
    with pytest.raises(AudioError, match="sample_rate must be a positive int"):
        open_audio(over, 16000.0)


# --------------------------------------------------------------------------- sources (16.5, 17.3, 17.14)


_Pipe = fs.Pipe


def test_bytes_and_file_objects_are_content(tmp_path: Path, speech: np.ndarray) -> None:
    data = _flac_bytes(speech)
    p = tmp_path / "a.flac"
    p.write_bytes(data)
    ref = load_audio(p)
    np.testing.assert_array_equal(load_audio(data), ref)
    np.testing.assert_array_equal(load_audio(bytearray(data)), ref)
    np.testing.assert_array_equal(load_audio(io.BytesIO(data)), ref)
    with open(p, "rb") as f:
        np.testing.assert_array_equal(load_audio(f), ref)
    np.testing.assert_array_equal(load_audio(_Pipe(data)), ref)
    np.testing.assert_array_equal(load_audio(io.BytesIO(unknown_length_flac(speech))), ref)
    np.testing.assert_array_equal(load_audio(os.fsencode(p)), ref)  # a short NUL-free bytes value is a path


def test_echoed_inputs_are_short() -> None:
    junk = bytes(range(256)) * 600  # 153,600 bytes of non-audio
    with pytest.raises(AudioError) as ei:
        load_audio(junk)
    assert str(ei.value).startswith("<bytes len=153600>") and len(str(ei.value)) < 400
    with pytest.raises(AudioError) as ei:
        load_audio("/nonexistent/" + "x" * 5000 + ".wav")
    assert "file not found" in str(ei.value) and len(str(ei.value)) < 400


def test_non_utf8_file_name(tmp_path: Path, speech: np.ndarray) -> None:
    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9-\xff.flac"
    if os.fsdecode(raw).encode("utf-8", "surrogateescape") != raw:
        pytest.skip("file system encoding cannot hold arbitrary bytes")
    name = os.fsdecode(raw)
    with open(raw, "wb") as f:
        f.write(_flac_bytes(speech))
    np.testing.assert_array_equal(load_audio(name), load_audio(_flac_bytes(speech)))
    assert audio_info(Path(name))[0] == len(speech)
    with open(raw, "wb") as f:
        f.write(b"junk" * 100)
    with pytest.raises(AudioError) as ei:
        load_audio(name)
    str(ei.value).encode("utf-8")  # printable: undecodable bytes shown as \xNN
    assert "caf\\xe9" in str(ei.value)


def test_every_soundfile_format_is_an_audio_suffix() -> None:
    assert {".wav", ".flac", ".ogg", ".opus", ".mp3"} <= AUDIO_SUFFIXES


# --------------------------------------------------------------------------- odd arrays and tensors (17.15)


def test_exotic_tensors_and_matrix(speech: np.ndarray) -> None:
    torch = pytest.importorskip("torch")
    ref = load_audio(speech)
    t = torch.from_numpy(speech.copy())
    np.testing.assert_array_equal(load_audio(np.asmatrix(speech)), ref)
    np.testing.assert_array_equal(load_audio(torch._neg_view(-t)), ref)
    np.testing.assert_array_equal(load_audio(t.to_sparse()), ref)
    np.testing.assert_array_equal(load_audio(t[None].expand(2, -1)), ref)  # stride-0 stereo view
    for bad, match in [(t.to("meta"), "meta-device"), (torch.complex(t, t).conj(), "unsupported dtype"),
                       (torch.nested.nested_tensor([t, t[:9000]]), "nested")]:
        with pytest.raises(AudioError, match=match):
            load_audio(bad)


# --------------------------------------------------------------------------- speech content (17.12)


def _nonspeech(kind: str, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(1 if kind.endswith("2") else 0)
    if kind == "click":
        x = np.zeros_like(t)
        x[len(x) // 2] = 0.9
        return x.astype(np.float32)
    if kind.startswith("noise"):
        return rng.uniform(-0.5, 0.5, t.size).astype(np.float32)
    return (0.3 * np.sin(2 * np.pi * int(kind[3:]) * t)).astype(np.float32)  # "hum50", "hum60"


@pytest.mark.parametrize("kind", ["click", "noise", "hum50", "hum60"])
def test_non_speech_rejected(kind: str) -> None:
    with pytest.raises(AudioError, match="does not look like speech") as ei:
        check_speech(_nonspeech(kind), "my-input")
    assert str(ei.value).startswith("my-input")


def test_real_speech_passes_speech_check(speech: np.ndarray, librispeech_files, example_files) -> None:
    for x in [speech] + [load_audio(p) for p in list(example_files.values()) + librispeech_files[:20]]:
        c = SpeechCheck()
        c.add(x)
        assert c.problem() is None, c.measures()


def test_verify_non_speech_is_an_error_not_same_speaker(nested_verifier) -> None:
    for a, b in [("click", "click"), ("noise", "noise2"), ("hum50", "hum60")]:
        with pytest.raises(AudioError, match="item 0 of 2: <array.*does not look like speech"):
            nested_verifier.verify(_nonspeech(a), _nonspeech(b))


def test_dc_offset_does_not_change_the_score(nested_verifier, example_files) -> None:
    a, b = load_audio(example_files["a1"]), load_audio(example_files["b"])
    s0 = nested_verifier.verify(a, b).score
    s1 = nested_verifier.verify(np.clip(a + 0.1, -1, 1), b).score
    assert abs(s1 - s0) < 0.02, (s0, s1)


# --------------------------------------------------------------------------- batches (17.15, 17.16)


def test_batch_errors_name_the_item(nested_verifier, speech: np.ndarray) -> None:
    x = speech[: 2 * SR]
    with pytest.raises(AudioError, match=r"^item 2 of 4: <array shape=\(16000,\) dtype=float32>: silent"):
        nested_verifier.embed_batch([x, x, np.zeros(SR, np.float32), x])
    with pytest.raises(AudioError, match=r"^item 1 of 2: /nonexistent\.wav: file not found"):
        nested_verifier.embed_batch([x, "/nonexistent.wav"])


def test_generators_and_bad_batch_arguments(nested_verifier, speech: np.ndarray) -> None:
    x = speech[: 2 * SR]
    e = nested_verifier.embed_batch(w for w in [x, x[:SR]])
    assert e.shape == (2, nested_verifier.embed_dim)
    for bs in (0, 2.5, "4", True, None):
        with pytest.raises(InputError, match="batch_size must be a positive int"):
            nested_verifier.embed_batch([x], batch_size=bs)
    for bad in (x, "a.wav", b"RIFF\x00", 5):
        with pytest.raises(InputError):
            nested_verifier.embed_batch(bad)
    assert all(issubclass(InputError, c) for c in (NestspkError, ValueError, TypeError))


def test_verifier_identify_threshold_remove_and_top_k(nested_verifier, example_files) -> None:
    from nestspk.gallery import UNKNOWN, Gallery

    v = nested_verifier
    v.gallery = Gallery(v.embed_dim, v.model_name)
    v.enroll("a", example_files["a1"])
    v.enroll("b", example_files["b"])
    assert v.identify(example_files["a2"], top_k=1)[0][0] == "a"
    assert v.identify(example_files["a2"], threshold=0.999) == [(UNKNOWN, pytest.approx(
        v.identify(example_files["a2"], top_k=1)[0][1]))]
    for k in (0, 2.5, "3", True):
        with pytest.raises(InputError, match="top_k"):
            v.identify(example_files["a2"], top_k=k)
    v.remove("a")
    assert v.speakers == ["b"]


@pytest.mark.parametrize("kind", [
    "not_object", "options_str", "unknown_arch", "deep_json", "no_embed_dim", "frontend_int", "name_int"])
def test_malformed_cards_name_the_card(tmp_path: Path, kind: str) -> None:
    import json

    from nestspk import Verifier

    repo = Path(__file__).resolve().parent.parent
    card = json.loads((repo / "weights" / "nested_4level.json").read_text())
    (tmp_path / "nested_4level.pt").symlink_to(repo / "weights" / "nested_4level.pt")
    text = {"not_object": lambda: "[1, 2]", "deep_json": lambda: "[" * 100000 + "]" * 100000,
            "options_str": lambda: json.dumps(card | {"model_options": "x"}),
            "unknown_arch": lambda: json.dumps(card | {"model": "zzz"}),
            "no_embed_dim": lambda: json.dumps({k: v for k, v in card.items() if k != "embed_dim"}),
            "frontend_int": lambda: json.dumps(card | {"frontend": 5}),
            "name_int": lambda: json.dumps(card | {"name": 7})}[kind]()
    p = tmp_path / "mine.json"
    p.write_text(text)
    with pytest.raises(NestspkError) as ei:
        Verifier(str(p), device="cpu", backend="torch")
    assert str(p) in str(ei.value) or card["name"] in str(ei.value)
