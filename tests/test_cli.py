"""The command line's shape and error policy: help everywhere, shared options, one-line errors."""

from __future__ import annotations

import errno

import click
import pytest
from click.testing import CliRunner

from featurestore.cli import FAMILIES, main


def walk(command: click.Command, path: tuple[str, ...] = ("fstore",)):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, (*path, name))


def test_every_command_and_option_has_help():
    missing = []
    for path, command in walk(main):
        if not (command.help or "").strip():
            missing.append(" ".join(path))
        for p in command.params:
            if isinstance(p, click.Option) and not (p.help or "").strip():
                missing.append(f"{' '.join(path)} {p.opts[0]}")
    assert missing == []
    assert len(list(walk(main))) >= 18  # the walk does reach the leaves


def test_every_family_registers_synth_and_ingest_with_overwrite():
    runner = CliRunner()
    for family in FAMILIES:
        assert {"synth", "ingest"} <= set(family.COMMANDS)
        name = family.COMMANDS["synth"].name
        r = runner.invoke(main, ["synth", name, "--help"])
        assert r.exit_code == 0 and "--overwrite" in r.output and "Clear a non-empty OUT first" in r.output


def test_synth_refuses_a_used_folder_and_overwrite_clears_it(tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "stale.csv").write_text("left by an earlier run\n")
    args = ["synth", "speakers", str(out), "--speakers", "3", "--utterances", "4", "--test-utterances", "2"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.startswith("Error: ") and str(out) in r.output and "--overwrite" in r.output
    assert (out / "stale.csv").exists()
    r = CliRunner().invoke(main, [*args, "--overwrite"])
    assert r.exit_code == 0, r.output
    assert not (out / "stale.csv").exists() and (out / "Dataset" / "mapping.json").is_file()


def test_train_and_evaluate_share_the_contract_options():
    from featurestore.cli.common import VAL_SAMPLE
    from loaders.splits import VAL_SAMPLE as LIBRARY_VAL_SAMPLE

    assert VAL_SAMPLE == LIBRARY_VAL_SAMPLE  # fstore train's default is the library's
    for group, expected in (("train", {"--epochs", "--max-minutes", "--device", "--seed", "--no-resume",
                                       "--val-sample"}),
                            ("evaluate", {"--out", "--metrics-json", "--device"})):
        for name, command in main.commands[group].commands.items():
            opts = {o for p in command.params if isinstance(p, click.Option) for o in p.opts}
            assert expected <= opts, (group, name)


@pytest.mark.parametrize("device, message", [("gpu", "unknown device 'gpu'"), ("cuda:x", "unknown device 'cuda:x'")])
def test_bad_device_is_one_line(tmp_path, device, message):
    r = CliRunner().invoke(main, ["train", "skip", str(tmp_path / "s"), str(tmp_path / "o"), "--device", device])
    assert r.exit_code == 1 and r.output == f"Error: --device: {message}: use cpu, cuda or cuda:N\n"


def test_full_disk_and_file_errors_are_one_line(monkeypatch, tmp_path):
    import featurestore.synth.spotify as synth

    runner = CliRunner()
    target = str(tmp_path / "raw" / "training_set" / "log_0.csv")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", target)

    monkeypatch.setattr(synth, "synth_spotify", full)
    r = runner.invoke(main, ["synth", "spotify", str(tmp_path / "raw")])
    assert r.exit_code == 1 and r.output == f"Error: {target}: no space left on device; free some space and run again\n"

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", target)

    monkeypatch.setattr(synth, "synth_spotify", denied)
    r = runner.invoke(main, ["synth", "spotify", str(tmp_path / "raw")])
    assert r.exit_code == 1 and r.output == f"Error: {target}: Permission denied\n"

    def bug(*args, **kwargs):  # an OSError naming no file is not a user mistake: it keeps its traceback
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(synth, "synth_spotify", bug)
    r = runner.invoke(main, ["synth", "spotify", str(tmp_path / "raw")])
    assert r.exit_code == 1 and isinstance(r.exception, OSError) and r.exception.errno == errno.EIO


def test_the_console_entry_point_keeps_exit_statuses_and_output(raw, tmp_path):
    """``run`` (the ``fstore`` script and ``python -m featurestore.cli``) ends an ingest without the
    interpreter's teardown: the status and every line printed must be what ``main`` gives."""
    import subprocess
    import sys

    def fstore(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "featurestore.cli", *args], capture_output=True, text=True)

    ok = fstore("ingest", "spotify", str(raw), str(tmp_path / "s"), "--no-source-checksums")
    assert ok.returncode == 0 and "events/s" in ok.stdout and ok.stdout.endswith("\n")
    again = fstore("ingest", "spotify", str(raw), str(tmp_path / "s"))
    assert again.returncode == 1 and again.stderr.strip().endswith("already exists (pass --overwrite to replace it)")
    assert "Traceback" not in again.stderr
    usage = fstore("ingest", "spotify", str(raw))
    assert usage.returncode == 2 and "Missing argument 'STORE'" in usage.stderr
    assert fstore("validate", str(tmp_path / "s")).returncode == 0


def test_evaluate_contract_groups_model_baselines_components_and_ceiling(tmp_path, capsys):
    import json

    from featurestore.cli.common import report_scores

    rows = {n: {"score": v, "part": v / 2} for n, v in
            [("blend", 0.5), ("pop", 0.1), ("cooc", 0.4), ("part_a", 0.3), ("oracle", 0.9)]}
    out = tmp_path / "m.json"
    report_scores(rows, "score", "val", out, model="blend", baselines=("pop", "cooc"), ceiling=("oracle",))
    doc = json.loads(out.read_text())
    assert doc == {"metric": "score", "split": "val", "scores": {"model": 0.5, "pop": 0.1, "cooc": 0.4},
                   "components": {"part_a": 0.3}, "ceiling": {"oracle": 0.9}}
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[0] == "blend" and lines[1].endswith("model")
    assert [ln.split()[-1] for ln in lines[2:6]] == ["baseline", "baseline", "component", "ceiling"]
    report_scores({"model": rows["blend"], "pop": rows["pop"]}, "score", "test", out)  # default: the rest are baselines
    assert json.loads(out.read_text())["scores"] == {"model": 0.5, "pop": 0.1}
    with pytest.raises(ValueError, match="no 'model' row"):
        report_scores({"pop": rows["pop"]}, "score", "test", None)
