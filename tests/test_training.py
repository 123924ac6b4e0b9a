"""The shared training loop (models/training.py) on a tiny model and a real SessionBatches loader."""

from __future__ import annotations

import csv
import itertools
import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.optim.optimizer import register_optimizer_step_pre_hook

from featurestore.store.atomic import atomic_write, atomic_write_bytes
from featurestore.store.errors import FstoreError
from loaders import SessionBatches
from models.training import LR_FLOOR, TrainTask, amp_dtype, fit, parse_device, seed_everything, warmup_cosine


class TinySkip(torch.nn.Module):
    """A logit per second-half position from its track features, with dropout (so the RNG matters)."""

    def __init__(self, n_features: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(n_features, 8), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                       torch.nn.Linear(8, 1))

    def forward(self, tgt_features: torch.Tensor) -> torch.Tensor:
        return self.net(tgt_features).squeeze(-1)


def tiny_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    mask = batch["tgt_mask"].float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch["tgt_features"]), batch["tgt_skip"],
                                                                reduction="none")
    return (loss * mask).sum() / mask.sum()


def loader(store, seed: int = 0) -> SessionBatches:
    return SessionBatches(store, "train", batch_size=64, order="quasi_random", seed=seed, threads=1)


def task(store, validate=None, metric: str = "val_loss", higher_is_better: bool = False) -> TrainTask:
    seed_everything(0)
    n = len(loader(store).feature_columns)
    return TrainTask(model=TinySkip(n), config={"n_features": n}, loss=tiny_loss, validate=validate, metric=metric,
                     higher_is_better=higher_is_better, item_name="sessions", extra={"note": "tiny"})


def test_history_csv_events_and_checkpoints(store, tmp_path):
    values = iter([0.9, 0.7])
    r = fit(task(store, validate=lambda m: {"val_loss": next(values), "val_other": 1.0}), loader(store), tmp_path,
            epochs=2, progress=False)
    assert r.stopped == "completed" and r.epochs_completed == 2 and r.best_epoch == 2 and r.best_metric == 0.7
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "val_other", "sessions_per_s", "data_wait_share",
                             "seconds", "sessions", "world_size"]
    assert [float(row["val_loss"]) for row in rows] == [0.9, 0.7]
    assert all(int(row["sessions"]) == store.tables["train"]["rows"] and row["world_size"] == "1" for row in rows)
    assert all(0.0 <= float(row["data_wait_share"]) <= 1.0 and float(row["sessions_per_s"]) > 0 for row in rows)

    events = list(tmp_path.glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert {"train/train_loss", "val/val_loss", "throughput/sessions_per_s", "throughput/data_wait_share",
            "train/lr"} <= set(acc.Tags()["scalars"])
    assert [e.value for e in acc.Scalars("val/val_loss")] == pytest.approx([0.9, 0.7])

    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "loader", "rng", "config", "history"} <= set(ckpt)
    assert ckpt["epoch"] == 2 and ckpt["note"] == "tiny"
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == 2 and best["val_loss"] == 0.7 and best["config"] == {"n_features": 29}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic writes leave nothing behind


def test_resume_mid_epoch_gives_the_uninterrupted_weights(store, tmp_path):
    whole = fit(task(store), loader(store), tmp_path / "whole", epochs=2, progress=False)

    cut = fit(task(store), loader(store), tmp_path / "cut", epochs=2, max_minutes=0, progress=False)
    assert cut.stopped == "time_limit" and cut.epochs_completed == 0 and cut.items_trained == 64
    rest = fit(task(store), loader(store), tmp_path / "cut", epochs=2, progress=False)
    assert rest.resumed_from == {"epoch": 0, "batch": 1}
    assert rest.items_trained + cut.items_trained == whole.items_trained

    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    for k, v in a["model"].items():  # same batches, same dropout masks, same optimizer steps
        assert torch.equal(v, b["model"][k]), k
    # the interrupted epoch's history covers all of it
    assert [h["sessions"] for h in rest.history] == [h["sessions"] for h in whole.history]
    assert rest.history[0]["train_loss"] == pytest.approx(whole.history[0]["train_loss"], rel=1e-5)


def test_early_stopping_then_rerun_trains_nothing(store, tmp_path):
    r = fit(task(store, validate=lambda m: {"val_aa": 0.5}, metric="val_aa", higher_is_better=True), loader(store),
            tmp_path, epochs=5, patience=1, progress=False)
    assert r.stopped == "early_stopping" and r.epochs_completed == 2 and r.best_epoch == 1
    assert not r.already_trained

    again = fit(task(store), loader(store), tmp_path, epochs=9, progress=False)
    assert again.already_trained and again.items_trained == 0 and again.stopped == "early_stopping"
    assert again.note.startswith("already trained: stopped early at epoch 2/9")
    assert str(tmp_path / "best.pt") in again.note and again.lines()[0] == again.note and len(again.lines()) == 2


