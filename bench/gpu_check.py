"""``python -m bench.gpu_check [--dry-run] [--out REPORT.json]`` (``make gpu-check``): every CUDA path in one
call, one JSON report, under 8 minutes on one GPU.

It builds its own synthetic stores (``bench/gpu_stores.py``), then measures, each step in its own
``try`` so one failure still leaves the others and the report (rewritten after every step):

* ``loader_<kind>`` for every batch kind with ``device="cuda"`` (sessions at batch 4096 against the goal of
  10M sessions/s, playlists, crop segments, length buckets, class-balanced): items/s alone, and the data
  wait while a stand-in GPU load (fixed matmuls, synchronised every step) runs between batches;
* ``train_<family>`` for skip, melon (+ its title model), yandex, fsd and speakers: up to 2 epochs through
  the one training loop with mixed precision and ``torch.compile`` (items/s, data wait, epochs);
* ``ddp``: the skip model through ``torchrun`` with NCCL on every visible GPU (one process, no process
  group, on a one-GPU machine: NCCL refuses two ranks on one device);
* ``model_sizes``: each family's default model's parameters and all-reduce bytes per step (real sizes);
* ``appetite``: each batch kind's loader items/s over its family's training items/s (> 1: the loader
  keeps up with one GPU; the ratio is the number of GPUs one loader process could feed).

On the GPU a step that would start past the time budget is recorded as skipped. ``--dry-run`` runs every
step on the CPU at tiny sizes (gloo, 1 process), which the test suite does. Exit status 1 when any step failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

GOAL_SESSIONS_PER_S = 10_000_000
BUDGET_S = 400  # steps starting later are skipped: the last one (<= 1.2 min) ends before 8 minutes
KIND_FAMILY = {"sessions": "skip", "playlists": "melon", "crop": "fsd", "balanced": "yandex"}


class Check:
    """The report and its clock: ``step`` runs one step, records its figures or its error, rewrites the file."""

    def __init__(self, out: Path, report: dict, budget_s: float):
        self.out, self.report, self.start, self.budget_s = out, report, time.perf_counter(), budget_s

    def step(self, name: str, fn: Callable[[], dict], always: bool = False) -> None:
        t0 = time.perf_counter()
        if t0 - self.start > self.budget_s and not always:
            self.report[name] = {"ok": True, "skipped": f"time budget of {self.budget_s:.0f} s spent"}
            return
        try:
            self.report[name] = {"ok": True, **fn()}
        except Exception as e:  # recorded; the other steps still run
            self.report[name] = {"ok": False, "error": f"{type(e).__name__}: {e}".splitlines()[0][:500],
                                 "trace": traceback.format_exc()[-2000:]}
        self.report[name]["seconds"] = round(time.perf_counter() - t0, 2)
        self.report["total_seconds"] = round(time.perf_counter() - self.start, 1)
        self.out.write_text(json.dumps(self.report, indent=2, default=str))


# --- loaders ------------------------------------------------------------------------------------------

def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _items(batch: dict) -> int:
    return int(next(iter(batch.values())).shape[0])


def _stand_in(device: str, cuda: bool) -> Callable[[], None]:
    """A fixed GPU load in place of a model's step (matmuls, then a sync as a loss read-back would)."""
    import torch

    n, k = (4096, 4) if cuda else (64, 1)
    a = torch.randn(n, n, device=device)

    def step() -> None:
        x = a
        for _ in range(k):
            x = x @ a
        float(x[0, 0])

    return step


