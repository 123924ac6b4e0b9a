"""The loop: :class:`TrainTask` (what a family supplies), :func:`fit`, :class:`FitResult`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from featurestore.store.errors import FstoreError

from .records import BEST, CHECKPOINT, HISTORY, Events, load_checkpoint, save, write_history_csv
from .runtime import amp_dtype, autocast, parse_device, rng_state, set_rng_state

__all__ = ["FitResult", "ResumableLoader", "TrainTask", "fit", "warmup_cosine"]

PROGRESS_EVERY = 20  # steps between progress updates: the only host-device syncs of the loop


class ResumableLoader(Protocol):
    batches_done: int

    def __iter__(self) -> Iterator[dict]: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def warmup_cosine(total_steps: int, warmup: float, floor: float = 0.02) -> Callable[[int], float]:
    """LR factor: linear warmup over ``warmup`` of the steps, then cosine decay to ``floor`` of the peak."""
    warm = max(1, int(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


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
    best_epoch: int  # 1-based; 0 when none
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


# --- the loop -------------------------------------------------------------------------------------

def _fresh_epoch() -> dict:
    return {"loss_sum": 0.0, "steps": 0, "items": 0, "seconds": 0.0, "wait": 0.0}


def _run_epoch(loader: ResumableLoader, step: Callable[[dict], torch.Tensor], task: TrainTask, acc: dict,
               total: dict, deadline: float, bar: tqdm) -> bool:
    """Train the (rest of the) loader's current epoch, adding to the ``acc`` (epoch) and ``total`` (call)
    sums; True when ``deadline`` interrupted it before its last batch."""
    loss_sum = None  # on the device: read back only every PROGRESS_EVERY steps and at the end
    batches = iter(loader)
    interrupted = False
    try:
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            t1 = time.perf_counter()
            loss = step(batch)
            loss_sum = loss if loss_sum is None else loss_sum + loss
            items = task.batch_items(batch)
            t2 = time.perf_counter()
            for a in (acc, total):
                a["steps"] += 1
                a["items"] += items
                a["seconds"] += t2 - t0
                a["wait"] += t1 - t0
            bar.update(1)
            if acc["steps"] % PROGRESS_EVERY == 0:
                bar.set_postfix({"loss": f"{(acc['loss_sum'] + float(loss_sum)) / acc['steps']:.4f}",
                                 f"{task.item_name}/s": f"{acc['items'] / max(acc['seconds'], 1e-9):,.0f}",
                                 "wait": f"{100 * acc['wait'] / max(acc['seconds'], 1e-9):.0f}%"})
            if t2 > deadline and loader.batches_done < len(loader):
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


def fit(task: TrainTask, loader: ResumableLoader, out_dir: str | Path, *, epochs: int,
        device: str | torch.device = "cpu", lr: float = 3e-3, weight_decay: float = 0.01, warmup: float = 0.05,
        patience: int = 3, clip_norm: float | None = 1.0, max_minutes: float | None = None, resume: bool = True,
        progress: bool = True) -> FitResult:
    """Train ``task.model`` on ``loader`` for up to ``epochs`` epochs; see the module docstring.

    With ``resume`` and an existing ``out_dir/checkpoint.pt`` training continues from it (an error when
    its config differs from ``task.config``); a checkpoint with nothing left to do trains nothing and
    the result says so (``already_trained``). ``max_minutes=0`` stops after one step (tests use it).
    """
    t_start = time.perf_counter()
    if epochs < 1:
        raise FstoreError(f"epochs must be >= 1, got {epochs}")
    device = parse_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, best_path, history_path = out_dir / CHECKPOINT, out_dir / BEST, out_dir / HISTORY
    resuming = resume and ckpt_path.is_file()
    if not resuming:  # a fresh run: files of an earlier run in out_dir are stale
        for old in (best_path, history_path, *out_dir.glob("events.out.tfevents.*")):
            old.unlink(missing_ok=True)

    model = task.model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(epochs * len(loader), warmup))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)
    state: dict[str, Any] = {"epoch": 0, "best_metric": float("nan"), "best_epoch": 0, "bad_epochs": 0,
                             "stopped": "", "history": [], "partial": _fresh_epoch()}
    resumed_from = None
    if resuming:
        ckpt = load_checkpoint(ckpt_path, task.config, device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        state.update({k: ckpt[k] for k in state})
        position = ckpt["loader"]
        mid_epoch = position["epoch"] == state["epoch"] and 0 < position["batch"] < len(loader)
        if mid_epoch:
            try:
                loader.load_state_dict(position)
            except ValueError as e:
                raise FstoreError(f"{ckpt_path}: cannot resume mid-epoch: {e}; use the same batch size, "
                                  "seed and split settings, or start afresh") from None
        else:
            state["partial"] = _fresh_epoch()
        resumed_from = {"epoch": state["epoch"], "batch": position["batch"] if mid_epoch else 0}
    already_trained = resuming and (state["stopped"] == "early_stopping" or state["epoch"] >= epochs)

    def save_checkpoint() -> None:
        save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
              "scaler": scaler.state_dict(), "loader": loader.state_dict(), "rng": rng_state(),
              "config": task.config, **task.extra, **state}, ckpt_path)

    step_model = torch.compile(model) if device.type == "cuda" else model

    def step(batch: dict) -> torch.Tensor:
        with autocast(device):
            loss = task.loss(step_model, batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip_norm is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        return loss.detach()

    deadline = t_start + 60 * max_minutes if max_minutes is not None else math.inf
    total = _fresh_epoch()  # this call's steps, for the result
    stopped = state["stopped"] if already_trained else ""
    events = Events(out_dir) if not already_trained else None
    try:
        while not stopped and state["epoch"] < epochs:
            epoch = state["epoch"]
            loader.set_epoch(epoch)
            model.train()
            acc = state["partial"]  # carries the first part of an epoch interrupted by a time limit
            interrupted = _run_epoch(loader, step, task, acc, total, deadline,
                                     tqdm(total=len(loader), initial=loader.batches_done, unit="batch",
                                          desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False))
            if interrupted:
                stopped = "time_limit"
                save_checkpoint()  # holds the loader's position inside the epoch and this epoch's sums
                break

            record = {"epoch": epoch + 1, "train_loss": acc["loss_sum"] / max(1, acc["steps"])}
            value = float("nan")
            if task.validate is not None:
                model.eval()
                with torch.no_grad(), autocast(device):
                    metrics = task.validate(model)
                model.train()
                value = float(metrics[task.metric])
                record |= {k: float(v) for k, v in metrics.items()}
            seconds = max(acc["seconds"], 1e-9)
            record |= {f"{task.item_name}_per_s": acc["items"] / seconds, "data_wait_share": acc["wait"] / seconds,
                       "seconds": acc["seconds"], task.item_name: acc["items"]}
            best = state["best_metric"]
            improved = (task.validate is None or math.isnan(best)
                        or (value > best if task.higher_is_better else value < best))
            state["epoch"] = epoch + 1
            state["history"].append(record)
            state["partial"] = _fresh_epoch()
            if improved:
                state["best_metric"], state["best_epoch"], state["bad_epochs"] = value, epoch + 1, 0
                save({"model": model.state_dict(), "config": task.config, "epoch": epoch + 1, task.metric: value,
                      **task.extra}, best_path)
            else:
                state["bad_epochs"] += 1
            if state["bad_epochs"] >= patience:
                state["stopped"] = stopped = "early_stopping"
            save_checkpoint()
            write_history_csv(history_path, state["history"])
            events.epoch(record, scheduler.get_last_lr()[0])
            if progress:
                tqdm.write(_epoch_line(record, task.item_name))
            if not stopped and state["epoch"] < epochs and time.perf_counter() > deadline:
                stopped = "time_limit"
    finally:
        if events is not None:
            events.close()
    stopped = stopped or state["stopped"] or "completed"

    seconds = total["seconds"]
    return FitResult(
        out_dir=out_dir, checkpoint=ckpt_path, best_checkpoint=best_path if best_path.is_file() else None,
        history_csv=history_path, metric=task.metric, epochs_requested=epochs, epochs_completed=state["epoch"],
        best_metric=state["best_metric"], best_epoch=state["best_epoch"], stopped=stopped,
        items_trained=total["items"], train_seconds=seconds,
        items_per_s=total["items"] / seconds if seconds > 0 else 0.0,
        data_wait_share=total["wait"] / seconds if seconds > 0 else 0.0, resumed_from=resumed_from,
        already_trained=already_trained, item_name=task.item_name, config=dict(task.config),
        history=list(state["history"]),
    )
