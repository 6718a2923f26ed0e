"""Audio loading, validation and resampling (numpy + soundfile only; no torch).

Every waveform that leaves this module is a float32 1-D mono array at
:data:`TARGET_SAMPLE_RATE` Hz. Every failure raises :class:`~nestspk.errors.AudioError`
whose message starts with a label naming the input: the file path, or
``<array shape=(...) dtype=...>`` for in-memory arrays and tensors.

This module must stay importable without torch: the ONNX backend uses it.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import os
from typing import Any, Iterator

import numpy as np
import soundfile as sf

from nestspk.errors import AudioError

__all__ = [
    "TARGET_SAMPLE_RATE",
    "MIN_DURATION_S",
    "load_audio",
    "resample",
    "audio_info",
    "iter_windows",
]

logger = logging.getLogger(__name__)

TARGET_SAMPLE_RATE: int = 16000
"""Sample rate (Hz) of every waveform returned by this module."""

MIN_DURATION_S: float = 0.5
"""Shortest accepted input, in seconds at the input's own sample rate."""

_MIN_SR = 1000
_MAX_SR = 768000
_MAX_CHANNELS = 8
SILENCE_PEAK = 1e-4
# Float input may overshoot full scale a little (float WAVs, resampled audio); a larger peak
# almost always means integer PCM stored as float, which is rejected.
_FLOAT_PEAK_TOL = 1.0
_LOWPASS_FILTER_WIDTH = 6
_ROLLOFF = 0.99
# Frames (input strides) processed per matmul in resample(); bounds the
# temporary frame matrix to ~_CHUNK_FRAMES * kernel_len float32 values.
_CHUNK_FRAMES = 1 << 14
# Largest polyphase resampling kernel (values) accepted; every standard rate
# (8k..768k multiples of 50 Hz and more) stays far below it.
_MAX_KERNEL_ELEMS = 1 << 23
_SF_ERRORS = (RuntimeError, EOFError, OSError, ValueError, TypeError, sf.SoundFileError)

_INT_DTYPES = (np.int8, np.int16, np.int32, np.int64)
_FLOAT_DTYPES = (np.float16, np.float32, np.float64)


# --------------------------------------------------------------------------- helpers


def _array_label(shape: tuple[int, ...], dtype: Any) -> str:
    return f"<array shape={tuple(shape)} dtype={dtype}>"


def _check_sample_rate(sr: Any, label: str) -> int:
    """Return ``sr`` as int; AudioError unless it is an int in [1000, 768000] Hz."""
    if isinstance(sr, (bool, np.bool_)) or not isinstance(sr, numbers.Integral):
        raise AudioError(f"{label}: sample_rate must be a positive int; got {sr!r}")
    sr = int(sr)
    if sr <= 0:
        raise AudioError(f"{label}: sample_rate must be a positive int; got {sr}")
    if sr < _MIN_SR or sr > _MAX_SR:
        raise AudioError(
            f"{label}: sample_rate {sr} Hz outside supported range [{_MIN_SR}, {_MAX_SR}] Hz"
        )
    if sr != TARGET_SAMPLE_RATE:
        orig, new = _reduced(sr, TARGET_SAMPLE_RATE)
        # polyphase kernel is ~new * (orig + filter width) values; an odd rate such as
        # 44101 Hz (coprime with 16 kHz) would need ~0.7e9 (minutes of CPU, GBs of RAM)
        width = math.ceil(_LOWPASS_FILTER_WIDTH * orig / (min(orig, new) * _ROLLOFF))
        if new * (2 * width + orig) > _MAX_KERNEL_ELEMS:
            raise AudioError(
                f"{label}: sample_rate {sr} Hz cannot be resampled to {TARGET_SAMPLE_RATE} Hz"
                f" efficiently (reduced ratio {orig}:{new}); resample it to a standard rate first"
            )
    return sr


def _path_label(path: Any) -> str:
    return os.fsdecode(os.fspath(path))


