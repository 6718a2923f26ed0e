"""Hypothesis strategies for the reliability properties: fuzz inputs of every kind nestspk accepts.

One source for ``tests/test_reliability.py`` / ``tests/test_inputs.py`` (a few hundred examples per CI run) and the
long fuzz runs of ``benchmarks/reliability.py fuzz`` (thousands, results committed under
``benchmarks/results/``). Each strategy draws a :class:`Case`; the runners that feed a case to nestspk and classify
the outcome live in the benchmark module. Real speech comes from ``$NESTSPK_DATA`` (default ``../shared/data``).
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("NESTSPK_DATA", REPO.parent / "shared" / "data"))
CLIP_DIR = DATA / "librispeech-snippets" / "train-clean-100"
SR = 16000

# --------------------------------------------------------------------------- real speech


def clip_paths(n: int | None = None) -> list[Path]:
    """Sorted LibriSpeech snippet paths (FileNotFoundError when the data is absent)."""
    files = sorted(CLIP_DIR.glob("*.flac"))
    if not files:
        raise FileNotFoundError(f"no LibriSpeech snippets under {CLIP_DIR}")
    return files[:n] if n else files


@lru_cache(maxsize=8)
def real_speech(seconds: float = 2.0, index: int = 0) -> np.ndarray:
    """``seconds`` of real 16 kHz speech (float32, read-only) from snippet ``index``."""
    x, sr = sf.read(str(clip_paths()[index]), dtype="float32")
    assert sr == SR, sr
    n = int(seconds * SR)
    x = np.tile(x, -(-n // len(x)))[:n] if n > len(x) else x[:n]
    x = np.ascontiguousarray(x)
    x.setflags(write=False)
    return x


# --------------------------------------------------------------------------- fuzz strategies

SAMPLE_RATES = [16000, 8000, 22050, 44100, 48000, 1000, 768000, 7999, 44101, 12345, 999, 768001, 0, -16000,
                1, 10**9]
"""Sample rates drawn for arrays (all) and written into WAV headers (the positive ones)."""
CONTENTS = ["speech", "dc", "square", "noise", "silence", "nan", "inf", "over"]
ARRAY_DTYPES = ["float32", "float64", "float16", "int16", "int32", "int8", "uint8", "int64", "bool", "complex64"]
FILE_FORMATS = [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"), ("WAV", "FLOAT"), ("WAV", "DOUBLE"),
                ("WAV", "PCM_U8"), ("FLAC", "PCM_16"), ("FLAC", "PCM_24")]
MUTATIONS = ["none", "truncate", "flip", "cut_header", "zero_tail", "random_bytes", "empty"]


@dataclass
class Case:
    """One fuzz input: an in-memory array (``data`` ndarray) or file bytes (``data`` bytes)."""

    kind: str  # "array" | "file"
    data: Any
    sample_rate: int | None
    desc: str
    suffix: str = ".wav"


def _signal(content: str, n: int, channels: int, seed: int) -> np.ndarray:
    """(n, channels) float64 waveform of the given content kind."""
    rng = np.random.default_rng(seed)
    if content == "speech":
        base = np.asarray(real_speech(max(2.0, n / SR), seed % 4), np.float64)
        base = np.resize(base, n)
        x = np.stack([np.roll(base, 37 * c) for c in range(channels)], axis=1)
    elif content == "dc":
        x = np.full((n, channels), rng.uniform(-0.9, 0.9))
    elif content == "square":
        t = np.arange(n)
        x = np.where((t // 40) % 2 == 0, 1.0, -1.0)[:, None].repeat(channels, 1)
    elif content == "noise":
        x = rng.uniform(-1, 1, (n, channels))
    elif content == "silence":
        x = np.zeros((n, channels))
    else:
        x = rng.uniform(-0.5, 0.5, (n, channels))
        if n:
            idx = rng.integers(0, n, size=max(1, n // 1000))
            x[idx, rng.integers(0, channels)] = {"nan": np.nan, "inf": np.inf, "over": 3.5}[content]
    return x


def _to_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype.startswith("float") or dtype == "complex64":
        return x.astype(dtype)
    if dtype == "bool":
        return x > 0
    if dtype == "uint8":
        return (np.clip(np.nan_to_num(x, posinf=1, neginf=-1), -1, 1) * 127 + 128).astype(np.uint8)
    scale = float(min(np.iinfo(dtype).max, 2**62))
    return (np.clip(np.nan_to_num(x, posinf=1, neginf=-1), -1, 1) * scale).astype(dtype)


def _encode(x: np.ndarray, sr: int, fmt: str, subtype: str) -> bytes:
    """Encode (n, channels) float64 in [-1, 1] as WAV/FLAC bytes; falls back to WAV PCM_16."""
    buf = io.BytesIO()
    try:
        sf.write(buf, np.clip(np.nan_to_num(x), -1, 1), sr, format=fmt, subtype=subtype)
    except (sf.SoundFileError, RuntimeError, ValueError):
        buf = io.BytesIO()
        sf.write(buf, np.clip(np.nan_to_num(x), -1, 1), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def strategies():
    """Return the hypothesis strategy of :class:`Case` (imported lazily so the module works without it)."""
    from hypothesis import strategies as st

    lengths = st.sampled_from([0, 1, 2, 100, 7999, 8000, 16000, 24000, 40000])

    @st.composite
    def array_case(draw) -> Case:
        n = draw(lengths)
        ch = draw(st.integers(1, 9))
        content = draw(st.sampled_from(CONTENTS))
        dtype = draw(st.sampled_from(ARRAY_DTYPES))
        sr = draw(st.sampled_from([None] + SAMPLE_RATES))
        layout = draw(st.sampled_from(["1d", "time_ch", "ch_time", "batch1"]))
        x = _to_dtype(_signal(content, n, ch, draw(st.integers(0, 2**16))), dtype)
        if layout == "1d" or ch == 1 and layout != "batch1":
            x = x[:, 0] if layout == "1d" else x
        elif layout == "ch_time":
            x = x.T
        elif layout == "batch1":
            x = x.T[None]
        x = np.ascontiguousarray(x)
        return Case("array", x, sr, f"array {content} {dtype} {layout} shape={x.shape} sr={sr}")

    @st.composite
    def file_case(draw) -> Case:
        mutation = draw(st.sampled_from(MUTATIONS))
        if mutation == "random_bytes":
            data = draw(st.binary(min_size=1, max_size=2048))
            return Case("file", data, None, f"file random {len(data)} bytes", draw(st.sampled_from([".wav", ".flac"])))
        if mutation == "empty":
            return Case("file", b"", None, "file 0 bytes", draw(st.sampled_from([".wav", ".flac"])))
        fmt, subtype = draw(st.sampled_from(FILE_FORMATS))
        ch = draw(st.integers(1, 8))
        sr = draw(st.sampled_from([s for s in SAMPLE_RATES if s > 0]))
        # rarely a file > 20 s, which Verifier streams window by window
        n = draw(st.sampled_from([1, 4000, 8000, 16000, 24000, 21 * SR]))
        n = 21 * min(sr, 48000) if n == 21 * SR else n  # ~21 s at the own rate (not 336 s at 1 kHz)
        content = draw(st.sampled_from(CONTENTS))
        data = _encode(_signal(content, n, ch, draw(st.integers(0, 2**16))), sr, fmt, subtype)
        desc = f"file {fmt}/{subtype} ch={ch} sr={sr} n={n} {content} {mutation}"
        b = bytearray(data)
        if mutation == "truncate":
            cut = draw(st.integers(0, len(b) - 1))
            b = b[:cut]
            desc += f" at {cut}"
        elif mutation == "flip":
            hi = draw(st.sampled_from([64, 512, len(b)]))
            flips = draw(st.lists(st.tuples(st.integers(0, min(hi, len(b)) - 1), st.integers(1, 255)),
                                  min_size=1, max_size=8))
            for pos, val in flips:
                b[pos] ^= val
            desc += f" {flips}"
        elif mutation == "cut_header":
            cut = draw(st.integers(1, min(64, len(b) - 1)))
            b = b[cut:]
            desc += f" first {cut} bytes removed"
        elif mutation == "zero_tail":
            start = draw(st.integers(0, len(b) - 1))
            b[start:] = bytes(len(b) - start)
            desc += f" zeroed from {start}"
        suffix = ".flac" if fmt == "FLAC" else ".wav"
        return Case("file", bytes(b), None, desc, suffix)

    return st.one_of(array_case(), file_case())


# --------------------------------------------------------------------------- issue 17 strategies

NONSPEECH = ["click", "hum50", "hum60", "white", "tone", "dc_only"]
TENSOR_KINDS = ["meta", "conj", "neg", "nested", "sparse", "bfloat16", "noncontig", "grad", "expand", "matrix",
                "complex", "int_tensor", "cuda_like_str"]
GALLERY_KINDS = ["valid", "bomb", "lying_header", "truncate", "flip", "zero", "huge", "empty_name", "nul_name",
                 "extra_member", "missing_member", "object", "deep_json", "other_model", "random", "empty",
                 "nested_zip", "fortran", "counts_zero", "dim"]
CARD_KINDS = ["drop_key", "wrong_type", "not_object", "not_json", "empty", "deep", "unknown_arch", "bad_sha",
              "missing_weights"]
CLI_KINDS = ["dup_inputs", "self_overwrite", "sidecar_overwrite", "text_file", "out_dir", "under_file", "missing_dir",
             "bad_batch", "bad_threshold", "missing_input", "resume_other_model", "resume_tampered",
             "resume_malformed", "unknown_option", "score_norm_on_embed", "ok_small"]
TRIAL_KINDS = ["comments_only", "short_line", "bad_label", "bad_segment", "neg_segment", "empty", "binary", "ok"]


def _nonspeech(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / SR
    if kind == "click":
        x = np.zeros(n)
        x[n // 2] = rng.uniform(0.2, 1.0)
    elif kind.startswith("hum"):
        x = rng.uniform(0.05, 0.9) * np.sin(2 * np.pi * int(kind[3:]) * t + rng.uniform(0, 6))
    elif kind == "white":
        x = rng.uniform(-1, 1, n) * rng.uniform(0.01, 1.0)
    elif kind == "tone":
        x = 0.5 * np.sin(2 * np.pi * rng.uniform(200, 3000) * t)
    else:
        x = np.full(n, rng.uniform(-0.9, 0.9))
    return x.astype(np.float32)


def unknown_length_flac(x: np.ndarray, sr: int = SR) -> bytes:
    """FLAC bytes with STREAMINFO total_samples=0, as an encoder writing to a pipe leaves it (2**63-1 frames)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.nan_to_num(x), -1, 1), sr, format="FLAC")
    b = bytearray(buf.getvalue())
    word = int.from_bytes(b[18:26], "big")
    b[18:26] = (word & ~((1 << 36) - 1)).to_bytes(8, "big")
    return bytes(b)


