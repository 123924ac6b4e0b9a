"""Distributed spotify ingest on a real LocalCluster (worker processes): same store as the serial path."""

from __future__ import annotations

import logging
import os
import shutil
import signal
from pathlib import Path

import distributed
import numpy as np
import polars as pl
import pytest
import zarr
from click.testing import CliRunner

from featurestore.cli import main
from featurestore.ingest import spotify
from featurestore.ingest.spotify import ingest_spotify
from featurestore.schemas import mssd as S
from featurestore.store import InputError, Store, versions


@pytest.fixture(scope="module")
def cluster():
    """One 2-process cluster for the module (starting one costs seconds)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.CRITICAL) as c:
        yield c


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """1,000-event chunks: each train file (~3,000 events) covers whole chunks and shares edge chunks."""
    monkeypatch.setattr(spotify, "TRAIN_CHUNK", 1000)


def content(path: Path) -> dict:
    """Everything a version holds: every zarr array's values and attributes, dictionaries, ids, sources."""
    store = Store(path)
    root = zarr.open_group(store.data_dir, mode="r")
    out = {"attrs": dict(root.attrs), "tables": store.tables, "sources": store.manifest["sources"]}
    for name, node in root.members(max_depth=None):
        out[name] = (np.asarray(node[:]), node.chunks) if isinstance(node, zarr.Array) else None
        out[name + "@attrs"] = dict(node.attrs)
    for folder in ("dicts", "ids"):
        for f in sorted((store.data_dir / folder).glob("*.parquet")):
            out[f"{folder}/{f.name}"] = pl.read_parquet(f)
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        w = b[k]
        if isinstance(v, tuple):
            assert np.array_equal(v[0], w[0]) and v[0].dtype == w[0].dtype and v[1] == w[1], k
        elif isinstance(v, pl.DataFrame):
            assert v.equals(w), k
        else:
            assert v == w, k


@pytest.fixture(scope="module")
def serial_path(raw, tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as m:
        m.setattr(spotify, "TRAIN_CHUNK", 1000)
        path = tmp_path_factory.mktemp("serial") / "s.fstore"
        ingest_spotify(raw, path, progress=False)
    return path


@pytest.fixture(scope="module")
def serial(serial_path):
    return content(serial_path)


@pytest.fixture(scope="module")
def serial_files(serial_path) -> dict:
    return Store(serial_path).manifest["files"]


def test_two_workers_same_store_as_serial(raw, serial, serial_files, cluster, tmp_path):
    ingest_spotify(raw, tmp_path / "d.fstore", progress=False, scheduler=cluster.scheduler_address)
    got = content(tmp_path / "d.fstore")
    assert got["train/events/track"][0].size > 3000  # several chunks, shared and whole
    assert_same(serial, got)
    assert not list((tmp_path / "d.fstore").rglob("parts"))  # the parts are not left behind
    assert Store(tmp_path / "d.fstore").manifest["files"] == serial_files  # the same files, byte for byte


def test_one_local_worker_from_the_cli(raw, serial, tmp_path):
    res = CliRunner().invoke(main, ["ingest", "spotify", str(raw), str(tmp_path / "w1.fstore"), "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert_same(serial, content(tmp_path / "w1.fstore"))


def corrupt_copy(raw: Path, out: Path, pattern: str, index: int, line: int, column: str, value: str) -> tuple[Path, Path]:
    """A copy of ``raw`` at ``out`` whose ``index``-th file matching ``pattern`` has ``value`` in
    ``column`` on (0-based) ``line``; returns (the copy, the damaged file)."""
    shutil.copytree(raw, out)
    log = sorted(out.glob(pattern))[index]
    lines = log.read_text().splitlines(keepends=True)
    fields = lines[line].split(",")
    fields[list(S.LOG_CSV).index(column)] = value
    lines[line] = ",".join(fields)
    log.write_text("".join(lines))
    return out, log


@pytest.mark.parametrize(("pattern", "index", "line", "column", "value"), [
    ("training_set/log_*.csv", 1, 5, "track_id_clean", "t_not_a_track"),  # an unknown track in a train file
    ("test_set/log_prehistory_*.csv", 0, 4, "session_position", "x"),  # a test date: merged in its task
])
def test_bad_file_fails_like_serial_and_commits_nothing(pattern, index, line, column, value, raw, cluster, tmp_path):
    bad, log = corrupt_copy(raw, tmp_path / "raw", pattern, index, line, column, value)
    with pytest.raises(InputError) as serial_err:
        ingest_spotify(bad, tmp_path / "s.fstore", progress=False)
    with pytest.raises(InputError) as dist_err:
        ingest_spotify(bad, tmp_path / "d.fstore", progress=False, scheduler=cluster.scheduler_address)
    assert str(dist_err.value) == str(serial_err.value)
    assert f"line {line + 1}" in str(dist_err.value) and log.name in str(dist_err.value)
    assert not versions.has_store(tmp_path / "d.fstore")
    assert not (tmp_path / "d.fstore").exists() or not any((tmp_path / "d.fstore").rglob("*.npy"))


class KillOnce(distributed.WorkerPlugin):
    """Kills (SIGKILL) the worker process that starts the first ``write_chunks`` task, once: the marker
    file is claimed by unlinking it, so the restarted worker and the other one are spared."""

    def __init__(self, marker: str):
        self.marker = marker

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and "write_chunks" in str(key):
            try:
                os.unlink(self.marker)
            except FileNotFoundError:
                return
            os.kill(os.getpid(), signal.SIGKILL)


def test_worker_killed_mid_ingest_gives_the_serial_store(raw, serial, cluster, tmp_path):
    marker = tmp_path / "kill-marker"
    marker.touch()
    with distributed.Client(cluster) as client:
        client.register_plugin(KillOnce(str(marker)), name="kill-once")
        try:
            ingest_spotify(raw, tmp_path / "k.fstore", progress=False, scheduler=cluster.scheduler_address)
        finally:
            client.unregister_worker_plugin("kill-once")
    assert not marker.exists()  # a worker was killed while writing its part
    assert_same(serial, content(tmp_path / "k.fstore"))
