"""The one table reader: CSV / TSV text rows, typed polars CSV (MSSD), JSON arrays of objects."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from featurestore.cli import main
from featurestore.ingest.table import json_records, read_json, read_json_records, read_table, read_typed_csv
from featurestore.schemas import mssd as S
from featurestore.store import InputError, Store

BOM = "\ufeff"


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


# --- read_table ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["m.csv", "m.tsv"])
def test_read_table_accepts_what_tools_write(tmp_path: Path, name: str) -> None:
    sep = "\t" if name.endswith(".tsv") else ","
    plain = _write(tmp_path / f"plain_{name}", f"id{sep}label\na{sep}x\nb{sep}y\n")
    messy = _write(tmp_path / name, f"{BOM} id {sep}label \r\na{sep}x\r\nb{sep}y\r\n\r\n  \n\n")
    want = read_table(plain, ["id", "label"])
    got = read_table(messy, ["id", "label"])
    assert got.header == want.header == ["id", "label"]
    assert got.rows == want.rows == [(2, ["a", "x"]), (3, ["b", "y"])]
    assert got.records(["label"]) == [(2, {"label": "x"}), (3, {"label": "y"})]


@pytest.mark.parametrize(("text", "pattern"), [
    ("id,label\na,x\n\nb,y\n", r"line 3: blank line between data rows"),
    ("id,label\na,x\nb\n", r"line 3: 1 comma-separated fields, header has 2"),
    ("id,label\na,\n", r"line 2, column 'label': empty value"),
    ("id,name\na,x\n", r"line 1: missing column\(s\) \['label'\]"),
    ("id,label\n\n", r"no data rows \(header only\)"),
    ('id,label\na,"x\n', r"line 2: malformed CSV record"),
    ("id,label,id\na,x,y\n", r"line 1: a column name appears twice"),
    ("\n\n", r"line 1: no header line"),
])
def test_read_table_rejects_in_one_line(tmp_path: Path, text: str, pattern: str) -> None:
    p = _write(tmp_path / "m.csv", text)
    with pytest.raises(InputError, match=pattern) as exc:
        read_table(p, ["id", "label"]).records(["id", "label"])
    assert str(p) in str(exc.value) and "\n" not in str(exc.value)


def test_read_table_header_only_allowed_when_asked(tmp_path: Path) -> None:
    p = _write(tmp_path / "m.csv", "id,label\r\n")
    assert read_table(p, ["id", "label"], allow_empty=True).rows == []


def test_read_table_rejects_non_utf8(tmp_path: Path) -> None:
    p = tmp_path / "m.csv"
    p.write_bytes(b"id,label\na,\xff\xfe\n")
    with pytest.raises(InputError, match=r"line 2: not UTF-8 text"):
        read_table(p, ["id"])


# --- JSON ----------------------------------------------------------------------------------------

def test_json_records_name_index_and_field(tmp_path: Path) -> None:
    p = tmp_path / "playlists.json"
    p.write_text(json.dumps([{"id": 1, "songs": [1, 2]}, {"id": 2, "songs": "x"}]))
    with pytest.raises(InputError, match=r"playlists.json: \[1\], field 'songs': expected list, got str 'x'"):
        read_json_records(p, {"id": int, "songs": list})
    p.write_text(json.dumps([{"id": 1}, 5]))
    with pytest.raises(InputError, match=r"\[1\]: expected an object, got int"):
        read_json_records(p, {"id": int})
    p.write_text(json.dumps([{"id": True}]))
    with pytest.raises(InputError, match=r"\[0\], field 'id': expected int, got bool"):
        read_json_records(p, {"id": int})
    p.write_text(json.dumps([{"songs": []}]))
    with pytest.raises(InputError, match=r"\[0\], field 'id': expected int, got missing"):
        read_json_records(p, {"id": int})
    p.write_text(BOM + json.dumps([{"id": 3}]) + "\r\n\r\n")
    assert read_json_records(p, {"id": int}) == [{"id": 3}]
    with pytest.raises(InputError, match=r"speakers\['a'\]: expected an array, got dict"):
        json_records(p, {}, {"id": int}, "speakers['a']")


def test_read_json_errors(tmp_path: Path) -> None:
    p = tmp_path / "m.json"
    p.write_text('{"a": 1,\n oops}')
    with pytest.raises(InputError, match=r"m.json, line 2: not valid JSON"):
        read_json(p)
    p.write_text("[1, 2]")
    with pytest.raises(InputError, match=r"top level is not a JSON object"):
        read_json(p)
    for content in (BOM, " \r\n", BOM + "\n\t"):  # nothing but a byte-order mark and whitespace
        _write(p, content)
        with pytest.raises(InputError, match=r"m.json: empty file"):
            read_json(p)


# --- typed polars CSV (the MSSD path) ------------------------------------------------------------

def _messy(text: str) -> str:
    """What a spreadsheet or Windows tool makes of a CSV: BOM, CRLF, padded header names, blank tail."""
    header, rest = text.split("\n", 1)
    header = ",".join(f" {h} " if i % 2 else f"{h} " for i, h in enumerate(header.split(",")))
    return BOM + (header + "\n" + rest).replace("\n", "\r\n") + "\r\n\n"


def test_typed_csv_accepts_bom_crlf_padded_header_blank_tail(raw: Path, tmp_path: Path) -> None:
    src = sorted((raw / "training_set").glob("log_*.csv"))[0]
    want = read_typed_csv(src, S.LOG_CSV)
    messy = _write(tmp_path / src.name, _messy(src.read_text()))
    assert read_typed_csv(messy, S.LOG_CSV).equals(want)
    sub = read_typed_csv(messy, {"session_id": pl.Utf8, "skip_2": pl.Boolean})  # a subset of the columns
    assert sub.equals(want.select("session_id", "skip_2"))
    gz = tmp_path / (src.name + ".gz")
    gz.write_bytes(gzip.compress(messy.read_bytes()))
    assert read_typed_csv(gz, S.LOG_CSV).equals(want)


def test_typed_csv_still_rejects_blank_line_inside_and_bad_values(raw: Path, tmp_path: Path) -> None:
    src = sorted((raw / "training_set").glob("log_*.csv"))[0]
    lines = src.read_text().splitlines(keepends=True)
    p = _write(tmp_path / "blank.csv", "".join([*lines[:3], "\n", *lines[3:]]))
    with pytest.raises(InputError, match=r"blank.csv, line 4: blank line"):
        read_typed_csv(p, S.LOG_CSV)
    bad = lines[2].replace(",True,", ",maybe,", 1)
    p = _write(tmp_path / "bad.csv", "".join([" " + lines[0], lines[1], bad, *lines[3:], "\n"]))
    with pytest.raises(InputError, match=r"bad.csv, line 3, column 'skip_\d': cannot parse 'maybe'"):
        read_typed_csv(p, S.LOG_CSV)
    p = _write(tmp_path / "empty.csv", lines[0] + "\n\n")
    with pytest.raises(InputError, match=r"no data rows"):
        read_typed_csv(p, S.LOG_CSV)


def test_mssd_release_rewritten_by_a_tool_ingests_the_same(raw: Path, store: Store, tmp_path: Path) -> None:
    messy_raw = tmp_path / "raw"
    for p in sorted(raw.rglob("*.csv")):
        out = messy_raw / p.relative_to(raw)
        out.parent.mkdir(parents=True, exist_ok=True)
        _write(out, _messy(p.read_text()))
    target = tmp_path / "s.fstore"
    result = CliRunner().invoke(main, ["ingest", "spotify", str(messy_raw), str(target)])
    assert result.exit_code == 0, result.output
    got = Store(target)
    assert got.tables["train"]["events"] == store.tables["train"]["events"]
    assert got.ids("train") == store.ids("train") and got.ids("tracks") == store.ids("tracks")
    for col in S.EVENT_COLUMNS:
        assert (got.ragged("train").array(col)[:] == store.ragged("train").array(col)[:]).all(), col


# --- a stray carriage return in a header line --------------------------------------------------------

@pytest.fixture(scope="module")
def small_raw(tmp_path_factory) -> Path:
    from featurestore.synth.spotify import synth_spotify

    out = tmp_path_factory.mktemp("cr_raw")
    synth_spotify(out, sessions=40, tracks=20, seed=3, train_files=1)
    return out


def _stray_cr(src: Path, out: Path) -> Path:
    """``src`` with its header line ending in ``\\r \\t`` (a CR, then a space and a tab, then the newline)."""
    data = src.read_bytes()
    end = data.index(b"\n")
    out.write_bytes(data[:end] + b"\r \t" + data[end:])
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_typed_csv_stray_cr_in_header_is_one_error_on_line_1(small_raw: Path, tmp_path: Path, gz: bool) -> None:
    src = sorted((small_raw / "training_set").glob("log_*.csv"))[0]
    p = _stray_cr(src, tmp_path / src.name)
    if gz:
        p = tmp_path / (src.name + ".gz")
        p.write_bytes(gzip.compress(_stray_cr(src, tmp_path / "x.csv").read_bytes()))
    with pytest.raises(InputError, match=rf"{p.name}, line 1: stray carriage return") as e:
        read_typed_csv(p, S.LOG_CSV)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("folder", ["training_set", "track_features"])
def test_ingest_stray_cr_in_header_one_line_through_the_cli(small_raw: Path, tmp_path: Path, folder: str) -> None:
    import shutil

    raw = tmp_path / "raw"
    shutil.copytree(small_raw, raw)
    bad = sorted((raw / folder).glob("*.csv"))[0]
    _stray_cr(bad, bad)
    result = CliRunner().invoke(main, ["ingest", "spotify", str(raw), str(tmp_path / "s")])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"{bad}, line 1: stray carriage return" in errors[0], result.output
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def test_ingest_crlf_release_still_accepted(small_raw: Path, tmp_path: Path) -> None:
    """Windows line ends only (no BOM, no padding): the same store as the plain release."""
    raw = tmp_path / "raw"
    for p in sorted(small_raw.rglob("*.csv")):
        out = raw / p.relative_to(small_raw)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(p.read_bytes().replace(b"\n", b"\r\n"))
    for src, target in ((small_raw, tmp_path / "plain"), (raw, tmp_path / "crlf")):
        result = CliRunner().invoke(main, ["ingest", "spotify", str(src), str(target)])
        assert result.exit_code == 0, result.output
    got, want = Store(tmp_path / "crlf"), Store(tmp_path / "plain")
    assert got.ids("train") == want.ids("train") and got.ids("tracks") == want.ids("tracks")
    for col in S.EVENT_COLUMNS:
        assert (got.ragged("train").array(col)[:] == want.ragged("train").array(col)[:]).all(), col
