"""Ingest of synthetic MSSD files: every row read back, and each bad input rejected cleanly."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import polars.selectors as cs
import pytest
from click.testing import CliRunner

from featurestore.cli import main
from featurestore.ingest.spotify import ingest_spotify
from featurestore.schemas import mssd as S
from featurestore.store import InputError, Store, StoreError


def read_back(store: Store, split: str) -> pl.DataFrame:
    """Rebuild the MSSD log columns of a split from the store."""
    r = store.ragged(split)
    lengths = r.lengths()
    sids = np.repeat(np.asarray(store.ids(split), dtype=object), lengths)
    pos = np.arange(r.events) - np.repeat(r.offsets[:-1], lengths) + 1
    track_ids = np.asarray(store.ids("tracks"), dtype=object)
    cols = {
        "session_id": sids, "session_position": pos, "session_length": np.repeat(lengths, lengths),
        "track_id_clean": track_ids[r.read("track")],
    }
    for c in S.BOOL_COLUMNS:
        cols[c] = r.read(c).astype(bool)
    for c in [*S.FLAG_COLUMNS, *S.COUNT_COLUMNS, "hour_of_day"]:
        cols[c] = r.read(c).astype(np.int64)
    cols["date"] = pl.Series(r.read("date")).cast(pl.Date)
    for c in S.CATEGORICAL_COLUMNS:
        cols[c] = store.dictionary(c).decode(r.read(c))
    return pl.DataFrame(cols).select(list(S.LOG_CSV))


def source(paths) -> pl.DataFrame:
    dfs = [pl.read_csv(p, schema_overrides=S.LOG_CSV) for p in paths]
    return pl.concat(dfs).with_columns(cs.integer().cast(pl.Int64))


def test_train_rows_read_back_exactly(raw, store):
    src = source(sorted((raw / "training_set").glob("log_*.csv")))
    back = read_back(store, "train").with_columns(cs.integer().cast(pl.Int64))
    assert back.equals(src)


def test_test_split_merges_prehistory_and_ground_truth(raw, store):
    pre = source(sorted((raw / "test_set").glob("log_prehistory_*.csv")))
    gt = source(sorted((raw / "test_set").glob("ground_truth_*.csv")))
    expected = pl.concat([pre, gt]).sort(["session_id", "session_position"])
    back = read_back(store, "test").with_columns(cs.integer().cast(pl.Int64))
    assert back.sort(["session_id", "session_position"]).equals(expected)
    assert store.tables["test"]["second_half_labels"] is True


def test_track_features_within_bound(raw, store):
    t = store.feature_table("tracks")
    src = pl.concat([pl.read_csv(p, schema_overrides=S.TRACK_CSV) for p in sorted((raw / "track_features").glob("*"))])
    assert store.ids("tracks") == src["track_id"].to_list()
    values = src.with_columns((pl.col("mode") == "minor").cast(pl.Float64)).select(S.TRACK_FEATURES).to_numpy()
    back = t.dequantize()
    for j, c in enumerate(t.meta["columns"]):
        assert np.max(np.abs(back[:, j] - values[:, j])) <= c["bound"] * (1 + 1e-6) + 1e-9, c["name"]


def test_gzip_and_validate_and_cli(raw, tmp_path):
    gz = tmp_path / "gz"
    for p in raw.rglob("*.csv"):
        dest = gz / p.relative_to(raw)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.with_suffix(".csv.gz").write_bytes(gzip.compress(p.read_bytes()))
    runner = CliRunner()
    res = runner.invoke(main, ["ingest", "spotify", str(gz), str(tmp_path / "g.fstore")])
    assert res.exit_code == 0, res.output
    assert "bytes/event" in res.output
    assert Store(tmp_path / "g.fstore").validate() == []
    res = runner.invoke(main, ["info", str(tmp_path / "g.fstore")])
    assert res.exit_code == 0 and "max|err|" in res.output and "fstore.quantile_u8" in res.output


def test_validate_catches_out_of_range_reference(raw, tmp_path):
    dest = tmp_path / "s.fstore"
    ingest_spotify(raw, dest, progress=False)
    s = Store(dest)
    assert s.validate(checksums=False) == []
    s.manifest["tables"]["tracks"]["rows"] = 5  # tracks now "too small" for the codes in train
    problems = s.validate(checksums=False)
    assert any("track" in p and "out of range" in p for p in problems)


# --- bad input ------------------------------------------------------------------------------

def _copy(raw: Path, tmp: Path) -> Path:
    dst = tmp / "raw"
    shutil.copytree(raw, dst)
    return dst


def _edit(path: Path, fn) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(fn(lines)))


def _first_log(raw: Path) -> Path:
    return sorted((raw / "training_set").glob("log_*.csv"))[0]


def _set_field(line: str, col: str, value: str) -> str:
    parts = line.rstrip("\n").split(",")
    parts[list(S.LOG_CSV).index(col)] = value
    return ",".join(parts) + "\n"


CASES = {
    "missing column": (lambda r: _edit(_first_log(r), lambda ls: [",".join(line.split(",")[:-1]) + "\n" for line in ls]),
                       r"line 1: missing column\(s\) \['hist_user_behavior_reason_end'\]"),
    "unparsable bool": (lambda r: _edit(_first_log(r), lambda ls: [ls[0], _set_field(ls[1], "skip_2", "Maybe"), *ls[2:]]),
                        r"line 2, column 'skip_2': cannot parse 'Maybe'"),
    "unparsable int": (lambda r: _edit(_first_log(r), lambda ls: [*ls[:3], _set_field(ls[3], "hour_of_day", "noon"), *ls[4:]]),
                       r"line 4, column 'hour_of_day': cannot parse 'noon'"),
    "rows out of order": (lambda r: _edit(_first_log(r), lambda ls: [ls[0], ls[2], ls[1], *ls[3:]]),
                          r"line 2, column 'session_position': session .* out of order"),
    "length disagrees": (lambda r: _edit(_first_log(r), lambda ls: [ls[0], *ls[2:]]),
                         r"column 'session_position'|session_length"),
    "track missing": (lambda r: _edit(_first_log(r), lambda ls: [ls[0], _set_field(ls[1], "track_id_clean", "t_nope"), *ls[2:]]),
                      r"line 2, column 'track_id_clean': track 't_nope' is not in track_features"),
    "empty file": (lambda r: _first_log(r).write_text(""), r"file is empty"),
    "header only": (lambda r: _edit(_first_log(r), lambda ls: ls[:1]), r"no data rows"),
    "empty value": (lambda r: _edit(_first_log(r), lambda ls: [ls[0], _set_field(ls[1], "premium", ""), *ls[2:]]),
                    r"line 2, column 'premium': empty value"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_rejected_and_nothing_written(raw, tmp_path, case):
    bad = _copy(raw, tmp_path)
    mutate, pattern = CASES[case]
    mutate(bad)
    target = tmp_path / "out.fstore"
    with pytest.raises(InputError, match=pattern):
        ingest_spotify(bad, target, progress=False)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # no staging directory left behind


def test_session_split_across_files(raw, tmp_path):
    bad = _copy(raw, tmp_path)
    logs = sorted((bad / "training_set").glob("log_*.csv"))
    a = logs[0].read_text().splitlines(keepends=True)
    sid = a[1].split(",")[0]
    n = sum(1 for line in a[1:] if line.startswith(sid + ","))
    # move the tail of the first session into the second file, keeping positions intact
    moved = a[1 + n - 2 : 1 + n]
    logs[0].write_text("".join(a[: 1 + n - 2] + a[1 + n :]))
    with pytest.raises(InputError):
        ingest_spotify(bad, tmp_path / "o", progress=False)
    # a whole session duplicated into another file is reported as split across both files
    logs[0].write_text("".join(a))
    b = logs[1].read_text().splitlines(keepends=True)
    logs[1].write_text("".join(b + a[1 : 1 + n]))
    with pytest.raises(InputError, match="split across"):
        ingest_spotify(bad, tmp_path / "o", progress=False)
    assert moved  # the first variant did remove rows


def test_truncated_gzip(raw, tmp_path):
    bad = _copy(raw, tmp_path)
    log = _first_log(bad)
    data = gzip.compress(log.read_bytes())
    log.unlink()
    log.with_suffix(".csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated gzip"):
        ingest_spotify(bad, tmp_path / "o", progress=False)


def test_existing_store_refused_and_kept(raw, tmp_path, store):
    target = tmp_path / "s.fstore"
    ingest_spotify(raw, target, progress=False)
    before = (target / "manifest.json").read_bytes()
    with pytest.raises(StoreError, match="already exists"):
        ingest_spotify(raw, target, progress=False)
    bad = _copy(raw, tmp_path)
    _first_log(bad).write_text("")
    with pytest.raises(InputError):
        ingest_spotify(bad, target, overwrite=True, progress=False)
    assert (target / "manifest.json").read_bytes() == before
    assert Store(target).validate() == []


def test_unseen_categorical_values_are_encoded(raw, tmp_path):
    bad = _copy(raw, tmp_path)
    _edit(_first_log(bad), lambda ls: [ls[0], _set_field(ls[1], "context_type", "brand_new_context"), *ls[2:]])
    ingest_spotify(bad, tmp_path / "o", progress=False)
    assert "brand_new_context" in Store(tmp_path / "o").dictionary("context_type").values


def test_cli_errors_are_one_line(raw, tmp_path):
    bad = _copy(raw, tmp_path)
    _first_log(bad).write_text("")
    res = CliRunner().invoke(main, ["ingest", "spotify", str(bad), str(tmp_path / "o")])
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "file is empty" in errors[0]


def test_dictionaries_in_first_appearance_order(raw, store):
    """Parsing against the known values (an Enum) keeps the vocabulary in the order values first
    appear in the logs, file by file, as encoding the text would."""
    logs = sorted((raw / "training_set").glob("log_*.csv")) + sorted((raw / "test_set").glob("log_prehistory_*.csv"))
    text = pl.concat([pl.read_csv(p, columns=S.CATEGORICAL_COLUMNS) for p in logs])
    for c in S.CATEGORICAL_COLUMNS:
        first_seen = text[c].unique(maintain_order=True).to_list()
        assert store.dictionary(c).values[: len(first_seen)] == first_seen


def test_source_checksums_are_the_files_sha256(raw, store):
    import hashlib

    for entry in store.manifest["sources"]:
        assert entry["sha256"] == hashlib.sha256((raw / entry["path"]).read_bytes()).hexdigest()