def _loader_figures(make: Callable, device: str, cuda: bool, min_batches: int) -> dict:
    loader = make()
    for _ in loader:  # warm: numba compile, caches, pinned buffers
        pass
    _sync(device)
    epoch, n, batches, t0 = 1, 0, 0, time.perf_counter()
    while batches < min_batches:
        loader.set_epoch(epoch)
        for b in loader:
            n, batches = n + _items(b), batches + 1
        epoch += 1
    _sync(device)
    alone = time.perf_counter() - t0
    step = _stand_in(device, cuda)
    step()
    s0 = time.perf_counter()
    step()
    step_s = time.perf_counter() - s0
    loader.set_epoch(epoch)
    wait, t0, it = 0.0, time.perf_counter(), iter(loader)
    while True:
        w0 = time.perf_counter()
        try:
            next(it)
        except StopIteration:
            break
        wait += time.perf_counter() - w0
        step()
    busy = time.perf_counter() - t0
    return {"batch_size": loader.batch_size, "batches": batches, "items": n, "items_per_s": n / alone,
            "stand_in_step_ms": 1000 * step_s, "data_wait_share_under_load": wait / busy}


def _loaders(stores: dict, device: str, cuda: bool) -> dict[str, Callable[[], object]]:
    from loaders import PlaylistBatches, SegmentBatches, SessionBatches

    t = 4 if cuda else 1
    b = 64 if cuda else 8
    return {
        "sessions": lambda: SessionBatches(stores["spotify"], "train", batch_size=4096 if cuda else 64,
                                           order="random", device=device, threads=t),
        "playlists": lambda: PlaylistBatches(stores["melon"], "train", 256 if cuda else 32, denoise=0.7,
                                             device=device, threads=t),
        "crop": lambda: SegmentBatches(stores["fsd"], "train", batch_size=b, crop=128 if cuda else 16,
                                       mode="crop", device=device, threads=t),
        "bucketed": lambda: SegmentBatches(stores["yandex"], "train", batch_size=b, crop=81, mode="bucketed",
                                           device=device, threads=t),
        "balanced": lambda: SegmentBatches(stores["yandex"], "train", balanced=(4, 16) if cuda else (2, 3),
                                           label="artist", crop=81, device=device, threads=t),
    }


def _loader_step(kind: str, make: Callable, device: str, cuda: bool) -> dict:
    out = _loader_figures(make, device, cuda, min_batches=40 if cuda else 4)
    if kind == "sessions":
        out |= {"goal_sessions_per_s": GOAL_SESSIONS_PER_S, "share_of_goal": out["items_per_s"] / GOAL_SESSIONS_PER_S}
    return out


# --- training -----------------------------------------------------------------------------------------

def _trainers(stores: dict, work: Path, device: str, cuda: bool) -> dict[str, Callable[[], object]]:
    from models.fsd.train import train_fsd
    from models.melon.train import train_melon
    from models.skip.train import train_skip
    from models.speakers.train import train_speakers
    from models.yandex.train import train_yandex

    common = {"device": device, "progress": False, "max_minutes": 1.0 if cuda else 0.25,
              "epochs": 2 if cuda else 1}
    val = {"val_sample": 200 if cuda else 8}
    return {
        "skip": lambda: train_skip(stores["spotify"], work / "skip", batch_size=1024 if cuda else 64, **val, **common),
        "melon": lambda: train_melon(stores["melon"], work / "melon", batch_size=256 if cuda else 32, title_share=0.3,
                                     **val, **common),
        "yandex": lambda: train_yandex(stores["yandex"], work / "yandex", m=4 if cuda else 2,
                                       artists_per_batch=16 if cuda else 3, **val, **common),
        "fsd": lambda: train_fsd(stores["fsd"], work / "fsd", batch_size=64 if cuda else 8, crop=128 if cuda else 16,
                                 **val, **common),
        "speakers": lambda: train_speakers(stores["speakers"], work / "speakers", batch_size=64 if cuda else 8,
                                           crop=128 if cuda else 16, **val, **common),
    }


