"""Audio loading, validation, input sources, segmentation and a speech-content check (numpy + soundfile; no torch).

Every waveform that leaves this module is a float32 1-D mono array at
:data:`TARGET_SAMPLE_RATE` Hz in [-1, 1]. Every failure raises :class:`~nestspk.errors.AudioError`
whose message starts with a label naming the input: the file path, ``<bytes len=N>``,
``<file object NAME>`` or ``<array shape=(...) dtype=...>``; labels are cut to
:data:`MAX_LABEL_CHARS` characters.

Input sources (:func:`open_audio`, :func:`load_audio`):

- ``str`` and :class:`os.PathLike` (e.g. :class:`pathlib.Path`): a file path. Names that are not
  valid UTF-8 (``os.fsdecode`` surrogates) work.
- ``bytes``/``bytearray``/``memoryview``: **encoded file content** (the bytes of a WAV/FLAC/OGG/MP3
  file) when it holds a NUL byte or is longer than 4096 bytes -- every audio container header
  holds NUL bytes -- otherwise an ``os.fsencode()``-d path (a path never holds NUL). To be explicit,
  pass paths as ``str``/``pathlib.Path`` and content as ``io.BytesIO``.
- a binary file object (anything with ``read``): encoded content, read from its current position;
  non-seekable streams (pipes) are spooled to a temporary file first (bounded memory).
- a numpy array (subclasses such as ``np.matrix`` included) or a torch tensor (duck-typed; conjugate/negative
  views, non-contiguous and sparse tensors are resolved; meta and nested tensors are rejected).

Files of unknown length (a FLAC written to a pipe has ``total_samples=0``; libsndfile then reports
2**63-1 frames) are counted block by block once, so they stream like any other file.

The same validation applies whatever the length and source: float samples must lie in [-2, 2]
(peaks above 1 are clipped to [-1, 1]; larger peaks mean integer PCM stored as float and are
rejected), samples must be finite, ``sample_rate`` must be an int in [1000, 768000] Hz.

Segmentation is one pure function, :func:`plan_segments`: it decides from the 16 kHz length
alone (known from one header read for files, without decoding) whether an input is embedded
whole or as overlapping windows, and where the windows start, for arrays and files alike.

This module must stay importable without torch: the ONNX backend uses it.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import numbers
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator

import numpy as np
import soundfile as sf

from nestspk.errors import AudioError

__all__ = [
    "TARGET_SAMPLE_RATE",
    "MIN_DURATION_S",
    "LONG_AUDIO_S",
    "WINDOW_S",
    "HOP_S",
    "AUDIO_SUFFIXES",
    "AudioSource",
    "SegmentPlan",
    "open_audio",
    "load_audio",
    "resample",
    "audio_info",
    "iter_windows",
    "window_starts",
    "plan_segments",
    "SpeechCheck",
    "check_speech",
    "describe_input",
]

logger = logging.getLogger(__name__)

TARGET_SAMPLE_RATE: int = 16000
"""Sample rate (Hz) of every waveform returned by this module."""

MIN_DURATION_S: float = 0.5
"""Shortest accepted input, in seconds at the input's own sample rate."""

LONG_AUDIO_S: float = 20.0
"""Inputs longer than this are embedded as the mean of :data:`WINDOW_S` windows (see :func:`plan_segments`)."""
WINDOW_S: float = 10.0
"""Window length (s) for long inputs."""
HOP_S: float = 5.0
"""Hop between window starts (s) for long inputs."""

MAX_LABEL_CHARS: int = 200
"""Longest input label echoed in an error message (longer ones are cut in the middle)."""

AUDIO_SUFFIXES: frozenset[str] = frozenset(
    {"." + k.lower() for k in sf.available_formats()}
    | {".opus", ".oga", ".aif", ".aifc", ".snd", ".sph", ".mat", ".sf", ".wve"}
) - {".raw", ".htk", ".mat4", ".mat5", ".ircam", ".nist", ".wavex", ".svx", ".mpc2k"}
"""File name suffixes (lower case) of the formats soundfile reads here; used to pick files out of a directory."""

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
# libsndfile reports 2**63-1 frames for a stream whose header does not say its length
_UNKNOWN_FRAMES = 1 << 62
_READ_BLOCK = 1 << 16  # frames decoded per read when a file is read whole or counted
_BYTES_PATH_MAX = 4096
_SPOOL_MAX = 32 << 20  # bytes of a non-seekable stream kept in memory before spilling to disk

