"""Clip ingests (Yandex, FSD, speakers) with their feature files loaded by Dask tasks: same stores."""

from __future__ import annotations

import logging
from pathlib import Path

import distributed
import numpy as np
import pytest
from click.testing import CliRunner
from test_distributed import assert_same, content

from featurestore.cli import main
from featurestore.ingest.distributed_clips import clip_loader
from featurestore.ingest.fsd import ingest_fsd
from featurestore.ingest.speakers import ingest_speakers
from featurestore.ingest.yandex import ingest_yandex
from featurestore.store import InputError, versions
from featurestore.synth.fsd import synth_fsd
from featurestore.synth.speakers import synth_speakers
from featurestore.synth.yandex import synth_yandex

CASES = {
    "yandex": (synth_yandex, {"tracks": 40, "artists": 6, "test_tracks": 8, "seed": 3}, ingest_yandex,
               {"sample_frames": 300}),
    "fsd": (synth_fsd, {"curated": 10, "noisy": 8, "classes": 6, "seed": 5, "max_seconds": 0.8, "test_clips": 3},
            ingest_fsd, {"workers": 2, "two_pass": True}),
    "speakers": (synth_speakers, {"speakers": 4, "utterances_per_speaker": 3, "test_utterances": 5, "seed": 7},
                 ingest_speakers, {"sample_frames": 500}),
}


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.CRITICAL) as c:
        yield c


@pytest.mark.parametrize("name", sorted(CASES))
def test_dask_loaded_clips_give_the_same_store(name, cluster, tmp_path):
    synth, synth_kw, ingest, kw = CASES[name]
    synth(tmp_path / "raw", **synth_kw)
    ingest(tmp_path / "raw", tmp_path / "local.fstore", progress=False, **kw)
    with clip_loader(tmp_path / "dask.fstore", scheduler=cluster.scheduler_address) as loader:
        loader.batch = 3  # several tasks even on these few clips
        ingest(tmp_path / "raw", tmp_path / "dask.fstore", progress=False, **kw)
    assert_same(content(tmp_path / "local.fstore"), content(tmp_path / "dask.fstore"))
    assert not list(tmp_path.glob(".fstore-clips-*"))  # the scratch folder is removed


def test_bad_feature_file_fails_like_local_and_commits_nothing(cluster, tmp_path):
    synth, synth_kw, ingest, kw = CASES["yandex"]
    synth(tmp_path / "raw", **synth_kw)
    bad = sorted((tmp_path / "raw").rglob("*.npy"))[5]
    np.save(bad, np.zeros((3, 7), dtype=np.float32))  # wrong number of bins
    with pytest.raises(InputError) as local:
        ingest(tmp_path / "raw", tmp_path / "local.fstore", progress=False, **kw)
    with clip_loader(tmp_path / "dask.fstore", scheduler=cluster.scheduler_address) as loader, \
            pytest.raises(InputError) as dask:
        loader.batch = 3
        ingest(tmp_path / "raw", tmp_path / "dask.fstore", progress=False, **kw)
    assert str(dask.value) == str(local.value)
    assert not versions.has_store(tmp_path / "dask.fstore")


def _convertible(name: str, raw: Path) -> list[str]:
    """Make ``raw`` hold what a loader converts (FSD: a stereo and an 8-bit wav) or lets through (Yandex:
    NaN); the notes the summary must then hold."""
    if name == "fsd":
        import soundfile as sf

        stereo, eight = sorted((raw / "train_curated").iterdir())[:2]
        x, sr = sf.read(str(stereo), dtype="float32")
        sf.write(str(stereo), np.stack([x, 0.5 * x], axis=1), sr, subtype="PCM_16")
        x, sr = sf.read(str(eight), dtype="float32")
        sf.write(str(eight), x, sr, subtype="PCM_U8")
        return ["1 stereo clip mixed down to mono (channels averaged)",
                "1 8-bit clip (unsigned PCM_U8) scaled to [-1, 1] as (v - 128) / 128: 256 levels, not 16-bit's 65536"]
    path = sorted(raw.rglob("*.npy"))[2]
    x = np.load(path)
    x[:3, 1] = np.nan
    np.save(path, x)
    return ["3 NaN values in 1 track (stored as the NaN code 255: they read back as NaN)"]


@pytest.mark.parametrize("name", ["fsd", "yandex"])
def test_dask_loaded_clips_report_the_same_conversions(name, cluster, tmp_path):
    """What loading converted is counted on the workers and comes back: the same notes as a local ingest."""
    synth, synth_kw, ingest, kw = CASES[name]
    synth(tmp_path / "raw", **synth_kw)
    expected = _convertible(name, tmp_path / "raw")
    local = ingest(tmp_path / "raw", tmp_path / "local.fstore", progress=False, **kw)
    with clip_loader(tmp_path / "dask.fstore", scheduler=cluster.scheduler_address) as loader:
        loader.batch = 3
        dask = ingest(tmp_path / "raw", tmp_path / "dask.fstore", progress=False, **kw)
    assert dask.notes == local.notes and all(n in dask.notes for n in expected), (local.notes, dask.notes)
    assert_same(content(tmp_path / "local.fstore"), content(tmp_path / "dask.fstore"))


def test_cli_fsd_with_one_local_worker(tmp_path: Path):
    synth, synth_kw, _, _ = CASES["fsd"]
    synth(tmp_path / "raw", **synth_kw)
    res = CliRunner().invoke(main, ["ingest", "fsd", str(tmp_path / "raw"), str(tmp_path / "w.fstore"), "--workers", "1"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["ingest", "fsd", str(tmp_path / "raw"), str(tmp_path / "t.fstore"), "--threads", "2"])
    assert res.exit_code == 0, res.output
    assert_same(content(tmp_path / "t.fstore"), content(tmp_path / "w.fstore"))
