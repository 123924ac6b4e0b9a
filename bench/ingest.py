"""``fstore bench ingest``: fstore's ingest beside what a user writes in five lines, each a whole process.

Every tool runs as its own process on the same files (training logs + track features), one after the
other, so each pays its own imports and start-up as a user would:

- fstore: ``fstore ingest spotify`` (source checksums and every check on), in this process's
  interpreter; then with ``--workers N`` (a local Dask cluster: its start-up is counted);
- pandas: the seed's approach: ``read_csv`` per file, ids mapped through Python dicts with
  ``np.vectorize(dict.get)``, booleans and categoricals converted column by column, saved with numpy;
- polars: ``scan_csv(...).sink_parquet(zstd)`` with the id and categorical columns as ``Categorical``;
- duckdb: ``COPY (SELECT * FROM read_csv(...)) TO 'x.parquet'``.

Printed: seconds (best of the repeats), log rows/s, bytes on disk per log row, peak RSS of the process
(with the Dask workers it reaps), and each tool's ratios against polars and fstore run in the same run.
Then what each tool pays before its first row (``start s``: the same command on a tiny release cut from
the same files) and its steady rows/s without it, which is what decides a 350 GB ingest.
Run as ``python -m bench.ingest TOOL RAW OUT`` it is one of those processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _files(raw: Path) -> dict[str, list[Path]]:
    """The MSSD files, found without importing fstore's ingest (the baselines' processes stay light)."""
    def glob(folder: str, pattern: str) -> list[Path]:
        return sorted(p for p in (raw / folder).glob(pattern) if p.name.endswith((".csv", ".csv.gz")))

    return {"train": glob("training_set", "log_*"), "tracks": glob("track_features", "tf_*"),
            "test": glob("test_set", "log_*")}


def pandas_ingest(raw: Path, out: Path) -> int:
    import numpy as np  # here, not at the top: the polars and duckdb processes do not load numpy
    import pandas as pd

    from featurestore.schemas import mssd as S

    files = _files(raw)
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


def polars_ingest(raw: Path, out: Path) -> None:
    import polars as pl

    from featurestore.schemas import mssd as S

    files = _files(raw)
    cat = {c: pl.Categorical for c in ["session_id", "track_id_clean", *S.CATEGORICAL_COLUMNS]}
    pl.scan_csv(files["train"], schema_overrides={**S.LOG_CSV, **cat}).sink_parquet(
        out / "train.parquet", compression="zstd")
    pl.scan_csv(files["tracks"], schema_overrides={**S.TRACK_CSV, S.TRACK_ID: pl.Categorical,
                                                   "mode": pl.Categorical}).sink_parquet(
        out / "tracks.parquet", compression="zstd")


def duckdb_ingest(raw: Path, out: Path) -> None:
    import duckdb

    files = _files(raw)
    for name, paths in (("train", files["train"]), ("tracks", files["tracks"])):
        listed = ", ".join(f"'{p}'" for p in paths)
        duckdb.sql(f"COPY (SELECT * FROM read_csv([{listed}])) TO '{out / name}.parquet' (FORMAT parquet)")


def _count_rows(raw: Path) -> int:
    import polars as pl

    return sum(pl.scan_csv(p).select(pl.len()).collect().item() for p in _files(raw)["train"])


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _store_bytes(path: Path) -> int:
    """A store's bytes: the files of its latest version (the manifest's list), not the version log."""
    from featurestore.store import Store

    return sum(f["bytes"] for f in Store(path).manifest["files"].values())


def _run_process(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB of the process and the children it reaped) of one whole process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out.decode(errors='replace')[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def tools(raw: Path, out: Path, workers: list[int]) -> dict[str, list[str]]:
    fstore = [sys.executable, "-m", "featurestore.cli", "ingest", "spotify", str(raw), str(out / "store"),
              "--overwrite"]
    cmds = {"fstore": fstore}
    cmds.update({f"fstore --workers {n}": [*fstore, "--workers", str(n)] for n in workers})
    for name in ("pandas", "polars", "duckdb"):
        cmds[name] = [sys.executable, "-m", "bench.ingest", name, str(raw), str(out / name)]
    return cmds


def tiny_release(raw: Path, out: Path, rows: int = 2000) -> Path:
    """The first ``rows`` log rows of ``raw`` (whole sessions) and the tracks they use, in the same layout:
    what every tool pays before its first row (interpreter, imports, start-up, commit, exit)."""
    files = _files(raw)
    (out / "training_set").mkdir(parents=True)
    (out / "track_features").mkdir()
    kept, used = [], set()
    with open(files["train"][0], encoding="utf-8") as f:
        kept.append(f.readline())
        last = None
        for line in f:
            session, _, rest = line.partition(",")
            if len(kept) > rows and session != last:
                break
            kept.append(line)
            used.add(rest.split(",", 3)[2])  # track_id_clean: the 4th field
            last = session
    (out / "training_set" / files["train"][0].name).write_text("".join(kept), encoding="utf-8")
    for path in files["tracks"]:
        with open(path, encoding="utf-8") as f:
            lines = [f.readline(), *(x for x in f if x.partition(",")[0] in used)]
        (out / "track_features" / path.name).write_text("".join(lines), encoding="utf-8")
    return out


def _best_times(cmds: dict[str, list[str]], tmp: Path, repeats: int) -> tuple[dict, dict, dict]:
    """(best seconds, peak RSS MB, bytes written) per tool, runs interleaved (a change of machine load
    hits every tool alike)."""
    seconds: dict[str, float] = {}
    peaks: dict[str, float] = {}
    sizes: dict[str, int] = {}
    for _ in range(repeats):
        for name, cmd in cmds.items():
            target = tmp / ("store" if name.startswith("fstore") else name)
            shutil.rmtree(target, ignore_errors=True)
            if not name.startswith("fstore"):
                target.mkdir()
            s, peak = _run_process(cmd)
            seconds[name] = min(seconds.get(name, 1e18), s)
            peaks[name] = max(peaks.get(name, 0.0), peak)
            sizes[name] = _store_bytes(target) if name.startswith("fstore") else _dir_bytes(target)
    return seconds, peaks, sizes


def run(raw: Path | None = None, sessions: int = 200_000, tracks: int = 50_000, repeats: int = 1,
        workers: tuple[int, ...] = (1, 2)) -> list[str]:
    tmp = Path(tempfile.mkdtemp(prefix="fstore-bench-"))
    try:
        if raw is None:
            from featurestore.synth.spotify import synth_spotify

            raw = tmp / "raw"
            synth_spotify(raw, sessions=sessions, tracks=tracks, seed=0, train_files=8)
            shutil.rmtree(raw / "test_set")  # every tool reads the same files: training logs + tracks
        files = _files(raw)
        if files["test"]:
            raise ValueError(f"{raw}: bench ingest compares training logs only; use a copy without test_set/")
        raw_bytes = sum(p.stat().st_size for p in files["train"] + files["tracks"])
        rows = _count_rows(raw)  # also warms the page cache for every tool alike
        seconds, peaks, sizes = _best_times(tools(raw, tmp, list(workers)), tmp, repeats)
        tiny = tiny_release(raw, tmp / "tiny")
        start, _, _ = _best_times(tools(tiny, tmp, list(workers)), tmp, repeats)
        steady = {name: rows / max(seconds[name] - start[name], 1e-3) for name in seconds}
        load = os.getloadavg()
        lines = [f"ingest benchmark: {rows:,} log rows + tracks, {raw_bytes / 1e6:.0f} MB CSV, each tool a whole "
                 f"process, best of {repeats} (load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
                 f"{os.cpu_count()} CPUs)",
                 f"  {'tool':<20} {'seconds':>8} {'rows/s':>12} {'B/event':>8} {'peak RSS':>9}"
                 f" {'x polars rows/s':>16} {'x fstore rows/s':>16} {'start s':>8} {'steady rows/s':>14}"
                 f" {'x polars steady':>16}"]
        for name in seconds:
            lines.append(f"  {name:<20} {seconds[name]:8.2f} {rows / seconds[name]:>12,.0f} {sizes[name] / rows:8.2f}"
                         f" {peaks[name]:>6,.0f} MB {seconds['polars'] / seconds[name]:>16.2f}"
                         f" {seconds['fstore'] / seconds[name]:>16.2f} {start[name]:8.2f} {steady[name]:>14,.0f}"
                         f" {steady[name] / steady['polars']:>16.2f}")
        for n in workers:
            eff = seconds["fstore --workers 1"] / (seconds[f"fstore --workers {n}"] * n) if 1 in workers else None
            if eff is not None and n > 1:
                lines.append(f"  scaling --workers 1 -> {n}: {seconds['fstore --workers 1'] / seconds[f'fstore --workers {n}']:.2f}x "
                             f"faster, efficiency {eff:.0%} (on {os.cpu_count()} CPUs)")
        lines.append("  start s: the same tool on the first ~2,000 rows (whole sessions) and their tracks: interpreter, "
                     "imports, start-up, commit, exit; steady rows/s: rows / (seconds - start s)")
        return lines
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # one tool as a whole process: python -m bench.ingest TOOL RAW OUT
    tool, raw_arg, out_arg = sys.argv[1:4]
    {"pandas": pandas_ingest, "polars": polars_ingest, "duckdb": duckdb_ingest}[tool](Path(raw_arg), Path(out_arg))
