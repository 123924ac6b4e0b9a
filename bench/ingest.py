"""``fstore bench ingest``: fstore's ingest vs the per-file pandas approach vs a bare polars scan.

All three read the same synthetic MSSD files in one process, one after the other. The pandas
baseline is the seed's approach: ``read_csv`` per file, then ids mapped through Python dicts with
``np.vectorize(dict.get)`` (as the skip-prediction seed did), booleans and categoricals converted
column by column, arrays saved with numpy.
The polars scan parses the same files with the same dtypes and does nothing else: the floor.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from featurestore.ingest.spotify import discover, ingest_spotify
from featurestore.schemas import mssd as S
from featurestore.synth.spotify import synth_spotify

from .memory import peak_mb, reset_peak


def pandas_ingest(raw: Path, out: Path) -> int:
    import pandas as pd

    files = discover(raw)
    track_code: dict[str, int] = {}
    for p in files["tracks"]:
        tf = pd.read_csv(p)
        for t in tf[S.TRACK_ID]:
            track_code[t] = len(track_code)
        np.save(out / f"{p.name}.npy", tf[S.TRACK_FEATURES[:-8]].drop(columns=["mode"]).to_numpy(np.float32))
    session_code: dict[str, int] = {}
    vocab: dict[str, dict[str, int]] = {c: {} for c in S.CATEGORICAL_COLUMNS}
    rows = 0
    for p in files["train"]:
        df = pd.read_csv(p)
        for s in df["session_id"].unique():
            session_code.setdefault(s, len(session_code))
        cols = {"session": np.vectorize(session_code.get)(df["session_id"].to_numpy()).astype(np.int64),
                "track": np.vectorize(track_code.get)(df["track_id_clean"].to_numpy()).astype(np.int64)}
        for c in S.BOOL_COLUMNS + S.FLAG_COLUMNS + S.COUNT_COLUMNS + ["hour_of_day", "session_position"]:
            cols[c] = df[c].astype(np.uint8).to_numpy()
        for c in S.CATEGORICAL_COLUMNS:
            for v in df[c].unique():
                vocab[c].setdefault(v, len(vocab[c]))
            cols[c] = np.vectorize(vocab[c].get)(df[c].to_numpy()).astype(np.uint8)
        np.savez(out / f"{p.name}.npz", **cols)
        rows += len(df)
    return rows


def polars_scan(raw: Path) -> int:
    files = discover(raw)
    rows = 0
    for p in files["tracks"]:
        rows += 0 * pl.read_csv(p, schema_overrides=S.TRACK_CSV).height
    for p in files["train"]:
        rows += pl.read_csv(p, schema_overrides=S.LOG_CSV).height
    return rows


def run(raw: Path | None = None, sessions: int = 200_000, tracks: int = 50_000, repeats: int = 1) -> list[str]:
    tmp = Path(tempfile.mkdtemp(prefix="fstore-bench-"))
    try:
        if raw is None:
            raw = tmp / "raw"
            synth_spotify(raw, sessions=sessions, tracks=tracks, seed=0)
            shutil.rmtree(raw / "test_set")  # all three read the same files: training logs + tracks
        files = discover(raw)
        if files["test"]:
            raise ValueError(f"{raw}: bench ingest compares training logs only; use a copy without test_set/")
        raw_bytes = sum(p.stat().st_size for p in files["train"] + files["tracks"])
        polars_scan(raw)  # warm the page cache and polars
        results: dict[str, float] = {}
        peaks: dict[str, float] = {}
        rows = 0
        for _ in range(repeats):
            reset_peak()
            t = time.perf_counter()
            rows = polars_scan(raw)
            results["polars scan"] = min(results.get("polars scan", 1e9), time.perf_counter() - t)
            peaks["polars scan"] = peak_mb()
            shutil.rmtree(tmp / "store", ignore_errors=True)
            reset_peak()
            t = time.perf_counter()
            summary = ingest_spotify(raw, tmp / "store", progress=False, source_checksums=False)
            results["fstore"] = min(results.get("fstore", 1e9), time.perf_counter() - t)
            peaks["fstore"] = peak_mb()
            (tmp / "pd").mkdir(exist_ok=True)
            reset_peak()
            t = time.perf_counter()
            pandas_ingest(raw, tmp / "pd")
            results["pandas"] = min(results.get("pandas", 1e9), time.perf_counter() - t)
            peaks["pandas"] = peak_mb()
        events = summary.events["train"]
        store_bytes = summary.bytes_on_disk
        lines = [f"ingest benchmark: {rows:,} log rows + {summary.tracks:,} tracks, {raw_bytes / 1e6:.0f} MB CSV, "
                 f"best of {repeats}"]
        for name in ("fstore", "pandas", "polars scan"):
            lines.append(f"  {name:<12} {results[name]:8.2f} s  {rows / results[name]:>12,.0f} rows/s"
                         f"   peak RSS {peaks[name]:,.0f} MB")
        lines.append(f"  fstore / pandas       {results['pandas'] / results['fstore']:6.1f}x faster")
        lines.append(f"  fstore / polars scan  {results['fstore'] / results['polars scan']:6.2f}x the time of the bare parse")
        lines.append(f"  on disk: {store_bytes / events:.2f} bytes/event (raw CSV {raw_bytes / events:.1f} bytes/event, "
                     f"{raw_bytes / store_bytes:.0f}x smaller)")
        return lines
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
