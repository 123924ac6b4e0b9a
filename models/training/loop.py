"""The loop: :class:`TrainTask` (what a family supplies), :func:`fit`, :class:`FitResult`."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from featurestore.store.errors import FstoreError

from . import distributed as ddp
from .records import BEST, CHECKPOINT, HISTORY, Events, load_checkpoint, save, write_history_csv
from .runtime import amp_dtype, autocast, parse_device, rng_state, set_rng_state

__all__ = ["LR_FLOOR", "FitResult", "ResumableLoader", "TrainTask", "fit", "warmup_cosine"]

PROGRESS_EVERY = 20  # steps between progress updates: the only host-device syncs of the loop
LR_FLOOR = 0.02  # the schedule ends at this share of the peak learning rate


class ResumableLoader(Protocol):
    batches_done: int

    def __iter__(self) -> Iterator[dict]: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def _anneal(progress: float, floor: float) -> float:
    """Cosine decay from 1 at ``progress`` 0 to ``floor`` at 1 (and after)."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def warmup_cosine(total_steps: int, warmup: float, floor: float = LR_FLOOR,
                  time_progress: Callable[[], float] | None = None) -> Callable[[int], float]:
    """LR factor: linear warmup over ``warmup`` of the schedule, then cosine decay to ``floor`` of the peak.

    The schedule spans ``total_steps`` steps or, with ``time_progress`` (the share of a time budget used
    so far, read at each step), whichever of the two ends first: once the time's share is ahead of the
    steps', the factor follows the time (``floor`` from the end of the budget on).
    """
    warm = max(1, int(warmup * total_steps))

    def by_steps(step: int) -> float:
        return (step + 1) / warm if step < warm else _anneal((step - warm) / max(1, total_steps - warm), floor)

    if time_progress is None:
        return by_steps
    time_share = time_progress

    def by_steps_or_time(step: int) -> float:
        share = time_share()
        if share <= step / max(1, total_steps):
            return by_steps(step)
        return share / warmup if share < warmup else _anneal((share - warmup) / max(1e-9, 1 - warmup), floor)

    return by_steps_or_time


@dataclass
class _Timer:
    """A run's clock: training time (this call's since its loop began, plus earlier calls' from the
    checkpoint) against the time budget (``limit_s`` per call, from the call's start)."""

    clock: Callable[[], float]
    limit_s: float | None
    start: float  # clock() when the call began: the deadline counts from here
    before: float = 0.0  # training seconds of earlier calls
    began: float | None = None  # clock() when this call's first epoch began
    shared: float | None = None  # across ranks: the schedule's time share, agreed at each sync (else None)

    @property
    def deadline(self) -> float:
        return math.inf if self.limit_s is None else self.start + self.limit_s

    def begin(self) -> None:
        self.began = self.clock()

    def elapsed(self) -> float:
        return self.before + (0.0 if self.began is None else self.clock() - self.began)

    def progress(self) -> float:
        """Share of the run's training time used: (earlier calls' + this call's so far) / (earlier calls'
        + this call's from its first epoch to its deadline; before that, its whole limit)."""
        left = (self.limit_s or 0.0) if self.began is None else self.deadline - self.began
        budget, used = self.before + max(0.0, left), self.elapsed()
        return used / budget if budget > 0 else (math.inf if used > 0 else 0.0)

    def over(self) -> bool:
        return self.clock() > self.deadline

    def schedule_progress(self) -> float:
        """The time share the LR schedule follows: this process's own, or across ranks the one they last
        agreed on (so every rank steps with the same learning rate)."""
        return self.progress() if self.shared is None else self.shared


# --- what a family supplies, what fit returns -------------------------------------------------------

def _leading_dim(batch: dict) -> int:
    return int(next(iter(batch.values())).shape[0])


