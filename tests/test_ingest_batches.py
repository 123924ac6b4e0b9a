"""MSSD logs read in bounded batches (issue 21): the store and every error are the same whatever the batch
size, down to blocks of a few rows, where every session spans blocks and is stitched back together."""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.ingest import log_batches, sessions
from featurestore.ingest.spotify import ingest_spotify
from featurestore.schemas import mssd as S
from featurestore.store import InputError


def _files(store: Path) -> dict:
    """Every data file of the store's version, with size and sha256 (the manifest's list)."""
    return json.loads((store / "manifest.json").read_text())["files"]


def _ingest(raw: Path, out: Path, monkeypatch: pytest.MonkeyPatch, block: int | None, spill: int | None = None) -> dict:
    with monkeypatch.context() as m:
        if block is not None:
            m.setattr(log_batches, "BLOCK_BYTES", block)
        if spill is not None:
            m.setattr(sessions, "SPILL_HASHES", spill)
        ingest_spotify(raw, out, progress=False)
    return _files(out)


@pytest.fixture(scope="module")
def whole(raw, tmp_path_factory) -> dict:
    """The store's files when every file is one block (the files are far smaller than the default)."""
    out = tmp_path_factory.mktemp("whole") / "s.fstore"
    ingest_spotify(raw, out, progress=False)
    return _files(out)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(block=st.integers(200, 40_000), spill=st.sampled_from([None, 7, 500]))
def test_the_store_is_byte_identical_whatever_the_block_size(raw, whole, monkeypatch, block, spill):
    with tempfile.TemporaryDirectory() as tmp:
        assert _ingest(raw, Path(tmp) / "s.fstore", monkeypatch, block, spill) == whole


def test_gzip_logs_in_small_blocks_give_the_same_store(raw, whole, tmp_path, monkeypatch):
    gz = tmp_path / "gz"
    for p in raw.rglob("*.csv"):
        dest = gz / p.relative_to(raw)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.with_suffix(".csv.gz").write_bytes(gzip.compress(p.read_bytes()))
    assert _ingest(gz, tmp_path / "s.fstore", monkeypatch, 1000) == whole


def _copy(raw: Path, tmp: Path) -> Path:
    shutil.copytree(raw, tmp / "raw")
    return tmp / "raw"


def _first_log(raw: Path) -> Path:
    return sorted((raw / "training_set").glob("log_*.csv"))[0]


def _test_file(raw: Path, kind: str) -> Path:
    return next((raw / "test_set").glob(f"{kind}_*.csv"))


def _edit(path: Path, fn) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(fn(lines)))


def _set(line: str, col: str, value: str) -> str:
    parts = line.rstrip("\n").split(",")
    parts[list(S.LOG_CSV).index(col)] = value
    return ",".join(parts) + "\n"


DEEP = 700  # a line far past the first blocks of the smallest size below (a test file: DEEP_TEST)
DEEP_TEST = 300


def _session_rows(lines: list[str], at: int) -> tuple[int, int]:
    """(first, end) line index of the session that has line index ``at``."""
    sid = lines[at].split(",")[0]
    first = at
    while lines[first - 1].split(",")[0] == sid:
        first -= 1
    end = at
    while end < len(lines) and lines[end].split(",")[0] == sid:
        end += 1
    return first, end


def _repeat_session_at_end(lines: list[str]) -> list[str]:
    first, end = _session_rows(lines, DEEP)
    return [*lines, *lines[first:end]]


def _split_session(lines: list[str]) -> list[str]:
    first, end = _session_rows(lines, DEEP)  # the session's rows, then an unrelated session, then the rest of it
    other_end = _session_rows(lines, end)[1]
    return [*lines[:first + 2], *lines[end:other_end], *lines[first + 2:end], *lines[other_end:]]


