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
        assert seconds > 0 and abs(rows_s - rows / seconds) <= 0.01 * rows_s + 1 and per_event > 0, line
    assert "load average" in lines[0]
