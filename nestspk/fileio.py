"""Atomic file writes: a reader (or a crash, even ``kill -9``) sees the old file or the new one, never a mix."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

__all__ = ["atomic_write", "TMP_MARK"]

def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp makes 0600 files)

TMP_MARK = ".nestspk-tmp"
"""Infix of the temporary files :func:`atomic_write` creates beside the target (removed on failure)."""


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for binary writing; on success fsync it and rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was. The directory
    entry is fsynced after the rename, so the new file survives a power loss too.

    Raises:
        FileNotFoundError: the parent directory of ``path`` does not exist.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=TMP_MARK)
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
