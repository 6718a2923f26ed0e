"""Tests for nestspk.audio: loading, validation, resampling and streaming windows."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nestspk.audio import (
    MIN_DURATION_S,
    TARGET_SAMPLE_RATE,
    audio_info,
    iter_windows,
    load_audio,
    resample,
)
from nestspk.errors import AudioError

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NESTSPK_DATA", str(REPO.parent / "shared" / "data")))


@pytest.fixture(scope="module")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"test data folder {DATA} absent (set NESTSPK_DATA)")
    return DATA


@pytest.fixture(scope="module")
def flac_path(data_dir: Path) -> Path:
    files = sorted((data_dir / "librispeech-snippets" / "train-clean-100").glob("*.flac"))
    if not files:
        pytest.skip("no librispeech snippets")
    return files[0]


@pytest.fixture(scope="module")
def fsdd_paths(data_dir: Path) -> list[Path]:
    files = sorted((data_dir / "fsdd" / "recordings").glob("*.wav"))
    if not files:
        pytest.skip("no FSDD recordings")
    return files


@pytest.fixture(scope="module")
def speech16k(flac_path: Path) -> np.ndarray:
    x, sr = sf.read(str(flac_path), dtype="float32")
    assert sr == 16000
    return x


def _speech(speech16k: np.ndarray, seconds: float = 1.0) -> np.ndarray:
    """A real-speech float32 excerpt at 16 kHz with a non-trivial peak."""
    n = int(seconds * 16000)
    return np.ascontiguousarray(speech16k[16000 : 16000 + n])


# --------------------------------------------------------------------------- loading


def test_flac_loads_float32_mono(flac_path: Path) -> None:
    x = load_audio(flac_path)
    frames, sr, ch = audio_info(flac_path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert sr == 16000 and ch == 1 and x.shape[0] == frames
    assert np.max(np.abs(x)) <= 1.0
    assert np.array_equal(load_audio(str(flac_path)), x)
    assert np.array_equal(load_audio(flac_path, 16000), x)


def _long_enough(paths: list[Path]) -> Path:
    """First FSDD clip of at least 0.6 s (many FSDD digits are shorter than 0.5 s)."""
    for p in paths:
        info = sf.info(str(p))
        if info.frames >= 0.6 * info.samplerate:
            return p
    pytest.skip("no FSDD clip >= 0.6 s")


def test_fsdd_8k_upsampled(fsdd_paths: list[Path]) -> None:
    p = _long_enough(fsdd_paths)
    frames, sr, _ = audio_info(p)
    assert sr == 8000
    x = load_audio(p)
    assert x.dtype == np.float32 and x.ndim == 1
    assert x.shape[0] == 2 * frames


def test_file_sample_rate_mismatch(fsdd_paths: list[Path]) -> None:
    p = _long_enough(fsdd_paths)
    with pytest.raises(AudioError, match="but the file is 8000 Hz") as ei:
        load_audio(p, 16000)
    assert str(ei.value).startswith(str(p))


def test_stereo_layouts_downmix_to_mean(speech16k: np.ndarray) -> None:
    left = _speech(speech16k)
    right = 0.5 * left[::-1].copy()
    want = (left + right) / 2
    np.testing.assert_allclose(load_audio(np.stack([left, right])), want, atol=1e-7)
    np.testing.assert_allclose(load_audio(np.stack([left, right], axis=1)), want, atol=1e-7)
    np.testing.assert_allclose(load_audio(np.stack([left, right])[None]), want, atol=1e-7)
    np.testing.assert_array_equal(load_audio(left[None, :]), left)
    np.testing.assert_array_equal(load_audio(left[:, None]), left)


def test_stereo_file_downmix(tmp_path: Path, speech16k: np.ndarray) -> None:
    left = _speech(speech16k)
    right = -0.25 * left
    p = tmp_path / "stereo.wav"
    sf.write(str(p), np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    assert audio_info(p) == (left.shape[0], 16000, 2)
    np.testing.assert_allclose(load_audio(p), (left + right) / 2, atol=1e-7)


def test_int_conversions(speech16k: np.ndarray) -> None:
    f = _speech(speech16k)
    i16 = np.round(f * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio(i16), i16 / 32768.0, atol=1e-7)
    i32 = i16.astype(np.int32) << 16
    np.testing.assert_allclose(load_audio(i32), i16 / 32768.0, atol=1e-7)
    i8 = (i16 >> 8).astype(np.int8)
    np.testing.assert_allclose(load_audio(i8), i8 / 128.0, atol=1e-7)
    u8 = (i8.astype(np.int16) + 128).astype(np.uint8)
    np.testing.assert_allclose(load_audio(u8), i8 / 128.0, atol=1e-7)
    i64 = i16.astype(np.int64) << 48
    np.testing.assert_allclose(load_audio(i64), i16 / 32768.0, atol=1e-7)


def test_float_conversions(speech16k: np.ndarray) -> None:
    f = _speech(speech16k)
    out64 = load_audio(f.astype(np.float64))
    assert out64.dtype == np.float32
    np.testing.assert_array_equal(out64, f)
    out16 = load_audio(f.astype(np.float16))
    assert out16.dtype == np.float32
    np.testing.assert_allclose(out16, f, atol=1e-3)
    # slight overshoot within tolerance is accepted
    g = f / np.max(np.abs(f)) * 1.0005
    assert load_audio(g).dtype == np.float32


def test_torch_tensor_input(speech16k: np.ndarray) -> None:
    torch = pytest.importorskip("torch")
    f = _speech(speech16k)
    t = torch.from_numpy(f).requires_grad_(True)
    np.testing.assert_array_equal(load_audio(t), f)
    stereo = torch.from_numpy(np.stack([f, f]))
    np.testing.assert_allclose(load_audio(stereo), f, atol=1e-7)
    np.testing.assert_allclose(load_audio(t.detach().to(torch.bfloat16)), f, atol=1e-2)
    with pytest.raises(AudioError, match="unsupported dtype") as ei:
        load_audio(torch.zeros(16000, dtype=torch.bool))
    assert str(ei.value).startswith("<array shape=(16000,)")
    # 8 kHz tensor is upsampled
    assert load_audio(t[:8000], 8000).shape[0] == 16000


def test_array_sample_rate_resampled(speech16k: np.ndarray) -> None:
    f = _speech(speech16k)
    y = load_audio(f, 16000)
    np.testing.assert_array_equal(y, f)
    y8 = load_audio(f, 8000)  # interpreted as 2 s at 8 kHz
    assert y8.shape[0] == 2 * f.shape[0]


def test_audio_module_does_not_import_torch() -> None:
    code = (
        "import sys; import nestspk.audio; "
        "bad=[m for m in sys.modules if m.split('.')[0] in ('torch','torchaudio')]; "
        "assert not bad, bad"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=str(REPO))


# --------------------------------------------------------------------------- array errors

ARR_CASES = [
    (np.zeros(16000, dtype=bool), "unsupported dtype"),
    (np.zeros(16000, dtype=np.complex64), "unsupported dtype"),
    (np.zeros(16000, dtype=object), "unsupported dtype"),
    (np.zeros(16000, dtype=np.uint16), "unsupported dtype"),
    (np.zeros(0, dtype=np.float32), "empty"),
    (np.zeros((2, 0), dtype=np.float32), "empty"),
    (np.zeros(16000, dtype=np.float32), "silent"),
    (np.full(16000, 3, dtype=np.int16), "silent"),
    (np.zeros((1, 1, 1, 16000), dtype=np.float32), "at most 3 dimensions"),
    (np.zeros((2, 1, 16000), dtype=np.float32), "3-D"),
    (np.zeros((100, 100), dtype=np.float32), "ambiguous"),
    (np.float32(0.5), "scalar"),
]


@pytest.mark.parametrize("arr,match", ARR_CASES)
def test_array_errors(arr: np.ndarray, match: str) -> None:
    label = f"<array shape={np.shape(arr)} dtype={np.asarray(arr).dtype}>"
    with pytest.raises(AudioError, match=match) as ei:
        load_audio(np.asarray(arr))
    assert str(ei.value).startswith(label), str(ei.value)


def test_slight_overshoot_is_clipped_not_rejected(speech16k: np.ndarray) -> None:
    f = np.asarray(speech16k, dtype=np.float32)
    g = f / np.max(np.abs(f)) * 1.3
    out = load_audio(g)
    assert out.max() <= 1.0 and out.min() >= -1.0 and np.abs(out).max() == 1.0


def test_nan_inf_peak_short_errors(speech16k: np.ndarray) -> None:
    f = _speech(speech16k)
    for bad in (np.nan, np.inf, -np.inf):
        g = f.copy()
        g[100] = bad
        with pytest.raises(AudioError, match="contains NaN/inf samples") as ei:
            load_audio(g)
        assert str(ei.value).startswith("<array shape=(16000,) dtype=float32>")
    with pytest.raises(AudioError, match=r"float samples must lie within \[-2, 2\].*got peak .*divide by 32768"):
        load_audio(f * 32768)
    short = f[: int(MIN_DURATION_S * 16000) - 1]
    with pytest.raises(AudioError, match=r"too short: 0\.4999\d* s < 0\.5 s") as ei:
        load_audio(short, name="clip-7")
    assert str(ei.value).startswith("clip-7")
    # duration is judged at the input's own rate: 2400 samples at 8 kHz = 0.3 s
    with pytest.raises(AudioError, match="too short: 0.3 s"):
        load_audio(f[:2400], 8000)
    # exactly the minimum is fine
    assert load_audio(f[:8000]).shape == (8000,)


@pytest.mark.parametrize("sr", [0, -16000, 999, 768001, 16000.0, "16000", True, None])
def test_bad_sample_rate(sr, speech16k: np.ndarray) -> None:
    f = _speech(speech16k)
    if sr is None:
        assert load_audio(f, sr).shape == f.shape
        return
    with pytest.raises(AudioError, match="sample_rate") as ei:
        load_audio(f, sr, name="mine")
    assert str(ei.value).startswith("mine")


def test_unsupported_source_type() -> None:
    with pytest.raises(AudioError, match="unsupported source type"):
        load_audio([0.1, 0.2, 0.3])


# --------------------------------------------------------------------------- file errors


def test_missing_and_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    for fn in (load_audio, audio_info, lambda p: iter_windows(p, 1.0, 0.5)):
        with pytest.raises(AudioError, match="file not found") as ei:
            fn(missing)
        assert str(ei.value).startswith(str(missing))
        with pytest.raises(AudioError, match="directory") as ei:
            fn(tmp_path)
        assert str(ei.value).startswith(str(tmp_path))


def test_corrupt_files(tmp_path: Path, fsdd_paths: list[Path], flac_path: Path) -> None:
    wav_bytes = fsdd_paths[0].read_bytes()
    cases: dict[str, bytes] = {
        "zero.wav": b"",
        "random.wav": np.random.default_rng(0).bytes(4000),
        "random.flac": np.random.default_rng(1).bytes(4000),
        "header20.wav": wav_bytes[:20],
        "header44.wav": wav_bytes[:44],  # valid header, no data -> empty
        "head30.flac": flac_path.read_bytes()[:30],  # inside STREAMINFO for any FLAC
    }
    for fname, content in cases.items():
        p = tmp_path / fname
        p.write_bytes(content)
        with pytest.raises(AudioError) as ei:
            load_audio(p)
        msg = str(ei.value)
        assert msg.startswith(str(p)), msg
        logger.info("%s -> %s", fname, msg)
        if fname != "header44.wav":
            with pytest.raises(AudioError) as ei:
                audio_info(p)
            assert str(ei.value).startswith(str(p))
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "zero.wav")
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "header44.wav")


def test_truncated_flac(tmp_path: Path, flac_path: Path) -> None:
    data = flac_path.read_bytes()
    p = tmp_path / "half.flac"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError) as ei:
        load_audio(p)
    assert str(ei.value).startswith(str(p))
    with pytest.raises(AudioError, match="half.flac"):
        list(iter_windows(p, 1.0, 1.0))


def test_file_errors_nan_and_silent(tmp_path: Path, speech16k: np.ndarray) -> None:
    f = _speech(speech16k)
    g = f.copy()
    g[5] = np.nan
    p = tmp_path / "nan.wav"
    sf.write(str(p), g, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN/inf") as ei:
        load_audio(p)
    assert str(ei.value).startswith(str(p))
    with pytest.raises(AudioError, match="NaN/inf"):
        list(iter_windows(p, 0.5, 0.5))
    p = tmp_path / "loud.wav"
    sf.write(str(p), f / np.max(np.abs(f)) * 4, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="must lie within"):
        load_audio(p)
    p = tmp_path / "silent.wav"
    sf.write(str(p), np.zeros(16000, np.int16), 16000)
    with pytest.raises(AudioError, match="silent") as ei:
        load_audio(p)
    assert str(ei.value).startswith(str(p))
    p = tmp_path / "short.wav"
    sf.write(str(p), f[:4000], 16000)
    with pytest.raises(AudioError, match="too short") as ei:
        load_audio(p, name="short-one")
    assert str(ei.value).startswith("short-one")
    with pytest.raises(AudioError, match="too short"):
        iter_windows(p, 1.0, 1.0)


# --------------------------------------------------------------------------- resample


@pytest.mark.parametrize("orig_sr", [8000, 22050, 44100, 48000])
def test_resample_matches_torchaudio(orig_sr: int, speech16k: np.ndarray) -> None:
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("torchaudio.functional")
    src = F.resample(torch.from_numpy(speech16k[: 16000 * 5]), 16000, orig_sr).numpy()
    src = src / max(1.0, float(np.max(np.abs(src))))
    want = F.resample(torch.from_numpy(src), orig_sr, 16000).numpy()
    got = resample(src, orig_sr, 16000)
    assert got.dtype == np.float32 and got.shape == want.shape
    diff = float(np.max(np.abs(got - want)))
    logger.info("resample %d->16000 max abs diff vs torchaudio: %.3g", orig_sr, diff)
    assert diff < 1e-5, f"{orig_sr}->16000 max abs diff {diff:.3g}"


@pytest.mark.parametrize("orig_sr,new_sr", [(16000, 8000), (16000, 44100), (8000, 11025)])
def test_resample_other_directions(orig_sr: int, new_sr: int, speech16k: np.ndarray) -> None:
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("torchaudio.functional")
    src = speech16k[: 16000 * 2 + 7]
    want = F.resample(torch.from_numpy(src), orig_sr, new_sr).numpy()
    got = resample(src, orig_sr, new_sr)
    assert got.shape == want.shape
    assert float(np.max(np.abs(got - want))) < 1e-5


def test_resample_identity_and_validation() -> None:
    x = np.linspace(-0.5, 0.5, 1000)
    y = resample(x, 16000, 16000)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x.astype(np.float32))
    assert resample(np.zeros(0, np.float32), 8000, 16000).shape == (0,)
    with pytest.raises(ValueError):
        resample(x, 0, 16000)
    with pytest.raises(ValueError):
        resample(x.reshape(10, 100), 8000, 16000)


def test_resample_long_input_chunked() -> None:
    # spans many internal chunks (16384 input strides each); seams must be invisible
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("torchaudio.functional")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(48000 * 40) * 0.1).astype(np.float32)
    for orig_sr in (48000, 44100):
        got = resample(x, orig_sr, 16000)
        want = F.resample(torch.from_numpy(x), orig_sr, 16000).numpy()
        assert got.shape == want.shape
        assert float(np.max(np.abs(got - want))) < 1e-5


# --------------------------------------------------------------------------- iter_windows


def _expected_windows(full: np.ndarray, win: int, hop: int) -> list[np.ndarray]:
    n = full.shape[0]
    if n <= win:
        return [full]
    starts = list(range(0, n - win + 1, hop))
    if starts[-1] + win < n:
        starts.append(n - win)
    return [full[s : s + win] for s in starts]


def _check_windows(path: Path, window_s: float, hop_s: float) -> None:
    full = load_audio(path)
    got = list(iter_windows(path, window_s, hop_s))
    want = _expected_windows(full, int(round(window_s * 16000)), int(round(hop_s * 16000)))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == np.float32 and g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=0)
    # every sample is covered and the last window ends at the end of the file
    np.testing.assert_allclose(got[-1][-50:], full[-50:], atol=1e-4, rtol=0)


@pytest.mark.parametrize("window_s,hop_s", [(1.5, 0.75), (2.0, 2.0), (0.7, 1.3), (100.0, 1.0)])
def test_iter_windows_flac_16k(flac_path: Path, window_s: float, hop_s: float) -> None:
    _check_windows(flac_path, window_s, hop_s)


@pytest.fixture(scope="module")
def long_8k_wav(tmp_path_factory: pytest.TempPathFactory, fsdd_paths: list[Path]) -> Path:
    clips = [sf.read(str(p), dtype="int16")[0] for p in fsdd_paths[:15]]
    p = tmp_path_factory.mktemp("win") / "fsdd_concat_8k.wav"
    sf.write(str(p), np.concatenate(clips), 8000, subtype="PCM_16")
    return p


@pytest.mark.parametrize("window_s,hop_s", [(1.5, 0.75), (2.0, 2.0), (0.7, 1.3), (100.0, 1.0)])
def test_iter_windows_wav_8k(long_8k_wav: Path, window_s: float, hop_s: float) -> None:
    _check_windows(long_8k_wav, window_s, hop_s)


def test_iter_windows_44k_stereo(tmp_path: Path, speech16k: np.ndarray) -> None:
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("torchaudio.functional")
    x = F.resample(torch.from_numpy(speech16k[: 16000 * 4]), 16000, 44100).numpy()
    x = 0.9 * x / np.max(np.abs(x))
    p = tmp_path / "st44.flac"
    sf.write(str(p), np.stack([x, 0.5 * x], axis=1), 44100, subtype="PCM_24")
    _check_windows(p, 1.0, 0.6)


def test_iter_windows_bad_params(flac_path: Path) -> None:
    for w, h in [(0.0, 1.0), (1.0, 0.0), (-1.0, 1.0), (float("nan"), 1.0)]:
        with pytest.raises(ValueError):
            iter_windows(flac_path, w, h)


def test_target_constants() -> None:
    assert TARGET_SAMPLE_RATE == 16000 and MIN_DURATION_S == 0.5
