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
