"""Atomic file writes: a reader (or a crash, even ``kill -9``) sees the old file or the new one, never a mix."""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Iterator

__all__ = ["atomic_write", "remove_stale_temps", "TMP_MARK"]

def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp makes 0600 files)

TMP_MARK = ".nestspk-tmp"
"""Infix of the temporary files :func:`atomic_write` creates beside the target (removed on failure)."""


STALE_AFTER_S = 60.0
"""A temporary file of a dead process is removed only once it is this old (seconds since its last change)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that a killed :func:`atomic_write` of ``path`` left beside it (``kill -9`` skips
    its clean-up): those named with the pid of a process that no longer runs here and unchanged for
    :data:`STALE_AFTER_S`. Returns the removed paths."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    prefix = f".{path.name}."
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(TMP_MARK)):
            continue
        pid = name[len(prefix):-len(TMP_MARK)].split(".", 1)[0]
        try:
            if not pid.isdigit() or _alive(int(pid)) or time.time() - entry.stat().st_mtime < STALE_AFTER_S:
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for binary writing; on success fsync it and rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was. The directory
    entry is fsynced after the rename, so the new file survives a power loss too. Temporary files of ``path``
    left by a killed process are removed first (:func:`remove_stale_temps`).

    Raises:
        FileNotFoundError: the parent directory of ``path`` does not exist.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_MARK)
    try:
        try:
            mode = os.stat(path).st_mode & 0o777
        except OSError:
            mode = _FILE_MODE
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        dfd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
