"""A memory-mapped, uncompressed copy of one split's event columns, packed for batch assembly.

The store keeps events compressed (about 4-7 bytes an event). Random-order batches need random
access, so on first use the loader unpacks a split once, chunk by chunk (bounded memory), into
``STORE/cache/`` (or ``cache_dir``): ``offsets`` (int64), ``track`` (int32) and ``log`` (uint8
rows of BATCH_LOG_COLUMNS, counts saturated at 255). Readers share the OS page cache, so several
loaders or ranks cost no extra RAM (FFCV's os_cache idea).

Verified (``loaders/cache_check.py``): the folder is keyed by the split's checksums in the version's
manifest, built aside and swapped in whole; ``meta.json`` records each file's size, crc32 and stat
stamp, plus the bounds proven at build (offsets monotone from 0 to the events, track codes below the
track table's rows). On open, sizes and stamps are compared, and any file whose stamp changed is
checksummed again; a damaged cache is rebuilt. The kernels check every offset and code they follow
as well, so no cache content can make them read out of bounds.

Random access (``random_access=True``; SessionBatches passes it for its non-sequential orders) over a
cache larger than the memory this process may fill (``loaders.memory.memory_limit``: available memory or
the cgroup's limit) maps the files with ``MADV_RANDOM``: a page fault then reads that page, not the
kernel's read-around window (``read_ahead_kb``: 8 MB on this project's machines), which would evict pages
still in use. One quasi_random epoch over a 97 MB cache under a 64 MB cgroup limit stalled for over 10
minutes with read-around and took 4.6 s without. A cache that fits keeps read-around: a cold quasi_random
epoch over an 89 MB cache took 4.2x as long with MADV_RANDOM (1.42 s against 0.34 s, best of 3
alternating, page cache dropped before each), and the same warm (1.06x).
"""

from __future__ import annotations

import mmap
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featurestore.schemas.mssd import BATCH_LOG_COLUMNS
from featurestore.store import Store, StoreError
from featurestore.store.arrays import EVENT_CHUNK

from .cache_check import CacheDamaged, cache_key, check_cache, publish, seal
from .memory import memory_limit

CACHE_VERSION = 2
FILES = {"offsets": "offsets.i64", "track": "track.i32", "log": "log.u8"}


@dataclass
class SessionCache:
    offsets: np.ndarray  # (sessions + 1,) int64 memmap
    track: np.ndarray  # (events,) int32 memmap
    log: np.ndarray  # (events, len(BATCH_LOG_COLUMNS)) uint8 memmap
    max_length: int
    folder: Path | None = None
    tracks: int = 0  # rows of the track table every code is below

    @property
    def sessions(self) -> int:
        return self.offsets.shape[0] - 1


def _key(store: Store, split: str) -> str:
    return cache_key(store, [split, "tracks"], [CACHE_VERSION, split, BATCH_LOG_COLUMNS])


def _memmaps(folder: Path, meta: dict, random_access: bool = False) -> SessionCache:
    n, e = meta["sessions"], meta["events"]
    random_access = random_access and sum(_expected(meta).values()) > memory_limit()

    def mm(name, dtype, shape):
        if 0 in shape:
            return np.zeros(shape, dtype=dtype)
        m = np.memmap(folder / name, dtype=dtype, mode="r", shape=shape)
        if random_access and hasattr(mmap, "MADV_RANDOM"):
            m._mmap.madvise(mmap.MADV_RANDOM)  # no read-around: see the module docstring
        # a plain ndarray view of the map: numba dispatch on the np.memmap subclass costs ~10 ms a call
        return np.asarray(m)

    return SessionCache(
        offsets=mm(FILES["offsets"], np.int64, (n + 1,)),
        track=mm(FILES["track"], np.int32, (e,)),
        log=mm(FILES["log"], np.uint8, (e, len(BATCH_LOG_COLUMNS))),
        max_length=meta["max_length"], folder=folder, tracks=meta["tracks"],
    )


