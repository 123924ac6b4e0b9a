"""Versions, atomic commits and concurrent writers (issue 9): what a reader sees whatever writers do."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from featurestore.cli import main
from featurestore.ingest.builder import StoreBuilder
from featurestore.ingest.spotify import ingest_spotify
from featurestore.store import Store, StoreError
from featurestore.store import versions as V
from featurestore.synth.spotify import synth_spotify
from loaders import SessionBatches

FSTORE = [sys.executable, "-m", "featurestore.cli"]


@pytest.fixture(scope="module")
def raws(tmp_path_factory) -> dict[str, Path]:
    """Two releases with different sizes: a mixed read would show as rows of one with ids of the other."""
    out = {}
    for name, sessions, tracks in (("a", 300, 120), ("b", 420, 150)):
        out[name] = tmp_path_factory.mktemp(f"raw_{name}")
        synth_spotify(out[name], sessions=sessions, tracks=tracks, seed=len(name) + sessions, train_files=2)
    return out


def _fingerprint(s: Store) -> tuple:
    """What a version holds, read through every kind of file: zarr arrays, ids and dictionaries."""
    train = s.ragged("train")
    return (s.version, train.rows, train.events, len(s.ids("train")), s.feature_table("tracks").rows,
            len(s.ids("tracks")), int(train.read("track").sum()), len(s.dictionary("context_type")))


def _consistent(fp: tuple, s: Store) -> bool:
    rows = s.manifest["rows"]
    return fp[1] == fp[3] == rows["train"] and fp[4] == fp[5] == rows["tracks"]


def test_every_commit_is_a_version_and_old_ones_stay_readable(raws, tmp_path):
    path = tmp_path / "s.fstore"
    ingest_spotify(raws["a"], path, progress=False)
    v1 = Store(path)
    first = _fingerprint(v1)
    assert v1.version == 1 and v1.data_dir == path  # the root is a checkout of the latest version
    ingest_spotify(raws["b"], path, overwrite=True, progress=False)
    # the reader opened before the overwrite still sees version 1, file by file
    assert _fingerprint(v1) == first and v1.data_dir != path
    assert _fingerprint(Store(path, version=1)) == first
    latest = Store(path)
    assert latest.version == 2 and _consistent(_fingerprint(latest), latest)
    assert _fingerprint(latest)[1] != first[1]
    assert V.tag(path, "before-b", 1) == 1
    assert Store(path, version="before-b").version == 1
    with pytest.raises(StoreError, match="no version 7"):
        Store(path, version=7)
    with pytest.raises(StoreError, match="no tag 'nope'"):
        Store(path, version="nope")
    # a loader pinned to version 1 serves version 1's sessions
    assert SessionBatches(path, version=1, batch_size=64).cache.sessions == first[1]
    assert SessionBatches(path, batch_size=64).cache.sessions == latest.ragged("train").rows
    r = CliRunner()
    out = r.invoke(main, ["versions", str(path)])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert len(lines) == 3 and "ingest" in lines[1] and "tags: before-b" in lines[1]
    assert "overwrite" in lines[2] and "(latest)" in lines[2] and f"train={latest.ragged('train').rows}" in lines[2]
    info = r.invoke(main, ["info", str(path), "--version", "1"])
    assert info.exit_code == 0 and "version 1 (ingest" in info.output and f"{first[1]} rows" in info.output
    assert r.invoke(main, ["validate", str(path), "--version", "before-b"]).exit_code == 0


def test_two_writers_to_one_new_path_exactly_one_wins(raws, tmp_path):
    path = tmp_path / "s.fstore"
    # interleaved in one thread: both stage before either commits
    a = StoreBuilder(path, "x", progress=False).__enter__()
    b = StoreBuilder(path, "x", progress=False).__enter__()
    a.finish([])
    b.finish([])
    a.__exit__(None, None, None)
    with pytest.raises(StoreError, match=r"already exists: another ingest created it first \(version 1"):
        b.__exit__(None, None, None)
    assert V.version_numbers(path) == [1] and Store(path).validate() == []
    assert len(os.listdir(path / "_fstore" / "trees")) == 1  # the loser's tree is gone
    # as processes: exactly one exits 0, the other prints one Error line
    target = tmp_path / "p.fstore"
    procs = [subprocess.Popen([*FSTORE, "ingest", "spotify", str(raws[k]), str(target)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for k in ("a", "b")]
    outs = [(p.wait(timeout=300), p.stdout.read()) for p in procs]
    assert sorted(rc for rc, _ in outs) == [0, 1], outs
    loser = next(o for rc, o in outs if rc == 1)
    errors = [line for line in loser.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "already exists" in errors[0] and "Traceback" not in loser
    assert V.version_numbers(target) == [1] and Store(target).validate() == []


def test_concurrent_overwrites_loser_fails_cleanly(raws, tmp_path):
    path = tmp_path / "s.fstore"
    ingest_spotify(raws["a"], path, progress=False)
    a = StoreBuilder(path, "x", overwrite=True, progress=False).__enter__()
    b = StoreBuilder(path, "x", overwrite=True, progress=False).__enter__()
    for w in (a, b):
        w.finish([])
    a.__exit__(None, None, None)
    with pytest.raises(StoreError, match="changed while this commit ran: another writer committed"):
        b.__exit__(None, None, None)
    assert V.version_numbers(path) == [1, 2]


def test_readers_never_see_a_mixed_or_absent_version(raws, tmp_path):
    """Random interleavings: a writer thread overwrites back and forth while reader threads open and read."""
    path = tmp_path / "s.fstore"
    ingest_spotify(raws["a"], path, progress=False)
    expected = {}  # version -> fingerprint, recorded by the writer right after each commit
    expected[1] = _fingerprint(Store(path, version=1))
    stop, seen, failures = threading.Event(), [], []

    def writer() -> None:
        for i in range(4):
            ingest_spotify(raws["ba"[i % 2]], path, overwrite=True, progress=False)
        stop.set()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            try:
                s = Store(path)
                time.sleep(rng.random() * 0.05)  # let a commit land between open and reads
                fp = _fingerprint(s)
                if not _consistent(fp, s):
                    failures.append(("mixed", fp))
                seen.append((s.version, fp))
            except Exception as e:  # noqa: BLE001 - any failure to read is what this test looks for
                failures.append(("error", repr(e)))

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not failures, failures[:3]
    for n in V.version_numbers(path):
        expected.setdefault(n, _fingerprint(Store(path, version=n)))
    assert seen and all(fp == expected[v] for v, fp in seen)


def _ingest_cmd(raw: Path, path: Path) -> list[str]:
    return [*FSTORE, "ingest", "spotify", str(raw), str(path), "--overwrite", "--no-source-checksums"]


def test_kill_9_at_random_points_leaves_previous_or_new_version(raws, tmp_path):
    path = tmp_path / "s.fstore"
    ingest_spotify(raws["a"], path, progress=False)
    versions_fp = {1: _fingerprint(Store(path))}
    t = time.perf_counter()
    subprocess.run(_ingest_cmd(raws["b"], path), check=True, capture_output=True, timeout=300)
    duration = time.perf_counter() - t  # interpreter start included: kills land all over the run
    versions_fp[2] = _fingerprint(Store(path))
    outcomes = set()
    for seed in range(8):
        before = V.version_numbers(path)[-1]
        proc = subprocess.Popen(_ingest_cmd(raws["ab"[seed % 2]], path), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(random.Random(seed).uniform(0.3, 1.1) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        s = Store(path)
        assert s.version in (before, before + 1)
        outcomes.add(s.version - before)
        assert s.validate() == [], (seed, s.validate()[:3])
        assert _consistent(_fingerprint(s), s)
        r = CliRunner().invoke(main, ["validate", str(path)])
        assert r.exit_code == 0, r.output
    # leftovers of the killed writers are invisible, and the next writer or vacuum removes them
    V.vacuum(path)
    referenced = {V.read_entry(path, n)["tree"] for n in V.version_numbers(path)}
    assert set(os.listdir(path / "_fstore" / "trees")) == referenced
    assert V.root_is_current(path, V.version_numbers(path)[-1])
    print("kill outcomes (0 = previous version kept, 1 = new version):", sorted(outcomes))
    assert outcomes <= {0, 1}


def test_kill_9_on_a_new_path_leaves_no_store_or_a_whole_one(raws, tmp_path):
    for seed in range(3):
        path = tmp_path / f"n{seed}.fstore"
        proc = subprocess.Popen(_ingest_cmd(raws["a"], path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(random.Random(seed).uniform(0.5, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if V.version_numbers(path):
            assert Store(path).validate() == []
        else:  # only leftovers: no store, and a new ingest is not refused
            with pytest.raises(StoreError):
                Store(path)
            ingest_spotify(raws["a"], path, progress=False)
            assert V.version_numbers(path) == [1]


def test_vacuum_expires_old_versions_but_never_the_latest_tagged_or_young(raws, tmp_path):
    path = tmp_path / "s.fstore"
    ingest_spotify(raws["a"], path, progress=False)
    for k in "bab":
        ingest_spotify(raws[k], path, overwrite=True, progress=False)
    V.tag(path, "keep-me", 2)
    assert V.vacuum(path, keep=1) == []  # all younger than the default grace period
    leftover = V.new_tree(path)  # a writer's tree: kept while its writer (this process) lives
    (leftover / "x").write_text("partial")
    done = V.vacuum(path, keep=1, grace_seconds=0)
    assert done == ["expired version 1", "expired version 3"]
    assert V.version_numbers(path) == [2, 4] and leftover.exists()
    dead = leftover.with_name("1700000000-999999999-deadbeef")  # a writer that died
    leftover.rename(dead)
    assert V.vacuum(path, grace_seconds=0) == [f"removed uncommitted tree {dead.name}"]
    assert Store(path).validate() == [] and Store(path, version=2).validate() == []
    r = CliRunner().invoke(main, ["vacuum", str(path), "--keep", "1", "--grace-hours", "0"])
    assert r.exit_code == 0 and "versions kept: [2, 4]" in r.output
    r = CliRunner().invoke(main, ["vacuum", str(path), "--keep", "0"])
    assert r.exit_code == 2  # --keep 0 would expire the latest: refused


def test_a_copied_store_reads_its_own_root(raws, tmp_path):
    path = tmp_path / "s.fstore"
    ingest_spotify(raws["a"], path, progress=False)
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    s = Store(copy)
    assert s.data_dir == copy and s.validate() == []
    assert np.array_equal(s.ragged("train").offsets, Store(path).ragged("train").offsets)


KILL_AT_LINK = """
import os, signal, sys
from featurestore.store import versions
from featurestore.ingest.spotify import ingest_spotify
calls = [0]
real = versions._link_over
def link_then_die(src, dst):
    calls[0] += 1
    if calls[0] == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
