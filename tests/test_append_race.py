"""Two appends racing for the same version: the loser rebases on the winner and retries, or fails in one
line naming the conflict."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from featurestore.ingest.spotify import ingest_spotify
from featurestore.ingest.spotify_append import append_spotify
from featurestore.ingest.yandex import ingest_yandex
from featurestore.store import Store, StoreError
from featurestore.store import versions as V
from featurestore.synth.spotify import synth_spotify
from featurestore.synth.yandex import synth_yandex


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> dict[str, Path]:
    """A spotify release split three ways: A (the first log and the tracks), B1 and B2 (one log each)."""
    full = tmp_path_factory.mktemp("race_full")
    synth_spotify(full, sessions=240, tracks=80, seed=9, train_files=3)
    out = {"full": full}
    a = full.parent / "race_a"
    shutil.copytree(full, a)
    shutil.rmtree(a / "test_set", ignore_errors=True)
    for name, log in zip(("b1", "b2"), sorted((a / "training_set").iterdir())[1:], strict=True):
        out[name] = full.parent / f"race_{name}"
        (out[name] / "training_set").mkdir(parents=True)
        shutil.move(log, out[name] / "training_set" / log.name)
    out["a"] = a
    return out


def _sessions(s: Store) -> dict[str, list[str]]:
    train = s.ragged("train")
    track_ids = np.asarray(s.ids("tracks"), dtype=object)
    tracks = track_ids[train.read("track")]
    return {sid: tracks[train.offsets[i]:train.offsets[i + 1]].tolist() for i, sid in enumerate(s.ids("train"))}


def _race(monkeypatch, first, second) -> dict:
    """Run ``first``; just before its commit, ``second`` runs to completion in another thread."""
    real, out = V.commit, {}

    def commit(*args, **kw):
        if not out:
            out["second"] = None
            t = threading.Thread(target=lambda: out.update(second=_run(second)))
            t.start()
            t.join()
        return real(*args, **kw)

    monkeypatch.setattr(V, "commit", commit)
    out["first"] = _run(first)
    return out


def _run(fn):
    try:
        return fn()
    except StoreError as e:
        return e


def test_two_racing_appends_both_land(logs, tmp_path, monkeypatch):
    path = tmp_path / "s.fstore"
    ingest_spotify(logs["a"], path, progress=False)
    out = _race(monkeypatch, lambda: append_spotify(logs["b1"], path, progress=False),
                lambda: append_spotify(logs["b2"], path, progress=False))
    assert not isinstance(out["second"], Exception) and not isinstance(out["first"], Exception), out
    assert any("rebased" in n for n in out["first"].notes)
    assert V.version_numbers(path) == [1, 2, 3]
    assert [V.read_entry(path, n)["op"] for n in (2, 3)] == ["append", "append"]
    s = Store(path)
    assert s.validate() == []
    whole = tmp_path / "whole.fstore"
    shutil.rmtree(logs["full"] / "test_set", ignore_errors=True)
    ingest_spotify(logs["full"], whole, progress=False)
    assert _sessions(s) == _sessions(Store(whole))
    # version 2 (the winner alone) is still there as it was committed
    assert len(Store(path, version=2).ids("train")) < len(s.ids("train"))


def test_conflicting_append_fails_in_one_line(logs, tmp_path, monkeypatch):
    path = tmp_path / "s.fstore"
    ingest_spotify(logs["a"], path, progress=False)
    out = _race(monkeypatch, lambda: append_spotify(logs["b1"], path, progress=False),
                lambda: append_spotify(logs["b1"], path, progress=False))
    assert not isinstance(out["second"], Exception)
    err = out["first"]
    assert isinstance(err, StoreError) and "\n" not in str(err)
    # the winner ingested the same file (same content): nothing is left for the loser to append
    assert "cannot be rebased on version 2" in str(err) and "nothing to append: all 1 " in str(err)
    assert V.version_numbers(path) == [1, 2] and Store(path).validate() == []


def test_racing_clip_appends_rebase_or_name_the_clip(tmp_path, monkeypatch):
    full = tmp_path / "y"
    synth_yandex(full, tracks=30, artists=5, test_tracks=0, seed=1)
    (full / "test_meta.tsv").unlink(missing_ok=True)
    lines = (full / "train_meta.tsv").read_text().splitlines(keepends=True)
    parts = {"a": lines[1:20], "b1": lines[20:25], "b2": lines[25:], "dup": lines[22:23]}
    for name, rows in parts.items():
        shutil.copytree(full, tmp_path / name, copy_function=shutil.copy, ignore=shutil.ignore_patterns("*.tsv"))
        (tmp_path / name / "train_meta.tsv").write_text(lines[0] + "".join(rows))
    path = tmp_path / "s.fstore"
    ingest_yandex(tmp_path / "a", path, progress=False)
    out = _race(monkeypatch, lambda: ingest_yandex(tmp_path / "b1", path, progress=False, append=True),
                lambda: ingest_yandex(tmp_path / "b2", path, progress=False, append=True))
    assert not isinstance(out["first"], Exception) and not isinstance(out["second"], Exception), out
    s = Store(path)
    assert V.version_numbers(path) == [1, 2, 3] and s.validate() == []
    assert sorted(s.ids("train")) == sorted(ln.split("\t")[0] for ln in lines[1:])
    monkeypatch.undo()
    other = tmp_path / "t.fstore"
    ingest_yandex(tmp_path / "a", other, progress=False)
    out = _race(monkeypatch, lambda: ingest_yandex(tmp_path / "dup", other, progress=False, append=True),
                lambda: ingest_yandex(tmp_path / "b1", other, progress=False, append=True))
    assert not isinstance(out["second"], Exception)
    err, clip = out["first"], parts["dup"][0].split("\t")[0]
    assert isinstance(err, StoreError) and "\n" not in str(err)
    assert "cannot be rebased on version 2" in str(err) and f"clip {clip!r}" in str(err)
    assert V.version_numbers(other) == [1, 2]


def test_two_append_processes_both_land(logs, tmp_path):
    """Two ``fstore ingest spotify --append`` processes started together: whichever order they commit in,
    both land as consecutive versions and the last holds both."""
    path = tmp_path / "s.fstore"
    ingest_spotify(logs["a"], path, progress=False)
    cmd = [sys.executable, "-m", "featurestore.cli", "ingest", "spotify"]
    procs = [subprocess.Popen([*cmd, str(logs[b]), str(path), "--append"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for b in ("b1", "b2")]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert V.version_numbers(path) == [1, 2, 3]
    s = Store(path)
    assert s.validate() == []
    whole = tmp_path / "whole.fstore"
    shutil.rmtree(logs["full"] / "test_set", ignore_errors=True)
    ingest_spotify(logs["full"], whole, progress=False)
    assert _sessions(s) == _sessions(Store(whole))


def test_commit_before_the_build_skips_what_it_ingested(logs, tmp_path, monkeypatch):
    """A commit lands between an append's discovery and its build: the files that commit ingested with the
    same content are skipped too (the append is checked again against the version it builds on)."""
    from featurestore.ingest import spotify_append

    path = tmp_path / "s.fstore"
    ingest_spotify(logs["a"], path, progress=False)
    raw = tmp_path / "raw"  # the track files again, and both new logs
    shutil.copytree(logs["a"] / "track_features", raw / "track_features")
    for b in ("b1", "b2"):
        shutil.copytree(logs[b] / "training_set", raw / "training_set", dirs_exist_ok=True)
    real, landed = spotify_append.SourceHashes, []

    def hashes_after_a_commit(files):
        if not landed:  # the first call only (the winner's own append comes here too)
            landed.append(files)
            append_spotify(logs["b1"], path, progress=False)
        return real(files)

    monkeypatch.setattr(spotify_append, "SourceHashes", hashes_after_a_commit)
    summary = append_spotify(raw, path, progress=False)
    tracks = len(list((raw / "track_features").iterdir()))
    assert summary.skipped == tracks + 1 and summary.files == 1
    assert V.version_numbers(path) == [1, 2, 3] and not any("rebased" in n for n in summary.notes)
    s = Store(path)
    assert s.validate() == []
    names = [Path(e["path"]).name for e in s.manifest["sources"]]
    assert len(names) == len(set(names))
    whole = tmp_path / "whole.fstore"
    shutil.copytree(logs["full"], tmp_path / "full", ignore=shutil.ignore_patterns("test_set"))
    ingest_spotify(tmp_path / "full", whole, progress=False)
    assert _sessions(s) == _sessions(Store(whole))
