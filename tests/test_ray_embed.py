"""Corpus embedding on Ray Data (extra ``ray``), in local mode: equal to ``nestspk embed``, errors as rows, resume.

Takes about a minute on 2 CPUs (a local Ray start plus two pipeline runs, each starting one actor).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nestspk.extras import MissingExtraError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="ray (extra 'ray') is not installed")
    pytest.importorskip("pyarrow")
    import os

    started = not ray.is_initialized()
    if started:
        path = os.pathsep.join([str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path}})
        ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, example_files):
    """The bundled examples plus four corrupt files: garbage bytes, a truncated FLAC, an empty file, silence."""
    d = tmp_path_factory.mktemp("corpus")
    good = [str(example_files[k]) for k in ("a1", "a2", "b")]
    bad = {"garbage.wav": b"this is not audio", "empty.flac": b""}
    for name, data in bad.items():
        (d / name).write_bytes(data)
    (d / "truncated.flac").write_bytes(Path(good[0]).read_bytes()[:600])
    sf.write(d / "silent.wav", np.zeros(16000 * 2, np.float32), 16000)
    corrupt = [str(d / n) for n in ("garbage.wav", "empty.flac", "truncated.flac", "silent.wav")]
    return good, corrupt


def test_equals_cli_embed_and_errors_are_rows(ray_local, corpus, tmp_path, capsys):
    from nestspk.cli import main
    from nestspk.ray_embed import embed_dataset, read_embeddings

    good, corrupt = corpus
    npy = tmp_path / "cli.npy"
    assert main(["embed", *good, *corrupt, "-o", str(npy), "--quiet", "--device", "cpu", "--backend", "onnx"]) == 0
    meta = json.loads((tmp_path / "cli.npy.json").read_text())
    ref = dict(zip(meta["files"], np.load(npy)))
    assert sorted(ref) == sorted(good) and sorted(meta["failed"]) == sorted(corrupt)

    out = tmp_path / "ray_out"
    s = embed_dataset(good + corrupt, out, backend="onnx", device="cpu", batch_size=2)
    assert (s["rows"], s["embedded"], s["errors"], s["skipped"]) == (7, 3, 4, 0) and s["model"] == "nested_4level"
    paths, emb, failed = read_embeddings(out)
    assert paths == sorted(good) and emb.dtype == np.float32 and emb.shape == (3, 512)
    for p, e in zip(paths, emb):
        assert np.array_equal(e, ref[p]), f"{p}: Ray embedding differs from nestspk embed's"
    assert sorted(failed) == sorted(corrupt)
    for p, err in failed.items():
        assert Path(p).name in err  # the error names the file

    # resume: a new file is embedded, the others (embedded or failed) are skipped; a cut-short Parquet file
    # is set aside and its paths embedded again
    extra = tmp_path / "copy.flac"
    extra.write_bytes(Path(good[2]).read_bytes())
    (out / "cut_short.parquet").write_bytes(b"PAR1 interrupted")
    s2 = embed_dataset(good + corrupt + [str(extra)], out, backend="onnx", device="cpu")
    assert (s2["rows"], s2["embedded"], s2["skipped"]) == (1, 1, 7)
    assert (out / "cut_short.parquet.incomplete").exists()
    paths, emb, _ = read_embeddings(out)
    assert len(paths) == 4 and np.array_equal(emb[paths.index(str(extra))], ref[good[2]])


def test_cli_ray_refuses_to_mix_runs_without_resume(ray_local, corpus, tmp_path, capsys):
    from nestspk.cli import main

    out = tmp_path / "o"
    out.mkdir()
    (out / "old.parquet").write_bytes(b"x")
    assert main(["embed", corpus[0][0], "-o", str(out), "--ray", "local", "--device", "cpu"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_missing_extra_names_it(monkeypatch, tmp_path):
    from nestspk.ray_embed import embed_dataset

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'nestspk\[ray\]'"):
        embed_dataset(["a.wav"], tmp_path / "o")
