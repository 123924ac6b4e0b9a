"""The cost of an append against a full re-ingest, in one run: time and bytes written.

A synthetic MSSD release with ``files`` training logs; the store is ingested from all but the last,
then (a) the last log is appended (``--append``), (b) everything is ingested again (``--overwrite``).
The audio row does the same with a synthetic Yandex release: 90 % of the tracks, then the last 10 %.
Bytes written are the new version's files that are not hard links to the parent's.
Run: ``python -m bench.append [sessions] [files] [yandex tracks]``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from featurestore.ingest.spotify import ingest_spotify
from featurestore.ingest.spotify_append import append_spotify
from featurestore.ingest.yandex import ingest_yandex
from featurestore.store import Store
from featurestore.store import versions as V
from featurestore.synth.spotify import synth_spotify
from featurestore.synth.yandex import synth_yandex


def _written(store: Path) -> int:
    """Bytes of the latest version's files that the commit wrote (not shared with another version)."""
    tree = V.tree_path(store, Store(store).manifest)
    total = 0
    for dirpath, _, names in os.walk(tree):
        for n in names:
            st = os.stat(os.path.join(dirpath, n))
            # 2 links = the tree + the root checkout: a file no other version shares
            total += st.st_size if st.st_nlink <= 2 else 0
    return total


def run(sessions: int = 200_000, files: int = 10) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="fstore-bench-append-") as tmp:
        full, base, new = Path(tmp, "full"), Path(tmp, "base"), Path(tmp, "new")
        synth_spotify(full, sessions=sessions, tracks=20_000, seed=0, train_files=files)
        shutil.copytree(full, base)
        last = sorted((base / "training_set").iterdir())[-1]
        (new / "training_set").mkdir(parents=True)
        shutil.move(last, new / "training_set" / last.name)
        store = Path(tmp, "s.fstore")
        ingest_spotify(base, store, progress=False, source_checksums=False)
        t = time.perf_counter()
        s = append_spotify(new, store, progress=False, source_checksums=False)
        t_append, w_append = time.perf_counter() - t, _written(store)
        t = time.perf_counter()
        ingest_spotify(full, store, overwrite=True, progress=False, source_checksums=False)
        t_full, w_full = time.perf_counter() - t, _written(store)
        events = s.total_events
        return [f"append 1 of {files} training logs ({sessions:,} sessions in all, {events:,} events after it) "
                f"vs re-ingesting everything, one run",
                f"  append     {t_append:7.2f} s   {w_append / 1e6:8.2f} MB written",
                f"  re-ingest  {t_full:7.2f} s   {w_full / 1e6:8.2f} MB written",
                f"  append / re-ingest: {t_append / t_full:.2f}x the time, {w_append / max(w_full, 1):.2f}x the bytes"]


def _split_meta(full: Path, a: Path, b: Path, keep: float) -> None:
    """train_meta.tsv rows: the first ``keep`` fraction into A, the rest into B; features hard-linked."""
    lines = (full / "train_meta.tsv").read_text().splitlines(keepends=True)
    cut = 1 + int((len(lines) - 1) * keep)
    for d, rows in ((a, lines[1:cut]), (b, lines[cut:])):
        shutil.copytree(full, d, copy_function=os.link, ignore=shutil.ignore_patterns("*_meta.tsv"))
        (d / "train_meta.tsv").write_text(lines[0] + "".join(rows))


def run_audio(tracks: int = 2000) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="fstore-bench-append-audio-") as tmp:
        full, a, b = Path(tmp, "full"), Path(tmp, "a"), Path(tmp, "b")
        synth_yandex(full, tracks=tracks, artists=max(tracks // 10, 2), test_tracks=0, seed=0)
        (full / "test_meta.tsv").unlink(missing_ok=True)
        _split_meta(full, a, b, 0.9)
        store = Path(tmp, "y.fstore")
        ingest_yandex(a, store, progress=False)
        t = time.perf_counter()
        s = ingest_yandex(b, store, progress=False, append=True)
        t_append, w_append = time.perf_counter() - t, _written(store)
        frames = Store(store).frames("train")
        shard = frames.shard_path.stat().st_size
        t = time.perf_counter()
        ingest_yandex(full, store, overwrite=True, progress=False)
        t_full, w_full = time.perf_counter() - t, _written(store)
        new = s.clips["train"] - Store(store, version=1).frames("train").clips
        return [f"audio: append {new} of {s.clips['train']} Yandex tracks ({s.frames['train']:,} frames) "
                f"vs re-ingesting everything, one run",
                f"  append     {t_append:7.2f} s   {w_append / 1e6:8.2f} MB written "
                f"({shard / 1e6:.2f} MB of it the frame shard, parent codes copied)",
                f"  re-ingest  {t_full:7.2f} s   {w_full / 1e6:8.2f} MB written",
                f"  append / re-ingest: {t_append / t_full:.2f}x the time, {w_append / max(w_full, 1):.2f}x the bytes, "
                f"{(w_append - shard) / max(w_full - shard, 1):.2f}x the bytes outside the frame shard"]


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:4]]
    print("\n".join(run(*args[:2])))
    print("\n".join(run_audio(*args[2:3])))