def _check_path(path: str, label: str) -> None:
    """Raise AudioError for a missing path, a directory or a 0-byte file."""
    if not os.path.exists(path):
        raise AudioError(f"{label}: file not found")
    if os.path.isdir(path):
        raise AudioError(f"{label}: is a directory, not an audio file")
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise AudioError(f"{label}: cannot read file ({exc})") from exc
    if size == 0:
        raise AudioError(f"{label}: empty file (0 bytes)")


def _to_numpy(source: Any) -> np.ndarray:
    """Convert a torch.Tensor (duck-typed) or array-like ndarray to numpy without importing torch."""
    if isinstance(source, np.ndarray):
        return source
    if all(hasattr(source, a) for a in ("detach", "cpu", "numpy")):
        t = source.detach().cpu()
        try:
            return t.numpy()
        except (TypeError, RuntimeError):
            if "bfloat16" in str(getattr(t, "dtype", "")):
                return t.float().numpy()
            raise
    raise TypeError(type(source).__name__)


def _convert_dtype(x: np.ndarray, label: str) -> np.ndarray:
    """Map a numeric array to float32 in [-1, 1]; AudioError on unsupported dtype or bad values."""
    dt = x.dtype
    if dt.type in _FLOAT_DTYPES:
        if not np.all(np.isfinite(x)):
            raise AudioError(f"{label}: contains NaN/inf samples")
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        if peak > 1.0 + _FLOAT_PEAK_TOL:
            raise AudioError(
                f"{label}: float samples must lie within [-2, 2] (full scale is 1.0); got peak {peak:.6g}"
                " — int PCM passed as float? divide by 32768"
            )
        return x.astype(np.float32, copy=False)
    if dt.type in _INT_DTYPES:
        full_scale = float(2 ** (dt.itemsize * 8 - 1))
        work = np.float32 if dt.itemsize <= 2 else np.float64
        return (x.astype(work) / work(full_scale)).astype(np.float32, copy=False)
    if dt.type is np.uint8:
        return ((x.astype(np.float32) - 128.0) / 128.0).astype(np.float32, copy=False)
    raise AudioError(
        f"{label}: unsupported dtype {dt}; expected float16/32/64, int8/16/32/64 or uint8"
    )


def _to_channels_last(x: np.ndarray, label: str) -> np.ndarray:
    """Return a (time, channels) view of a 1-, 2- or 3-D array; AudioError if ambiguous."""
    if x.ndim == 0:
        raise AudioError(f"{label}: expected a 1-D or 2-D waveform; got a scalar")
    if x.ndim > 3:
        raise AudioError(f"{label}: expected at most 3 dimensions; got {x.ndim}")
    if x.ndim == 3:
        if x.shape[0] != 1:
            raise AudioError(
                f"{label}: 3-D input needs a leading batch dim of size 1; got shape {x.shape}"
            )
        x = x[0]
    if x.ndim == 1:
        return x[:, None]
    c0, c1 = x.shape
    if c0 <= _MAX_CHANNELS and c0 < c1:
        return x.T
    if c1 <= _MAX_CHANNELS:
        return x
    raise AudioError(
        f"{label}: ambiguous 2-D shape {x.shape}; expected (channels, time) or (time, channels)"
        f" with at most {_MAX_CHANNELS} channels"
    )


def _downmix(x: np.ndarray) -> np.ndarray:
    """(time, channels) -> (time,) float32 mean over channels."""
    if x.shape[1] == 1:
        return np.ascontiguousarray(x[:, 0], dtype=np.float32)
    return x.mean(axis=1, dtype=np.float32)


def _check_duration(num_frames: int, sr: int, label: str) -> None:
    if num_frames == 0:
        raise AudioError(f"{label}: empty (0 samples)")
    dur = num_frames / sr
    if dur < MIN_DURATION_S:
        raise AudioError(f"{label}: too short: {dur:.6g} s < {MIN_DURATION_S} s")


def _check_silence(x: np.ndarray, label: str) -> None:
    peak = float(np.max(np.abs(x)))
    if peak < SILENCE_PEAK:
        raise AudioError(f"{label}: silent (peak {peak:.3g} < {SILENCE_PEAK:g})")


