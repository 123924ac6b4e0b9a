"""Training across 2 processes on the CPU (gloo): DDP equivalence with one process at the same global
batch, disjoint and complete shards through the real loop, a mid-epoch checkpoint at 2 ranks resumed at
1 and one of 1 rank resumed at 2 (the FSD family, a second one), a killed rank making the other fail in
one line (tests/ddp_worker.py is each rank), and every family's training loader, as the family builds it,
dealt to 2 ranks: disjoint, equal batch counts, every item of the epoch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "ddp_worker.py"
HANG_GUARD_S = 240  # only against a hang: the worker's own timeout is FSTORE_DDP_TIMEOUT below


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(scenario: str, store: Path, out: Path) -> list[subprocess.CompletedProcess]:
    """Two ranks started by hand (no torchrun agent, which would kill a rank's peers itself)."""
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
               "RANK": str(rank), "LOCAL_RANK": str(rank), "FSTORE_DDP_TIMEOUT": "30", "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(ROOT)}
        procs.append(subprocess.Popen([sys.executable, str(WORKER), scenario, str(store), str(out)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT))
    done = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=HANG_GUARD_S)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return done


@pytest.fixture(scope="module")
def two_ranks(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    for r in _launch("train", Path(store.path), out):
        assert r.returncode == 0, r.stderr[-3000:]
    return out


def _single(store, out: Path, monkeypatch, **kw) -> tuple:
    """The same training in this process (1 rank), recording the items its training loader deals."""
    sys.path.insert(0, str(ROOT / "tests"))
    import ddp_worker

    monkeypatch.setattr("loaders.base.BatchLoader._run", ddp_worker.ORIGINAL_RUN)  # undone after the test
    seen = ddp_worker.record_items(out, 0)
    from models.skip.train import train_skip

    result = train_skip(store, out, epochs=1, **{**ddp_worker.SETTINGS, **kw})
    return result, seen


def test_two_ranks_equal_one_rank_at_the_same_global_batch(two_ranks, store, tmp_path, monkeypatch):
    _single(store, tmp_path / "one", monkeypatch)
    two = torch.load(two_ranks / "full" / "checkpoint.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["loader"]["batch_size"] == 16 and one["loader"]["batch_size"] == 32  # the global batch is kept
    for name, w in one["model"].items():
        torch.testing.assert_close(two["model"][name], w, rtol=1e-4, atol=1e-5, msg=name)
    assert two["history"][0]["sessions"] == one["history"][0]["sessions"]  # the same items, all ranks counted


def test_ranks_see_disjoint_items_covering_the_epoch(two_ranks, store):
    a, b = (np.load(two_ranks / "full" / f"items.{r}.npy") for r in range(2))
    assert a.size == b.size and np.intersect1d(a, b).size == 0
    assert np.unique(a).size == a.size and np.unique(b).size == b.size
    from loaders import SessionBatches

    fit = SessionBatches(store, "train", batch_size=32, subset="fit", holdout=0.05, order="quasi_random", seed=3)
    np.testing.assert_array_equal(np.sort(np.concatenate([a, b])), np.sort(fit.items))
    history = (two_ranks / "full" / "history.csv").read_text().splitlines()
    assert history[0].split(",")[-1] == "world_size" and history[1].split(",")[-1] == "2"


def test_mid_epoch_checkpoint_at_two_ranks_resumes_at_one(two_ranks, store, tmp_path, monkeypatch):
    import shutil

    cut = two_ranks / "cut"
    first = np.concatenate([np.load(cut / f"items.{r}.npy") for r in range(2)])
    ckpt = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["loader"]["batch"] == 1  # stopped after one step by the time limit
    out = tmp_path / "resumed"
    shutil.copytree(cut, out)
    for f in out.glob("items.*"):
        f.unlink()
    result, seen = _single(store, out, monkeypatch)
    assert result.resumed_from == {"epoch": 0, "batch": 1}  # the saved position: 1 batch of each of 2 ranks
    rest = np.concatenate(seen)
    # rank r was dealt all its batches; only its first was trained: take each rank's first 16 items
    trained = np.concatenate([np.load(cut / f"items.{r}.npy")[:16] for r in range(2)])
    assert first.size > trained.size
    assert np.intersect1d(trained, rest).size == 0 and np.unique(rest).size == rest.size
    from loaders import SessionBatches

    fit = SessionBatches(store, "train", batch_size=32, subset="fit", holdout=0.05, order="quasi_random", seed=3)
    np.testing.assert_array_equal(np.sort(np.concatenate([trained, rest])), np.sort(fit.items))


def test_a_killed_rank_makes_the_other_fail_in_one_line(store, tmp_path):
    r0, r1 = _launch("kill", Path(store.path), tmp_path / "out")
    assert r1.returncode == -9
    assert r0.returncode == 1
    errors = [line for line in r0.stderr.replace("\r", "\n").splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "another rank is gone" in errors[0], r0.stderr[-2000:]
    assert "Traceback" not in r0.stderr


# --- every family's training loader, dealt to 2 ranks -------------------------------------------------

class _Captured(Exception):
    def __init__(self, loader):  # noqa: ANN001
        self.loader = loader


@pytest.fixture(scope="module")
def family_stores(store, frames_store, tmp_path_factory) -> dict:
    """Tiny stores of the three families the session fixtures lack (melon, fsd, speakers)."""
    from featurestore.ingest.fsd import ingest_fsd
    from featurestore.ingest.melon import ingest_melon
    from featurestore.ingest.speakers import ingest_speakers
    from featurestore.synth.fsd import synth_fsd
    from featurestore.synth.melon import synth_melon
    from featurestore.synth.speakers import synth_speakers

    root = tmp_path_factory.mktemp("families")
    synth_melon(root / "melon_raw", playlists=200, songs=300, seed=3, progress=False)
    ingest_melon(root / "melon_raw", root / "melon", progress=False)
    synth_fsd(root / "fsd_raw", curated=24, noisy=12, classes=4, test_clips=2, max_seconds=1.0, seed=3)
    ingest_fsd(root / "fsd_raw", root / "fsd", progress=False)
    synth_speakers(root / "spk_raw", speakers=4, utterances_per_speaker=5, test_utterances=2, seed=3)
    ingest_speakers(root / "spk_raw", root / "speakers", progress=False)
    return {"skip": Path(store.path), "yandex": Path(frames_store.path), "melon": root / "melon",
            "fsd": root / "fsd", "speakers": root / "speakers"}


# family -> (module, function, store, settings): the family's own train function builds its loader
FAMILY_TRAIN = {
    "skip (sessions)": ("models.skip.train", "train_skip", "skip", {"batch_size": 32, "seed": 3}),
    "melon (playlists)": ("models.melon.train", "train_melon", "melon", {"batch_size": 32, "seed": 3}),
    "melon title (titles)": ("models.melon.title", "train_title_model", "melon", {"batch_size": 32, "seed": 3}),
    "yandex (class-balanced)": ("models.yandex.train", "train_yandex", "yandex",
                                {"m": 2, "artists_per_batch": 3, "seed": 3}),
    "fsd (crop segments)": ("models.fsd.train", "train_fsd", "fsd", {"batch_size": 8, "crop": 16, "seed": 3}),
    "speakers (crop segments)": ("models.speakers.train", "train_speakers", "speakers",
                                 {"batch_size": 8, "crop": 16, "holdout": 0.25, "seed": 3}),
}


def _family_loader(name: str, stores: dict, out: Path, monkeypatch):
    """The training loader exactly as the family's train function hands it to ``fit`` (which is stopped there)."""
    import importlib

    module_name, function, store_key, settings = FAMILY_TRAIN[name]
    module = importlib.import_module(module_name)

    def capture(task, loader, out_dir, **kw):  # noqa: ANN001, ANN202
        raise _Captured(loader)

    monkeypatch.setattr(module, "fit", capture)
    with pytest.raises(_Captured) as caught:
        getattr(module, function)(stores[store_key], out, progress=False, **settings)
    return caught.value.loader


def _expected_epoch(loader, epoch: int, world: int) -> np.ndarray:
    """The items one epoch deals across ``world`` ranks: all of them, or for class-balanced (whole, ready-made)
    batches those of the batches that split evenly (fewer than ``world`` left over: the next epoch draws anew)."""
    ready = loader.ready_batches(epoch)
    if ready is None:
        return loader.items
    kept = ready[: len(ready) // world * world]
    assert len(ready) - len(kept) < world
    return np.concatenate(kept)


@pytest.mark.parametrize("name", [*FAMILY_TRAIN, "bucketed segments"])
def test_every_family_loader_deals_two_ranks_disjoint_complete_epochs(name, family_stores, frames_store, tmp_path,
                                                                       monkeypatch):
    if name == "bucketed segments":  # no family trains on it; the batch kind itself
        from loaders import SegmentBatches

        loader = SegmentBatches(frames_store, "train", batch_size=8, mode="bucketed", crop=20, seed=3)
    else:
        loader = _family_loader(name, family_stores, tmp_path, monkeypatch)
    global_batch = loader.batch_size
    for epoch in (0, 1):
        plans = []
        for rank in range(2):
            loader.shard(rank, 2)  # what fit does under torchrun
            plans.append(loader.epoch_batches(epoch))
        assert len(plans[0]) == len(plans[1]) > 0  # equal counts: no rank waits at a collective
        if loader.ready_batches(epoch) is None:  # dealt from an order: the global batch is kept
            assert loader.batch_size * 2 == global_batch and max(b.size for p in plans for b in p) <= global_batch // 2
        a, b = (np.concatenate(p) for p in plans)
        assert np.unique(a).size == a.size and np.unique(b).size == b.size
        assert np.intersect1d(a, b).size == 0, f"epoch {epoch}: a clip dealt to both ranks"
        np.testing.assert_array_equal(np.sort(np.concatenate([a, b])), np.sort(_expected_epoch(loader, epoch, 2)))


# --- elastic resume 1 -> 2 through the loop, on a second family ---------------------------------------

def test_mid_epoch_checkpoint_of_one_process_resumes_at_two_ranks(family_stores, tmp_path, monkeypatch):
    import shutil

    sys.path.insert(0, str(ROOT / "tests"))
    import ddp_worker

    import models.fsd.train as fsd_train

    monkeypatch.setattr(fsd_train, "fit", fsd_train.fit)  # restored after the test
    cut = tmp_path / "cut"
    seen = ddp_worker.record_fit_loader(fsd_train, cut, 0)
    first = fsd_train.train_fsd(family_stores["fsd"], cut, epochs=1, max_minutes=0, **ddp_worker.FSD_SETTINGS)
    assert first.stopped == "time_limit" and first.history[-1]["world_size"] == 1
    ckpt = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert ckpt["world_size"] == 1 and ckpt["loader"]["batch"] == 1 and ckpt["loader"]["batch_size"] == 8
    trained = seen[0]  # the one batch the single process trained on (it was dealt the whole epoch)
    all_items = np.concatenate(seen)

    out = tmp_path / "resumed"
    shutil.copytree(cut, out)
    (out / "items.0.npy").unlink()
    for r in _launch("fsd", family_stores["fsd"], out):
        assert r.returncode == 0, r.stderr[-3000:]
    a, b = (np.load(out / f"items.{r}.npy") for r in range(2))
    assert a.size and b.size and abs(a.size - b.size) <= 1
    together = np.concatenate([trained, a, b])
    assert np.unique(together).size == together.size  # nothing repeated: not the trained batch, not across ranks
    np.testing.assert_array_equal(np.sort(together), np.sort(all_items))  # nothing lost
    after = torch.load(out / "checkpoint.pt", weights_only=True)
    assert after["world_size"] == 2 and after["epoch"] == 1 and after["history"][-1]["world_size"] == 2
    assert after["loader"]["batch_size"] == 4  # the global batch of 8 kept: 2 ranks x 4
    assert after["history"][-1]["clips"] == all_items.size  # the epoch's row counts both legs
