"""``python -m bench.gpu_check --dry-run``: the GPU check's plumbing on the CPU, every step at tiny sizes."""

from __future__ import annotations

import json

STEPS = ["model_sizes", "stores", "loader_sessions", "loader_playlists", "loader_crop", "loader_bucketed",
         "loader_balanced", "train_skip", "train_melon", "train_yandex", "train_fsd", "train_speakers", "ddp",
         "appetite"]


def test_gpu_check_dry_run_reports_every_step(tmp_path):
    from bench.gpu_check import main

    out = tmp_path / "report.json"
    assert main(["--dry-run", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["device"] == "cpu" and "not_covered" not in report
    for name in STEPS:
        assert report[name]["ok"] and "skipped" not in report[name], (name, report[name])
    for kind in ("sessions", "playlists", "crop", "bucketed", "balanced"):
        step = report[f"loader_{kind}"]
        assert step["items_per_s"] > 0 and step["batches"] >= 4 and 0.0 <= step["data_wait_share_under_load"] <= 1.0
    assert report["loader_sessions"]["batch_size"] == 64 and report["loader_sessions"]["share_of_goal"] > 0
    for family in ("skip", "melon", "yandex", "fsd", "speakers"):
        step = report[f"train_{family}"]
        assert step["items_per_s"] > 0 and 0.0 <= step["data_wait_share"] <= 1.0 and step["amp"] is None
    assert report["train_melon"]["title_model"].endswith("title_model.pt")
    assert report["ddp"]["world_size"] == 1 and report["ddp"]["backend"] == "none (one process)"
    assert set(report["appetite"]) - {"ok", "seconds"} == {"sessions", "playlists", "crop", "balanced"}
    sizes = report["model_sizes"]
    assert sizes["melon"]["allreduce_bytes_per_step"] == 4 * sizes["melon"]["parameters"] > sizes["skip"]["parameters"]


def test_a_failing_step_still_writes_the_report_with_its_error(tmp_path):
    from bench.gpu_check import Check

    out = tmp_path / "report.json"
    check = Check(out, {}, budget_s=60)
    check.step("good", lambda: {"x": 1})
    check.step("bad", lambda: {"x": 1 / 0})
    report = json.loads(out.read_text())
    assert report["good"]["ok"] and report["good"]["x"] == 1
    assert report["bad"]["ok"] is False and report["bad"]["error"] == "ZeroDivisionError: division by zero"
    late = Check(out, {}, budget_s=0)
    late.start -= 1
    late.step("late", lambda: {"x": 1})
    assert "time budget" in late.report["late"]["skipped"]