# --------------------------------------------------------------------------- loading


def load_audio(
    source: str | os.PathLike[str] | np.ndarray | Any,
    sample_rate: int | None = None,
    *,
    name: str | None = None,
) -> np.ndarray:
    """Load and validate audio; return a float32 1-D mono waveform at 16 kHz.

    Args:
        source: a path (WAV/FLAC/OGG, read with soundfile), a numpy array or a
            torch.Tensor. Arrays may be 1-D ``(time,)``, 2-D ``(channels, time)`` or
            ``(time, channels)`` with at most 8 channels, or 3-D ``(1, ...)``.
            Float arrays must lie in [-2, 2] (peaks above 1 are clipped); int8/16/32/64 are scaled by
            ``2**(bits-1)``; uint8 is 8-bit offset PCM, ``(x - 128) / 128``.
        sample_rate: rate of ``source`` in Hz. For arrays/tensors ``None`` means
            16000. For files it must be ``None`` or equal the file's rate.
        name: label used in error messages (default: the path, or
            ``<array shape=(...) dtype=...>``).

    Returns:
        ``(num_samples,)`` float32 waveform at :data:`TARGET_SAMPLE_RATE` in [-1, 1].

    Raises:
        AudioError: missing/unreadable/empty file, unsupported dtype, NaN/inf,
            float peak > 2, bad sample rate, bad shape, silence (peak < 1e-4) or
            duration < :data:`MIN_DURATION_S` s at the input's own rate.
    """
    if isinstance(source, (str, bytes, os.PathLike)):
        path = _path_label(source)
        label = name if name is not None else path
        x, sr = _read_file(path, label)
        if sample_rate is not None:
            requested = _check_sample_rate(sample_rate, label)
            if requested != sr:
                raise AudioError(
                    f"{label}: sample_rate={requested} Hz given but the file is {sr} Hz"
                    " (pass sample_rate=None for files)"
                )
    else:
        try:
            arr = _to_numpy(source)
        except TypeError as exc:
            label = name if name is not None else f"<{type(source).__name__}>"
            raise AudioError(
                f"{label}: unsupported source type {type(source).__name__}"
                f"{'' if str(exc) == type(source).__name__ else f' ({exc})'};"
                " expected a path, numpy array or torch.Tensor"
            ) from exc
        label = name if name is not None else _array_label(arr.shape, arr.dtype)
        sr = _check_sample_rate(TARGET_SAMPLE_RATE if sample_rate is None else sample_rate, label)
        if arr.ndim > 3 or arr.ndim == 0:
            _to_channels_last(arr, label)  # raises
        arr = _convert_dtype(arr, label)
        if arr.size == 0:
            raise AudioError(f"{label}: empty (0 samples)")
        x = _downmix(_to_channels_last(arr, label))
    _check_duration(x.shape[0], sr, label)
    _check_silence(x, label)
    if sr != TARGET_SAMPLE_RATE:
        x = resample(x, sr, TARGET_SAMPLE_RATE)
    return np.clip(x, -1.0, 1.0)  # new array: x may be a view of the caller's (read-only) input


def _read_file(path: str, label: str) -> tuple[np.ndarray, int]:
    """Read a file as ``((time,) float32 mono, sample_rate)``; validate values."""
    _check_path(path, label)
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except _SF_ERRORS as exc:
        raise AudioError(f"{label}: cannot read audio file ({exc})") from exc
    sr = _check_sample_rate(sr, label)
    if data.shape[0] == 0:
        raise AudioError(f"{label}: empty (0 frames)")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{label}: contains NaN/inf samples")
    peak = float(np.max(np.abs(data)))
    if peak > 1.0 + _FLOAT_PEAK_TOL:
        raise AudioError(f"{label}: float samples must lie within [-2, 2] (full scale is 1.0); got peak {peak:.6g}")
    return _downmix(data), sr


