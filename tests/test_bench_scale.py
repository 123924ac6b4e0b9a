"""``fstore bench scale`` (issue 21): the whole pipeline end to end at a tiny size, the exponent fit, the plot,
and every family's planned step commands accepted by the real CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.scale import FAMILIES, STEPS, Row, fit_exponents, plan, plot, table
from featurestore.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_tiny_spotify_runs_every_step_as_its_own_measured_process(tmp_path):
    res = subprocess.run([sys.executable, "-m", "featurestore.cli", "bench", "scale", "spotify", "--tiny",
                          "--work", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    doc = json.loads((tmp_path / "spotify" / "scale.json").read_text())
    rows = doc["rows"]
    assert [r["step"] for r in rows] == list(STEPS)
    assert all(r["status"] == "ok" and r["wall_s"] > 0 and r["peak_rss_mb"] > 0 for r in rows), rows
    # every step is a process of its own: the steps that import torch peak far above synth, which does not
    peak = {r["step"]: r["peak_rss_mb"] for r in rows}
    assert peak["train"] > peak["synth"] and peak["epoch"] > peak["synth"]
    (size,) = doc["sizes"]
    assert size["size"] == FAMILIES["spotify"].tiny and size["store_bytes"] > 0 and size["cache_bytes"] > 0
    # the time-limited run left best.pt, and evaluate was given the run folder, as a user would
    assert size["checkpoint"] == "best.pt"
    evaluate_cmd = (tmp_path / "spotify" / "logs" / f"n{size['size']}-evaluate.log").read_text().splitlines()[0]
    assert evaluate_cmd.split()[6].endswith(f"n{size['size']}/run")
    n = int(size["epoch"][0].split(" of ")[1].split()[0])
    assert size["epoch"][0].startswith(f"epoch: {n} of {n} sessions seen, 0 repeated, 0 stray")
    assert set(size["scores"]["scores"]) >= {"model", "copy_last"}
    assert doc["exponents"]["train"] == {"time": None, "memory": None}  # one size: no slope
    assert (tmp_path / "spotify" / "scale.png").read_bytes()[:8] == PNG_MAGIC
    for step in STEPS:
        assert (tmp_path / "spotify" / "logs" / f"n{size['size']}-{step}.log").stat().st_size > 0
    assert not (tmp_path / "spotify" / f"n{size['size']}").exists()  # data removed without --keep
    for line in ("      sessions  fraction  step", "exponent against size", "scale.png"):
        assert line in res.stdout


def _rows(sizes, time_exp, mem_exp, step="ingest", status="ok"):
    return [Row(n, n / 1e6, step, status, wall_s=0.5 * n ** time_exp, peak_rss_mb=3.0 * n ** mem_exp) for n in sizes]


def test_exponents_are_log_log_slopes_over_the_successful_sizes():
    rows = _rows([1_000, 10_000, 100_000], 1.0, 0.5) + _rows([1_000, 8_000], 2.0, 0.0, step="train")
    rows += [Row(1_000_000, 1.0, "ingest", "timeout", wall_s=5.0, peak_rss_mb=1.0)]  # left out of the fit
    exps = fit_exponents(rows)
    assert math.isclose(exps["ingest"]["time"], 1.0, abs_tol=1e-9)
    assert math.isclose(exps["ingest"]["memory"], 0.5, abs_tol=1e-9)
    assert math.isclose(exps["train"]["time"], 2.0, abs_tol=1e-9)
    assert math.isclose(exps["train"]["memory"], 0.0, abs_tol=1e-9)
    assert exps["epoch"] == {"time": None, "memory": None}


def test_table_and_plot(tmp_path):
    rows = _rows([1_000, 10_000], 1.0, 0.2) + [Row(10_000, 0.01, "epoch", "oom", 3.0, 60.0, 64.0, 64.0)]
    lines = table(rows, "sessions")
    assert lines[0].split()[:6] == ["sessions", "fraction", "step", "wall", "s", "peak"]
    assert "cgroup MB" in lines[0] and lines[-1].rstrip().endswith("oom")
    plot(rows, "spotify", "sessions", tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_planned_command_is_accepted_by_the_cli(family, tmp_path):
    """Each step's options parse (``--help`` after them: click rejects unknown options first), at the
    family's tiny and default sizes."""
    fam = FAMILIES[family]
    for n in (fam.tiny, round(fam.fractions[-1] * fam.real)):
        for step, cmd in plan(fam, n, tmp_path, 1.0, 1).items():
            r = CliRunner().invoke(main, [*cmd[3:], "--help"])
            assert r.exit_code == 0, (step, cmd, r.output)


