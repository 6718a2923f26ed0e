"""Reliability (GitHub issue #6): fuzzed inputs, threads, ``nestspk embed --resume``, gallery files.

The fuzz strategies live in ``tests/fuzz_strategies.py`` (one source: ``benchmarks/reliability.py fuzz``
runs thousands of cases, CI a bounded, derandomized sample here, through the benchmark's runners).
"""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings

from nestspk import cli
from nestspk.audio import load_audio
from nestspk.errors import AudioError, GalleryError, NestspkError
from nestspk.verifier import Verifier

import fuzz_strategies as fs
from conftest import reliability_bench

REPO = Path(__file__).resolve().parent.parent
rel = reliability_bench()

SR = 16000


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return Verifier("nested", device="cpu")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def clips(librispeech_files) -> list[np.ndarray]:
    """Six short real clips (1-1.5 s) from different speakers."""
    out = []
    for i, p in enumerate(librispeech_files[:6]):
        x, sr = sf.read(str(p), dtype="float32")
        assert sr == SR
        out.append(x[: int((1.0 + 0.1 * i) * SR)])
    return out


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=fs.strategies())
def test_fuzz_embed_outcome_is_embedding_or_labelled_error(verifier, workdir, case) -> None:
    outcome, detail = rel.run_case(verifier, case, workdir)
    assert not outcome.startswith(rel.BAD_PREFIXES), f"{outcome} for {case.desc}: {detail}"