def audio_info(path: str | os.PathLike[str], *, name: str | None = None) -> tuple[int, int, int]:
    """Return ``(num_frames, sample_rate_hz, channels)`` of an audio file without decoding it.

    Raises:
        AudioError: missing path, directory, 0-byte or unreadable file.
    """
    p = _path_label(path)
    label = name if name is not None else p
    _check_path(p, label)
    try:
        info = sf.info(p)
    except _SF_ERRORS as exc:
        raise AudioError(f"{label}: cannot read audio file ({exc})") from exc
    return int(info.frames), int(info.samplerate), int(info.channels)


# --------------------------------------------------------------------------- resampling


@functools.lru_cache(maxsize=32)
def _sinc_kernel(orig: int, new: int) -> tuple[np.ndarray, int]:
    """Polyphase kernel ``(new, 2*width + orig)`` float32 and ``width`` for gcd-reduced rates.

    Port of torchaudio's ``_get_sinc_resample_kernel`` (sinc_interp_hann,
    lowpass_filter_width=6, rolloff=0.99), including its float32/float64 mix.
    """
    if orig == new:
        k = np.ones((1, 1), dtype=np.float32)
        k.setflags(write=False)
        return k, 0
    lpw = _LOWPASS_FILTER_WIDTH
    base_freq = min(orig, new) * _ROLLOFF
    width = math.ceil(lpw * orig / base_freq)
    idx = np.arange(-width, width + orig, dtype=np.float64) / orig
    phase = (np.arange(0, -new, -1, dtype=np.float32) / np.float32(new)).astype(np.float32)
    t = phase.astype(np.float64)[:, None] + idx[None, :]
    t *= base_freq
    np.clip(t, -lpw, lpw, out=t)
    window = np.cos(t * math.pi / lpw / 2) ** 2
    t *= math.pi
    with np.errstate(divide="ignore", invalid="ignore"):
        kern = np.where(t == 0, 1.0, np.sin(t) / t)
    kern *= window * (base_freq / orig)
    kern = kern.astype(np.float32)
    kern.setflags(write=False)
    return kern, width


def _segment(x: np.ndarray, a: int, b: int) -> np.ndarray:
    """``x[a:b]`` as float32, zero-padded where ``[a, b)`` leaves ``[0, len(x))``."""
    n = x.shape[0]
    ca, cb = max(a, 0), min(b, n)
    if ca >= cb:
        return np.zeros(b - a, dtype=np.float32)
    if ca == a and cb == b:
        return np.ascontiguousarray(x[a:b], dtype=np.float32)
    out = np.zeros(b - a, dtype=np.float32)
    out[ca - a : cb - a] = x[ca:cb]
    return out


def _apply_frames(seg: np.ndarray, kern: np.ndarray, orig: int, num_frames: int) -> np.ndarray:
    """Polyphase FIR: ``num_frames`` input strides of ``orig`` -> ``num_frames * new`` outputs."""
    klen = kern.shape[1]
    frames = np.lib.stride_tricks.as_strided(
        seg, shape=(num_frames, klen), strides=(orig * seg.strides[0], seg.strides[0]), writeable=False
    )
    return (frames @ kern.T).reshape(-1)


def _resample_span(
    read: Any, orig: int, new: int, n0: int, n1: int
) -> np.ndarray:
    """Output samples ``[n0, n1)`` of the resampled signal (rates gcd-reduced).

    ``read(a, b)`` must return input samples ``[a, b)`` zero-padded outside the signal.
    """
    kern, width = _sinc_kernel(orig, new)
    klen = kern.shape[1]
    j0, j1 = n0 // new, (n1 - 1) // new + 1
    out = np.empty(n1 - n0, dtype=np.float32)
    pos = 0
    for c0 in range(j0, j1, _CHUNK_FRAMES):
        c1 = min(c0 + _CHUNK_FRAMES, j1)
        seg = read(c0 * orig - width, (c1 - 1) * orig - width + klen)
        y = _apply_frames(seg, kern, orig, c1 - c0)
        lo = max(n0 - c0 * new, 0)
        hi = min(n1 - c0 * new, y.shape[0])
        out[pos : pos + hi - lo] = y[lo:hi]
        pos += hi - lo
    return out


