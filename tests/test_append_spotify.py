"""``fstore ingest spotify --append --refit``: track quantizers refitted, the track table alone rewritten; files
ingested before are skipped when their content is the same, an error when it differs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from featurestore.cli import main
from featurestore.ingest.spotify import ingest_spotify
from featurestore.schemas import mssd as S
from featurestore.store import Store
from featurestore.store import versions as V
from featurestore.synth.spotify import synth_spotify


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("refit_raw")
    synth_spotify(out, sessions=200, tracks=90, seed=4, train_files=2)
    return out


def _new_tracks(raw: Path, out: Path, duration: str) -> list[float]:
    """Three new tracks (copies of old rows under new ids), the first with ``duration``; their durations."""
    src = sorted((raw / "track_features").iterdir())[0]
    lines = src.read_text().splitlines()
    header, rows = lines[0], lines[1:4]
    dur = header.split(",").index("duration")
    rows = [",".join([f"new_{i}", *r.split(",")[1:]]) for i, r in enumerate(rows)]
    big = rows[0].split(",")
    big[dur] = duration
    rows[0] = ",".join(big)
    (out / "track_features").mkdir(parents=True)
    (out / "track_features" / "tf_new.csv").write_text("\n".join([header, *rows]) + "\n")
    return [float(r.split(",")[dur]) for r in rows]


def _inodes(path: Path, n: int) -> dict[str, int]:
    tree = V.tree_path(path, V.read_entry(path, n))
    return {str(p.relative_to(tree)): p.stat().st_ino for p in tree.rglob("*") if p.is_file()}


def test_refit_rewrites_the_track_table_only(raw, tmp_path):
    path = tmp_path / "s.fstore"
    ingest_spotify(raw, path, progress=False)
    durations = _new_tracks(raw, tmp_path / "new", "1e7")
    old = Store(path)
    old_t = old.feature_table("tracks")
    old_values = old_t.dequantize().astype(np.float64)
    r = CliRunner().invoke(main, ["ingest", "spotify", str(tmp_path / "new"), str(path), "--append", "--refit"])
    assert r.exit_code == 0, r.output
    assert "refitted" in r.output and "clipped" not in r.output
    s = Store(path)
    assert s.validate() == [] and s.version == 2
    t = s.feature_table("tracks")
    assert t.rows == old_t.rows + 3 and t.meta["refit"] is True
    bounds = np.array([c["bound"] for c in t.meta["columns"]])
    values = t.dequantize().astype(np.float64)
    # old tracks: their decoded values re-encoded with the new quantizers (within the new bound)
    assert (np.abs(values[:-3] - old_values) <= bounds + 1e-6 * np.abs(old_values)).all()
    # the new extreme value is inside the refitted range: decoded within the bound, not clipped
    d = S.TRACK_FEATURES.index("duration")
    assert abs(values[-3, d] - durations[0]) <= bounds[d] * (1 + 1e-6)
    assert sum(c["clipped"] for c in t.meta["columns"]) == 0
    assert t.meta["columns"] != old_t.meta["columns"]  # new quantizers
    # event data untouched: every file but the track table, its ids and the manifest is version 1's
    one, two = _inodes(path, 1), _inodes(path, 2)
    changed = {rel for rel in one if two.get(rel) != one[rel]}
    assert changed - {"manifest.json"} and all(rel.startswith(("tracks/", "ids/tracks")) or rel == "manifest.json"
                                               for rel in changed), changed
    # version 1 still decodes as before
    np.testing.assert_array_equal(Store(path, version=1).feature_table("tracks").dequantize(), old_values)


def test_without_refit_clipping_is_counted(raw, tmp_path):
    path = tmp_path / "s.fstore"
    ingest_spotify(raw, path, progress=False)
    _new_tracks(raw, tmp_path / "new", "1e7")
    r = CliRunner().invoke(main, ["ingest", "spotify", str(tmp_path / "new"), str(path), "--append"])
    assert r.exit_code == 0 and "1 track feature values" in r.output and "clipped" in r.output, r.output
    assert "refit" not in Store(path).feature_table("tracks").meta


def test_refit_needs_append(raw, tmp_path):
    r = CliRunner().invoke(main, ["ingest", "spotify", str(raw), str(tmp_path / "x"), "--refit"])
    assert r.exit_code != 0 and len(r.output.strip().splitlines()) == 1 and "--refit needs --append" in r.output
    assert not os.path.exists(tmp_path / "x")


# --- RAW carrying the track files again (as MSSD ships: one set of track files beside many log archives) --

def _two_parts(raw: Path, out: Path) -> tuple[Path, Path]:
    """A: the release without its second log; B: the same track files and the second log only."""
    import shutil

    logs = sorted((raw / "training_set").iterdir())
    a, b = out / "a", out / "b"
    shutil.copytree(raw, a, ignore=shutil.ignore_patterns(logs[1].name))
    shutil.copytree(raw, b, ignore=shutil.ignore_patterns(logs[0].name, "test_set"))
    return a, b


def _error_line(r) -> str:
    assert r.exit_code == 1 and "Traceback" not in r.output and isinstance(r.exception, SystemExit), r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.output
    return errors[0]


def test_append_skips_files_ingested_before_with_the_same_content(raw, tmp_path, monkeypatch):
    from featurestore.ingest import spotify_append

    a, b = _two_parts(raw, tmp_path)
    path = tmp_path / "s.fstore"
    ingest_spotify(a, path, progress=False)
    hashed = []
    real = spotify_append.sha256_file
    monkeypatch.setattr(spotify_append, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    r = CliRunner().invoke(main, ["ingest", "spotify", str(b), str(path), "--append"])
    assert r.exit_code == 0, r.output
    tracks = sorted(p.name for p in (b / "track_features").iterdir())
    assert f"skipped        {len(tracks)} files: already ingested with the same content" in r.output
    assert sorted(hashed) == tracks  # each skipped file hashed once, to decide
    s, whole = Store(path), tmp_path / "whole.fstore"
    assert s.version == 2 and s.validate() == []
    names = [Path(e["path"]).name for e in s.manifest["sources"]]
    assert sorted(names) == sorted([*(Path(e["path"]).name for e in Store(path, version=1).manifest["sources"]),
                                    *(p.name for p in (b / "training_set").iterdir())])
    ingest_spotify(raw, whole, progress=False)
    w = Store(whole)
    assert s.ids("tracks") == w.ids("tracks") and sorted(s.ids("train")) == sorted(w.ids("train"))
    # the same release again: nothing left to append, one line
    r = CliRunner().invoke(main, ["ingest", "spotify", str(b), str(path), "--append"])
    assert f"nothing to append: all {len(tracks) + 1} " in _error_line(r)
    assert V.version_numbers(path) == [1, 2]


@pytest.mark.parametrize("same_size", [True, False])
def test_append_same_name_different_content_is_one_line(raw, tmp_path, monkeypatch, same_size):
    from featurestore.ingest import spotify_append

    a, b = _two_parts(raw, tmp_path)
    path = tmp_path / "s.fstore"
    ingest_spotify(a, path, progress=False)
    tf = sorted((b / "track_features").iterdir())[-1]
    lines = tf.read_text().splitlines(keepends=True)
    fields = lines[1].split(",")
    dur = lines[0].split(",").index("duration")
    last = "1" if fields[dur][-1] != "1" else "2"
    fields[dur] = fields[dur][:-1] + last if same_size else fields[dur] + "1"  # the same size, or one byte more
    lines[1] = ",".join(fields)
    tf.write_text("".join(lines))
    hashed = []
    real = spotify_append.sha256_file
    monkeypatch.setattr(spotify_append, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    r = CliRunner().invoke(main, ["ingest", "spotify", str(b), str(path), "--append"])
    line = _error_line(r)
    assert f"{tf}: content differs from the {tf.name} already ingested into {path} (its sources as of version 1:" \
        in line, line
    assert (tf.name in hashed) == same_size  # a file of another size is not hashed to tell it differs
    assert V.version_numbers(path) == [1]


def test_append_same_name_without_recorded_checksum_is_one_line(raw, tmp_path):
    a, b = _two_parts(raw, tmp_path)
    path = tmp_path / "s.fstore"
    ingest_spotify(a, path, progress=False, source_checksums=False)
    r = CliRunner().invoke(main, ["ingest", "spotify", str(b), str(path), "--append"])
    assert "ingested without a checksum (--no-source-checksums)" in _error_line(r)