@dataclass
class TrainTask:
    """What a model family hands to :func:`fit`.

    ``loss(model, batch)`` returns the scalar loss of a batch; ``model`` may be the ``torch.compile``-d
    wrapper, so call it (``model(...)``), not its other methods. ``validate(model)`` returns metrics by
    name (run in eval mode under ``no_grad`` and :func:`autocast`); ``metric`` names the one that drives
    early stopping and ``best.pt``. ``extra`` is saved in both checkpoints (e.g. the feature columns).
    """

    model: torch.nn.Module
    config: dict
    loss: Callable[[torch.nn.Module, dict], torch.Tensor]
    validate: Callable[[torch.nn.Module], dict[str, float]] | None = None
    metric: str = "val_loss"
    higher_is_better: bool = False
    batch_items: Callable[[dict], int] = _leading_dim
    item_name: str = "items"
    extra: dict = field(default_factory=dict)
    # across ranks: the number the loss averages over (e.g. real positions), when it differs between
    # ranks' batches; each rank's loss is then reweighted so the DDP-averaged gradient is the global mean's
    loss_units: Callable[[dict], torch.Tensor] | None = None
    find_unused_parameters: bool = False  # DistributedDataParallel's, for a model that skips parameters


@dataclass
class FitResult:
    """What a :func:`fit` call did (throughput numbers cover this call only)."""

    out_dir: Path
    checkpoint: Path
    best_checkpoint: Path | None
    history_csv: Path
    metric: str
    epochs_requested: int
    epochs_completed: int
    best_metric: float  # nan without validation
    best_epoch: float  # 1-based; 0 when none; a fraction (e.g. 0.25) for a validation at a time limit mid-epoch
    stopped: str  # "completed", "early_stopping" or "time_limit"
    items_trained: int
    train_seconds: float  # time in training steps (batch wait + compute), validation excluded
    items_per_s: float
    data_wait_share: float  # time blocked waiting for the next batch / train_seconds
    resumed_from: dict | None  # {"epoch": e, "batch": b} when a checkpoint was resumed
    already_trained: bool  # the checkpoint had nothing left to do: this call trained nothing
    item_name: str = "items"
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    def lines(self) -> list[str]:
        history = f"history        {self.history_csv} (TensorBoard events in {self.out_dir})"
        if self.already_trained:
            return [self.note, history]
        out = [f"epochs         {self.epochs_completed}/{self.epochs_requested} ({self.stopped})",
                f"best {self.metric:<9} {self.best_metric:.4f} (epoch {self.best_epoch})",
                f"{self.item_name:<14} {self.items_trained} in {self.train_seconds:.1f} s "
                f"({self.items_per_s:,.0f} {self.item_name}/s, data wait {100 * self.data_wait_share:.1f} %)",
                f"checkpoint     {self.checkpoint}",
                f"best model     {self.best_checkpoint or '-'}",
                history]
        if self.resumed_from:
            out.append(f"resumed from   epoch {self.resumed_from['epoch']}, batch {self.resumed_from['batch']}")
        return out

    @property
    def note(self) -> str:
        """Why nothing was trained, when ``already_trained``."""
        best = f"best model {self.best_checkpoint} (epoch {self.best_epoch})"
        if self.stopped == "early_stopping":
            return (f"already trained: stopped early at epoch {self.epochs_completed}/{self.epochs_requested} "
                    f"(early stopping: no better {self.metric} after epoch {self.best_epoch}); {best}; "
                    "use another OUT_DIR or --no-resume to train again")
        return (f"already trained: {self.epochs_completed}/{self.epochs_requested} epochs completed; {best}; "
                "use another OUT_DIR or more --epochs")


def _epoch_line(record: dict, item_name: str) -> str:
    metrics = [f"{k} {v:.4f}" for k, v in record.items() if k == "train_loss" or k.startswith("val")]
    return (f"epoch {record['epoch']}: {', '.join(metrics)}; {record[f'{item_name}_per_s']:,.0f} {item_name}/s, "
            f"data wait {100 * record['data_wait_share']:.1f} %, {record['seconds']:.1f} s")


# --- one epoch ------------------------------------------------------------------------------------

def _fresh_epoch() -> dict:
    return {"loss_sum": 0.0, "steps": 0, "items": 0, "seconds": 0.0, "wait": 0.0}


def _sync(acc: dict, timer: _Timer, now: float) -> tuple[bool, float]:
    """Across ranks, one all_reduce (MAX): whether any rank is past the deadline and the worst data-wait
    share; the schedule's time share is agreed on too."""
    over, wait, share = ddp.max_across([float(now > timer.deadline), acc["wait"] / max(acc["seconds"], 1e-9),
                                        timer.progress() if timer.limit_s is not None else 0.0])
    if timer.limit_s is not None:
        timer.shared = share
    return over > 0, wait


