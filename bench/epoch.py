"""``fstore bench epoch STORE``: one training epoch of the store's own loader, counting every item it delivers.

Session stores (Spotify) run ``SessionBatches`` (the memory-mapped session cache, built first if absent),
frame stores (Yandex, FSD, speakers) ``SegmentBatches`` (random crops from the memory-mapped frame shard),
Melon stores ``PlaylistBatches``. The epoch is checked whole: every item of the split delivered exactly
once. Used by ``fstore bench scale`` (the loader step) and by the memory-limit test, which runs it in a
cgroup whose limit is below the loader's memory-mapped data.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np

from featurestore.store import Store, StoreError

# per loader kind: the batch key naming the items, and their unit
_KEYS = {"sessions": ("session", "sessions"), "frames": ("clip", "clips"), "melon": ("row", "playlists")}


def make_loader(store_path: str | Path, split: str = "train", batch_size: int | None = None,
                order: str = "quasi_random", threads: int = 1):
    """(loader, kind, loader data bytes): the store's training loader over ``split``."""
    store = Store(store_path)
    if store.manifest.get("dataset") == "melon":
        from loaders.playlists import PlaylistBatches

        loader = PlaylistBatches(store, split, batch_size or 256, order=order, threads=threads)
        return loader, "melon", None
    meta = store.tables.get(split)
    if meta is None:
        raise StoreError(f"{store.path}: no split {split!r} (have {sorted(store.tables)})")
    if meta["kind"] == "frames":
        from loaders.segments import SegmentBatches

        loader = SegmentBatches(store, split, batch_size or 64, crop=64, order=order, threads=threads)
        return loader, "frames", int(loader.frames.nbytes)
    from loaders.sessions import SessionBatches

    loader = SessionBatches(store, split, batch_size or 1024, order=order, threads=threads)
    c = loader.cache
    return loader, "sessions", int(c.offsets.nbytes + c.track.nbytes + c.log.nbytes)


def run_epoch(store_path: str | Path, split: str = "train", batch_size: int | None = None,
              order: str = "quasi_random", threads: int = 1) -> dict:
    """One epoch; returns items expected / delivered / delivered more than once, batches, seconds,
    memory-mapped loader bytes (None for Melon, whose loader holds its small index lists in memory)."""
    t0 = time.perf_counter()
    loader, kind, mapped = make_loader(store_path, split, batch_size, order, threads)
    opened = time.perf_counter() - t0
    key, unit = _KEYS[kind]
    items = np.asarray(loader.items, np.int64)
    counts = np.zeros(int(items.max(initial=-1)) + 1, np.int64)
    batches = 0
    before = resource.getrusage(resource.RUSAGE_SELF)
    t1 = time.perf_counter()
    for b in loader:
        ids = b[key].numpy().astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= counts.size):
            raise StoreError(f"{store_path}: the loader delivered {unit[:-1]} ids outside the split")
        np.add.at(counts, ids, 1)
        batches += 1
    seconds = time.perf_counter() - t1
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"kind": kind, "unit": unit, "items": int(items.size), "seen": int(np.count_nonzero(counts[items])),
            "repeated": int((counts[items] > 1).sum()), "stray": int(counts.sum() - counts[items].sum()),
            "batches": batches, "open_s": opened, "epoch_s": seconds, "mapped_bytes": mapped,
            "peak_rss_mb": after.ru_maxrss / 1024, "minor_faults": after.ru_minflt - before.ru_minflt,
            "major_faults": after.ru_majflt - before.ru_majflt, **rss_parts()}


def rss_parts() -> dict[str, float]:
    """Resident memory now, MB, by kind (Linux ``/proc/self/status``): anonymous (the heap: what the
    process owns) and file-backed (mapped files: the loader's cache pages and the libraries, page cache
    the kernel can take back)."""
    parts = {"rss_anon_mb": float("nan"), "rss_file_mb": float("nan")}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key = {"RssAnon:": "rss_anon_mb", "RssFile:": "rss_file_mb"}.get(line.split()[0] if line else "")
            if key:
                parts[key] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return parts


def lines(r: dict) -> list[str]:
    whole = r["seen"] == r["items"] and r["repeated"] == 0 and r["stray"] == 0
    mapped = "" if r["mapped_bytes"] is None else f", {r['mapped_bytes'] / 2**20:,.1f} MB memory-mapped"
    return [f"epoch: {r['seen']} of {r['items']} {r['unit']} seen, {r['repeated']} repeated, {r['stray']} stray; "
            f"{r['batches']} batches in {r['epoch_s']:.2f} s ({r['items'] / max(r['epoch_s'], 1e-9):,.0f} "
            f"{r['unit']}/s; opened in {r['open_s']:.2f} s){mapped}; peak RSS {r['peak_rss_mb']:,.0f} MB",
            f"epoch whole: {'yes' if whole else 'no'}",
            f"page faults during the epoch: {r['minor_faults']:,} minor, {r['major_faults']:,} major; RSS at its end: "
            f"{r['rss_anon_mb']:,.0f} MB anonymous + {r['rss_file_mb']:,.0f} MB file-backed (mapped cache pages and "
            "libraries)"]
