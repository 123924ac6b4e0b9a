"""Distributed spotify ingest into an ``s3://`` store (a local moto server, never a cloud), on a real
LocalCluster: tasks put their parts and chunks on S3 themselves; the version is the serial local one."""

from __future__ import annotations

import logging
import shutil

import boto3
import distributed
import pytest
from click.testing import CliRunner
from test_distributed import corrupt_copy

from featurestore.cli import main
from featurestore.ingest import spotify
from featurestore.ingest.spotify import ingest_spotify
from featurestore.store import InputError, Store
from featurestore.store.remote import S3Store

BUCKET = "fstore-dist"


@pytest.fixture(scope="module")
def s3_server():
    from bench.remote import moto_s3

    with moto_s3(BUCKET) as env:
        yield env


@pytest.fixture(scope="module")
def cluster(s3_server):
    """Started after the moto server: the worker processes inherit its AWS_* variables."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.CRITICAL) as c:
        yield c


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch, tmp_path):
    """1,000-event chunks (each train file covers whole chunks and shares edge chunks); own object cache."""
    monkeypatch.setattr(spotify, "TRAIN_CHUNK", 1000)
    monkeypatch.setenv("FSTORE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def serial_files(raw, tmp_path_factory) -> dict:
    with pytest.MonkeyPatch.context() as m:
        m.setattr(spotify, "TRAIN_CHUNK", 1000)
        path = tmp_path_factory.mktemp("serial") / "s.fstore"
        ingest_spotify(raw, path, progress=False)
    return Store(path).manifest["files"]


def keys(folder: str, prefix: str = "") -> list[str]:
    page = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}_fstore/{folder}/")
    return [o["Key"] for o in page.get("Contents", [])]


def is_chunk(rel: str) -> bool:
    """A chunk of the session tables (train and test), which the tasks encode and upload."""
    return rel.startswith(("train/", "test/")) and "/c/" in rel


@pytest.mark.parametrize("how", ["scheduler", "workers"])
def test_ingest_to_s3_equals_serial_local_and_workers_upload_the_chunks(how, raw, serial_files, cluster, monkeypatch):
    """``--scheduler``: parts on S3 (nothing shared); ``--workers``: parts on the local disk. Either way
    the tasks upload the chunks."""
    seen = {}
    commit = S3Store.commit

    def spy(self, tree, manifest, op, parent, uploaded=frozenset()):
        seen["tree_chunks"] = [p for p in tree.rglob("*") if p.is_file() and is_chunk(str(p.relative_to(tree)))]
        seen["uploaded"] = set(uploaded)
        return commit(self, tree, manifest, op, parent, uploaded)

    monkeypatch.setattr(S3Store, "commit", spy)
    # the driver process never puts a chunk object itself (the workers, other processes, are not patched)
    monkeypatch.setattr(S3Store, "put_object_bytes", lambda self, data: pytest.fail("the driver uploaded a chunk"))
    url = f"s3://{BUCKET}/dist-{how}"
    where = {"scheduler": cluster.scheduler_address} if how == "scheduler" else {"workers": 1}
    summary = ingest_spotify(raw, url, progress=False, **where)

    entry = S3Store(url).read_entry(1)
    assert entry["files"] == serial_files  # same files, same bytes, same checksums
    chunks = {rel for rel in serial_files if is_chunk(rel)}
    assert any(c.startswith("test/") for c in chunks) and len(chunks) > 20
    assert seen["uploaded"] == chunks  # every session-table chunk, and nothing else, from the tasks
    assert seen["tree_chunks"] == []  # none was in the driver's local tree
    assert keys("staging", f"dist-{how}/") == []  # the parts were removed (or never on S3)
    assert summary.events["train"] == Store(url).tables["train"]["events"]
    store = Store(url)  # materialized from the objects, each verified against its sha256
    assert not store.validate(checksums=True)


def test_bad_file_fails_like_serial_and_leaves_no_staging(raw, cluster, tmp_path):
    bad, _ = corrupt_copy(raw, tmp_path / "raw", "training_set/log_*.csv", 2, 7, "track_id_clean", "t_not_a_track")
    with pytest.raises(InputError) as serial_err:
        ingest_spotify(bad, tmp_path / "s.fstore", progress=False)
    url = f"s3://{BUCKET}/bad"
    res = CliRunner().invoke(main, ["ingest", "spotify", str(bad), url, "--scheduler", cluster.scheduler_address])
    assert res.exit_code == 1 and str(serial_err.value) in res.output and "Traceback" not in res.output
    assert S3Store(url).version_numbers() == []
    assert keys("staging", "bad/") == []


def test_failure_after_the_chunks_leaves_objects_that_vacuum_removes(raw, cluster, tmp_path):
    """A session in two files is found by the driver's last check, after the tasks uploaded every chunk:
    nothing is committed, no staging is left, and vacuum removes the chunk objects no version references."""
    url = f"s3://{BUCKET}/vac"
    ingest_spotify(raw, url, progress=False, scheduler=cluster.scheduler_address)
    kept = set(S3Store(url).object_keys())
    bad = tmp_path / "raw"
    shutil.copytree(raw, bad)
    logs = sorted((bad / "training_set").glob("log_*.csv"))
    shutil.copy(logs[0], logs[-1].with_name("log_9_20990101_000000000000.csv"))  # every session twice
    with pytest.raises(InputError) as err:
        ingest_spotify(bad, url, progress=False, overwrite=True, scheduler=cluster.scheduler_address)
    assert "split across" in str(err.value) and logs[0].name in str(err.value)
    remote = S3Store(url)
    assert remote.version_numbers() == [1] and keys("staging", "vac/") == []
    orphans = set(remote.object_keys()) - kept
    assert orphans  # chunks of the failed ingest, uploaded by its tasks
    remote.s3.put_object(Bucket=BUCKET, Key=remote.key("staging", "killed-driver", "parts", "x"), Body=b"1")
    remote.vacuum(keep=None, grace_seconds=3600)  # young staging may be a live ingest's: kept
    assert keys("staging", "vac/") == [remote.key("staging", "killed-driver", "parts", "x")]
    done = remote.vacuum(keep=None, grace_seconds=0)
    assert set(remote.object_keys()) == kept
    assert keys("staging", "vac/") == [] and any("staging" in line for line in done)
    assert Store(url).tables["train"]["events"] > 0


def test_clip_ingest_with_scheduler_passes_frames_through_s3_staging(cluster, tmp_path):
    """With ``--scheduler`` and an S3 store, clip frames go through the store's staging objects (no
    shared folder); the version equals a local serial ingest's, and the staging objects are removed."""
    from featurestore.ingest.distributed_clips import clip_loader
    from featurestore.ingest.yandex import ingest_yandex
    from featurestore.synth.yandex import synth_yandex

    synth_yandex(tmp_path / "raw", tracks=30, artists=5, test_tracks=6, seed=4)
    ingest_yandex(tmp_path / "raw", tmp_path / "local.fstore", progress=False, sample_frames=300)
    url = f"s3://{BUCKET}/clips"
    with clip_loader(url, scheduler=cluster.scheduler_address) as loader:
        loader.batch = 4  # several tasks even on these few clips
        assert loader.parts.url == url
        ingest_yandex(tmp_path / "raw", url, progress=False, sample_frames=300)
    assert S3Store(url).read_entry(1)["files"] == Store(tmp_path / "local.fstore").manifest["files"]
    assert keys("staging", "clips/") == []


def test_worker_killed_in_phase_b_gives_the_serial_files(raw, serial_files, cluster, tmp_path):
    """A worker SIGKILLed as it starts a chunk-writing task: Dask reruns the task elsewhere, its uploads
    are content-addressed (a rerun puts the same keys), and the version is still the serial one."""
    from test_distributed import KillOnce

    marker = tmp_path / "kill-marker"
    marker.touch()
    url = f"s3://{BUCKET}/killed"
    with distributed.Client(cluster) as client:
        client.register_plugin(KillOnce(str(marker)), name="kill-once")
        try:
            ingest_spotify(raw, url, progress=False, scheduler=cluster.scheduler_address)
        finally:
            client.unregister_worker_plugin("kill-once")
    assert not marker.exists()  # a worker was killed
    assert S3Store(url).read_entry(1)["files"] == serial_files
    assert keys("staging", "killed/") == []