def _run_epoch(loader: ResumableLoader, step: Callable[[dict], torch.Tensor], task: TrainTask, acc: dict,
               total: dict, timer: _Timer, bar: tqdm) -> bool:
    """Train the (rest of the) loader's current epoch, adding to the ``acc`` (epoch) and ``total`` (call)
    sums; True when the time limit interrupted it before its last batch. Across ranks the time limit and
    the progress bar's data wait are agreed on (:func:`_sync`) after the first step and every
    ``PROGRESS_EVERY``: every rank stops after the same step (ranks have equal batch counts)."""
    shared = ddp.world_size() > 1
    loss_sum = None  # on the device: read back only every PROGRESS_EVERY steps and at the end
    batches = iter(loader)
    interrupted = False
    clock, deadline = timer.clock, timer.deadline
    try:
        while True:
            t0 = clock()
            try:
                batch = next(batches)
            except StopIteration:
                break
            t1 = clock()
            loss = step(batch)
            loss_sum = loss if loss_sum is None else loss_sum + loss
            items = task.batch_items(batch)
            t2 = clock()
            for a in (acc, total):
                a["steps"] += 1
                a["items"] += items
                a["seconds"] += t2 - t0
                a["wait"] += t1 - t0
            bar.update(1)
            # this call's step count: the same on every rank (a resumed epoch's earlier part is rank 0's alone)
            synced = shared and (total["steps"] == 1 or total["steps"] % PROGRESS_EVERY == 0)
            over, wait = _sync(acc, timer, t2) if synced else (t2 > deadline, acc["wait"] / max(acc["seconds"], 1e-9))
            if acc["steps"] % PROGRESS_EVERY == 0:
                bar.set_postfix({"loss": f"{(acc['loss_sum'] + float(loss_sum)) / acc['steps']:.4f}",
                                 f"{task.item_name}/s": f"{acc['items'] / max(acc['seconds'], 1e-9):,.0f}",
                                 "wait": f"{100 * wait:.0f}%"})
            if (synced or not shared) and over and loader.batches_done < len(loader):
                interrupted = True
                break
    finally:
        close = getattr(batches, "close", None)  # a generator: stop its prefetch threads now
        if close is not None:
            close()
        bar.close()
    if loss_sum is not None:
        acc["loss_sum"] += float(loss_sum)
    return interrupted