versions._link_over = link_then_die
ingest_spotify(sys.argv[1], sys.argv[2], overwrite=True, progress=False, source_checksums=False)
"""


@pytest.mark.parametrize("seed", range(4))
def test_kill_9_inside_the_root_checkout(raws, tmp_path, seed):
    """The commit's own window: killed after the claim, while the root is being switched file by file."""
    path = tmp_path / "s.fstore"
    ingest_spotify(raws["a"], path, progress=False)
    old = _fingerprint(Store(path))
    files = sum(len(f) for _, _, f in os.walk(path / "_fstore" / "trees"))
    at = random.Random(seed).randint(1, files)
    proc = subprocess.run([sys.executable, "-c", KILL_AT_LINK, str(raws["b"]), str(path), str(at)],
                          capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    s = Store(path)
    assert s.version == 2 and s.data_dir != path  # committed; the half-switched root is not read
    assert s.validate() == [] and _consistent(_fingerprint(s), s)
    assert _fingerprint(Store(path, version=1)) == old
    V.vacuum(path)  # the next writer or vacuum finishes the checkout
    assert Store(path).data_dir == path and Store(path).validate() == []
    assert CliRunner().invoke(main, ["validate", str(path)]).exit_code == 0


# --- append ----------------------------------------------------------------------------------------

def _split_raw(full: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A = everything but the last training log; B = that log alone."""
    a, b = tmp_path / "A", tmp_path / "B"
    shutil.copytree(full, a)
    last = sorted((a / "training_set").iterdir())[-1]
    (b / "training_set").mkdir(parents=True)
    shutil.move(last, b / "training_set" / last.name)
    return a, b


def _decoded_sessions(s: Store) -> dict:
    train = s.ragged("train")
    track_ids = np.asarray(s.ids("tracks"), dtype=object)
    out = {"session": s.ids("train"), "offsets": train.offsets.tolist(),
           "track": track_ids[train.read("track")].tolist()}
    for c, meta in train.columns.items():
        if c == "track":
            continue
        v = train.read(c)
        out[c] = (s.dictionary(meta["dictionary"]).decode(v) if "dictionary" in meta else v).tolist()
    return out


def test_append_equals_ingesting_everything_at_once(raws, tmp_path):
    a, b = _split_raw(raws["b"], tmp_path)
    whole = tmp_path / "whole.fstore"
    ingest_spotify(raws["b"], whole, progress=False)
    path = tmp_path / "s.fstore"
    ingest_spotify(a, path, progress=False)
    v1 = Store(path)
    before = _decoded_sessions(v1)
    r = CliRunner().invoke(main, ["ingest", "spotify", str(b), str(path), "--append"])
    assert r.exit_code == 0, r.output
    s = Store(path)
    assert s.version == 2 and s.manifest["op"] == "append" and s.validate() == []
    assert _decoded_sessions(s) == _decoded_sessions(Store(whole))
    assert _decoded_sessions(Store(path, version=1)) == before == _decoded_sessions(v1)
    # event data is shared with version 1, not rewritten: all but each array's last chunk are the same inodes
    t1, t2 = (V.tree_path(path, Store(path, version=n).manifest) for n in (1, 2))
    shared = [p for p in t1.rglob("*") if p.is_file() and (t2 / p.relative_to(t1)).exists()
              and (t2 / p.relative_to(t1)).stat().st_ino == p.stat().st_ino]
    assert any("test/events" in str(p) for p in shared) and any("tracks/codes/c" in str(p) for p in shared)
    lines = CliRunner().invoke(main, ["versions", str(path)]).output.splitlines()
    assert "append" in lines[2] and f"train={s.ragged('train').rows}" in lines[2]
    # loaders on the appended version
    assert SessionBatches(path, batch_size=50).cache.sessions == s.ragged("train").rows


def test_append_refuses_old_sessions_and_files(raws, tmp_path):
    a, b = _split_raw(raws["b"], tmp_path)
    path = tmp_path / "s.fstore"
    ingest_spotify(a, path, progress=False)
    again = tmp_path / "again"
    (again / "training_set").mkdir(parents=True)
    first = sorted((a / "training_set").iterdir())[0]
    shutil.copy(first, again / "training_set" / "log_9_20990101_000000000000.csv")  # old sessions, new name
    r = CliRunner().invoke(main, ["ingest", "spotify", str(again), str(path), "--append"])
    assert r.exit_code == 1 and "split across" in r.output and "Traceback" not in r.output
    shutil.copy(first, again / "training_set" / first.name)
    (again / "training_set" / "log_9_20990101_000000000000.csv").unlink()
    r = CliRunner().invoke(main, ["ingest", "spotify", str(again), str(path), "--append"])  # the same file again
    assert r.exit_code == 1 and "nothing to append: all 1 " in r.output and "with the same content" in r.output
    assert V.version_numbers(path) == [1] and Store(path).validate() == []


def test_append_new_tracks_keeps_quantizers_and_counts_clipping(raws, tmp_path):
    path = tmp_path / "s.fstore"
    ingest_spotify(raws["a"], path, progress=False)
    src = sorted((raws["a"] / "track_features").iterdir())[0]
    lines = src.read_text().splitlines()
    new = tmp_path / "new" / "track_features"
    new.mkdir(parents=True)
    header, rows = lines[0], lines[1:4]
    dur = header.split(",").index("duration")
    rows = [",".join([f"new_{i}", *r.split(",")[1:]]) for i, r in enumerate(rows)]
    big = rows[0].split(",")
    big[dur] = "1e9"  # far outside the fitted range: clipped, counted
    rows[0] = ",".join(big)
    (new / "tf_new.csv").write_text("\n".join([header, *rows]) + "\n")
    old = Store(path)
    old_codes = old.feature_table("tracks").codes()
    r = CliRunner().invoke(main, ["ingest", "spotify", str(tmp_path / "new"), str(path), "--append"])
    assert r.exit_code == 0 and "clipped" in r.output, r.output
    s = Store(path)
    t = s.feature_table("tracks")
    assert t.rows == old_codes.shape[0] + 3 and s.ids("tracks")[-3:] == ["new_0", "new_1", "new_2"]
    assert np.array_equal(t.codes()[:-3], old_codes) and t.meta["columns"] == old.feature_table("tracks").meta["columns"]
    assert s.validate() == []