BAD = {
    "unparsable int": (_first_log, lambda ls: [*ls[:DEEP], _set(ls[DEEP], "hour_of_day", "noon"), *ls[DEEP + 1:]]),
    "empty value": (_first_log, lambda ls: [*ls[:DEEP], _set(ls[DEEP], "premium", ""), *ls[DEEP + 1:]]),
    "out of range": (_first_log, lambda ls: [*ls[:DEEP], _set(ls[DEEP], "hour_of_day", "24"), *ls[DEEP + 1:]]),
    "unknown track": (_first_log, lambda ls: [*ls[:DEEP], _set(ls[DEEP], "track_id_clean", "t_no"), *ls[DEEP + 1:]]),
    "rows out of order": (_first_log, lambda ls: [*ls[:DEEP], ls[DEEP + 1], ls[DEEP], *ls[DEEP + 2:]]),
    "row missing": (_first_log, lambda ls: [*ls[:DEEP], *ls[DEEP + 1:]]),
    "blank line between rows": (_first_log, lambda ls: [*ls[:DEEP], "\n", *ls[DEEP:]]),
    "session in two runs of a file": (_first_log, _repeat_session_at_end),
    "session split by another": (_first_log, _split_session),
    "no second half": (lambda r: _test_file(r, "ground_truth"),
                       lambda ls: [*ls[:_session_rows(ls, DEEP_TEST)[0]], *ls[_session_rows(ls, DEEP_TEST)[1]:]]),
    "extra second half": (lambda r: _test_file(r, "ground_truth"), lambda ls: [*ls, *ls[1:3]]),
    "test row out of order": (lambda r: _test_file(r, "log_prehistory"),
                              lambda ls: [*ls[:DEEP_TEST], ls[DEEP_TEST + 1], ls[DEEP_TEST], *ls[DEEP_TEST + 2:]]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_an_error_deep_in_a_file_is_the_same_whatever_the_block_size(raw, tmp_path, monkeypatch, case):
    which, edit = BAD[case]
    bad = _copy(raw, tmp_path)
    _edit(which(bad), edit)
    messages = []
    for block in (None, 600, 5000):
        with monkeypatch.context() as m, pytest.raises(InputError) as err:
            if block is not None:
                m.setattr(log_batches, "BLOCK_BYTES", block)
            ingest_spotify(bad, tmp_path / "out.fstore", progress=False)
        messages.append(str(err.value))
        assert not (tmp_path / "out.fstore").exists()
    assert messages[1] == messages[0] and messages[2] == messages[0], messages


def test_blank_lines_ending_a_file_across_blocks_are_accepted(raw, whole, tmp_path, monkeypatch):
    blank = _copy(raw, tmp_path)
    for p in [_first_log(blank), _test_file(blank, "ground_truth")]:
        p.write_text(p.read_text() + "\n" * 300 + "  \r\n" * 50)
    assert _ingest(blank, tmp_path / "s.fstore", monkeypatch, 500) == whole


def test_second_halves_in_another_order_merge_the_same(raw, whole, tmp_path, monkeypatch):
    shuffled = _copy(raw, tmp_path)
    gt = _test_file(shuffled, "ground_truth")
    lines = gt.read_text().splitlines(keepends=True)
    runs, k = [], 1
    while k < len(lines):
        end = _session_rows(lines, k)[1]
        runs.append(lines[k:end])
        k = end
    gt.write_text(lines[0] + "".join(row for run in reversed(runs) for row in run))
    assert _ingest(shuffled, tmp_path / "s.fstore", monkeypatch, 3000) == whole


def test_a_line_longer_than_a_block_is_read_whole(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("a,b\n" + "x" * 5000 + ",1\n" + "y,2\n" * 3000)
    batches = list(log_batches.typed_blocks(p, lambda: {"a": S.LOG_CSV["session_id"], "b": S.LOG_CSV["session_position"]},
                                            block_bytes=64))
    assert len(batches) > 2 and batches[0][0]["a"][0] == "x" * 5000 and batches[0][1] == 2
    assert sum(len(df) for df, _, _ in batches) == 3001 and batches[-1][2]
    for (df, line, _), (_, next_line, _) in zip(batches, batches[1:], strict=False):
        assert next_line == line + len(df)  # every line counted once