def test_completed_rerun_says_so_and_more_epochs_continue(store, tmp_path):
    fit(task(store), loader(store), tmp_path, epochs=1, progress=False)
    again = fit(task(store), loader(store), tmp_path, epochs=1, progress=False)
    assert again.already_trained and again.items_trained == 0
    assert again.note == (f"already trained: 1/1 epochs completed; best model {tmp_path / 'best.pt'} (epoch 1); "
                          "use another OUT_DIR or more --epochs")
    more = fit(task(store), loader(store), tmp_path, epochs=2, progress=False)
    assert not more.already_trained and more.epochs_completed == 2 and more.resumed_from == {"epoch": 1, "batch": 0}


def test_metric_direction_lower_is_better(store, tmp_path):
    values = itertools.count(3, -1)
    r = fit(task(store, validate=lambda m: {"val_loss": float(next(values))}), loader(store), tmp_path, epochs=3,
            patience=1, progress=False)
    assert r.stopped == "completed" and r.best_epoch == 3 and r.best_metric == 1.0


def test_checkpoint_of_other_config_or_loader_rejected(store, tmp_path):
    fit(task(store), loader(store), tmp_path, epochs=2, max_minutes=0, progress=False)
    other = task(store)
    other.config = {"n_features": 29, "width": 8}
    with pytest.raises(FstoreError, match=r"width \(checkpoint 'missing', requested 8\)"):
        fit(other, loader(store), tmp_path, epochs=2, progress=False)
    with pytest.raises(FstoreError, match="cannot resume mid-epoch.*seed"):
        fit(task(store), loader(store, seed=1), tmp_path, epochs=2, progress=False)
    old = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del old["rng"], old["partial"]  # as written before the shared loop
    torch.save(old, tmp_path / "checkpoint.pt")
    with pytest.raises(FstoreError, match=r"not a resumable checkpoint of this version \(no partial, rng\)"):
        fit(task(store), loader(store), tmp_path, epochs=2, progress=False)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")

    def broken(f) -> None:
        f.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    atomic_write(path, lambda f: torch.save({"x": 1}, f))
    assert torch.load(path, weights_only=True) == {"x": 1}


def test_atomic_write_to_a_fifo_writes_through_and_keeps_the_node(tmp_path):
    """``--out /dev/null`` or a pipe: the bytes go to the node, which stays what it was (a rename would
    have replaced the device or FIFO with a regular file)."""
    import os
    import stat
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    atomic_write_bytes(fifo, b"submission")
    reader.join(timeout=60)
    assert got == [b"submission"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_devices_and_precision():
    assert parse_device("cpu") == torch.device("cpu") and amp_dtype(torch.device("cpu")) is None
    for bad in ("gpu", "mps", "cuda:x", ""):
        with pytest.raises(FstoreError, match="unknown device"):
            parse_device(bad)
    if torch.cuda.is_available():
        assert parse_device("cuda:0").type == "cuda"
        assert amp_dtype(torch.device("cuda")) in (torch.bfloat16, torch.float16)
        with pytest.raises(FstoreError, match="CUDA device"):
            parse_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(FstoreError, match="CUDA is not available"):
            parse_device("cuda")


def test_frame_loader_resumes_mid_epoch_too(tmp_path):
    """The loop is loader-agnostic: SegmentBatches (frame crops, artist labels) resumes the same way."""
    from featurestore.ingest.yandex import ingest_yandex
    from featurestore.synth.yandex import synth_yandex
    from loaders import SegmentBatches

    synth_yandex(tmp_path / "raw", tracks=48, artists=6, test_tracks=4, seed=3)
    ingest_yandex(tmp_path / "raw", tmp_path / "y.fstore", progress=False)

    def run(out, **kw):
        seed_everything(0)
        frames = SegmentBatches(tmp_path / "y.fstore", batch_size=8, crop=16, label="artist", seed=0, threads=1)
        model = torch.nn.Linear(512, 6)

        def loss(m, batch):
            return torch.nn.functional.cross_entropy(m(batch["frames"].mean(1)), batch["label"].long())

        return fit(TrainTask(model=model, config={"bins": 512}, loss=loss), frames, tmp_path / out, epochs=2,
                   progress=False, **kw)

    whole = run("whole")
    assert run("cut", max_minutes=0).stopped == "time_limit"
    rest = run("cut")
    assert rest.resumed_from == {"epoch": 0, "batch": 1} and rest.epochs_completed == 2
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["items"] for h in rest.history] == [h["items"] for h in whole.history] == [48, 48]


# --- time limits: the schedule by time, a model at any deadline -------------------------------------