def _train_step(train: Callable, device: str) -> dict:
    from models.training import amp_dtype, parse_device

    result = train()
    extra = {}
    if hasattr(result, "dae"):  # melon: the autoencoder's figures, and the title model's file
        extra = {"title_model": str(result.title_model), "title_seconds": result.title_seconds}
        result = result.dae
    dtype = amp_dtype(parse_device(device))
    last = result.history[-1] if result.history else {}  # the last epoch: warm (compiled, caches built)
    return {"device": device, "amp": str(dtype) if dtype else None, "compiled": device.startswith("cuda"),
            "epochs": result.epochs_completed, "stopped": result.stopped, "item_name": result.item_name,
            "items_per_s": result.items_per_s, "data_wait_share": result.data_wait_share,
            "last_epoch": {"epoch": last.get("epoch"), "items_per_s": last.get(f"{result.item_name}_per_s"),
                           "data_wait_share": last.get("data_wait_share")},
            "metric": result.metric, "best_metric": result.best_metric, **extra}


def _ddp(store: Path, out: Path, device: str, procs: int, batch: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_port", str(port),
           "-m", "featurestore.cli", "train", "skip", str(store), str(out), "--epochs", "1", "--device", device,
           "--batch-size", str(batch), "--val-sample", "200", "--max-minutes", "0.75"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if p.returncode != 0:
        raise RuntimeError(f"torchrun exited {p.returncode}: {p.stderr[-1500:]}")
    with open(out / "history.csv") as f:
        row = list(csv.DictReader(f))[-1]
    # one process starts no process group (nothing to reduce): NCCL needs 2 GPUs or more
    backend = ("nccl" if device == "cuda" else "gloo") if procs > 1 else "none (one process)"
    return {"backend": backend, "processes": procs,
            "sessions_per_s": float(row["sessions_per_s"]), "data_wait_share": float(row["data_wait_share"]),
            "world_size": int(row["world_size"])}


def _appetite(report: dict) -> dict:
    """Loader items/s alone over the family's training items/s (batch sizes as in the steps above)."""
    out = {}
    for kind, family in KIND_FAMILY.items():
        loader, train = report.get(f"loader_{kind}", {}), report.get(f"train_{family}", {})
        if loader.get("items_per_s") and train.get("items_per_s"):
            out[kind] = {"family": family, "loader_items_per_s": loader["items_per_s"],
                         "train_items_per_s": train["items_per_s"],
                         "loader_over_train": loader["items_per_s"] / train["items_per_s"]}
    if not out:
        raise RuntimeError("no loader and training figures to compare")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="Every step on the CPU at tiny sizes.")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = ap.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        print("no CUDA device: run with --dry-run to check the plumbing on the CPU", file=sys.stderr)
        return 1
    device, gpus = ("cuda", torch.cuda.device_count()) if cuda else ("cpu", 1)
    report: dict = {"dry_run": args.dry_run, "torch": torch.__version__, "device": device,
                    "gpus": [torch.cuda.get_device_name(i) for i in range(gpus)] if cuda else [],
                    "cpus": os.cpu_count()}
    check = Check(args.out, report, BUDGET_S if cuda else float("inf"))  # a loaded CPU may take longer: no skips
    from bench.gpu_stores import build_stores
    from bench.model_sizes import sizes_report

    check.step("model_sizes", sizes_report)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stores: dict = {}
        check.step("stores", lambda: {"families": list(stores.update(build_stores(work, "gpu" if cuda else "dry"))
                                                         or stores)})
        for kind, make in _loaders(stores, device, cuda).items():
            check.step(f"loader_{kind}", lambda k=kind, m=make: _loader_step(k, m, device, cuda))
        for family, train in _trainers(stores, work / "train", device, cuda).items():
            check.step(f"train_{family}", lambda t=train: _train_step(t, device))
            if family == "skip":  # DDP next: before the budget can run out
                check.step("ddp", lambda: _ddp(stores["spotify"], work / "ddp", device, gpus,
                                               1024 * gpus if cuda else 64))
    check.step("appetite", lambda: _appetite(report), always=True)
    print(f"wrote {args.out}")
    return 0 if all(v.get("ok", True) for v in report.values() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    sys.exit(main())
