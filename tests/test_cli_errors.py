"""Every CLI failure is one line with exit 2 (or one JSON object with verify --json), checked before any
work; -o never destroys inputs or foreign files; duplicates keep rows aligned; --resume refuses other
models and tampered sidecars; Ctrl-C says how to resume (issue 17 items 4-7, 10, 14-16; issue 16.3, 16.9, 16.11)."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nestspk import cli
from nestspk.cli import build_parser, main

ONE_LINE = re.compile(r"^nestspk( \w+)?: error: ")


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture()
def wavs(tmp_path: Path, speech: np.ndarray) -> list[str]:
    """Three short real-speech files A, B, C in three formats soundfile reads."""
    out = []
    for i, (name, fmt, sub) in enumerate([("a.flac", "FLAC", "PCM_16"), ("b.opus", "OGG", "OPUS"),
                                          ("c.mp3", "MP3", "MPEG_LAYER_III")]):
        p = tmp_path / "in" / name
        p.parent.mkdir(exist_ok=True)
        sf.write(p, speech[i * 16000:(i + 2) * 16000], 16000, format=fmt, subtype=sub)
        out.append(str(p))
    return out


def _bad_cases(tmp: Path, wav: str) -> dict[str, list[str]]:
    txt = tmp / "notes.txt"
    txt.write_text("keep me")
    comments = tmp / "comments.txt"
    comments.write_text("# nothing\n\n# here\n")
    badline = tmp / "badline.txt"
    badline.write_text(f"1 {wav} {wav}\n1 {wav}\n")
    badseg = tmp / "badseg.txt"
    badseg.write_text(f"1 {wav}@0-x {wav}\n0 {wav} {wav}\n")
    return {
        "verify missing": ["verify", "/nonexistent/a.wav", wav],
        "verify threshold nan": ["verify", wav, wav, "--threshold", "nan"],
        "verify threshold inf": ["verify", wav, wav, "--threshold", "inf"],
        "verify threshold 2": ["verify", wav, wav, "--threshold", "2.0"],
        "verify threshold True": ["verify", wav, wav, "--threshold", "True"],
        "verify unknown model": ["verify", wav, wav, "--model", "no_such_model"],
        "verify bad card": ["verify", wav, wav, "--model", str(txt)],
        "verify no args": ["verify"],
        "unknown command": ["frobnicate"],
        "embed -o dir": ["embed", wav, "-o", str(tmp)],
        "embed -o under file": ["embed", wav, "-o", str(txt / "e.npy")],
        "embed -o missing dir": ["embed", wav, "-o", str(tmp / "nodir" / "e.npy")],
        "embed -o input": ["embed", wav, "-o", wav],
        "embed -o text file": ["embed", wav, "-o", str(txt)],
        "embed missing input": ["embed", "/nonexistent/x.wav", "-o", str(tmp / "e1.npy")],
        "embed batch 0": ["embed", wav, "-o", str(tmp / "e2.npy"), "--batch-size", "0"],
        "embed batch abc": ["embed", wav, "-o", str(tmp / "e3.npy"), "--batch-size", "abc"],
        "embed score-norm": ["embed", wav, "-o", str(tmp / "e4.npy"), "--score-norm", "asnorm"],
        "eval missing list": ["eval", "--trials", str(tmp / "none.txt")],
        "eval comments only": ["eval", "--trials", str(comments)],
        "eval bad line": ["eval", "--trials", str(badline)],
        "eval bad segment": ["eval", "--trials", str(badseg)],
    }


def test_every_command_with_bad_arguments_one_line_exit_2(tmp_path: Path, wavs, capsys) -> None:
    cases = _bad_cases(tmp_path, wavs[0])
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for name, argv in cases.items():
        rc, out, err = _run(argv + ["--device", "cpu"] if argv[0] in ("verify", "embed", "eval") else argv, capsys)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and ONE_LINE.match(lines[0]), (name, rc, err)
        assert ".tmp" not in err and "Traceback" not in err, (name, err)
    assert "badline.txt:2" in _run(cases["eval bad line"] + ["--device", "cpu"], capsys)[2]
    assert "badseg.txt" in _run(cases["eval bad segment"] + ["--device", "cpu"], capsys)[2]
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing overwritten


def test_verify_json_errors_are_json(wavs, capsys) -> None:
    rc, out, err = _run(["verify", "/nonexistent/a.wav", wavs[0], "--json", "--device", "cpu"], capsys)
    res = json.loads(out)
    assert rc == 2 and res["exit"] == 2 and "file not found" in res["error"] and res["type"] == "AudioError"


def test_device_cuda_without_cuda_is_one_line(wavs, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    rc, out, err = _run(["verify", wavs[0], wavs[0], "--device", "cuda", "--backend", "torch"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1


def test_help_version_and_options_per_command(capsys) -> None:
    p = build_parser()
    subs = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sp in [("nestspk", p)] + list(subs.items()):
        for act in sp._actions:
            if not isinstance(act, argparse._SubParsersAction):
                assert act.help and act.help != argparse.SUPPRESS, (name, act.dest)
    assert "--score-norm" not in subs["embed"].format_help()
    rc, out, _ = _run(["--version"], capsys)
    from nestspk import __version__

    assert rc == 0 and out.strip() == f"nestspk {__version__}"


def test_embed_dir_takes_every_format_and_duplicates_keep_rows_aligned(wavs, tmp_path: Path, capsys) -> None:
    out = tmp_path / "e.npy"
    a, b, c = wavs
    rc, _, err = _run(["embed", str(Path(a).parent), "-o", str(out), "--device", "cpu", "--quiet"], capsys)
    assert rc == 0, err
    meta = json.loads((tmp_path / "e.npy.json").read_text())
    assert sorted(meta["files"]) == sorted(wavs) and np.load(out).shape == (3, 512)
    ref = dict(zip(meta["files"], np.load(out)))
    rc, _, err = _run(["embed", a, c, a, b, "-o", str(out), "--device", "cpu", "--quiet"], capsys)
    assert rc == 0 and "named more than once" in err
    meta = json.loads((tmp_path / "e.npy.json").read_text())
    arr = np.load(out)
    assert meta["files"] == [a, c, b] and arr.shape == (3, 512)
    for f, e in zip(meta["files"], arr):
        np.testing.assert_allclose(e, ref[f], atol=1e-5)


def test_resume_refuses_other_model_and_tampered_files(wavs, tmp_path: Path, capsys) -> None:
    out = tmp_path / "e.npy"
    side = tmp_path / "e.npy.json"
    base = ["embed", wavs[0], wavs[1], "-o", str(out), "--device", "cpu", "--quiet"]
    assert _run(base, capsys)[0] == 0
    rc, _, err = _run(base + ["--resume", "--model", "resnetse34l"], capsys)
    assert rc == 2 and "nested_4level" in err and "resnetse34l_asp" in err
    good = side.read_text()
    arr = np.load(out)
    np.save(out, arr[::-1].copy())  # rows swapped: the checksum in the sidecar no longer matches
    rc, _, err = _run(base + ["--resume"], capsys)
    assert rc == 2 and "checksum" in err
    np.save(out, arr)
    for bad in ["{", "[]", json.dumps({"model": "nested_4level", "files": [1, 2]}),
                json.dumps({"model": "nested_4level", "files": ["a", "a"], "failed": {}})]:
        side.write_text(bad)
        rc, _, err = _run(base + ["--resume"], capsys)
        assert rc == 2 and "cannot resume" in err and len(err.strip().splitlines()) == 1, (bad, err)
    side.write_text(good)
    assert _run(base + ["--resume"], capsys)[0] == 0


def test_ctrl_c_saves_and_says_how_to_resume(wavs, tmp_path: Path, capsys, monkeypatch) -> None:
    from nestspk.verifier import Verifier

    calls = {"n": 0}
    real = Verifier.embed_batch

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Verifier, "embed_batch", interrupted)
    out = tmp_path / "e.npy"
    argv = ["embed", *wavs, "-o", str(out), "--device", "cpu", "--quiet", "--batch-size", "1"]
    rc, _, err = _run(argv, capsys)
    assert rc == 130 and "--resume" in err and "1 of 3" in err
    assert json.loads((tmp_path / "e.npy.json").read_text())["files"] == [wavs[0]]
    monkeypatch.setattr(Verifier, "embed_batch", real)
    rc, _, err = _run(argv + ["--resume"], capsys)
    assert rc == 0 and np.load(out).shape == (3, 512)


@pytest.mark.parametrize("save_every, npy_writes", [("0", 4), ("3600", 1)])
def test_save_every_bounds_the_rewrites_of_the_output(wavs, tmp_path: Path, capsys, monkeypatch,
                                                      save_every: str, npy_writes: int) -> None:
    """--save-every 0 saves after each of the 3 batches and at the end; a long interval saves only at the end."""
    from nestspk import fileio

    written: list[str] = []
    real = fileio.atomic_write

    def counting(path):
        written.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(fileio, "atomic_write", counting)
    out = tmp_path / "e.npy"
    rc, _, _ = _run(["embed", *wavs, "-o", str(out), "--device", "cpu", "--quiet", "--batch-size", "1",
                     "--save-every", save_every], capsys)
    assert rc == 0 and np.load(out).shape == (3, 512)
    assert written.count("e.npy") == npy_writes and written.count("e.npy.json") == npy_writes


def test_own_output_may_be_replaced_foreign_needs_force(wavs, tmp_path: Path, capsys) -> None:
    out = tmp_path / "e.npy"
    argv = ["embed", wavs[0], "-o", str(out), "--device", "cpu", "--quiet"]
    assert _run(argv, capsys)[0] == 0
    assert _run(argv, capsys)[0] == 0  # our own file: replaced
    foreign = tmp_path / "f.npy"
    np.save(foreign, np.zeros(3))
    rc, _, err = _run(["embed", wavs[0], "-o", str(foreign), "--device", "cpu", "--quiet"], capsys)
    assert rc == 2 and "--force" in err
    assert _run(["embed", wavs[0], "-o", str(foreign), "--device", "cpu", "--quiet", "--force"], capsys)[0] == 0
    rc, _, err = _run(["embed", wavs[0], "-o", wavs[0], "--device", "cpu", "--force"], capsys)
    assert rc == 2 and "would overwrite the input" in err
    assert cli.EMBEDDINGS_FORMAT == json.loads((tmp_path / "f.npy.json").read_text())["format"]


def test_embed_non_utf8_file_names(tmp_path: Path, speech: np.ndarray, capsys) -> None:
    import os

    d = tmp_path / "names"
    d.mkdir()
    raw = os.fsencode(str(d)) + b"/caf\xe9.flac"
    with open(raw, "wb") as f:
        sf.write(f, speech[:32000], 16000, format="FLAC")
    out = tmp_path / "e.npy"
    rc, stdout, err = _run(["embed", str(d), "-o", str(out), "--device", "cpu", "--quiet"], capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "e.npy.json").read_text())["files"] == [os.fsdecode(raw)]