class FakeClock:
    """Seconds that pass only when a training step says so: time limits tested without sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def timed_task(store, clock: FakeClock, seconds_per_step: float) -> TrainTask:
    t = task(store)

    def loss(model, batch):
        clock.now += seconds_per_step
        return tiny_loss(model, batch)

    t.loss = loss
    return t


@pytest.fixture
def lr_trace():
    """The learning rate of every optimizer step taken while the test runs."""
    lrs: list[float] = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"]))
    yield lrs
    handle.remove()


def _cosine(share: float, warmup: float = 0.05) -> float:
    return LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * min(1.0, (share - warmup) / (1 - warmup))))


def test_a_time_budget_sizes_the_schedule_and_a_resume_continues_it(store, tmp_path, lr_trace):
    clock, lr, epochs = FakeClock(), 1e-2, 50
    steps = epochs * len(loader(store))  # by epochs, 7 steps would be at the start of the schedule
    r = fit(timed_task(store, clock, 10.0), loader(store), tmp_path, epochs=epochs, lr=lr, max_minutes=1,
            progress=False, clock=clock)
    # 10 s a step, 60 s: the 7th step ends past the deadline; the first had no time measured yet
    assert r.stopped == "time_limit" and r.items_trained == 7 * 64 and clock.now == 70
    assert lr_trace == pytest.approx([lr / int(0.05 * steps), *(lr * _cosine(k / 6) for k in range(1, 6)),
                                      lr * LR_FLOOR])
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(lr * LR_FLOOR)  # annealed at the deadline
    assert ckpt["elapsed_s"] == 70

    lr_trace.clear()  # another minute: the schedule spans 70 + 60 s and goes on from 70 s, no new warmup
    again = fit(timed_task(store, clock, 10.0), loader(store), tmp_path, epochs=epochs, lr=lr, max_minutes=1,
                progress=False, clock=clock)
    assert again.resumed_from == {"epoch": 0, "batch": 7}
    assert again.items_trained == store.tables["train"]["rows"] - 7 * 64 + 4 * 64  # the epoch's rest, 4 steps more
    assert lr_trace == pytest.approx([lr * _cosine(s / 130) for s in range(70, 130, 10)] + [lr * LR_FLOOR])
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["elapsed_s"] == 140


def test_without_a_time_limit_the_schedule_is_sized_by_epochs(store, tmp_path, lr_trace):
    clock = FakeClock()
    fit(timed_task(store, clock, 10.0), loader(store), tmp_path, epochs=1, lr=1.0, progress=False, clock=clock)
    factor = warmup_cosine(len(loader(store)), 0.05)
    assert lr_trace == pytest.approx([factor(s) for s in range(len(loader(store)))])


def test_a_time_limit_before_the_first_validation_still_leaves_a_model(store, tmp_path):
    def validate(model):
        calls.append(model.training)
        torch.rand(3)  # validation may draw random numbers: the interrupted run must not train differently
        return {"val_loss": 0.5}

    calls: list[bool] = []
    whole = fit(task(store, validate=validate), loader(store), tmp_path / "whole", epochs=1, progress=False)
    calls.clear()
    cut = fit(task(store, validate=validate), loader(store), tmp_path / "cut", epochs=1, max_minutes=0,
              progress=False)
    n = len(loader(store))
    assert cut.stopped == "time_limit" and cut.epochs_completed == 0 and cut.items_trained == 64
    assert calls == [False]  # validated once, in eval mode, after its only step
    assert cut.best_checkpoint == tmp_path / "cut" / "best.pt" and cut.best_metric == 0.5
    assert cut.best_epoch == math.floor(1000 / n) / 1000 == torch.load(cut.best_checkpoint, weights_only=True)["epoch"]
    with open(tmp_path / "cut" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and float(rows[0]["epoch"]) == cut.best_epoch and rows[0]["sessions"] == "64"
    assert float(rows[0]["val_loss"]) == 0.5 and cut.history[0]["epoch"] == cut.best_epoch

    rest = fit(task(store, validate=validate), loader(store), tmp_path / "cut", epochs=1, progress=False)
    assert rest.epochs_completed == 1 and [h["epoch"] for h in rest.history] == [1]  # the epoch's row replaced it
    with open(tmp_path / "cut" / "history.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1"]
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a) and whole.epochs_completed == 1


def test_a_time_limit_after_some_epochs_validates_the_annealed_part_too(store, tmp_path):
    clock, n = FakeClock(), len(loader(store))
    values = iter([0.9, 0.8])
    # n + 2 steps fit in the minute: epoch 1 (validated: 0.9), then 3 steps of epoch 2, validated at the limit
    t = timed_task(store, clock, 60 / (n + 2.5))
    t.validate = lambda m: {"val_loss": next(values)}
    r = fit(t, loader(store), tmp_path, epochs=5, max_minutes=1, progress=False, clock=clock)
    assert r.stopped == "time_limit" and r.epochs_completed == 1
    assert r.best_metric == 0.8 and r.best_epoch == 1 + math.floor(3000 / n) / 1000
    assert [h["val_loss"] for h in r.history] == [0.9, 0.8]