def _reduced(orig_sr: int, new_sr: int) -> tuple[int, int]:
    g = math.gcd(orig_sr, new_sr)
    return orig_sr // g, new_sr // g


def _resampled_length(length: int, orig: int, new: int) -> int:
    """``ceil(new * length / orig)`` computed exactly in integers."""
    return -(-new * length // orig)


def resample(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited sinc resampling of a 1-D signal; numpy port of torchaudio's default.

    Matches ``torchaudio.functional.resample(x, orig_sr, new_sr)`` (sinc_interp_hann,
    lowpass_filter_width=6, rolloff=0.99) to float32 rounding. The output length is
    the exact integer ceiling; torchaudio computes it in float32, which can differ
    by a few samples beyond ~2**24 output samples. Memory is bounded:
    the input is processed in chunks of 16384 input strides.

    Args:
        x: ``(time,)`` float waveform.
        orig_sr: input rate in Hz (positive int).
        new_sr: output rate in Hz (positive int).

    Returns:
        ``(ceil(time * new_sr / orig_sr),)`` float32 waveform.
    """
    for v, what in ((orig_sr, "orig_sr"), (new_sr, "new_sr")):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or v <= 0:
            raise ValueError(f"{what} must be a positive int; got {v!r}")
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"resample expects a 1-D array; got shape {x.shape}")
    if orig_sr == new_sr:
        return x.astype(np.float32, copy=False)
    orig, new = _reduced(int(orig_sr), int(new_sr))
    n_out = _resampled_length(x.shape[0], orig, new)
    if n_out == 0:
        return np.zeros(0, dtype=np.float32)
    return _resample_span(lambda a, b: _segment(x, a, b), orig, new, 0, n_out)


# --------------------------------------------------------------------------- streaming


class _StreamReader:
    """Sequential mono float32 reader over a SoundFile with a sliding buffer.

    ``read(a, b)`` requires non-decreasing ``a`` and ``b`` across calls and
    returns input samples ``[a, b)`` zero-padded outside ``[0, frames)``.
    """

    def __init__(self, f: sf.SoundFile, label: str) -> None:
        self._f = f
        self._label = label
        self._n = int(f.frames)
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # input index of _buf[0]
        self._pos = 0  # next frame the file will deliver
        # lowest input index a later read() may still ask for (the next overlapping window's
        # start); the buffer is kept from there. Default: nothing before the current read.
        self.keep_from = 1 << 62

    def _read_frames(self, count: int) -> np.ndarray:
        try:
            data = self._f.read(count, dtype="float32", always_2d=True)
        except _SF_ERRORS as exc:
            raise AudioError(f"{self._label}: cannot read audio file ({exc})") from exc
        if data.shape[0] != count:
            raise AudioError(
                f"{self._label}: truncated file: expected {count} more frames at frame"
                f" {self._pos}, got {data.shape[0]}"
            )
        self._pos += count
        return _downmix(data)

    def read(self, a: int, b: int) -> np.ndarray:
        ca, cb = max(a, 0), min(b, self._n)
        if ca < cb:
            keep = max(min(ca, self.keep_from), self._buf_start)
            if keep > self._pos:  # gap: skip frames we will never need
                self._skip(keep - self._pos)
                self._buf = np.zeros(0, dtype=np.float32)
                self._buf_start = keep
            elif keep > self._buf_start:
                self._buf = self._buf[keep - self._buf_start :]
                self._buf_start = keep
            if cb > self._pos:
                self._buf = np.concatenate([self._buf, self._read_frames(cb - self._pos)])
        return _segment_from_buffer(self._buf, self._buf_start, a, b, self._n)

    def _skip(self, count: int) -> None:
        if self._f.seekable():
            try:
                self._f.seek(self._pos + count)
            except _SF_ERRORS as exc:
                raise AudioError(f"{self._label}: cannot seek in audio file ({exc})") from exc
            self._pos += count
        else:
            while count > 0:
                step = min(count, 1 << 20)
                self._read_frames(step)
                count -= step


def _segment_from_buffer(buf: np.ndarray, start: int, a: int, b: int, n: int) -> np.ndarray:
    out = np.zeros(b - a, dtype=np.float32)
    ca, cb = max(a, 0), min(b, n)
    if ca < cb:
        out[ca - a : cb - a] = buf[ca - start : cb - start]
    return out


def _window_starts(n: int, win: int, hop: int) -> list[int]:
    if n <= win:
        return [0]
    starts = list(range(0, n - win + 1, hop))
    if starts[-1] + win < n:
        starts.append(n - win)
    return starts


def iter_windows(
    path: str | os.PathLike[str],
    window_s: float,
    hop_s: float,
    *,
    name: str | None = None,
) -> Iterator[np.ndarray]:
    """Stream fixed-length 16 kHz mono windows from a (long) audio file.

    The file is read sequentially block by block (never whole), downmixed and
    resampled with enough filter context that each window equals the matching
    slice of ``load_audio(path)`` (up to float32 rounding). Windows start every
    ``hop_s`` s; the last window is aligned to the end of the file so every
    sample is covered. A file shorter than ``window_s`` yields itself once.

    Args:
        path: audio file readable by soundfile.
        window_s: window length in seconds (> 0).
        hop_s: hop between window starts in seconds (> 0).
        name: label used in error messages (default: the path).

    Yields:
        ``(round(window_s * 16000),)`` float32 arrays (shorter only for a short file).

    Raises:
        AudioError: unreadable/empty/too-short file or bad sample rate (raised by
            this call), truncated data or NaN/inf samples (raised while iterating).
        ValueError: non-positive ``window_s`` or ``hop_s``.
    """
    p = _path_label(path)
    label = name if name is not None else p
    ok = math.isfinite(float(window_s)) and math.isfinite(float(hop_s))
    win = int(round(float(window_s) * TARGET_SAMPLE_RATE)) if ok else 0
    hop = int(round(float(hop_s) * TARGET_SAMPLE_RATE)) if ok else 0
    if win <= 0 or hop <= 0:
        raise ValueError(
            f"window_s and hop_s must be positive (>= 1 sample at 16 kHz); got {window_s}, {hop_s}"
        )
    _check_path(p, label)
    try:
        info = sf.info(p)
    except _SF_ERRORS as exc:
        raise AudioError(f"{label}: cannot read audio file ({exc})") from exc
    sr = _check_sample_rate(int(info.samplerate), label)
    _check_duration(int(info.frames), sr, label)
    return _iter_windows(p, label, sr, win, hop)


def _iter_windows(path: str, label: str, sr: int, win: int, hop: int) -> Iterator[np.ndarray]:
    try:
        f = sf.SoundFile(path)
    except _SF_ERRORS as exc:
        raise AudioError(f"{label}: cannot read audio file ({exc})") from exc
    with f:
        n_in = int(f.frames)
        _check_duration(n_in, sr, label)
        reader = _StreamReader(f, label)
        if sr == TARGET_SAMPLE_RATE:
            n_out = n_in
            orig = new = 1
        else:
            orig, new = _reduced(sr, TARGET_SAMPLE_RATE)
            n_out = _resampled_length(n_in, orig, new)
        starts = _window_starts(n_out, win, hop)
        logger.debug("%s: %d windows of %d samples (sr=%d Hz)", label, len(starts), win, sr)
        for k, s in enumerate(starts):
            e = min(s + win, n_out)
            if k + 1 < len(starts):  # windows overlap: keep the input the next one starts from
                nxt = starts[k + 1]
                reader.keep_from = max(0, nxt if orig == new else (nxt // new) * orig - _sinc_kernel(orig, new)[1])
            else:
                reader.keep_from = n_in
            if orig == new:
                w = reader.read(s, e)
            else:
                w = _resample_span(reader.read, orig, new, s, e)
            if not np.all(np.isfinite(w)):
                raise AudioError(
                    f"{label}: contains NaN/inf samples in window at "
                    f"{s / TARGET_SAMPLE_RATE:.3f} s"
                )
            yield w
