"""Scratch space of a distributed ingest (``Parts``): what phase A tasks write and phase B tasks read.

A folder on a disk the workers share with the driver (a local store's staging tree, or a scratch
folder beside it), or, when the workers share nothing (``--scheduler`` with an ``s3://`` store), a key
prefix under the store's ``_fstore/staging/<token>/``. Every file is written whole (aside, then
renamed; an S3 put is atomic), so a task that Dask reruns replaces its files with the same bytes.
An ``abort`` flag tells tasks not yet started to return at once. ``distributed.py`` and
``distributed_clips.py`` use it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from numcodecs import Blosc

ABORT = "abort"
# Parts crossing a network (``--scheduler``) are compressed like the store's chunks (zstd
# level 1 after a byte shuffle): 4.3 instead of 26 bytes an event written to and read back from the
# shared storage, for about 120 ns of CPU an event (measured here); on one machine they stay raw ``.npy``.
_PART_CODEC = Blosc(cname="zstd", clevel=1, shuffle=Blosc.SHUFFLE)



class Parts:
    """Phase A's scratch space, shared by the driver and the tasks (it is pickled into every task): a
    folder ``root`` (local stores), or the key prefix ``root`` under an S3 store's ``_fstore/`` (``url``).
    Holds ``parts/<name>`` files and the ``abort`` flag."""

    def __init__(self, root: str, compress: bool, url: str | None = None):
        self.root, self.compress, self.url = root, compress or url is not None, url

    @classmethod
    def for_builder(cls, builder, networked: bool) -> Parts:
        """``networked``: the workers may be other machines (``--scheduler``)."""
        if builder.remote is not None and networked:  # named after the staging tree: unique to this ingest
            return cls(f"staging/{builder.stage.name}", True, builder.remote.url)
        return cls(str(builder.stage / "_fstore"), networked)

    def _s3(self):
        from ..store.remote import S3Store

        return S3Store.shared(self.url)

    def put(self, name: str, data: bytes) -> None:
        if self.url:
            self._s3().put(f"{self.root}/parts/{name}", data)
            return
        path = Path(self.root) / "parts" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # a task rerun replaces a part whole

    def file(self, name: str) -> Path | None:
        """The local file of part file ``name`` (None on S3)."""
        return None if self.url else Path(self.root) / "parts" / name

    def get(self, name: str) -> bytes:
        return self._s3().get(f"{self.root}/parts/{name}") if self.url else (Path(self.root) / "parts" / name).read_bytes()

    def remove(self, names: list[str]) -> None:
        if self.url:
            self._s3().delete(f"{self.root}/parts/{n}" for n in names)
            return
        for n in names:
            (Path(self.root) / "parts" / n).unlink(missing_ok=True)

    def put_array(self, name: str, values: np.ndarray) -> None:
        """A column of a part: blosc-compressed, or a raw ``.npy`` that phase B memory-maps."""
        if self.compress:
            self.put(f"{name}.blosc", bytes(_PART_CODEC.encode(np.ascontiguousarray(values))))
        else:  # saved straight to its file (no copy of the column in memory first)
            path = Path(self.root) / "parts" / f"{name}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, values)
            os.replace(tmp, path)

    def array(self, name: str, dtype: np.dtype) -> np.ndarray:
        if self.compress:
            return np.frombuffer(_PART_CODEC.decode(self.get(f"{name}.blosc")), dtype=dtype)
        return np.load(Path(self.root) / "parts" / f"{name}.npy", mmap_mode="r")  # only the range is read

    def abort(self) -> None:
        if self.url:
            self._s3().put(f"{self.root}/{ABORT}", b"")
        else:
            Path(self.root).mkdir(parents=True, exist_ok=True)
            (Path(self.root) / ABORT).touch()

    def aborted(self) -> bool:
        return self._s3().exists(f"{self.root}/{ABORT}") if self.url else (Path(self.root) / ABORT).exists()

    def clear(self) -> None:
        if self.url:
            self._s3().delete_under(self.root)
        else:
            shutil.rmtree(self.root, ignore_errors=True)