class Pipe(io.RawIOBase):
    """A non-seekable binary stream."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        chunk = self._f.read(len(b))
        b[:len(chunk)] = chunk
        return len(chunk)


def _gallery_bytes(kind: str, rng: np.random.Generator, dim: int = 512) -> bytes:
    """Bytes of a gallery file of the given (mostly malformed) kind."""
    import zipfile

    n = int(rng.integers(1, 5))
    e = rng.standard_normal((n, dim))
    e = (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)
    arrays = {"names": np.array([f"s{i}" for i in range(n)]), "embeddings": e, "counts": np.ones(n, np.int64),
              "meta": np.array(json.dumps({"format": "nestspk-gallery/1", "model": "nested_4level", "embed_dim": dim}))}

    def npz(arrs: dict) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **arrs)
        return buf.getvalue()

    def members(emb_writer) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for k in ("names", "counts", "meta"):
                with z.open(f"{k}.npy", "w") as f:
                    np.lib.format.write_array(f, arrays[k])
            with z.open("embeddings.npy", "w", force_zip64=True) as f:
                emb_writer(f)
        return buf.getvalue()

    if kind == "valid":
        return npz(arrays)
    if kind == "bomb":
        size = int(rng.choice([1 << 22, 1 << 24, 1 << 26]))

        def bomb(f):
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (size // (4 * dim), dim)})
            for _ in range(size >> 20):
                f.write(bytes(1 << 20))
        return members(bomb)
    if kind == "lying_header":
        rows = int(rng.choice([10**9, 10**6, n + 1, 2**40]))

        def lying(f):
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
            f.write(bytes(64))
        return members(lying)
    good = npz(arrays)
    b = bytearray(good)
    if kind == "truncate":
        return bytes(b[:int(rng.integers(0, len(b)))])
    if kind == "flip":
        for _ in range(int(rng.integers(1, 9))):
            b[int(rng.integers(0, len(b)))] ^= int(rng.integers(1, 256))
        return bytes(b)
    if kind in ("zero", "huge"):
        return npz({**arrays, "embeddings": e * (0.0 if kind == "zero" else 1e6)})
    if kind in ("empty_name", "nul_name"):
        return npz({**arrays, "names": np.array(["" if kind == "empty_name" else "a\x00b"] + [f"s{i}" for i in range(1, n)])})
    if kind == "extra_member":
        return npz({**arrays, "x": np.zeros(3)})
    if kind == "missing_member":
        return npz({k: v for k, v in arrays.items() if k != "counts"})
    if kind == "object":
        return npz({**arrays, "names": np.array([{"x": 1}] * n, dtype=object)})
    if kind == "deep_json":
        return npz({**arrays, "meta": np.array("[" * 50000 + "]" * 50000)})
    if kind == "other_model":
        return npz({**arrays, "meta": np.array(json.dumps({"format": "nestspk-gallery/1", "model": "other"}))})
    if kind == "random":
        return rng.bytes(int(rng.integers(1, 5000)))
    if kind == "empty":
        return b""
    if kind == "nested_zip":
        return npz({**arrays, "names": np.frombuffer(good, np.uint8)})
    if kind == "fortran":
        return npz({**arrays, "embeddings": np.asfortranarray(e)})
    if kind == "counts_zero":
        return npz({**arrays, "counts": np.zeros(n, np.int64)})
    return npz({**arrays, "embeddings": e[:, : dim // 2].copy()})  # "dim"


def _tensor(kind: str, x: np.ndarray) -> Any:
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return {"meta": lambda: t.to("meta"), "conj": lambda: torch.complex(t, t).conj(),
            "neg": lambda: torch._neg_view(-t), "nested": lambda: torch.nested.nested_tensor([t, t[: len(t) // 2 + 1]]),
            "sparse": lambda: t.to_sparse(), "bfloat16": lambda: t.to(torch.bfloat16),
            "noncontig": lambda: torch.stack([t, t], 1)[:, 0], "grad": lambda: t.clone().requires_grad_(True),
            "expand": lambda: t[None].expand(2, -1), "matrix": lambda: np.asmatrix(x),
            "complex": lambda: torch.complex(t, t), "int_tensor": lambda: (t * 32767).to(torch.int16),
            "cuda_like_str": lambda: str(x[:10])}[kind]()


def extended_strategies(only: str = "all"):
    """Hypothesis strategy over every kind of issue 17: audio (array/file), unknown-length streams, byte and
    file-object sources, level/DC/non-speech content, exotic tensors, gallery files, model cards,
    trial lists and CLI argument lists. Each draws a :class:`Case` whose ``kind`` says how to run it."""
    from hypothesis import strategies as st

    seeds = st.integers(0, 2**16)

    @st.composite
    def stream_case(draw) -> Case:
        n = draw(st.sampled_from([4000, 8000, 16000, 24000, 40000]))
        sr = draw(st.sampled_from([16000, 8000, 22050, 48000]))
        content = draw(st.sampled_from(["speech", "speech", "noise", "silence", "over"]))
        how = draw(st.sampled_from(["path", "bytes", "bytesio", "pipe"]))
        data = unknown_length_flac(_signal(content, n, 1, draw(seeds))[:, 0], sr)
        return Case("stream", data, None, f"unknown-length FLAC via {how} sr={sr} n={n} {content}", how)

    @st.composite
    def source_case(draw) -> Case:
        base = draw(strategies())
        if base.kind != "file":
            return base
        how = draw(st.sampled_from(["bytes", "bytesio", "pipe", "bytes_path"]))
        return Case("source", base.data, None, f"{base.desc} via {how}", how)

    @st.composite
    def content_case(draw) -> Case:
        rng = np.random.default_rng(draw(seeds))
        n = draw(st.sampled_from([8000, 16000, 32000]))
        kind = draw(st.sampled_from(["level", "dc"] + NONSPEECH))
        if kind in ("level", "dc"):
            x = np.asarray(real_speech(n / SR, int(rng.integers(0, 4))), np.float64)
            x = x * (10 ** rng.uniform(-3.5, 0) if kind == "level" else 1.0) + (rng.uniform(-0.3, 0.3) if kind == "dc" else 0)
            x = np.clip(x, -1, 1).astype(np.float32)
        else:
            x = _nonspeech(kind, n, rng)
        return Case("content", x, None, f"content {kind} n={n}", kind)

    @st.composite
    def tensor_case(draw) -> Case:
        kind = draw(st.sampled_from(TENSOR_KINDS))
        return Case("tensor", kind, None, f"tensor {kind}")

    @st.composite
    def gallery_case(draw) -> Case:
        kind = draw(st.sampled_from(GALLERY_KINDS))
        return Case("gallery", kind, draw(seeds), f"gallery {kind}")

    @st.composite
    def card_case(draw) -> Case:
        kind = draw(st.sampled_from(CARD_KINDS))
        key = draw(st.sampled_from(["name", "model", "model_options", "frontend", "weights_file", "sha256",
                                    "threshold", "embed_dim", "operating_points", "calibration"]))
        value = draw(st.sampled_from([None, 5, "x", [], {}, -1.5, True, "../../etc/passwd"]))
        return Case("card", (kind, key, value), None, f"card {kind} {key}={value!r}")

    @st.composite
    def trials_case(draw) -> Case:
        return Case("trials", draw(st.sampled_from(TRIAL_KINDS)), draw(seeds), "trials")

    @st.composite
    def cli_case(draw) -> Case:
        kind = draw(st.sampled_from(CLI_KINDS))
        return Case("cli", kind, draw(seeds), f"cli {kind}")

    every = {"audio": strategies(), "stream": stream_case(), "source": source_case(), "content": content_case(),
             "tensor": tensor_case(), "gallery": gallery_case(), "card": card_case(), "trials": trials_case(),
             "cli": cli_case()}
    return st.one_of(*(every.values() if only == "all" else [every[k] for k in only.split(",")]))
