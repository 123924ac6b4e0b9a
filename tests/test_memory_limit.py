"""Ingest and loader memory are bounded, and proven (issue 21). The ingest: a log file read in small
batches is ingested under a memory cgroup limit that kills the same command reading the file whole. The
loader: one full epoch runs in a memory cgroup whose limit is below the memory-mapped session cache, and delivers every session once; the same limit kills a
process that loads the cache whole. The cgroup helper (bench/memlimit.py) is what `fstore bench scale
--memory-limit` uses; CI runs as root on a cgroup v1 machine like this one, so nothing here is skipped.

Sizes: the epoch process joins the cgroup after importing torch (whose ~300 MB of relocated library data
is the same at every data size); what it allocates after that is ~45 MB, so the limit is 64 MB and the
cache ~97 MB (297K sessions, 5.0M events at 20 bytes).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import memlimit
from bench.memlimit import CgroupError, drop_page_cache, parse_bytes, run_measured

LIMIT = 64 << 20
PRELOAD = ("torch", "numba", "loaders", "featurestore.cli")
HANG_GUARD_S = 900  # a stuck epoch fails the test instead of the CI run; not a speed requirement


@pytest.fixture(scope="module")
def big_store(tmp_path_factory) -> tuple[Path, list[Path], int, int]:
    """A store whose train session cache is built and ~1.5x the limit: (store, cache files, bytes, sessions)."""
    from featurestore.ingest.spotify import ingest_spotify
    from featurestore.store import Store
    from featurestore.synth.spotify import synth_spotify
    from loaders.session_cache import FILES, open_session_cache

    root = tmp_path_factory.mktemp("memlimit")
    raw, path = root / "raw", root / "s.fstore"
    synth_spotify(raw, sessions=330_000, tracks=200, seed=3, train_files=2)
    ingest_spotify(raw, path, progress=False, source_checksums=False)
    shutil.rmtree(raw)
    cache = open_session_cache(Store(path), "train")
    files = [cache.folder / name for name in FILES.values()]
    sessions = cache.sessions
    del cache
    return path, files, sum(f.stat().st_size for f in files), sessions


INGEST_LIMIT = 160 << 20
INGEST_PRELOAD = ("polars", "numpy", "featurestore.cli", "featurestore.ingest.spotify")


@pytest.fixture(scope="module")
def big_log(tmp_path_factory) -> tuple[Path, int]:
    """A release whose one training log (157 MB of CSV, 60,000 sessions) is about the limit: (raw, sessions)."""
    from featurestore.synth.spotify import synth_spotify

    raw = tmp_path_factory.mktemp("memlimit-ingest") / "raw"
    s = synth_spotify(raw, sessions=60_000, tracks=200, seed=4, train_files=1)
    (log,) = (raw / "training_set").glob("log_*")
    assert log.stat().st_size > 0.9 * INGEST_LIMIT
    return raw, s.n_train_sessions


def _ingest_limited(raw: Path, out: Path, block_bytes: int, log: Path):
    import os

    env = {**os.environ, "FSTORE_LOG_BLOCK_BYTES": str(block_bytes)}
    with open(log, "w") as f:
        return run_measured([sys.executable, "-m", "featurestore.cli", "ingest", "spotify", str(raw), str(out),
                             "--no-source-checksums"], limit_bytes=INGEST_LIMIT, preload=INGEST_PRELOAD,
                            stdout=f, stderr=subprocess.STDOUT, env=env, timeout=HANG_GUARD_S)


def test_an_ingest_in_batches_runs_under_a_limit_that_kills_a_whole_file_read(big_log, tmp_path):
    """Peak memory is bounded by the batch, not the log file: with 1 MB blocks the ingest commits under a
    160 MB cgroup limit (measured: 91 MB peak charge), and the same command reading the log as one block,
    as the ingest did before issue 21, is killed by it (459 MB measured without a limit)."""
    from featurestore.store import Store

    raw, sessions = big_log
    m = _ingest_limited(raw, tmp_path / "s.fstore", 1 << 20, tmp_path / "small.log")
    assert not m.timed_out and not m.oom_killed and m.returncode == 0, (m, (tmp_path / "small.log").read_text())
    store = Store(tmp_path / "s.fstore")
    assert store.tables["train"]["rows"] == sessions and store.validate() == []
    m = _ingest_limited(raw, tmp_path / "w.fstore", 1 << 30, tmp_path / "whole.log")
    assert m.oom_killed and m.returncode == -9, (m, (tmp_path / "whole.log").read_text())
    assert not (tmp_path / "w.fstore" / "manifest.json").exists()


def _leftover_cgroups() -> list[Path]:
    _, parent = memlimit._parent_dir()
    return sorted(parent.glob("fstore-memlimit-*"))


def test_a_loader_epoch_completes_under_a_limit_below_its_cache(big_store, tmp_path):
    path, files, cache_bytes, sessions = big_store
    assert cache_bytes > 1.4 * LIMIT
    before = _leftover_cgroups()
    drop_page_cache(files)  # cold: every cache page the epoch reads is faulted in, and charged, in the cgroup
    log = tmp_path / "epoch.log"
    with open(log, "w") as out:
        m = run_measured([sys.executable, "-m", "featurestore.cli", "bench", "epoch", str(path), "--batch-size", "256"],
                         limit_bytes=LIMIT, preload=PRELOAD, stdout=out, stderr=subprocess.STDOUT,
                         timeout=HANG_GUARD_S)
    text = log.read_text()
    assert not m.timed_out and not m.oom_killed and m.returncode == 0, (m, text)
    assert f"epoch: {sessions} of {sessions} sessions seen, 0 repeated, 0 stray" in text, text
    assert "epoch whole: yes" in text
    assert m.limit_bytes == LIMIT and m.peak_bytes <= LIMIT
    # the cache pages went through this cgroup: its charge reached the limit and pages were reclaimed
    # (paged) to let the epoch go on, instead of the whole cache staying resident
    assert m.peak_bytes > 0.9 * LIMIT, m
    assert _leftover_cgroups() == before


def test_loading_the_cache_whole_is_killed_under_the_same_limit(big_store):
    _, files, _, _ = big_store
    drop_page_cache(files)
    code = "import sys, numpy as np; held = [np.fromfile(p, np.uint8) for p in sys.argv[1:]]; print(len(held))"
    m = run_measured([sys.executable, "-c", code, *map(str, files)], limit_bytes=LIMIT,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=HANG_GUARD_S)
    assert m.oom_killed and m.returncode == -9, m


def test_without_a_memory_controller_the_helper_fails_in_one_line(monkeypatch):
    monkeypatch.setattr(memlimit, "_own_paths", lambda: (None, None))
    monkeypatch.setattr(memlimit, "_cgroup2_mount", lambda: None)
    with pytest.raises(CgroupError) as e:
        run_measured([sys.executable, "-c", "pass"], limit_bytes=LIMIT)
    assert "\n" not in str(e.value) and "no cgroup memory controller" in str(e.value)
    # the command line says the same in one line and exits 2
    assert memlimit.main(["--limit", "64M", "--", sys.executable, "-c", "pass"]) == 2


def test_a_command_under_a_generous_limit_is_measured(tmp_path):
    m = run_measured([sys.executable, "-c", "import numpy as np; a = np.ones(40 << 20, np.uint8); print(a.sum())"],
                     limit_bytes=512 << 20, stdout=subprocess.DEVNULL)
    assert m.returncode == 0 and not m.oom_killed
    assert m.peak_bytes >= 40 << 20 and m.max_rss_bytes >= 40 << 20


def test_parse_bytes():
    assert parse_bytes("64M") == 64 << 20
    assert parse_bytes("1.5GiB") == 3 << 29
    assert parse_bytes("300000") == 300000
    assert parse_bytes(7) == 7
    with pytest.raises(ValueError):
        parse_bytes("lots")
