"""``fstore bench ingest`` runs every tool as a whole process on the same files and prints their rows."""

from __future__ import annotations

import re

from bench.ingest import run


def test_bench_ingest_prints_every_tool_with_ratios():
    lines = run(sessions=300, tracks=100, repeats=1, workers=(1,))
    text = "\n".join(lines)
    rows = int(re.search(r"ingest benchmark: ([\d,]+) log rows", text).group(1).replace(",", ""))
    assert rows > 0
    for tool in ("fstore", "fstore --workers 1", "pandas", "polars", "duckdb"):
        line = next(x for x in lines if x[2:22].strip() == tool)
        seconds, rows_s, per_event = (float(v.replace(",", "")) for v in line[22:].split()[:3])
        # seconds are printed to 0.01 s: rows/s must match them within that rounding
        assert seconds > 0 and per_event > 0, line
        assert rows / (seconds + 0.006) <= rows_s <= rows / max(seconds - 0.006, 1e-3), line
        values = line[22:].replace("MB", "").split()
        start, steady = float(values[6]), float(values[7].replace(",", ""))  # on the tiny release cut from it
        assert start > 0 and steady > 0, line
    assert "load average" in lines[0]
    assert any(x.strip().startswith("start s:") for x in lines)


def test_tiny_release_is_whole_sessions_with_their_tracks(tmp_path):
    import polars as pl

    from bench.ingest import tiny_release
    from featurestore.ingest.spotify import ingest_spotify
    from featurestore.synth.spotify import synth_spotify

    raw = tmp_path / "raw"
    synth_spotify(raw, sessions=400, tracks=300, seed=1, train_files=2)
    tiny = tiny_release(raw, tmp_path / "tiny", rows=100)
    logs = pl.read_csv(next((tiny / "training_set").glob("log_*.csv")))
    counts = logs.group_by("session_id").agg(pl.len(), pl.col("session_length").first())
    assert 100 < logs.height < 200 and (counts["len"] == counts["session_length"]).all()
    tracks = pl.concat([pl.read_csv(p) for p in (tiny / "track_features").glob("tf_*.csv")])
    assert set(tracks["track_id"]) == set(logs["track_id_clean"])
    summary = ingest_spotify(tiny, tmp_path / "s", progress=False)  # every check passes on it
    assert summary.total_events == logs.height
