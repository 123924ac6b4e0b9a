"""``python -m bench.gpu_check --dry-run``: the GPU check's plumbing on the CPU, every section."""

from __future__ import annotations

import json


def test_gpu_check_dry_run_reports_every_section(tmp_path):
    from bench.gpu_check import main

    out = tmp_path / "report.json"
    assert main(["--dry-run", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["device"] == "cpu"
    for name in ("session_loader", "train_skip", "ddp"):
        assert report[name]["ok"], report[name]
    assert report["session_loader"]["sessions_per_s"] > 0 and report["session_loader"]["batch_size"] == 64
    assert report["ddp"]["world_size"] == 1 and report["ddp"]["backend"] == "gloo"
    assert 0.0 <= report["train_skip"]["data_wait_share"] <= 1.0
