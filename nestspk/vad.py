"""Voice-activity detection with the Silero VAD ONNX model (numpy + onnxruntime; no torch).

The model file comes from the ``silero-vad`` wheel (extra ``vad``). Its Python package
imports torch at import time, so it is never imported here: the bundled ``.onnx`` file is
located through the installed distribution's file list and run with onnxruntime. Two of
its models are used, with the same weights and the same per-frame speech probabilities:

- ``silero_vad_16k_sequence.onnx`` (silero-vad >= 6.2): one ONNX call per block of up to
  512 frames; inputs ``input (n, 576)``, ``h``/``c (1, 1, 128)``; outputs
  ``speech_probs (n,)``, ``hn``, ``cn``.
- ``silero_vad.onnx`` (streaming, all 5.x/6.x wheels): one call per 32 ms frame; inputs
  ``input (1, 576)``, ``state (2, 1, 128)``, ``sr`` (int64 scalar); outputs
  ``output (1, 1)``, ``stateN``.

A frame is 512 samples at 16 kHz, fed with the last 64 samples of the previous frame
in front (zeros before the first); the last frame is zero-padded. Probabilities become
speech regions with Silero's hysteresis rule (``get_speech_timestamps`` with no maximum
speech length): speech starts at the first frame with ``p >= threshold`` and ends at
the first frame with ``p < neg_threshold`` followed by ``min_silence_ms`` of such
frames; regions shorter than ``min_speech_ms`` are dropped, and each is padded by
``speech_pad_ms`` (half the gap when two regions are closer than two pads).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .audio import MIN_DURATION_S, TARGET_SAMPLE_RATE, load_audio
from .errors import AudioError
from .extras import MissingExtraError

__all__ = ["SileroVAD", "silero_model_path", "speech_regions", "make_vad"]

log = logging.getLogger(__name__)

FRAME = 512
"""Samples per VAD frame at 16 kHz (32 ms)."""
CONTEXT = 64
"""Samples of the previous frame fed in front of each frame."""
SEQUENCE_BLOCK = 512
"""Frames per ONNX call of the sequence model (16.4 s of audio)."""

_DIST = "silero-vad"
_MODELS = {"sequence": "silero_vad_16k_sequence.onnx", "streaming": "silero_vad.onnx"}


def silero_model_path(kind: str) -> Path:
    """Path of the ``.onnx`` file of ``kind`` (``"sequence"`` or ``"streaming"``) in the installed silero-vad wheel.

    Raises:
        MissingExtraError: silero-vad is not installed.
        FileNotFoundError: the installed version does not ship that model.
    """
    if kind not in _MODELS:
        raise ValueError(f"kind must be one of {sorted(_MODELS)}, got {kind!r}")
    try:
        dist = metadata.distribution(_DIST)
    except metadata.PackageNotFoundError as e:
        raise MissingExtraError("voice-activity detection (vad=True / --vad) needs the optional package "
                                "'silero-vad', which is not installed; install it with: pip install 'nestspk[vad]'"
                                ) from e
    want = f"silero_vad/data/{_MODELS[kind]}"
    for f in dist.files or ():
        if str(f).replace("\\", "/") == want:
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    raise FileNotFoundError(f"silero-vad {dist.version} does not ship {want}")


def _frames(wav: np.ndarray) -> np.ndarray:
    """``(n_frames, CONTEXT + FRAME)`` model inputs for a 16 kHz waveform."""
    n = -(-len(wav) // FRAME)
    frames = np.zeros((n, FRAME), dtype=np.float32)
    frames.reshape(-1)[:len(wav)] = wav
    ctx = np.zeros((n, CONTEXT), dtype=np.float32)
    ctx[1:] = frames[:-1, -CONTEXT:]
    return np.concatenate([ctx, frames], axis=1)


def speech_regions(probs: np.ndarray, n_samples: int, threshold: float = 0.5, neg_threshold: float | None = None,
                   min_speech_ms: int = 250, min_silence_ms: int = 100, speech_pad_ms: int = 30
                   ) -> list[tuple[int, int]]:
    """Per-frame speech probabilities -> ``[(start, end), ...]`` sample ranges, sorted and disjoint.

    The rule is Silero's ``get_speech_timestamps_from_probs`` with ``max_speech_duration_s=inf``
    (see the module docstring); ``neg_threshold`` defaults to ``max(threshold - 0.15, 0.01)``.
    """
    sr = TARGET_SAMPLE_RATE
    if neg_threshold is None:
        neg_threshold = max(threshold - 0.15, 0.01)
    min_speech = sr * min_speech_ms / 1000
    min_silence = sr * min_silence_ms / 1000
    pad = sr * speech_pad_ms / 1000
    regions: list[list[float]] = []
    start: int | None = None
    temp_end = 0
    for i, p in enumerate(np.asarray(probs, dtype=np.float64)):
        cur = FRAME * i
        if p >= threshold and temp_end:
            temp_end = 0
        if p >= threshold and start is None:
            start = cur
            continue
        if p < neg_threshold and start is not None:
            if not temp_end:
                temp_end = cur
            if cur - temp_end < min_silence:
                continue
            if temp_end - start > min_speech:
                regions.append([start, temp_end])
            start, temp_end = None, 0
    if start is not None and n_samples - start > min_speech:
        regions.append([start, n_samples])
    for i, r in enumerate(regions):
        if i == 0:
            r[0] = int(max(0, r[0] - pad))
        if i != len(regions) - 1:
            gap = regions[i + 1][0] - r[1]
            if gap < 2 * pad:
                r[1] += int(gap // 2)
                regions[i + 1][0] = int(max(0, regions[i + 1][0] - gap // 2))
            else:
                r[1] = int(min(n_samples, r[1] + pad))
                regions[i + 1][0] = int(max(0, regions[i + 1][0] - pad))
        else:
            r[1] = int(min(n_samples, r[1] + pad))
    return [(int(a), int(b)) for a, b in regions]


@dataclass
class _Options:
    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_ms: int = 250
    min_silence_ms: int = 100
    speech_pad_ms: int = 30


class SileroVAD:
    """Silero VAD on onnxruntime: 16 kHz waveform -> speech probabilities, regions, speech-only audio.

    Args:
        threshold, neg_threshold, min_speech_ms, min_silence_ms, speech_pad_ms: see :func:`speech_regions`
            (Silero's defaults).
        model: ``"auto"`` (the sequence model when the installed wheel has it, else streaming),
            ``"sequence"`` or ``"streaming"``.
        intra_op_threads: onnxruntime threads (1: the model is tiny; parallelise over inputs instead).

    Thread-safe: the recurrent state lives in each call, not in the object.
    """

    def __init__(self, threshold: float = 0.5, neg_threshold: float | None = None, min_speech_ms: int = 250,
                 min_silence_ms: int = 100, speech_pad_ms: int = 30, model: str = "auto",
                 intra_op_threads: int = 1):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if neg_threshold is not None and not 0.0 < neg_threshold <= threshold:
            raise ValueError(f"neg_threshold must be in (0, threshold], got {neg_threshold}")
        if min(min_speech_ms, min_silence_ms, speech_pad_ms) < 0:
            raise ValueError("min_speech_ms, min_silence_ms and speech_pad_ms must be >= 0")
        if model not in ("auto", "sequence", "streaming"):
            raise ValueError(f"model must be 'auto', 'sequence' or 'streaming', got {model!r}")
        import onnxruntime as ort

        if model == "auto":
            try:
                path, model = silero_model_path("sequence"), "sequence"
            except FileNotFoundError:
                path, model = silero_model_path("streaming"), "streaming"
        else:
            path = silero_model_path(model)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.kind = model
        self.path = path
        self._session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.options = _Options(threshold, neg_threshold, min_speech_ms, min_silence_ms, speech_pad_ms)

    def __repr__(self) -> str:
        return f"SileroVAD(model={self.kind!r}, threshold={self.options.threshold})"

    def probabilities(self, wav: np.ndarray) -> np.ndarray:
        """Speech probability of each 512-sample frame of a 16 kHz float32 waveform, ``(ceil(n / 512),)`` float32."""
        x = _frames(np.asarray(wav, dtype=np.float32).reshape(-1))
        out = np.empty(len(x), dtype=np.float32)
        if self.kind == "sequence":
            h = np.zeros((1, 1, 128), np.float32)
            c = np.zeros((1, 1, 128), np.float32)
            for s in range(0, len(x), SEQUENCE_BLOCK):
                p, h, c = self._session.run(["speech_probs", "hn", "cn"], {"input": x[s:s + SEQUENCE_BLOCK],
                                                                          "h": h, "c": c})
                out[s:s + SEQUENCE_BLOCK] = p.reshape(-1)
        else:
            state = np.zeros((2, 1, 128), np.float32)
            sr = np.array(TARGET_SAMPLE_RATE, dtype=np.int64)
            for i in range(len(x)):
                p, state = self._session.run(["output", "stateN"], {"input": x[i:i + 1], "state": state, "sr": sr})
                out[i] = p.reshape(-1)[0]
        return out

    def regions(self, wav: np.ndarray) -> list[tuple[int, int]]:
        """Speech regions ``[(start, end), ...]`` in samples of a 16 kHz waveform."""
        o = self.options
        return speech_regions(self.probabilities(wav), len(wav), o.threshold, o.neg_threshold, o.min_speech_ms,
                              o.min_silence_ms, o.speech_pad_ms)

    def speech(self, wav: np.ndarray, label: str = "<array>") -> np.ndarray:
        """The speech regions of a 16 kHz waveform, concatenated.

        Raises:
            AudioError: (message starting with ``label``) no speech found, or less than
                :data:`~nestspk.audio.MIN_DURATION_S` of it.
        """
        regions = self.regions(wav)
        if not regions:
            raise AudioError(f"{label}: no speech found by the voice-activity detector "
                             f"({len(wav) / TARGET_SAMPLE_RATE:.2f} s of audio)")
        out = np.concatenate([wav[a:b] for a, b in regions]).astype(np.float32, copy=False)
        seconds = len(out) / TARGET_SAMPLE_RATE
        if seconds < MIN_DURATION_S:
            raise AudioError(f"{label}: only {seconds:.2f} s of speech found by the voice-activity detector "
                             f"(need >= {MIN_DURATION_S} s)")
        log.debug("%s: VAD kept %d region(s), %.2f of %.2f s", label, len(regions), seconds,
                  len(wav) / TARGET_SAMPLE_RATE)
        return out

    def speech_batch(self, audios: Sequence[Any], sample_rate: int | None = None) -> list[np.ndarray]:
        """Load each input (as :func:`~nestspk.audio.load_audio` does) and keep its speech; 16 kHz arrays."""
        return [self.speech(load_audio(a, sample_rate), _label(a)) for a in audios]


def _label(audio: Any) -> str:
    """How an error names an input: its path, or ``<array shape=... dtype=...>``."""
    if isinstance(audio, (str, os.PathLike)):
        return os.fspath(audio)
    return f"<array shape={tuple(getattr(audio, 'shape', ()))} dtype={getattr(audio, 'dtype', '?')}>"


def make_vad(vad: bool | SileroVAD | None) -> SileroVAD | None:
    """``Verifier(vad=...)``: ``False``/``None`` -> no VAD, ``True`` -> :class:`SileroVAD` with defaults, or an instance."""
    if vad is None or vad is False:
        return None
    if vad is True:
        return SileroVAD()
    if isinstance(vad, SileroVAD):
        return vad
    raise TypeError(f"vad must be a bool or a SileroVAD, got {type(vad).__name__}")
