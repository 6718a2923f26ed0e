import json
import subprocess
import sys

import numpy as np
import pytest

from nestspk.cli import main


def test_verify_same_and_different(example_files, capsys):
    assert main(["verify", str(example_files["a1"]), str(example_files["a2"]), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("same speaker")
    assert main(["verify", str(example_files["a1"]), str(example_files["b"]), "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["same_speaker"] is False and out["model"] == "nested_4level"


@pytest.mark.parametrize("args,msg", [
    (["verify", "/nonexistent/a.wav", "/nonexistent/b.wav"], "file not found"),
    (["verify", "A", "B", "--model", "no_such_model"], "unknown model"),
    (["eval", "--trials", "/nonexistent/trials.txt"], "trials.txt"),
])
def test_errors_exit_2_with_one_line(args, msg, capsys, example_files):
    args = [str(example_files["a1"]) if a == "A" else str(example_files["b"]) if a == "B" else a for a in args]
    assert main(args + ["--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1 and err.startswith("nestspk: error:")


def test_embed_keeps_good_files_and_reports_bad(example_files, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    out = tmp_path / "emb.npy"
    rc = main(["embed", str(example_files["a1"]), str(bad), str(example_files["b"]), "-o", str(out), "--quiet",
               "--device", "cpu"])
    assert rc == 0
    emb = np.load(out)
    meta = json.loads((tmp_path / "emb.npy.json").read_text())
    assert emb.shape == (2, 512) and meta["files"] == [str(example_files["a1"]), str(example_files["b"])]
    assert list(meta["failed"]) == [str(bad)]
    assert "bad.wav" in capsys.readouterr().err


def test_eval_on_a_tiny_trial_list(example_files, tmp_path, capsys):
    a1, a2, b = (str(example_files[k]) for k in ("a1", "a2", "b"))
    trials = tmp_path / "trials.txt"
    trials.write_text(f"1 {a1} {a2}\n0 {a1} {b}\n0 {a2} {b}\n")
    res = tmp_path / "res.json"
    assert main(["eval", "--trials", str(trials), "--device", "cpu", "--json", str(res), "--quiet"]) == 0
    figures = json.loads(res.read_text())
    assert figures["n_trials"] == 3 and figures["eer"] == 0.0


def test_console_script_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "nestspk", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "verify" in r.stdout
