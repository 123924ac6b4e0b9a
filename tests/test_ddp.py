"""Training across 2 processes on the CPU (gloo): DDP equivalence with one process at the same global
batch, disjoint and complete shards through the real loop, a mid-epoch checkpoint at 2 ranks resumed at
1, and a killed rank making the other fail in one line (tests/ddp_worker.py is each rank)."""

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