def _wav_bytes(x: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def test_fixed_edge_cases(verifier, workdir, clips) -> None:
    """Hand-picked cases that must behave the same whatever hypothesis draws."""
    speech = clips[0]
    t = np.arange(SR)
    cases = {
        # expected outcome: True = embedding, else the error text
        "square": (fs.Case("array", np.where((t // 40) % 2 == 0, 1.0, -1.0).astype(np.float32), None, ""),
                   "does not look like speech"),
        "dc": (fs.Case("array", np.full(SR, 0.3, np.float32), None, ""), "does not look like speech"),
        "int16 8ch": (fs.Case("array", (np.tile(speech[:, None], 8) * 30000).astype(np.int16), 16000, ""), True),
        "uint8": (fs.Case("array", (speech * 100 + 128).astype(np.uint8), 16000, ""), True),
        "nan": (fs.Case("array", np.where(t == 5, np.nan, 0.1).astype(np.float32), None, ""), "NaN"),
        "empty": (fs.Case("array", np.zeros(0, np.float32), None, ""), "empty"),
        "1 sample": (fs.Case("array", np.ones(1, np.float32) * 0.5, None, ""), "too short"),
        "odd rate": (fs.Case("array", speech, 44101, ""), "sample_rate 44101"),
        "odd rate file": (fs.Case("file", _wav_bytes(speech, 44101), None, ""), "sample_rate 44101"),
        "0-byte file": (fs.Case("file", b"", None, ""), "empty file"),
        "header only": (fs.Case("file", _wav_bytes(speech, SR)[:44], None, ""), ""),
    }
    for name, (case, want) in cases.items():
        outcome, detail = rel.run_case(verifier, case, workdir)
        if want is True:
            assert outcome == "embedding", (name, outcome, detail)
        else:
            assert outcome.startswith("error:"), (name, outcome, detail)
            assert want in detail, (name, detail)


# --------------------------------------------------------------------------- threads


def test_shared_verifier_threads_match_serial(verifier, clips) -> None:
    serial = [verifier.embed(c) for c in clips]
    jobs = [i % len(clips) for i in range(8 * 20)]
    seen_threads: set[int] = set()

    def work(i: int) -> tuple[int, np.ndarray]:
        seen_threads.add(threading.get_ident())
        return i, verifier.embed(clips[i])

    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(work, jobs))
    assert len(got) == len(jobs) and len(seen_threads) > 1
    for i, e in got:
        np.testing.assert_array_equal(e, serial[i])


# --------------------------------------------------------------------------- nestspk embed DIR --resume


def _run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_embed_dir_reports_bad_files_and_resumes(tmp_path: Path, capsys) -> None:
    good, bad = rel.make_embed_dir(tmp_path / "clips", 40, 2)
    out = tmp_path / "emb.npy"
    side = tmp_path / "emb.npy.json"
    argv = ["embed", str(tmp_path / "clips"), "-o", str(out), "--device", "cpu", "--batch-size", "8"]
    rc, stdout, err = _run_cli(argv, capsys)
    assert rc == 0, err
    assert "42/42" in err  # the tqdm bar ran to completion
    assert "2 file(s) failed" in err and all(b in err for b in bad)
    full = rel.check_embed_output(out, good, bad)
    assert full["good_all_once"] and full["failed_listed"] and full["finite_unit_norm"], full
    ref_meta = json.loads(side.read_text())
    ref = dict(zip(ref_meta["files"], np.load(out)))

    # simulate a run stopped after 13 files, between writing the .npy (15 rows) and its .json (13 files)
    keep = ref_meta["files"][:13]
    np.save(out, np.stack([ref[f] for f in ref_meta["files"][:15]]))
    side.write_text(json.dumps({"model": ref_meta["model"], "files": keep, "failed": {}}))
    rc, stdout, err = _run_cli(argv + ["--resume"], capsys)
    assert rc == 0, err
    res = rel.check_embed_output(out, good, bad)
    assert res["good_all_once"] and res["failed_listed"], res
    meta = json.loads(side.read_text())
    arr = np.load(out)
    for f, e in zip(meta["files"], arr):  # each row still belongs to its file
        np.testing.assert_allclose(e, ref[f], atol=1e-5)


def test_embed_resume_rejects_short_npy(tmp_path: Path, capsys, librispeech_files) -> None:
    out = tmp_path / "emb.npy"
    np.save(out, np.zeros((1, 512), np.float32))
    (tmp_path / "emb.npy.json").write_text(json.dumps({"files": ["a", "b"], "failed": {}}))
    rc, _, err = _run_cli(["embed", str(librispeech_files[0]), "-o", str(out), "--device", "cpu", "--resume"], capsys)
    assert rc == 2 and "cannot resume" in err


# --------------------------------------------------------------------------- gallery files


@pytest.fixture(scope="module")
def enrolled(verifier, clips) -> Verifier:
    verifier.enroll("alice", [clips[0], clips[1]])
    verifier.enroll("bob", clips[2])
    verifier.enroll("carol", clips[3])
    verifier.enroll("alice", clips[4])  # extend: running mean over 3 recordings
    return verifier


def test_gallery_round_trip_exact(enrolled: Verifier, clips, tmp_path: Path) -> None:
    v = enrolled
    before = v.identify(clips[5], top_k=3)
    cents = {k: v.gallery.centroid(k) for k in v.speakers}
    counts = {k: v.gallery.count(k) for k in v.speakers}
    path = tmp_path / "g.npz"
    v.save_gallery(path)
    v.enroll("dave", clips[5])  # changed state that load_gallery must replace
    v.load_gallery(path)
    assert v.speakers == ["alice", "bob", "carol"]
    assert {k: v.gallery.count(k) for k in v.speakers} == counts == {"alice": 3, "bob": 1, "carol": 1}
    for k in cents:
        assert np.array_equal(v.gallery.centroid(k), cents[k])
    after = v.identify(clips[5], top_k=3)
    assert [n for n, _ in after] == [n for n, _ in before]
    assert np.array_equal(np.array([s for _, s in after]), np.array([s for _, s in before]))


def _npz(path: Path, **arrays) -> Path:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def _meta(model: str = "nested_4level", fmt: str = "nestspk-gallery/1") -> np.ndarray:
    return np.array(json.dumps({"format": fmt, "model": model, "embed_dim": 512}))


def _good(n: int = 2, dim: int = 512) -> dict:
    e = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    return {"names": np.array([f"s{i}" for i in range(n)]), "embeddings": e, "counts": np.ones(n, np.int64),
            "meta": _meta()}


@pytest.mark.parametrize("kind", ["random_bytes", "empty", "missing_key", "wrong_dim", "nan", "duplicate",
                                  "other_model", "other_format", "object_array", "meta_not_object",
                                  "string_embeddings", "zero_count", "names_2d"])
def test_malformed_gallery_rejected(enrolled: Verifier, tmp_path: Path, kind: str) -> None:
    v = enrolled
    before = list(v.speakers)
    path = tmp_path / "bad.npz"
    g = _good()
    if kind == "random_bytes":
        path.write_bytes(np.random.default_rng(1).bytes(4000))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "missing_key":
        g.pop("counts")
        _npz(path, **g)
    elif kind == "wrong_dim":
        _npz(path, **_good(dim=256))
    elif kind == "nan":
        g["embeddings"][1, 3] = np.nan
        _npz(path, **g)
    elif kind == "duplicate":
        g["names"] = np.array(["s0", "s0"])
        _npz(path, **g)
    elif kind == "other_model":
        _npz(path, **{**g, "meta": _meta("resnetse34l_asp")})
    elif kind == "other_format":
        _npz(path, **{**g, "meta": _meta(fmt="something/2")})
    elif kind == "object_array":  # needs pickle to load: allow_pickle=False must refuse it
        _npz(path, **{**g, "names": np.array(["s0", {"x": 1}], dtype=object)})
    elif kind == "meta_not_object":
        _npz(path, **{**g, "meta": np.array("[1, 2]")})
    elif kind == "string_embeddings":
        _npz(path, **{**g, "embeddings": np.full((2, 512), "a")})
    elif kind == "zero_count":
        _npz(path, **{**g, "counts": np.array([1, 0])})
    elif kind == "names_2d":
        _npz(path, **{**g, "names": np.array([["s0", "s1"]])})
    with pytest.raises(GalleryError) as ei:
        v.load_gallery(path)
    assert str(path) in str(ei.value)
    assert v.speakers == before  # a rejected file leaves the gallery untouched
    assert isinstance(ei.value, NestspkError)


def test_odd_sample_rate_rejected_not_hanging() -> None:
    """Regression: 44101 Hz (coprime with 16 kHz) used to build a 0.7e9-value resampling kernel."""
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 44101).astype(np.float32)
    with pytest.raises(AudioError, match="sample_rate 44101 Hz cannot be resampled"):
        load_audio(x, 44101, name="odd")
    assert load_audio(x[:44100], 44100).shape == (16000,)  # standard rates still resample


def test_load_audio_leaves_caller_array_alone(clips) -> None:
    """Regression: float32 mono input was clipped in place (crash on read-only arrays, caller's data changed)."""
    x = clips[0].copy() * 1.5  # float peaks in (1, 2] are accepted and clipped
    x[100] = 1.8
    keep = x.copy()
    y = load_audio(x)
    assert np.array_equal(x, keep) and y.max() <= 1.0
    x.setflags(write=False)
    assert np.array_equal(load_audio(x), y)


@pytest.mark.parametrize("sr", [8000, 12000])
def test_streamed_upsampled_long_file(tmp_path: Path, sr: int) -> None:
    """Regression (found by the fuzzer): a > 20 s file below 16 kHz crashed in iter_windows with a
    broadcast ValueError, because overlapping windows re-read input the stream buffer had dropped."""
    from nestspk.audio import iter_windows, window_starts

    x = np.random.default_rng(0).uniform(-0.5, 0.5, 25 * sr)
    path = tmp_path / "long.wav"
    sf.write(path, x, sr)
    full = load_audio(path)
    windows = list(iter_windows(path, 10.0, 5.0))
    starts = window_starts(len(full), 10 * SR, 5 * SR)
    assert len(windows) == len(starts) == 4
    for w, s in zip(windows, starts):
        np.testing.assert_allclose(w, full[s:s + 10 * SR], atol=1e-6)