def _sweep_stale(folder: Path) -> None:
    """Remove half-built caches left by processes that died mid-build (nothing outlives a crash)."""
    for tmp in folder.parent.glob(folder.name + ".tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _expected(meta: dict) -> dict[str, int]:
    n, e = meta["sessions"], meta["events"]
    return {FILES["offsets"]: 8 * (n + 1), FILES["track"]: 4 * e, FILES["log"]: e * len(BATCH_LOG_COLUMNS)}


def _open_checked(folder: Path, key: str, tracks: int, random_access: bool = False) -> SessionCache | None:
    """The cache in ``folder`` if it is whole and what ``key`` names; None if absent or damaged."""
    try:
        meta = check_cache(folder, key, full=False)
        if meta["tracks"] != tracks or meta["sizes"] != _expected(meta):
            raise CacheDamaged(f"{folder / 'meta.json'}: does not describe this split")
        cache = _memmaps(folder, meta, random_access)
        _check_offsets(cache.offsets, meta["events"], meta["max_length"], folder / FILES["offsets"])
        return cache
    except CacheDamaged:
        return None


def _check_offsets(offsets: np.ndarray, events: int, max_length: int, path: Path) -> None:
    """Monotone from 0 to ``events``, no session longer than ``max_length``: 8 bytes a session, vectorized."""
    if offsets.size == 0 or offsets[0] != 0 or offsets[-1] != events:
        raise CacheDamaged(f"{path}: offsets do not run from 0 to {events}")
    d = np.diff(offsets)
    if d.size and (d.min() < 0 or d.max() > max_length):
        raise CacheDamaged(f"{path}: offsets not monotone or a session longer than {max_length}")


def open_session_cache(store: Store, split: str, cache_dir: str | Path | None = None,
                       random_access: bool = False) -> SessionCache:
    """Open (building first if needed, or again if damaged) the packed cache of ``split``;
    ``random_access``: the reader will not read in file order (no read-around, see the module docstring)."""
    ragged = store.ragged(split)
    tracks = store.feature_table("tracks").rows
    key = _key(store, split)
    folder = Path(cache_dir or store.path / "cache") / f"{split}-{key}"
    cache = _open_checked(folder, key, tracks, random_access)
    if cache is not None:
        return cache
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
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"{tmp.parent}: cannot write the loader cache ({e.strerror}); "
                         "pass cache_dir= a writable folder") from None
    n, e = ragged.rows, ragged.events
    offsets = ragged.offsets.astype(np.int64)
    max_length = int(np.diff(offsets).max(initial=0))
    _check_offsets(offsets, e, max_length, store.data_dir / split / "offsets")  # proven before it is written
    offsets.tofile(tmp / FILES["offsets"])
    with open(tmp / FILES["track"], "wb") as ft, open(tmp / FILES["log"], "wb") as fl:
        step = 8 * EVENT_CHUNK
        for start in range(0, e, step):
            stop = min(e, start + step)
            codes = ragged.read("track", start, stop).astype(np.int32)
            if codes.size and (codes.min() < 0 or codes.max() >= tracks):
                raise StoreError(f"{store.data_dir / split / 'events' / 'track'}: track code out of 0..{tracks - 1} "
                                 f"in events {start}..{stop}; run `fstore validate`")
            codes.tofile(ft)
            block = np.empty((stop - start, len(BATCH_LOG_COLUMNS)), dtype=np.uint8)
            for j, c in enumerate(BATCH_LOG_COLUMNS):
                block[:, j] = np.minimum(ragged.read(c, start, stop), 255)
            block.tofile(fl)
    meta = {"sessions": n, "events": e, "max_length": max_length, "tracks": tracks, "split": split,
            "version": store.version, "bounds": {"offsets": [0, e], "track": [0, tracks - 1]}}
    meta = seal(tmp, key, meta, list(FILES.values()))
    publish(tmp, folder)
    cache = _open_checked(folder, key, tracks, random_access)
    if cache is None:
        raise StoreError(f"{folder}: the loader cache was damaged as soon as it was written; "
                         "pass cache_dir= another folder")
    return cache