_INT_DTYPES = (np.int8, np.int16, np.int32, np.int64)
_FLOAT_DTYPES = (np.float16, np.float32, np.float64)


# --------------------------------------------------------------------------- labels


def _short(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    """``text`` cut in the middle to at most ``limit`` characters (its full length noted)."""
    if len(text) <= limit:
        return text
    keep = max(limit - 30, 10)
    return f"{text[: keep - keep // 3]}...[{len(text)} chars]...{text[-(keep // 3):]}"


def _printable(text: str) -> str:
    """``text`` with lone surrogates (undecodable file-name bytes) shown as ``\\xNN``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _array_label(shape: tuple[int, ...], dtype: Any) -> str:
    return f"<array shape={tuple(shape)} dtype={dtype}>"


def _path_label(path: Any) -> str:
    return _short(_printable(os.fsdecode(os.fspath(path))))


def describe_input(source: Any) -> str:
    """Short label of an input for messages: a path, ``<bytes len=N>``, ``<file object ...>`` or ``<array ...>``."""
    try:
        kind, value = _classify(source)
    except AudioError as exc:
        return str(exc).split(":", 1)[0]
    if kind == "path":
        return _path_label(value)
    if kind == "bytes":
        return f"<bytes len={len(value)}>"
    if kind == "fileobj":
        return _fileobj_label(value)
    try:  # a label must never fail: nested tensors, for one, raise on .shape
        if getattr(source, "is_nested", False):
            return f"<nested {type(source).__name__}>"
        return _array_label(tuple(source.shape), source.dtype)
    except Exception:  # noqa: BLE001
        return f"<{type(source).__name__}>"


def _fileobj_label(f: Any) -> str:
    name = getattr(f, "name", None)
    if isinstance(name, (str, bytes)) and name:
        return f"<file object {_path_label(name)}>"
    return f"<{type(f).__name__}>"


def _classify(source: Any) -> tuple[str, Any]:
    """``("path", str) | ("bytes", bytes-like) | ("fileobj", f) | ("array", source)``."""
    if isinstance(source, str):
        return "path", source
    if isinstance(source, os.PathLike):
        p = os.fspath(source)
        return "path", os.fsdecode(p)
    if isinstance(source, (bytes, bytearray, memoryview)):
        b = source.tobytes() if isinstance(source, memoryview) else source
        if 0 < len(b) <= _BYTES_PATH_MAX and b"\x00" not in b:
            return "path", os.fsdecode(bytes(b))
        return "bytes", b
    if hasattr(source, "read") and callable(source.read) and not hasattr(source, "shape"):
        return "fileobj", source
    return "array", source


# --------------------------------------------------------------------------- checks


def _check_sample_rate(sr: Any, label: str) -> int:
    """Return ``sr`` as int; AudioError unless it is an int in [1000, 768000] Hz."""
    if isinstance(sr, (bool, np.bool_)) or not isinstance(sr, numbers.Integral):
        raise AudioError(f"{label}: sample_rate must be a positive int; got {_short(repr(sr), 60)}")
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


def _check_path(path: str, label: str) -> None:
    """Raise AudioError for a missing path, a directory, a special file or a 0-byte file."""
    if not os.path.exists(path):
        raise AudioError(f"{label}: file not found")
    if os.path.isdir(path):
        raise AudioError(f"{label}: is a directory, not an audio file")
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise AudioError(f"{label}: cannot read file ({exc})") from exc
    if size == 0 and os.path.isfile(path):
        raise AudioError(f"{label}: empty file (0 bytes)")


def _tensor_to_numpy(t: Any, label: str) -> np.ndarray:
    """A torch tensor (duck-typed, torch not imported here) -> numpy; AudioError for what has no data."""
    if getattr(t, "is_nested", False):
        raise AudioError(f"{label}: nested tensors are not supported; pass one tensor per recording")
    if getattr(t, "is_meta", False) or str(getattr(t, "device", "")) == "meta":
        raise AudioError(f"{label}: a meta-device tensor has no data")
    try:
        t = t.detach()
        if getattr(t, "is_quantized", False):
            t = t.dequantize()
        if str(getattr(t, "layout", "torch.strided")) != "torch.strided":
            t = t.to_dense()
        t = t.cpu()
        for resolve in ("resolve_conj", "resolve_neg"):
            if hasattr(t, resolve):
                t = getattr(t, resolve)()
        if "bfloat16" in str(getattr(t, "dtype", "")) or str(getattr(t, "dtype", "")).startswith("torch.float8"):
            t = t.float()
        return np.asarray(t.numpy())
    except (TypeError, RuntimeError, ValueError, NotImplementedError, AttributeError) as exc:
        raise AudioError(f"{label}: cannot read this tensor ({_short(str(exc), 120)})") from exc


def _to_numpy(source: Any, label: str) -> np.ndarray:
    """A numpy array (subclasses viewed as plain ndarray) or a torch tensor -> ndarray; AudioError otherwise."""
    if isinstance(source, np.ndarray):
        return source if type(source) is np.ndarray else np.asarray(source).view(np.ndarray)
    if all(hasattr(source, a) for a in ("detach", "cpu", "numpy")):
        return _tensor_to_numpy(source, label)
    if isinstance(source, np.generic):
        return np.asarray(source)
    raise AudioError(
        f"{label}: unsupported source type {type(source).__name__}; expected a path (str/pathlib.Path),"
        " encoded bytes, a binary file object, a numpy array or a torch.Tensor"
    )


def _check_values(x: np.ndarray, label: str, where: str = "") -> np.ndarray:
    """Finite float samples within [-2, 2] -> float32 clipped to [-1, 1]; the same check for every input."""
    if x.size == 0:
        return x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{label}: contains NaN/inf samples{where}")
    peak = float(np.max(np.abs(x)))
    if peak > 1.0 + _FLOAT_PEAK_TOL:
        raise AudioError(
            f"{label}: float samples must lie within [-2, 2] (full scale is 1.0); got peak {peak:.6g}{where}"
            " — int PCM passed as float? divide by 32768"
        )
    out = np.asarray(x, dtype=np.float32)
    if peak > 1.0:
        out = np.clip(out, -1.0, 1.0)  # new array: never clip the caller's data in place
    return out


def _convert_dtype(x: np.ndarray, label: str) -> np.ndarray:
    """Map a numeric array to float32 (floats validated by :func:`_check_values`); AudioError on other dtypes."""
    dt = x.dtype
    if dt.type in _FLOAT_DTYPES:
        return x
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


def _check_silence(peak: float, label: str) -> None:
    if peak < SILENCE_PEAK:
        raise AudioError(f"{label}: silent (peak {peak:.3g} < {SILENCE_PEAK:g})")


# --------------------------------------------------------------------------- segmentation


class _Starts(Sequence):
    """Window starts ``range(0, n - win + 1, hop)`` plus an end-aligned tail; O(1) memory."""

    def __init__(self, body: range, tail: int | None) -> None:
        self._body = body
        self._tail = tail

    def __len__(self) -> int:
        return len(self._body) + (self._tail is not None)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        return self._body[i] if i < len(self._body) else self._tail

    def __repr__(self) -> str:
        return f"window starts {list(self[:3])}...(len {len(self)})" if len(self) > 3 else repr(list(self))


def window_starts(n: int, win: int, hop: int) -> Sequence[int]:
    """Starts of ``win``-sample windows every ``hop`` samples over ``n`` samples, the last one end-aligned.

    ``n <= win`` gives ``[0]`` (the whole input once). Lazy: a sequence of O(1) memory whatever ``n``.
    """
    if n <= win:
        return _Starts(range(0, 1), None)
    body = range(0, n - win + 1, hop)
    last = body[-1]
    return _Starts(body, n - win if last + win < n else None)


@dataclass(frozen=True)
class SegmentPlan:
    """How one input is embedded: ``len(starts)`` segments of ``window`` samples (16 kHz).

    ``window == num_samples`` and ``starts == [0]`` when the input is embedded whole.
    """

    num_samples: int
    window: int
    starts: Sequence[int]

    @property
    def windowed(self) -> bool:
        """True when the input is split into overlapping windows (and a file is streamed)."""
        return self.window < self.num_samples


def plan_segments(num_samples: int, long_s: float = LONG_AUDIO_S, window_s: float = WINDOW_S,
                  hop_s: float = HOP_S) -> SegmentPlan:
    """The segmentation of an input of ``num_samples`` 16 kHz samples (pure; the same for arrays and files).

    Inputs up to ``long_s`` seconds are one segment; longer ones are ``window_s`` windows every
    ``hop_s`` seconds, the last one aligned to the end so every sample is covered.
    """
    if num_samples <= long_s * TARGET_SAMPLE_RATE:
        return SegmentPlan(num_samples, num_samples, window_starts(num_samples, num_samples, 1))
    win = int(round(window_s * TARGET_SAMPLE_RATE))
    hop = int(round(hop_s * TARGET_SAMPLE_RATE))
    return SegmentPlan(num_samples, win, window_starts(num_samples, win, hop))


# --------------------------------------------------------------------------- sources


def _seekable(f: Any) -> bool:
    try:
        if not f.seekable():
            return False
        f.tell()
        return True
    except (AttributeError, OSError, ValueError):
        return False


def _spool(f: BinaryIO, label: str) -> BinaryIO:
    """Copy a non-seekable stream into a seekable temporary file (memory up to 32 MiB, then disk)."""
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MAX)
    try:
        shutil.copyfileobj(f, spool, 1 << 20)
    except (OSError, ValueError, TypeError) as exc:
        spool.close()
        raise AudioError(f"{label}: cannot read from the stream ({_short(str(exc), 120)})") from exc
    spool.seek(0)
    return spool


class AudioSource:
    """One opened and validated input: its own rate, frame count and label, decoded on demand.

    Made by :func:`open_audio`. Files (and file content) are decoded only by :meth:`read` or
    :meth:`windows`; arrays are converted at once.
    """

    label: str
    kind: str  # "file" | "array"
    sample_rate: int  # the input's own rate (Hz)
    num_frames: int  # at the input's own rate
    channels: int

    def __init__(self) -> None:  # use open_audio()
        self._wav: np.ndarray | None = None
        self._open: Any = None
        self._raw = False  # a stream of unknown length: read with _raw_read

    @property
    def num_samples(self) -> int:
        """Length at 16 kHz (after resampling)."""
        if self.sample_rate == TARGET_SAMPLE_RATE:
            return self.num_frames
        orig, new = _reduced(self.sample_rate, TARGET_SAMPLE_RATE)
        return _resampled_length(self.num_frames, orig, new)

    def plan(self, **kwargs: float) -> SegmentPlan:
        """:func:`plan_segments` of this input's 16 kHz length."""
        return plan_segments(self.num_samples, **kwargs)

    def __repr__(self) -> str:
        return (f"AudioSource({self.label}, {self.kind}, {self.sample_rate} Hz, {self.num_frames} frames,"
                f" {self.channels} ch)")

    # -- decoding -----------------------------------------------------------------
    def _soundfile(self) -> sf.SoundFile:
        try:
            return self._open()
        except _SF_ERRORS as exc:
            raise AudioError(f"{self.label}: cannot read audio file ({_short(str(exc), 160)})") from exc

    def read(self) -> np.ndarray:
        """The whole input as validated float32 mono at 16 kHz in [-1, 1] (what :func:`load_audio` returns)."""
        if self._wav is not None:
            _check_silence(float(np.max(np.abs(self._wav))), self.label)
            return self._wav.copy()
        n = self.num_frames
        out = np.empty(n, dtype=np.float32)
        pos = 0
        with self._soundfile() as f:
            while pos < n:
                count = min(_READ_BLOCK, n - pos)
                block = _read_block(f, count, self.label, pos, self.sample_rate, self._raw)
                out[pos:pos + count] = block
                pos += count
        _check_silence(float(np.max(np.abs(out))), self.label)
        if self.sample_rate != TARGET_SAMPLE_RATE:
            out = np.clip(resample(out, self.sample_rate, TARGET_SAMPLE_RATE), -1.0, 1.0)
        return out

    def windows(self, starts: Sequence[int], win: int) -> Iterator[np.ndarray]:
        """Validated 16 kHz windows ``[s, min(s + win, num_samples))`` for each start, streamed from files.

        Each window equals the matching slice of :meth:`read` (up to float32 rounding). ``starts``
        must be non-decreasing. Raises AudioError while iterating for bad samples or a truncated
        file, and at the end for an input that is silent throughout.
        """
        if self._wav is not None:
            _check_silence(float(np.max(np.abs(self._wav))), self.label)
            for s in starts:
                yield self._wav[s:s + win].copy()
            return
        yield from self._stream(starts, win)

    def _stream(self, starts: Sequence[int], win: int) -> Iterator[np.ndarray]:
        sr, n_in, n_out = self.sample_rate, self.num_frames, self.num_samples
        if sr == TARGET_SAMPLE_RATE:
            orig = new = 1
        else:
            orig, new = _reduced(sr, TARGET_SAMPLE_RATE)
        width = _sinc_kernel(orig, new)[1] if orig != new else 0
        with self._soundfile() as f:
            reader = _StreamReader(f, self.label, n_in, sr, self._raw)
            logger.debug("%s: %d windows of %d samples (sr=%d Hz)", self.label, len(starts), win, sr)
            count = len(starts)
            for k in range(count):
                s = starts[k]
                e = min(s + win, n_out)
                if k + 1 < count:  # windows overlap: keep the input the next one starts from
                    nxt = starts[k + 1]
                    reader.keep_from = max(0, nxt if orig == new else (nxt // new) * orig - width)
                else:
                    reader.keep_from = n_in
                w = reader.read(s, e) if orig == new else _resample_span(reader.read, orig, new, s, e)
                yield np.clip(w, -1.0, 1.0) if orig != new else w
            _check_silence(reader.peak, self.label)


def _raw_read(f: sf.SoundFile, count: int) -> np.ndarray:
    """Up to ``count`` frames ``(n, channels)`` float32 straight from libsndfile.

    For streams of unknown length: ``SoundFile.read`` seeks to the new position after each read,
    and that seek fails at (or past) the end of such a stream although the frames were decoded.
    """
    out = np.empty((count, f.channels), dtype=np.float32)
    n = sf._snd.sf_readf_float(f._file, sf._ffi.cast("float *", out.ctypes.data), count)
    if n < 0 or (n == 0 and f._errorcode):
        raise RuntimeError(sf._ffi.string(sf._snd.sf_error_number(f._errorcode)).decode("utf-8", "replace"))
    return out[:n]


def _read_block(f: sf.SoundFile, count: int, label: str, pos: int, sr: int, raw: bool = False) -> np.ndarray:
    """``count`` validated mono frames from ``f``; AudioError for a short read (truncated file)."""
    try:
        data = _raw_read(f, count) if raw else f.read(count, dtype="float32", always_2d=True)
    except _SF_ERRORS as exc:
        raise AudioError(f"{label}: cannot read audio file ({_short(str(exc), 160)})") from exc
    if data.shape[0] != count:
        raise AudioError(
            f"{label}: truncated file: expected {count} more frames at frame {pos}, got {data.shape[0]}"
        )
    return _downmix(_check_values(data, label, f" (at {pos / sr:.3f} s)"))


def _count_frames(f: sf.SoundFile, label: str) -> int:
    """Frames of a stream whose header gives no length, counted by decoding it block by block once."""
    total = 0
    while True:
        try:
            data = _raw_read(f, _READ_BLOCK)
        except _SF_ERRORS as exc:
            raise AudioError(f"{label}: cannot read audio file ({_short(str(exc), 160)})") from exc
        total += data.shape[0]
        if data.shape[0] < _READ_BLOCK:
            return total


def open_audio(source: Any, sample_rate: int | None = None, *, name: str | None = None,
               _min_duration: bool = True) -> AudioSource:
    """Open and validate any accepted input (see the module docstring) without decoding a file.

    Reads a file's header once (for a stream of unknown length, also counts its frames once).

    Args:
        source: path (``str``/``os.PathLike``), encoded ``bytes``, binary file object, numpy array or torch tensor.
        sample_rate: the input's rate in Hz. For arrays/tensors ``None`` means 16000. For files and
            file content it must be ``None`` or equal the file's rate.
        name: label used in error messages (default: see :func:`describe_input`).

    Raises:
        AudioError: for anything that cannot become a valid waveform (the message names the input).
    """
    kind, value = _classify(source)
    src = AudioSource()
    if kind == "array":
        _open_array(src, value, sample_rate, name)
        return src
    if kind == "path":
        label = _short(name) if name is not None else _path_label(value)
        _check_path(value, label)
        encoded = os.fsencode(value)
        src._open = lambda: sf.SoundFile(encoded)
    elif kind == "bytes":
        label = _short(name) if name is not None else f"<bytes len={len(value)}>"
        if len(value) == 0:
            raise AudioError(f"{label}: empty (0 bytes)")
        data = bytes(value)
        src._open = lambda: sf.SoundFile(io.BytesIO(data))
    else:
        label = _short(name) if name is not None else _fileobj_label(value)
        f = value if _seekable(value) else _spool(value, label)
        start = f.tell()

        def reopen(f: Any = f, start: int = start) -> sf.SoundFile:
            f.seek(start)
            return sf.SoundFile(f)

        src._open = reopen
    src.label = label
    src.kind = "file"
    requested = _check_sample_rate(sample_rate, label) if sample_rate is not None else None
    with src._soundfile() as f:
        sr = _check_sample_rate(int(f.samplerate), label)
        frames = int(f.frames)
        channels = int(f.channels)
        src._raw = frames >= _UNKNOWN_FRAMES or frames < 0
        if src._raw:
            frames = _count_frames(f, label)
            logger.debug("%s: stream of unknown length holds %d frames", label, frames)
    if requested is not None and requested != sr:
        raise AudioError(f"{label}: sample_rate={requested} Hz given but the file is {sr} Hz"
                         " (pass sample_rate=None for files)")
    if channels < 1:
        raise AudioError(f"{label}: no audio channels")
    if frames == 0:
        raise AudioError(f"{label}: empty (0 frames)")
    if _min_duration:
        _check_duration(frames, sr, label)
    src.sample_rate, src.num_frames, src.channels = sr, frames, channels
    return src


def _open_array(src: AudioSource, source: Any, sample_rate: Any, name: str | None) -> None:
    fallback = _short(name) if name is not None else describe_input(source)
    arr = _to_numpy(source, fallback)
    label = _short(name) if name is not None else _array_label(arr.shape, arr.dtype)
    sr = _check_sample_rate(TARGET_SAMPLE_RATE if sample_rate is None else sample_rate, label)
    if arr.ndim > 3 or arr.ndim == 0:
        _to_channels_last(arr, label)  # raises
    x = _convert_dtype(arr, label)
    if x.size == 0:
        raise AudioError(f"{label}: empty (0 samples)")
    x = _check_values(x, label)
    tc = _to_channels_last(x, label)
    _check_duration(tc.shape[0], sr, label)
    wav = _downmix(tc)
    if sr != TARGET_SAMPLE_RATE:
        wav = np.clip(resample(wav, sr, TARGET_SAMPLE_RATE), -1.0, 1.0)
    elif np.may_share_memory(wav, arr):
        wav = wav.copy()  # never hand out (or later clip) a view of the caller's array
    src.label, src.kind, src.sample_rate = label, "array", sr
    src.num_frames, src.channels = tc.shape[0], tc.shape[1]
    src._wav = wav


def load_audio(
    source: Any,
    sample_rate: int | None = None,
    *,
    name: str | None = None,
) -> np.ndarray:
    """Load and validate audio; return a float32 1-D mono waveform at 16 kHz.

    Args:
        source: a path (any format soundfile reads: WAV/FLAC/OGG/Opus/MP3/...), encoded file
            ``bytes``, a binary file object, a numpy array or a torch.Tensor (see the module
            docstring for how ``bytes`` is told apart from a path). Arrays may be 1-D ``(time,)``,
            2-D ``(channels, time)`` or ``(time, channels)`` with at most 8 channels, or 3-D ``(1, ...)``.
            Float samples must lie in [-2, 2] (peaks above 1 are clipped); int8/16/32/64 are scaled by
            ``2**(bits-1)``; uint8 is 8-bit offset PCM, ``(x - 128) / 128``.
        sample_rate: rate of ``source`` in Hz. For arrays/tensors ``None`` means
            16000. For files it must be ``None`` or equal the file's rate.
        name: label used in error messages (default: the path, or ``<array shape=(...) dtype=...>``, ...).

    Returns:
        ``(num_samples,)`` float32 waveform at :data:`TARGET_SAMPLE_RATE` in [-1, 1].

    Raises:
        AudioError: missing/unreadable/empty file, unsupported dtype, NaN/inf,
            float peak > 2, bad sample rate, bad shape, silence (peak < 1e-4) or
            duration < :data:`MIN_DURATION_S` s at the input's own rate.
    """
    return open_audio(source, sample_rate, name=name).read()


def audio_info(path: Any, *, name: str | None = None) -> tuple[int, int, int]:
    """Return ``(num_frames, sample_rate_hz, channels)`` of an input without decoding it.

    A stream of unknown length is counted once (decoded block by block, nothing kept).

    Raises:
        AudioError: missing path, directory, 0-byte or unreadable input (a short one is not an error here).
    """
    src = open_audio(path, name=name, _min_duration=False)
    return src.num_frames, src.sample_rate, src.channels


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
    returns input samples ``[a, b)`` zero-padded outside ``[0, n)``. Every block read
    is validated (:func:`_check_values`); ``peak`` is the largest magnitude seen.
    """

    def __init__(self, f: sf.SoundFile, label: str, n: int, sr: int, raw: bool = False) -> None:
        self._f = f
        self._raw = raw
        self._label = label
        self._n = n
        self._sr = sr
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # input index of _buf[0]
        self._pos = 0  # next frame the file will deliver
        self.peak = 0.0
        # lowest input index a later read() may still ask for (the next overlapping window's
        # start); the buffer is kept from there. Default: nothing before the current read.
        self.keep_from = 1 << 62

    def _read_frames(self, count: int) -> np.ndarray:
        out = []
        while count > 0:
            step = min(count, 1 << 20)
            block = _read_block(self._f, step, self._label, self._pos, self._sr, self._raw)
            if block.size:
                self.peak = max(self.peak, float(np.max(np.abs(block))))
            self._pos += step
            count -= step
            out.append(block)
        return out[0] if len(out) == 1 else np.concatenate(out)

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
        # frames skipped are still decoded and validated, so every input sample is checked once
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


def iter_windows(
    path: Any,
    window_s: float,
    hop_s: float,
    *,
    name: str | None = None,
) -> Iterator[np.ndarray]:
    """Stream fixed-length 16 kHz mono windows from a (long) audio file.

    The file is read sequentially block by block (never whole), validated like
    :func:`load_audio`, downmixed and resampled with enough filter context that each window
    equals the matching slice of ``load_audio(path)`` (up to float32 rounding). Window starts
    are :func:`window_starts` of the 16 kHz length: every ``hop_s`` s, the last window aligned
    to the end of the file. A file shorter than ``window_s`` yields itself once.

    Args:
        path: any file input of :func:`open_audio` (path, encoded bytes, file object).
        window_s: window length in seconds (> 0).
        hop_s: hop between window starts in seconds (> 0).
        name: label used in error messages (default: the path).

    Yields:
        ``(round(window_s * 16000),)`` float32 arrays (shorter only for a short file).

    Raises:
        AudioError: unreadable/empty/too-short file or bad sample rate (raised by
            this call), truncated data, NaN/inf or out-of-range samples, silence (raised while
            iterating); also for non-positive ``window_s`` or ``hop_s``.
    """
    try:
        ok = math.isfinite(float(window_s)) and math.isfinite(float(hop_s))
    except (TypeError, ValueError):
        ok = False
    win = int(round(float(window_s) * TARGET_SAMPLE_RATE)) if ok else 0
    hop = int(round(float(hop_s) * TARGET_SAMPLE_RATE)) if ok else 0
    if win <= 0 or hop <= 0:
        raise AudioError(
            f"window_s and hop_s must be positive (>= 1 sample at 16 kHz); got {window_s!r}, {hop_s!r}"
        )
    src = open_audio(path, name=name)
    return src.windows(window_starts(src.num_samples, win, hop), win)


# --------------------------------------------------------------------------- speech content

_FRAME = 400  # 25 ms at 16 kHz
_FRAME_HOP = 160  # 10 ms
_NFFT = 512
_FREQS = np.fft.rfftfreq(_NFFT, 1.0 / TARGET_SAMPLE_RATE)
_BAND = (_FREQS >= 150.0) & (_FREQS <= 4000.0)
_HANN = np.hanning(_FRAME)


@dataclass(frozen=True)
class SpeechThresholds:
    """Limits of :class:`SpeechCheck` (16 kHz, 25 ms frames every 10 ms, DC removed per frame).

    Chosen on real speech: the files and trial segments of weights/lists/*.txt, examples/*.flac and
    100 random files of each Opus corpus under ../shared/data (1,816 inputs, none rejected;
    ``python benchmarks/reliability.py speech``). Their extremes were 0.22 s active, band ratio 0.094,
    flatness 0.28 and level range 4.4 dB; white noise has flatness ~0.56, a mains hum a band ratio
    ~0, a click in digital silence ~0.03 s active and steady tones a level range ~0 dB.
    """

    floor_rms: float = 3e-5  # frame RMS below this is silence (about one int16 LSB)
    relative_db: float = 35.0  # active frames lie within this of the 95th-percentile frame level
    min_active_s: float = 0.1
    min_band_ratio: float = 0.03  # share of active-frame energy in 150-4000 Hz
    max_flatness: float = 0.40  # median spectral flatness (150-4000 Hz) of the loudest 30% of active frames
    min_range_db: float = 2.0  # 95th minus 10th percentile of frame level (dB)


class SpeechCheck:
    """Accumulates frame statistics of 16 kHz audio and tells whether it holds speech-like content.

    Four tests, each a plain energy or spectral measure (no model): enough active frames
    (energy above the floor), enough of their energy in the speech band, a harmonic rather
    than noise-like spectrum in the loudest frames, and a level that varies over time.
    Feed windows with :meth:`add` (overlap is harmless), then call :meth:`check`.
    """

    def __init__(self, thresholds: SpeechThresholds = SpeechThresholds()) -> None:
        self.t = thresholds
        self._level_db: list[np.ndarray] = []
        self._band: list[np.ndarray] = []
        self._total: list[np.ndarray] = []
        self._flat: list[np.ndarray] = []

    def add(self, x: np.ndarray) -> None:
        """Add the frames of a 1-D 16 kHz waveform."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] < _FRAME:
            x = np.pad(x, (0, _FRAME - x.shape[0]))
        n = 1 + (x.shape[0] - _FRAME) // _FRAME_HOP
        for i in range(0, n, 4096):  # bounded temporaries for long windows
            m = min(4096, n - i)
            frames = np.lib.stride_tricks.as_strided(
                x[i * _FRAME_HOP:], shape=(m, _FRAME), strides=(_FRAME_HOP * x.strides[0], x.strides[0]),
                writeable=False)
            f = frames - frames.mean(axis=1, keepdims=True)
            rms = np.sqrt(np.mean(f * f, axis=1))
            power = np.abs(np.fft.rfft(f * _HANN, _NFFT, axis=1)) ** 2
            pb = power[:, _BAND] + 1e-20
            self._level_db.append(20.0 * np.log10(np.maximum(rms, 1e-10)))
            self._band.append(pb.sum(axis=1))
            self._total.append(power.sum(axis=1) + 1e-20)
            self._flat.append(np.exp(np.mean(np.log(pb), axis=1)) / pb.mean(axis=1))

    def measures(self) -> dict[str, float]:
        """``active_s``, ``band_ratio``, ``flatness``, ``range_db`` of what was added (NaN where undefined)."""
        t = self.t
        if not self._level_db:
            return {"active_s": 0.0, "band_ratio": math.nan, "flatness": math.nan, "range_db": 0.0}
        level = np.concatenate(self._level_db)
        floor_db = 20.0 * math.log10(t.floor_rms)
        above = level >= floor_db
        out = {"active_s": 0.0, "band_ratio": math.nan, "flatness": math.nan,
               "range_db": float(np.percentile(level, 95) - np.percentile(level, 10))}
        if not above.any():
            return out
        ref = float(np.percentile(level[above], 95))
        active = above & (level >= ref - t.relative_db)
        band, total, flat = (np.concatenate(v)[active] for v in (self._band, self._total, self._flat))
        lv = level[active]
        loud = lv >= np.percentile(lv, 70)
        out.update(active_s=float(active.sum() * _FRAME_HOP / TARGET_SAMPLE_RATE),
                   band_ratio=float(band.sum() / total.sum()), flatness=float(np.median(flat[loud])))
        return out

    def problem(self) -> str | None:
        """Why the content is not speech-like (one phrase), or None when it passes."""
        t, m = self.t, self.measures()
        if m["active_s"] < t.min_active_s:
            return (f"only {m['active_s']:.2f} s above the noise floor (need {t.min_active_s:g} s;"
                    " silence, clicks or a constant level)")
        if m["band_ratio"] < t.min_band_ratio:
            return (f"{100 * m['band_ratio']:.1f}% of its energy in the 150-4000 Hz speech band"
                    f" (need {100 * t.min_band_ratio:g}%; hum or rumble)")
        if m["flatness"] > t.max_flatness:
            return f"a noise-like spectrum (flatness {m['flatness']:.2f} > {t.max_flatness:g})"
        if m["range_db"] < t.min_range_db:
            return (f"a steady level ({m['range_db']:.1f} dB range < {t.min_range_db:g} dB;"
                    " a tone or stationary noise)")
        return None

    def check(self, label: str) -> None:
        """AudioError naming ``label`` unless the content is speech-like."""
        why = self.problem()
        if why is not None:
            raise AudioError(f"{label}: does not look like speech: {why}")


def check_speech(x: np.ndarray, label: str, thresholds: SpeechThresholds = SpeechThresholds()) -> None:
    """AudioError naming ``label`` unless the 16 kHz waveform ``x`` holds speech-like content (see :class:`SpeechCheck`)."""
    c = SpeechCheck(thresholds)
    c.add(x)
    c.check(label)