@contextlib.contextmanager
def _rng_kept() -> Iterator[None]:
    """Leave the global RNG streams as they were (a validation the uninterrupted run never makes)."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def _decorrelate_ranks() -> None:
    """Give each rank its own torch stream (mixup, SpecAugment, masks, dropout): every rank starts from the
    same seed or rank 0's checkpoint, so without this all ranks would draw the same augmentations. The
    new seed comes from the shared stream, so a run is still reproducible at a given world size."""
    base = int(torch.randint(0, 2**62, (1,)).item())
    torch.manual_seed(base + ddp.rank())


# --- the run --------------------------------------------------------------------------------------

class _Run:
    """One :func:`fit` call: its set-up (``__init__``) and the steps of the loop, each readable alone."""

    def __init__(self, task: TrainTask, loader: ResumableLoader, out_dir: Path, *, epochs: int,
                 device: str | torch.device, lr: float, weight_decay: float, warmup: float, patience: int,
                 clip_norm: float | None, resume: bool, progress: bool, timer: _Timer):
        self.task, self.loader, self.epochs, self.patience = task, loader, epochs, patience
        self.device = parse_device(ddp.init_from_env(device))
        self.world, self.main = ddp.world_size(), ddp.is_main()  # rank 0 alone writes files and prints
        self.clip_norm, self.progress, self.timer = clip_norm, progress and self.main, timer
        self.out_dir = out_dir
        self.ckpt_path, self.best_path, self.history_path = out_dir / CHECKPOINT, out_dir / BEST, out_dir / HISTORY
        ckpt = self._read_checkpoint() if resume else None  # rank 0's, on every rank
        if self.main:
            out_dir.mkdir(parents=True, exist_ok=True)
            if ckpt is None:  # a fresh run: files of an earlier run in out_dir are stale
                for old in (self.best_path, self.history_path, *out_dir.glob("events.out.tfevents.*")):
                    old.unlink(missing_ok=True)
        if self.world > 1:
            self._shard(loader)

        self.model = task.model.to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        by_time = timer.schedule_progress if timer.limit_s is not None else None
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(epochs * len(loader), warmup, time_progress=by_time))
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype(self.device) == torch.float16)
        self.state: dict[str, Any] = {"epoch": 0, "best_metric": float("nan"), "best_epoch": 0, "bad_epochs": 0,
                                      "stopped": "", "history": [], "partial": _fresh_epoch(), "elapsed_s": 0.0}
        self.resumed_from = self._resume(ckpt) if ckpt is not None else None
        if self.world > 1:
            _decorrelate_ranks()
        self.already_trained = ckpt is not None and (self.state["stopped"] == "early_stopping"
                                             or self.state["epoch"] >= epochs)
        self.stopped = self.state["stopped"] if self.already_trained else ""
        self.total = _fresh_epoch()  # this call's steps, for the result
        self.step_model = self.model
        if self.world > 1:  # gradients averaged across ranks; rank 0's weights broadcast here
            self.step_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=task.find_unused_parameters)
        if self.device.type == "cuda":
            self.step_model = torch.compile(self.step_model)
        self.events: Events | None = None

    def _read_checkpoint(self) -> dict | None:
        """Rank 0 reads ``checkpoint.pt`` (None when there is none) and every rank gets its copy, so all
        resume from the same one; rank 0's error is every rank's."""
        ckpt: dict | FstoreError | None = None
        if self.main and self.ckpt_path.is_file():
            try:
                ckpt = load_checkpoint(self.ckpt_path, self.task.config, torch.device("cpu") if self.world > 1
                                       else self.device)
            except FstoreError as e:
                ckpt = e
        ckpt = ddp.broadcast(ckpt)
        if isinstance(ckpt, FstoreError):
            raise ckpt
        return ckpt

    def _shard(self, loader: ResumableLoader) -> None:
        """Deal the training loader to this rank at the same global batch (``--batch-size`` is global)."""
        shard = getattr(loader, "shard", None)
        if shard is None:
            raise FstoreError(f"{type(loader).__name__} cannot be dealt to ranks (no shard method)")
        try:
            shard(ddp.rank(), self.world)
        except ValueError as e:
            raise FstoreError(f"--batch-size is the global batch across {self.world} ranks: {e}") from None

    def _resume(self, ckpt: dict) -> dict:
        """Resume from ``ckpt``: weights, optimizer, schedule position, RNG, loader position, history."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.state.update({k: ckpt[k] for k in self.state if k in ckpt})  # elapsed_s: absent in older ones
        self.timer.before = float(self.state["elapsed_s"])
        # this call's schedule at the saved step (its time budget or epochs may differ from the last call's)
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                       self.scheduler.lr_lambdas, strict=True):
            group["lr"] = base * factor(self.scheduler.last_epoch)
        position = ckpt["loader"]
        # the loader judges the position (saved at any world size: its count of batches is that world's)
        mid_epoch = position["epoch"] == self.state["epoch"] and (position["batch"] > 0 or bool(position.get("legs")))
        if mid_epoch:
            try:
                self.loader.load_state_dict(position)
            except ValueError as e:
                raise FstoreError(f"{self.ckpt_path}: cannot resume mid-epoch: {e}; use the same global batch "
                                  "size, seed and split settings, or start afresh") from None
        if not mid_epoch or not self.main:  # the epoch's part so far (all ranks' sums) is counted by rank 0 alone
            self.state["partial"] = _fresh_epoch()
        return {"epoch": self.state["epoch"], "batch": position["batch"] if mid_epoch else 0}

    def _step(self, batch: dict) -> torch.Tensor:
        """One optimizer step; the loss stays on the device."""
        with autocast(self.device):
            loss = self.task.loss(self.step_model, batch)
        if self.world > 1 and self.task.loss_units is not None:  # DDP averages: make it the global mean
            units = self.task.loss_units(batch).detach().float().reshape(1)
            total = units.clone()
            torch.distributed.all_reduce(total)
            loss = loss * (units * self.world / total.clamp_min(1e-12)).squeeze(0)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.clip_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach()

    def one_epoch(self) -> bool:
        """Train the current epoch (or what is left of it); True when the time limit cut it short."""
        epoch = self.state["epoch"]
        self.loader.set_epoch(epoch)
        self.model.train()
        bar = tqdm(total=len(self.loader), initial=self.loader.batches_done, unit="batch",
                   desc=f"epoch {epoch + 1}/{self.epochs}", disable=not self.progress, leave=False)
        # state["partial"] carries the first part of an epoch interrupted by a time limit
        return _run_epoch(self.loader, self._step, self.task, self.state["partial"], self.total, self.timer, bar)

    def validate(self, interrupted: bool) -> dict:
        """The history row of the epoch, or at a time limit of its part so far (``epoch`` a fraction, e.g.
        0.25): train loss, the task's validation metrics, throughput."""
        acc, epoch = self.state["partial"], self.state["epoch"]
        done = epoch + 1
        if interrupted:  # in thousandths of the epoch, at least one, never the whole
            done = epoch + max(1, math.floor(1000 * self.loader.batches_done / len(self.loader))) / 1000
        # across ranks: the mean train loss, all ranks' items, the slowest rank's time, the worst data wait
        loss_sum, steps, items = ddp.sum_across([acc["loss_sum"], acc["steps"], acc["items"]])
        seconds, wait_share = ddp.max_across([acc["seconds"], acc["wait"] / max(acc["seconds"], 1e-9)])
        if interrupted:  # the checkpoint carries the part so far as all ranks' sums (resumable at any world size)
            acc.update(loss_sum=loss_sum, steps=int(steps), items=int(items), seconds=seconds, wait=wait_share * seconds)
        record = {"epoch": done, "train_loss": loss_sum / max(1, steps)}
        if self.task.validate is not None and self.main:  # rank 0 validates; the others wait for its row
            self.model.eval()
            with torch.no_grad(), autocast(self.device), _rng_kept() if interrupted else contextlib.nullcontext():
                metrics = self.task.validate(self.model)
            self.model.train()
            record |= {k: float(v) for k, v in metrics.items()}
        record = ddp.broadcast(record)
        return record | {f"{self.task.item_name}_per_s": items / max(seconds, 1e-9), "data_wait_share": wait_share,
                         "seconds": seconds, self.task.item_name: int(items), "world_size": self.world}

    def keep(self, record: dict, interrupted: bool) -> None:
        """Add the row to the history (an interrupted epoch's row until the epoch ends) and write
        ``best.pt`` when it is the best so far; a full epoch that is not counts towards patience."""
        task, state = self.task, self.state
        if interrupted:
            state["partial"]["record"] = record
        else:
            state["epoch"] += 1
            state["history"].append(record)
            state["partial"] = _fresh_epoch()
        value, best = record.get(task.metric, float("nan")), state["best_metric"]
        if task.validate is None or math.isnan(best) or (value > best if task.higher_is_better else value < best):
            state["best_metric"], state["best_epoch"] = value, record["epoch"]
            if not interrupted:
                state["bad_epochs"] = 0
            if self.main:
                    save({"model": self.model.state_dict(), "config": task.config, "epoch": record["epoch"],
                      task.metric: value, "world_size": self.world, **task.extra}, self.best_path)
        elif not interrupted:
            state["bad_epochs"] += 1

    def decide_stop(self, interrupted: bool) -> None:
        """Stop at the time limit, after ``patience`` epochs without a better metric, or after the last epoch."""
        if interrupted:
            self.stopped = "time_limit"
        elif self.state["bad_epochs"] >= self.patience:
            self.state["stopped"] = self.stopped = "early_stopping"
        elif self.state["epoch"] >= self.epochs:
            self.stopped = "completed"
        elif self.timer.over():
            self.stopped = "time_limit"
        if self.world > 1:  # rank 0's clock decides for all
            self.stopped = ddp.broadcast(self.stopped)

    def history(self) -> list[dict]:
        """One row per finished epoch, then the row of an interrupted one."""
        partial = self.state["partial"].get("record")
        return [*self.state["history"], *([partial] if partial else [])]

    def save(self, record: dict, interrupted: bool) -> None:
        """``checkpoint.pt`` (with the loader's position inside an interrupted epoch), ``history.csv``,
        TensorBoard scalars (finished epochs) and the epoch line."""
        self.state["elapsed_s"] = self.timer.elapsed()
        if not self.main:
            return
        save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
              "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
              "loader": self.loader.state_dict(), "rng": rng_state(), "config": self.task.config,
              "world_size": self.world, **self.task.extra, **self.state}, self.ckpt_path)
        write_history_csv(self.history_path, self.history())
        if self.events is not None and not interrupted:
            self.events.epoch(record, self.scheduler.get_last_lr()[0])
        if self.progress:
            tqdm.write(_epoch_line(record, self.task.item_name))

    def result(self) -> FitResult:
        """This call's figures: all ranks' items over the slowest rank's time, the worst rank's data wait."""
        state = self.state
        items, = ddp.sum_across([self.total["items"]])
        seconds, wait = ddp.max_across([self.total["seconds"], self.total["wait"]])
        total = {"items": int(items), "wait": wait}
        return FitResult(
            out_dir=self.out_dir, checkpoint=self.ckpt_path,
            best_checkpoint=self.best_path if self.best_path.is_file() else None, history_csv=self.history_path,
            metric=self.task.metric, epochs_requested=self.epochs, epochs_completed=state["epoch"],
            best_metric=state["best_metric"], best_epoch=state["best_epoch"], stopped=self.stopped or "completed",
            items_trained=total["items"], train_seconds=seconds,
            items_per_s=total["items"] / seconds if seconds > 0 else 0.0,
            data_wait_share=total["wait"] / seconds if seconds > 0 else 0.0, resumed_from=self.resumed_from,
            already_trained=self.already_trained, item_name=self.task.item_name, config=dict(self.task.config),
            history=self.history())


