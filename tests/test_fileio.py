"""Atomic writes: a temporary file left by a killed writer is cleaned up by the next write of the same target."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nestspk import fileio
from nestspk.fileio import TMP_MARK, atomic_write, remove_stale_temps

REPO = Path(__file__).resolve().parent.parent

_KILLED_WRITER = """
import sys, time
sys.path.insert(0, {repo!r})
from nestspk.fileio import atomic_write
with atomic_write({path!r}) as f:
    f.write(b"partial")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _aged(path: Path, seconds: float = 3600.0) -> Path:
    path.write_bytes(b"x")
    old = time.time() - seconds
    os.utime(path, (old, old))
    return path


def test_kill_9_temp_is_removed_by_the_next_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "emb.npy"
    target.write_bytes(b"old")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER.format(repo=str(REPO), path=str(target))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = [p for p in tmp_path.iterdir() if p.name.endswith(TMP_MARK)]
    assert len(left) == 1 and f".{proc.pid}." in left[0].name  # what kill -9 leaves behind
    assert target.read_bytes() == b"old"
    monkeypatch.setattr(fileio, "STALE_AFTER_S", 0.0)
    with atomic_write(target) as f:
        f.write(b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npy"]
    assert target.read_bytes() == b"new"


def test_only_old_temps_of_dead_writers_of_that_target_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "g.npz"
    dead = _dead_pid()
    stale = _aged(tmp_path / f".g.npz.{dead}.abc{TMP_MARK}")
    live = _aged(tmp_path / f".g.npz.{os.getpid()}.abc{TMP_MARK}")  # a writer still running
    fresh = tmp_path / f".g.npz.{dead}.def{TMP_MARK}"  # young: maybe another host's writer (NFS)
    fresh.write_bytes(b"x")
    other = _aged(tmp_path / f".h.npz.{dead}.abc{TMP_MARK}")  # another target
    unnamed = _aged(tmp_path / f".g.npz.abc{TMP_MARK}")  # no pid in the name
    assert remove_stale_temps(target) == [stale]
    assert not stale.exists() and live.exists() and fresh.exists() and other.exists() and unnamed.exists()


def test_missing_directory_is_still_the_callers_error(tmp_path: Path) -> None:
    assert remove_stale_temps(tmp_path / "nope" / "x.npy") == []
    with pytest.raises(FileNotFoundError):
        with atomic_write(tmp_path / "nope" / "x.npy") as f:
            f.write(b"x")
