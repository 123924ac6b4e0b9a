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
    assert "load average" in lines[0]
