"""A memory-mapped, uncompressed copy of one split's event columns, packed for batch assembly.

The store keeps events compressed (about 4-7 bytes an event). Random-order batches need random
access, so on first use the loader unpacks a split once, chunk by chunk (bounded memory), into
``STORE/cache/`` (or ``cache_dir``): ``offsets`` (int64), ``track`` (int32) and ``log`` (uint8
rows of BATCH_LOG_COLUMNS, counts saturated at 255). Files are written aside and renamed; a key built
from the manifest's checksums invalidates the cache when the store changes. Readers share the
OS page cache, so several loaders or ranks cost no extra RAM (FFCV's os_cache idea).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featurestore.schemas.mssd import BATCH_LOG_COLUMNS
from featurestore.store import Store, StoreError
from featurestore.store.arrays import EVENT_CHUNK

CACHE_VERSION = 1


@dataclass
class SessionCache:
    offsets: np.ndarray  # (sessions + 1,) int64 memmap
    track: np.ndarray  # (events,) int32 memmap
    log: np.ndarray  # (events, len(BATCH_LOG_COLUMNS)) uint8 memmap
    max_length: int

    @property
    def sessions(self) -> int:
        return self.offsets.shape[0] - 1


def _key(store: Store, split: str) -> str:
    files = {k: v["sha256"] for k, v in store.manifest["files"].items() if k.startswith(f"{split}/")}
    blob = json.dumps([CACHE_VERSION, split, BATCH_LOG_COLUMNS, files], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _memmaps(folder: Path, meta: dict) -> SessionCache:
    n, e = meta["sessions"], meta["events"]

    def mm(name, dtype, shape):
        if 0 in shape:
            return np.zeros(shape, dtype=dtype)
        # a plain ndarray view of the map: numba dispatch on the np.memmap subclass costs ~10 ms a call
        return np.asarray(np.memmap(folder / name, dtype=dtype, mode="r", shape=shape))

    return SessionCache(
        offsets=mm("offsets.i64", np.int64, (n + 1,)),
        track=mm("track.i32", np.int32, (e,)),
        log=mm("log.u8", np.uint8, (e, len(BATCH_LOG_COLUMNS))),
        max_length=meta["max_length"],
    )


def _sweep_stale(folder: Path) -> None:
    """Remove half-built caches left by processes that died mid-build (nothing outlives a crash)."""
    for tmp in folder.parent.glob(folder.name + ".tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(tmp, ignore_errors=True)


def open_session_cache(store: Store, split: str, cache_dir: str | Path | None = None) -> SessionCache:
    """Open (building first if needed) the packed cache of ``split``."""
    ragged = store.ragged(split)
    key = _key(store, split)
    folder = Path(cache_dir or store.path / "cache") / f"{split}-{key}"
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        return _memmaps(folder, json.loads(meta_path.read_text()))
    # built once per store version, and it reads every event anyway: verify checksums too
    problems = store.validate(checksums=True)
    if problems:
        raise StoreError(f"{store.path}: fails validation ({problems[0]}); run `fstore validate`")
    missing = [c for c in ["track", *BATCH_LOG_COLUMNS] if c not in ragged.columns]
    if missing:
        raise StoreError(f"{store.path}: split {split!r} lacks session columns {missing}")
    _sweep_stale(folder)
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"{tmp.parent}: cannot write the loader cache ({e.strerror}); "
                         "pass cache_dir= a writable folder") from None
    n, e = ragged.rows, ragged.events
    offsets = ragged.offsets
    offsets.astype(np.int64).tofile(tmp / "offsets.i64")
    with open(tmp / "track.i32", "wb") as ft, open(tmp / "log.u8", "wb") as fl:
        step = 8 * EVENT_CHUNK
        for start in range(0, e, step):
            stop = min(e, start + step)
            ragged.read("track", start, stop).astype(np.int32).tofile(ft)
            block = np.empty((stop - start, len(BATCH_LOG_COLUMNS)), dtype=np.uint8)
            for j, c in enumerate(BATCH_LOG_COLUMNS):
                block[:, j] = np.minimum(ragged.read(c, start, stop), 255)
            block.tofile(fl)
    meta = {"sessions": n, "events": e, "max_length": int(np.diff(offsets).max(initial=0)), "key": key}
    (tmp / "meta.json").write_text(json.dumps(meta))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process built it first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return _memmaps(folder, meta)
