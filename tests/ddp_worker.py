"""One rank of the DDP tests (tests/test_ddp.py starts two, by hand or with torchrun).

``python tests/ddp_worker.py SCENARIO STORE OUT``:

* ``train``: the skip model, one epoch at global batch 32 (dropout off) into OUT/full, then a run stopped
  by the time limit after its first step into OUT/cut; each rank records the session ids its training
  loader dealt it (OUT/<run>/items.<rank>.npy) through the real loop;
* ``kill``: rank 1 kills itself (SIGKILL) in its third step; rank 0 must then fail in one line;
* ``fsd``: the FSD tagger (a second family: crop batches, mixup, SpecAugment, clip weights), one epoch at
  global batch 8 into OUT, resuming OUT/checkpoint.pt when there is one (the elastic 1 -> 2 test leaves a
  single process's mid-epoch checkpoint there); each rank records the clips its training loader dealt it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import torch

import loaders.base
import models.fsd.train as fsd_train
import models.skip.train as skip_train

ORIGINAL_RUN = loaders.base.BatchLoader._run
SETTINGS = {"batch_size": 32, "model": {"dropout": 0.0, "d_model": 16, "blocks": 1}, "val_sample": 50,
            "progress": False, "seed": 3, "loader_threads": 1}


def record_items(out: Path, rank: int) -> list[np.ndarray]:
    """Record the item ids every sharded (training) loader deals this rank, from its resume point on."""
    seen: list[np.ndarray] = []
    run = ORIGINAL_RUN

    def recording(self, batches, start):  # noqa: ANN001, ANN202
        if self.split == "train" and getattr(self, "subset", "fit") != "holdout" and self.order == "quasi_random":
            seen.extend(b for _, b in batches[start:])
            out.mkdir(parents=True, exist_ok=True)
            np.save(out / f"items.{rank}.npy", np.concatenate(seen) if seen else np.zeros(0, np.int64))
        return run(self, batches, start)

    loaders.base.BatchLoader._run = recording
    return seen


FSD_SETTINGS = {"batch_size": 8, "crop": 16, "model": {"width": 4, "stages": 2}, "val_sample": 8, "progress": False,
                "seed": 3, "loader_threads": 1, "holdout": 0.25}


def record_fit_loader(module, out: Path, rank: int) -> list[np.ndarray]:  # noqa: ANN001
    """Record the item ids the loader that ``module`` hands to ``fit`` (its training loader, and no other)
    deals this rank, from its resume point on, into OUT/items.<rank>.npy."""
    seen: list[np.ndarray] = []
    fit = module.fit

    def recording_fit(task, loader, out_dir, **kw):  # noqa: ANN001, ANN202
        def recording(batches, start):  # noqa: ANN001, ANN202
            seen.extend(b for _, b in batches[start:])
            out.mkdir(parents=True, exist_ok=True)
            np.save(out / f"items.{rank}.npy", np.concatenate(seen) if seen else np.zeros(0, np.int64))
            return ORIGINAL_RUN(loader, batches, start)

        loader._run = recording  # this instance only
        return fit(task, loader, out_dir, **kw)

    module.fit = recording_fit
    return seen


def main() -> None:
    scenario, store, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    if scenario == "train":
        record_items(out / "full", rank)
        skip_train.train_skip(store, out / "full", epochs=1, **SETTINGS)
        record_items(out / "cut", rank)
        skip_train.train_skip(store, out / "cut", epochs=1, max_minutes=0, **SETTINGS)
    elif scenario == "kill":
        steps = [0]
        loss = skip_train.skip_loss

        def dying(model, batch):  # noqa: ANN001, ANN202
            steps[0] += 1
            if rank == 1 and steps[0] == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return loss(model, batch)

        skip_train.skip_loss = dying
        from featurestore.cli import main as cli

        cli(["train", "skip", store, str(out), "--epochs", "2", "--batch-size", "32", "--val-sample", "50"])
    elif scenario == "fsd":
        record_fit_loader(fsd_train, out, rank)
        fsd_train.train_fsd(store, out, epochs=1, **FSD_SETTINGS)


if __name__ == "__main__":
    main()
