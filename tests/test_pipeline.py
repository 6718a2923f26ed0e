"""nestspk.pipeline: pipelined corpus embedding gives the unpipelined path's embeddings, and the CLI hook."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[str]]:
    """Short 16 kHz FLACs of distinct lengths, two with equal length, a 25 s file (windowed), an 8 kHz WAV
    (resampled), and two bad files (corrupt, too short)."""
    snippets = sorted((DATA / "librispeech-snippets" / "train-clean-100").glob("*.flac"))[:6]
    digits = sorted((DATA / "fsdd" / "recordings").glob("*.wav"))[:1]
    if len(snippets) < 6 or not digits:
        pytest.skip(f"no LibriSpeech snippets / FSDD under {DATA}")
    d = tmp_path_factory.mktemp("corpus")
    good = []
    for k, p in enumerate(snippets[:4]):
        x, sr = sf.read(p, dtype="float32")
        n = sr * 2 if k >= 2 else len(x) - 1000 * k  # files 2 and 3 have the same length: one batch of 2
        sf.write(d / f"s{k}.flac", x[:n], sr)
        good.append(str(d / f"s{k}.flac"))
    long = np.concatenate([sf.read(p, dtype="float32")[0] for p in snippets])
    long = np.tile(long, int(np.ceil(25 * 16000 / len(long))))[:25 * 16000]
    sf.write(d / "long.flac", long, 16000)
    good.append(str(d / "long.flac"))
    x, sr = sf.read(digits[0], dtype="float32")
    sf.write(d / "digit8k.wav", np.tile(x, 3), sr)
    good.append(str(d / "digit8k.wav"))
    (d / "corrupt.wav").write_bytes(b"RIFF....not audio")
    sf.write(d / "short.wav", np.zeros(800, np.float32) + 0.1, 16000)
    return d, good, [str(d / "corrupt.wav"), str(d / "short.wav")]


@pytest.fixture(scope="module")
def verifier():
    from nestspk import Verifier

    return Verifier("nested", device="cpu", backend="torch")


@pytest.mark.parametrize("workers", [0, 2])
def test_pipelined_equals_unpipelined(verifier, corpus, workers: int) -> None:
    from nestspk.pipeline import embed_files

    _, good, bad = corpus
    files = good + bad
    got = {f: (e, err) for f, e, err in embed_files(verifier, files, workers=workers, batch_size=4, max_pending=3)}
    assert set(got) == set(files)
    for f in bad:
        assert got[f][0] is None and f in got[f][1]  # the error names the file
    for f in good:
        ref = verifier.embed_batch([f])[0]
        e, err = got[f]
        assert err is None
        np.testing.assert_allclose(e, ref, rtol=0, atol=2e-6)
    assert not np.allclose(got[good[0]][0], got[good[1]][0], atol=1e-3)  # distinct files, distinct embeddings


def test_bad_arguments(verifier) -> None:
    from nestspk.pipeline import embed_files

    with pytest.raises(ValueError, match="workers"):
        list(embed_files(verifier, [], workers=-1))


def test_cli_embed_workers_matches_plain(corpus, tmp_path: Path) -> None:
    from nestspk.cli import main

    d, good, bad = corpus
    outs = {}
    for w in (0, 2):
        out = tmp_path / f"e{w}.npy"
        assert main(["embed", str(d), "-o", str(out), "--device", "cpu", "--quiet", "--workers", str(w)]) == 0
        meta = json.loads(out.with_name(out.name + ".json").read_text())
        arr = np.load(out)
        assert sorted(meta["failed"]) == sorted(bad)
        outs[w] = {f: arr[i] for i, f in enumerate(meta["files"])}
    assert sorted(outs[0]) == sorted(outs[2]) == sorted(good)
    for f in good:
        np.testing.assert_allclose(outs[2][f], outs[0][f], rtol=0, atol=2e-6)


def test_crop_to_bucket_keeps_the_centre() -> None:
    from nestspk.pipeline import crop_to_bucket

    x = np.arange(1050, dtype=np.float32)
    y = crop_to_bucket(x, 100)
    assert len(y) == 1000 and y[0] == 25 and y[-1] == 1024 and np.shares_memory(x, y)
    assert crop_to_bucket(x[:1000], 100) is not None and len(crop_to_bucket(x[:1000], 100)) == 1000
    assert len(crop_to_bucket(x[:60], 100)) == 60  # shorter than a bucket: whole


def test_buckets_batch_files_of_different_lengths(verifier, corpus, tmp_path: Path, monkeypatch) -> None:
    """Four files of 2.1-2.9 s (four exact lengths) run as one batch of 2 s crops with bucket_s=1; each embedding
    equals the Verifier's embedding of the file's centred crop."""
    from nestspk.audio import load_audio
    from nestspk.pipeline import crop_to_bucket, embed_files

    _, good, _ = corpus
    speech = load_audio(good[0])
    files = []
    for k, seconds in enumerate((2.1, 2.3, 2.6, 2.9)):
        files.append(str(tmp_path / f"c{k}.flac"))
        sf.write(files[-1], speech[4000 * k:4000 * k + int(seconds * 16000)], 16000)
    calls: list[list[int]] = []
    real = verifier._run

    def counting(windows):
        calls.append([len(w) for w in windows])
        return real(windows)

    monkeypatch.setattr(verifier, "_run", counting)
    got = {f: e for f, e, err in embed_files(verifier, files, workers=0, batch_size=8, bucket_s=1.0)}
    assert calls == [[32000] * 4]
    calls.clear()
    list(embed_files(verifier, files, workers=0, batch_size=8))
    assert len(calls) == 4  # exact lengths: one call per file
    monkeypatch.setattr(verifier, "_run", real)
    for f in files:
        ref = verifier.embed_batch([crop_to_bucket(load_audio(f), 16000)])[0]
        np.testing.assert_allclose(got[f], ref, rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match="bucket_s"):
        list(embed_files(verifier, files, bucket_s=0.0))


def test_cli_bucket_is_recorded_and_resume_needs_the_same(corpus, tmp_path: Path, capsys) -> None:
    from nestspk.cli import main

    d, good, _ = corpus
    out = tmp_path / "b.npy"
    opts = ["-o", str(out), "--device", "cpu", "--quiet"]
    assert main(["embed", *good[:2], *opts, "--bucket-s", "0.5"]) == 0
    assert json.loads(out.with_name("b.npy.json").read_text())["bucket_s"] == 0.5
    capsys.readouterr()
    assert main(["embed", *good[:3], *opts, "--resume"]) == 2  # the rest without buckets: refused
    assert "--bucket-s" in capsys.readouterr().err
    assert main(["embed", *good[:3], *opts, "--resume", "--bucket-s", "0.5"]) == 0
    assert np.load(out).shape == (3, 512)
    for bad in ("nan", "0", "-1", "x"):
        with pytest.raises(SystemExit):
            main(["embed", good[0], *opts, "--bucket-s", bad])