def fit(task: TrainTask, loader: ResumableLoader, out_dir: str | Path, *, epochs: int,
        device: str | torch.device = "cpu", lr: float = 3e-3, weight_decay: float = 0.01, warmup: float = 0.05,
        patience: int = 3, clip_norm: float | None = 1.0, max_minutes: float | None = None, resume: bool = True,
        progress: bool = True, clock: Callable[[], float] = time.perf_counter) -> FitResult:
    """Train ``task.model`` on ``loader`` for up to ``epochs`` epochs; see the package docstring.

    With ``resume`` and an existing ``out_dir/checkpoint.pt`` training continues from it (an error when
    its config differs from ``task.config``); a checkpoint with nothing left to do trains nothing and
    the result says so (``already_trained``). ``max_minutes`` limits this call (``0`` stops after one
    step: tests use it); the schedule then ends by the deadline when that comes before the last epoch,
    and an epoch the limit cuts short is validated, so a run that took a step always leaves ``best.pt``.
    ``clock`` (seconds) times the run: the limit, the schedule and the throughput figures.
    """
    if epochs < 1:
        raise FstoreError(f"epochs must be >= 1, got {epochs}")
    timer = _Timer(clock, None if max_minutes is None else 60 * max_minutes, clock())
    run = _Run(task, loader, Path(out_dir), epochs=epochs, device=device, lr=lr, weight_decay=weight_decay,
               warmup=warmup, patience=patience, clip_norm=clip_norm, resume=resume, progress=progress, timer=timer)
    if run.already_trained:
        return run.result()
    run.events = Events(run.out_dir) if run.main else None
    try:
        timer.begin()
        if run.world > 1 and timer.limit_s is not None:
            timer.shared = ddp.max_across([timer.progress()])[0]
        while not run.stopped:
            interrupted = run.one_epoch()
            record = run.validate(interrupted)
            run.keep(record, interrupted)
            run.decide_stop(interrupted)
            run.save(record, interrupted)
    except (RuntimeError, OSError) as e:  # a collective whose peer died: one line, not a hang or a traceback
        line = ddp.lost_peer(e)
        if line is None:
            raise
        where = (f"the last checkpoint {run.ckpt_path} is intact: relaunch to resume" if run.ckpt_path.is_file()
                 else "no checkpoint yet")
        raise FstoreError(f"{line}; {where}") from None
    finally:
        if run.events is not None:
            run.events.close()
    return run.result()
