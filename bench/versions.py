"""The design decision of issue 9, measured: versioned manifests on plain zarr vs icechunk.

Both write the same arrays with the same codecs (blosc-zstd, the store's chunking) and read them back
the two ways the loaders do: a whole split (the session cache build) and random crops of frames.
- plain: zarr ``LocalStore`` into a fresh version directory, then the commit fstore makes (sha256 of
  every file into the version manifest, claimed with an exclusive create);
- icechunk: a local icechunk repository, one writable session, ``commit``.

Run: ``python -m bench.versions`` (icechunk is not a dependency of fstore: the icechunk rows need it
importable, e.g. ``pip install --target DIR 'icechunk<2'`` and ``PYTHONPATH=DIR``).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr

from featurestore.store.arrays import EVENT_CHUNK, create
from featurestore.store.frames import FRAME_CHUNK

EVENTS = 8 * EVENT_CHUNK
FRAMES, BINS, CROP, CROPS = 400_000, 96, 64, 3000


def _data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"track": rng.integers(0, 50_000, EVENTS, dtype=np.int32),
            "skip": (rng.random(EVENTS) < 0.5).astype(np.uint8),
            "pos": np.tile(np.arange(20, dtype=np.uint8), EVENTS // 20 + 1)[:EVENTS],
            "frames": rng.integers(0, 256, (FRAMES, BINS), dtype=np.uint8)}


def _write(root: zarr.Group, data: dict[str, np.ndarray]) -> None:
    events = root.require_group("train").require_group("events")
    for name in ("track", "skip", "pos"):
        a = create(events, name, data[name].dtype, (EVENTS,), (EVENT_CHUNK,), bits=name == "skip")
        for start in range(0, EVENTS, EVENT_CHUNK):  # whole chunks, as ChunkedAppender writes them
            a[start : start + EVENT_CHUNK] = data[name][start : start + EVENT_CHUNK]
    f = create(root.require_group("clips"), "frames", "uint8", (FRAMES, BINS), (FRAME_CHUNK, BINS))
    f[:] = data["frames"]


def _read_split(root: zarr.Group) -> int:
    events = root["train"]["events"]
    return sum(int(np.asarray(events[n][:]).nbytes) for n in ("track", "skip", "pos"))


def _crops(root: zarr.Group, seed: int = 1) -> int:
    frames = root["clips"]["frames"]
    starts = np.random.default_rng(seed).integers(0, FRAMES - CROP, CROPS)
    return sum(int(np.asarray(frames[s : s + CROP]).sum() > 0) for s in starts)


def plain(folder: Path, data: dict) -> tuple[Callable[[], zarr.Group], float]:
    from featurestore.store import versions
    from featurestore.store.manifest import write_manifest

    t = time.perf_counter()
    tree = versions.new_tree(folder / "store")
    _write(zarr.open_group(tree, mode="w", zarr_format=3), data)
    versions.commit(folder / "store", tree, write_manifest(tree, "bench", {}, []), "ingest", None)
    seconds = time.perf_counter() - t

    def reader() -> zarr.Group:
        from featurestore.store import Store
        return Store(folder / "store").root

    return reader, seconds


def icechunk_repo(folder: Path, data: dict) -> tuple[Callable[[], zarr.Group], float]:
    import icechunk

    t = time.perf_counter()
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(folder / "ice")))
    session = repo.writable_session("main")
    _write(zarr.open_group(session.store, mode="w", zarr_format=3), data)
    session.commit("ingest")
    seconds = time.perf_counter() - t

    def reader() -> zarr.Group:
        r = icechunk.Repository.open(icechunk.local_filesystem_storage(str(folder / "ice")))
        return zarr.open_group(r.readonly_session(branch="main").store, mode="r", zarr_format=3)

    return reader, seconds


def _best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def run(repeats: int = 3) -> list[str]:
    data = _data()
    rows = {}
    candidates = {"plain zarr + versioned manifests": plain, "icechunk 1.x": icechunk_repo}
    for name, build in candidates.items():
        try:
            __import__("icechunk") if build is icechunk_repo else None
        except ImportError:
            rows[name] = None
            continue
        with tempfile.TemporaryDirectory(prefix="fstore-bench-versions-") as tmp:
            ingest = min(build(Path(tmp) / str(i), data)[1] for i in range(repeats))
            reader, _ = build(Path(tmp) / "read", data)
            root = reader()
            rows[name] = (ingest, _best(lambda r=root: _read_split(r), repeats),
                          _best(lambda r=root: _crops(r), repeats), _best(reader, repeats))
            shutil.rmtree(tmp, ignore_errors=True)
    mb = sum(data[n].nbytes for n in ("track", "skip", "pos")) / 1e6
    base = rows["plain zarr + versioned manifests"]
    out = [f"{EVENTS:,} events ({mb:.0f} MB raw) + {FRAMES:,} x {BINS} frames; best of {repeats}; "
           f"ratio = icechunk time / plain time",
           f"{'':34} {'ingest+commit s':>16} {'read split s':>13} {f'{CROPS} crops s':>12} {'open s':>8}"]
    for name, r in rows.items():
        if r is None:
            out.append(f"{name:34} not importable (pip install 'icechunk<2')")
            continue
        out.append(f"{name:34} {r[0]:16.3f} {r[1]:13.3f} {r[2]:12.3f} {r[3]:8.4f}")
        if r is not base:
            out.append(f"{'  ratio':34} {r[0] / base[0]:16.2f} {r[1] / base[1]:13.2f} {r[2] / base[2]:12.2f} "
                       f"{r[3] / base[3]:8.2f}")
    return out


if __name__ == "__main__":
    print("\n".join(run(int(sys.argv[1]) if len(sys.argv) > 1 else 3)))
