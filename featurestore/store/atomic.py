"""Write aside, then commit by rename: readers never see a half-written store or file."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import StoreError


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh sibling directory; on success it replaces ``target`` atomically.

    On any exception the staging directory is removed and an existing ``target`` is untouched.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise StoreError(f"{target}: already exists (pass --overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if target.exists():
        # rename the old store out of the way first: two renames, never a moment with a partial store
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(stage, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write`` on a temporary sibling file, fsync it, then rename it over ``path``.

    The one atomic file writer (submissions, checkpoints, histories): readers see the old file or the
    new one, never a partial one; on any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        # a device, FIFO or socket (``--out /dev/null``, ``--out /dev/stdout``): nothing to stage, and a
        # rename would replace the device node itself with a regular file
        with open(path, "wb") as f:
            write(f)
        return path
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a small file aside and rename it into place."""
    atomic_write(path, lambda f: f.write(data))