def test_dry_run_prints_each_sizes_commands(tmp_path):
    r = CliRunner().invoke(main, ["bench", "scale", "melon", "--fractions", "0.01,1", "--dry-run", "--work", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "playlists 1,488 (fraction 0.01)" in r.output and "playlists 148,826 (fraction 1)" in r.output
    assert "--playlists 148826 --songs 707989" in r.output
    assert not (tmp_path / "melon").exists()


def test_bad_options_are_one_line_errors(tmp_path):
    r = CliRunner().invoke(main, ["bench", "scale", "fsd", "--fractions", "0.1,x", "--dry-run"])
    assert r.exit_code == 2 and "comma-separated floats" in r.output
    r = CliRunner().invoke(main, ["bench", "scale", "fsd", "--steps", "ingest,fly", "--dry-run"])
    assert r.exit_code == 1 and "unknown step 'fly'" in r.output
    r = CliRunner().invoke(main, ["bench", "scale", "fsd", "--memory-limit", "lots", "--dry-run"])
    assert r.exit_code == 2 and "not a size" in r.output


def test_real_sizes_at_fraction_one():
    """Fraction 1 synthesizes the real release's counts (DATASETS.md)."""
    def opts(family: str) -> dict[str, int]:
        args = FAMILIES[family].synth(FAMILIES[family].real)
        return {args[i]: int(args[i + 1]) for i in range(0, len(args) - 1, 2) if args[i + 1].isdigit()}

    assert opts("melon") == {"--playlists": 148_826, "--songs": 707_989}
    y = opts("yandex")
    assert y["--tracks"] == 167_196 and y["--tracks"] + y["--test-tracks"] == 208_573 and y["--artists"] == 18_468
    f = opts("fsd")
    assert f["--curated"] == 4_970 and f["--noisy"] == 19_815
    s = opts("speakers")
    assert s["--speakers"] == 600 and abs(s["--speakers"] * s["--utterances"] - 56_666) < 600
    assert opts("spotify")["--sessions"] == 130_000_000 and opts("spotify")["--tracks"] == 3_700_000


def test_results_of_a_failed_step_skip_the_rest_of_that_size(tmp_path):
    """A step that fails (here: ingest of raw files that were never synthesized) is recorded with its exit
    status and the size's later steps are skipped, not run on missing data."""
    from bench.scale import run

    doc = run("spotify", tmp_path, sizes=[600], steps=["ingest", "epoch"], echo=lambda s: None)
    statuses = {r["step"]: r["status"] for r in doc["rows"]}
    assert statuses == {"ingest": "exit 1", "epoch": "skipped"}
    assert Path(doc["rows"][0]["log"]).read_text().count("\n") >= 1


def test_resume_keeps_the_sizes_already_measured_and_runs_the_others(tmp_path):
    """A sweep stopped part way: --resume runs only the sizes without a successful row for every step asked
    for, and one scale.json holds them all, in size order."""
    from bench.scale import run

    seen: list[list] = []

    def partial(line: str) -> None:  # scale.json holds every step measured so far, before the sweep ends
        if line.endswith("(n700-synth.log)"):  # the step's own line, printed once it is measured
            seen.append(json.loads((tmp_path / "spotify" / "scale.json").read_text())["rows"])

    first = run("spotify", tmp_path, sizes=[700], steps=["synth"], echo=partial)
    assert [[(r["size"], r["step"]) for r in rows] for rows in seen] == [[(700, "synth")]]
    assert first["rows"][0]["load"] >= 0
    said: list[str] = []
    doc = run("spotify", tmp_path, sizes=[600, 700], steps=["synth"], resume=True, echo=said.append)
    assert [(r["size"], r["step"], r["status"]) for r in doc["rows"]] == [(600, "synth", "ok"), (700, "synth", "ok")]
    assert doc["rows"][1] == first["rows"][0]  # the kept row, not a new measurement
    assert [i["size"] for i in doc["sizes"]] == [600, 700]
    assert any("700: kept from the earlier scale.json" in line for line in said)
    # asking for a step the kept size never ran measures that size again; sizes not asked for stay
    doc = run("spotify", tmp_path, sizes=[600], steps=["synth", "ingest"], resume=True, echo=lambda s: None)
    assert [(r["size"], r["step"]) for r in doc["rows"]] == [(600, "synth"), (600, "ingest"), (700, "synth")]
    assert doc["rows"][2] == first["rows"][0]
    (tmp_path / "spotify" / "scale.json").write_text("{")
    r = CliRunner().invoke(main, ["bench", "scale", "spotify", "--sizes", "600", "--resume", "--work", str(tmp_path)])
    assert r.exit_code == 1 and "not a bench scale result to resume" in r.output


def test_markdown_table_of_a_result(tmp_path):
    rows = [Row(1_000, 0.01, "ingest", "ok", 2.0, 300.0), Row(1_000, 0.01, "train", "ok", 60.0, 900.0),
            Row(10_000, 0.1, "ingest", "ok", 20.0, 310.0), Row(10_000, 0.1, "train", "timeout", 7.0, 950.0)]
    doc = {"unit": "playlists", "real_size": 100_000, "rows": [r.__dict__ for r in rows],
           "exponents": fit_exponents(rows), "sizes": [{"size": 1_000, "store_bytes": 3 * 2**20}, {"size": 10_000}]}
    (tmp_path / "melon").mkdir()
    (tmp_path / "melon" / "scale.json").write_text(json.dumps(doc))
    r = CliRunner().invoke(main, ["bench", "scale", "melon", "--markdown", "--work", str(tmp_path)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "| playlists | fraction | ingest s / MB | train s / MB | store MB |"
    assert lines[2] == "| 1,000 | 0.01 | 2 / 300 | 60 / 900 | 3 |"
    assert lines[3] == "| 10,000 | 0.1 | 20 / 310 | timeout |  |"
    assert lines[4] == "| exponent (time, RSS) | | 1.00, 0.01 | n/a, n/a | |"
    r = CliRunner().invoke(main, ["bench", "scale", "fsd", "--markdown", "--work", str(tmp_path)])
    assert r.exit_code == 1 and "no bench scale result" in r.output


def test_store_bytes_count_hard_linked_files_once(tmp_path):
    """A store's root checkout and its version tree share files by hard link: counted once."""
    from bench.scale import _du

    (tmp_path / "s" / "_fstore" / "trees" / "v1").mkdir(parents=True)
    (tmp_path / "s" / "chunk").write_bytes(b"x" * 1000)
    (tmp_path / "s" / "_fstore" / "trees" / "v1" / "chunk").hardlink_to(tmp_path / "s" / "chunk")
    (tmp_path / "s" / "manifest.json").write_bytes(b"y" * 10)
    (tmp_path / "s" / "cache").mkdir()
    (tmp_path / "s" / "cache" / "c").write_bytes(b"z" * 500)
    assert _du(tmp_path / "s", skip="cache") == 1010
    assert _du(tmp_path / "s") == 1510
