"""Train :class:`~models.skip.model.SkipModel` straight from a store with ``SessionBatches``.

``train_skip`` trains on the ``fit`` part of the train split and validates (mean average accuracy,
the official metric) on a by-session ``holdout`` part every epoch. Written under ``out_dir``:

* ``checkpoint.pt``: everything needed to resume (model, optimizer, scheduler, loader state, epoch,
  best validation AA, early-stopping counter, history, model config), rewritten after every epoch
  and when a time limit interrupts an epoch (the loader state then resumes mid-epoch);
* ``best.pt``: the model with the best validation AA so far (model state + config).

Files are written to a temporary name and moved into place with ``os.replace``. On CUDA the step
runs under ``torch.autocast`` (bf16 where supported, else fp16 with a gradient scaler) and the model
is ``torch.compile``-d; on the CPU neither. Throughput (sessions/s) and the share of step time
blocked waiting for the next batch are measured.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from featurestore.store import Store
from featurestore.store.errors import FstoreError
from loaders import SessionBatches
from models.metrics import evaluate_skip

from .evaluate import autocast, predict_loader
from .model import SkipModel, config_mismatch

__all__ = ["DEFAULT_MODEL", "TrainResult", "train_skip"]

CHECKPOINT, BEST = "checkpoint.pt", "best.pt"
DEFAULT_MODEL = {"d_model": 64, "blocks": 3, "kernel_size": 3, "emb_dim": 8, "highway": 2, "dropout": 0.1}


@dataclass
class TrainResult:
    """What a :func:`train_skip` call did (throughput numbers cover this call only)."""

    out_dir: Path
    checkpoint: Path
    best_checkpoint: Path | None
    epochs_completed: int
    best_val_aa: float  # nan without validation
    best_epoch: int  # 1-based; 0 when none
    stopped: str  # "completed", "early_stopping" or "time_limit"
    sessions_trained: int
    train_seconds: float  # time in training steps (batch wait + compute), validation excluded
    sessions_per_s: float
    data_wait_share: float  # time blocked in next(batches) / train_seconds
    resumed_from: dict | None  # {"epoch": e, "batch": b} when a checkpoint was resumed
    config: dict
    history: list[dict] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"epochs         {self.epochs_completed} ({self.stopped})",
               f"best val AA    {self.best_val_aa:.4f} (epoch {self.best_epoch})",
               f"sessions       {self.sessions_trained} in {self.train_seconds:.1f} s "
               f"({self.sessions_per_s:,.0f} sessions/s, data wait {100 * self.data_wait_share:.1f} %)",
               f"checkpoint     {self.checkpoint}"]
        if self.resumed_from:
            out.append(f"resumed from   epoch {self.resumed_from['epoch']}, batch {self.resumed_from['batch']}")
        return out


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _warmup_cosine(total_steps: int, warmup: float, floor: float = 0.02):
    """Linear warmup over ``warmup`` of the steps, then cosine decay to ``floor`` of the peak."""
    warm = max(1, int(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _amp_dtype(device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _load_checkpoint(path: Path, config: dict, device: torch.device) -> dict:
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise FstoreError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e}); "
                          "delete it or pass resume=False") from None
    saved = ckpt.get("config", {}) if isinstance(ckpt, dict) else {}
    diff = config_mismatch(saved, config)
    if diff:
        what = ", ".join(f"{k} (checkpoint {saved.get(k, 'missing')!r}, requested {config.get(k, 'missing')!r})"
                         for k in diff)
        raise FstoreError(f"{path}: checkpoint was written for a different model shape: {what}; "
                          "use another output directory or matching model settings")
    return ckpt


def validate_aa(model: torch.nn.Module, loader: SessionBatches, amp_dtype: torch.dtype | None) -> tuple[float, float]:
    """(mean average accuracy, first-prediction accuracy) of 0/1 predictions on ``loader``'s sessions."""
    preds, truth = predict_loader(model, loader, amp_dtype)
    score = evaluate_skip(truth, preds)
    return score.mean_average_accuracy, score.first_prediction_accuracy


def train_skip(store: str | os.PathLike[str] | Store, out_dir: str | os.PathLike[str], epochs: int = 10,
               batch_size: int = 256, lr: float = 3e-3, holdout: float = 0.05, seed: int = 0,
               device: str | torch.device = "cpu", max_minutes: float | None = None, resume: bool = True,
               progress: bool = True, patience: int = 3, weight_decay: float = 0.01, warmup: float = 0.05,
               model: dict | None = None, loader_threads: int | None = None,
               torch_threads: int | None = None) -> TrainResult:
    """Train a skip model on ``store``'s train split; see the module docstring for what is written.

    ``model`` overrides entries of :data:`DEFAULT_MODEL` (``n_features`` and ``half`` come from the
    store). With ``resume`` and an existing ``out_dir/checkpoint.pt``, training continues from it
    (raising :class:`FstoreError` when its model config differs from the requested one).
    ``loader_threads`` sets the batch-assembly threads (default 1 on the CPU, 4 on CUDA) and
    ``torch_threads`` calls ``torch.set_num_threads`` (process-wide; default: leave it). Training
    stops after ``epochs`` epochs, after ``patience`` epochs without a better validation AA, or when
    ``max_minutes`` have passed (the checkpoint then holds the position inside the epoch).
    """
    t_start = time.perf_counter()
    if epochs < 1:
        raise FstoreError(f"epochs must be >= 1, got {epochs}")
    if not 0.0 <= holdout < 1.0:
        raise FstoreError(f"holdout must be in [0, 1), got {holdout}")
    unknown = set(model or {}) - set(DEFAULT_MODEL)
    if unknown:
        raise FstoreError(f"unknown model settings {sorted(unknown)} (known: {sorted(DEFAULT_MODEL)})")
    store = store if isinstance(store, Store) else Store(store)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FstoreError("device 'cuda' requested but CUDA is not available")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, best_path = out_dir / CHECKPOINT, out_dir / BEST
    if not (resume and ckpt_path.is_file()):
        best_path.unlink(missing_ok=True)  # a fresh run: a best model of an earlier run is stale
    if torch_threads:
        torch.set_num_threads(torch_threads)
    torch.manual_seed(seed)
    np.random.seed(seed)

    threads = loader_threads or (1 if device.type == "cpu" else 4)
    train = SessionBatches(store, "train", batch_size=batch_size, order="quasi_random", seed=seed, device=device,
                           subset="fit" if holdout > 0 else "all", holdout=holdout, threads=threads)
    val = None
    if holdout > 0:
        val = SessionBatches(store, "train", batch_size=max(batch_size, 1024), order="sequential", seed=seed,
                             device=device, subset="holdout", holdout=holdout, threads=threads)
        if val.items.size == 0:
            val = None
    if train.items.size == 0:
        raise FstoreError(f"{store.path}: no training sessions left after the holdout")

    config = {"n_features": len(train.feature_columns), "half": train.half, **DEFAULT_MODEL, **(model or {})}
    net = SkipModel(**config).to(device)
    table = train.track_features.float()
    net.set_feature_stats(table.mean(0), table.std(0))
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    total_steps = epochs * len(train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(total_steps, warmup))
    amp_dtype = _amp_dtype(device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    state = {"epoch": 0, "best_val_aa": float("nan"), "best_epoch": 0, "bad_epochs": 0, "stopped": "",
             "history": []}
    resumed_from = None
    if resume and ckpt_path.is_file():
        ckpt = _load_checkpoint(ckpt_path, config, device)
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        state.update({k: ckpt[k] for k in state})
        loader_state = ckpt["loader"]
        mid_epoch = loader_state["epoch"] == state["epoch"] and 0 < loader_state["batch"] < len(train)
        if mid_epoch:
            try:
                train.load_state_dict(loader_state)
            except ValueError as e:
                raise FstoreError(f"{ckpt_path}: cannot resume mid-epoch: {e}; use the same batch size, "
                                  "seed and holdout, or resume=False") from None
        resumed_from = {"epoch": state["epoch"], "batch": loader_state["batch"] if mid_epoch else 0}

    step_model = torch.compile(net) if device.type == "cuda" else net

    def save_checkpoint() -> None:
        _atomic_save({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                      "loader": train.state_dict(), "torch_rng": torch.get_rng_state(), "config": config,
                      "feature_columns": list(train.feature_columns), **state}, ckpt_path)

    deadline = t_start + 60 * max_minutes if max_minutes is not None else math.inf
    sessions_trained, step_time, wait_time = 0, 0.0, 0.0
    stopped = "early_stopping" if state["stopped"] == "early_stopping" else ""
    while not stopped and state["epoch"] < epochs:
        epoch = state["epoch"]
        train.set_epoch(epoch)
        net.train()
        bar = tqdm(total=len(train), initial=train.batches_done, desc=f"epoch {epoch + 1}/{epochs}",
                   unit="batch", disable=not progress, leave=False)
        e_sessions, e_steps, e_step, e_wait = 0, 0, 0.0, 0.0
        loss_sum = torch.zeros((), device=device)
        batches = iter(train)
        interrupted = False
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            t1 = time.perf_counter()
            with autocast(device, amp_dtype):
                logits = step_model(batch["ctx_features"], batch["ctx_log"], batch["ctx_mask"],
                                    batch["tgt_features"], batch["tgt_mask"])
            mask = batch["tgt_mask"].float()
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(
                logits.float(), batch["tgt_skip"], reduction="none") * mask).sum() / mask.sum()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += loss.detach()
            e_steps += 1
            e_sessions += int(batch["length"].shape[0])
            if e_steps % 20 == 0:  # the only host-device sync of the step, once in a while
                bar.set_postfix(loss=f"{float(loss_sum) / e_steps:.4f}",
                                sess_s=f"{e_sessions / max(e_step, 1e-9):,.0f}")
            t2 = time.perf_counter()
            e_wait += t1 - t0
            e_step += t2 - t0
            bar.update(1)
            if t2 > deadline and train.batches_done < len(train):
                interrupted = True
                break
        batches.close()
        bar.close()
        sessions_trained += e_sessions
        step_time += e_step
        wait_time += e_wait
        if interrupted:
            stopped = "time_limit"
            save_checkpoint()  # the loader state holds the position inside the epoch
            break

        record = {"epoch": epoch + 1, "train_loss": float(loss_sum) / max(1, e_steps), "sessions": e_sessions,
                  "seconds": e_step, "sessions_per_s": e_sessions / max(e_step, 1e-9),
                  "data_wait_share": e_wait / max(e_step, 1e-9)}
        aa = float("nan")
        if val is not None:
            aa, first = validate_aa(net, val, amp_dtype)
            record |= {"val_aa": aa, "val_first_acc": first}
        improved = val is None or not aa <= state["best_val_aa"]  # nan (no best yet) counts as improved
        state["epoch"] = epoch + 1
        state["history"].append(record)
        if improved:
            state["best_val_aa"], state["best_epoch"], state["bad_epochs"] = aa, epoch + 1, 0
            _atomic_save({"model": net.state_dict(), "config": config, "epoch": epoch + 1, "val_aa": aa,
                          "feature_columns": list(train.feature_columns)}, best_path)
        else:
            state["bad_epochs"] += 1
        if state["bad_epochs"] >= patience:
            state["stopped"] = stopped = "early_stopping"
        save_checkpoint()
        if progress:
            val_txt = f", val AA {aa:.4f} (first {record['val_first_acc']:.3f})" if val is not None else ""
            tqdm.write(f"epoch {epoch + 1}: loss {record['train_loss']:.4f}{val_txt}, "
                       f"{record['sessions_per_s']:,.0f} sessions/s, data wait {100 * record['data_wait_share']:.1f} %")
        if not stopped and state["epoch"] < epochs and time.perf_counter() > deadline:
            stopped = "time_limit"
    stopped = stopped or "completed"

    return TrainResult(
        out_dir=out_dir, checkpoint=ckpt_path, best_checkpoint=best_path if best_path.is_file() else None,
        epochs_completed=state["epoch"], best_val_aa=state["best_val_aa"], best_epoch=state["best_epoch"],
        stopped=stopped, sessions_trained=sessions_trained, train_seconds=step_time,
        sessions_per_s=sessions_trained / step_time if step_time > 0 else 0.0,
        data_wait_share=wait_time / step_time if step_time > 0 else 0.0, resumed_from=resumed_from,
        config=dict(config), history=list(state["history"]),
    )


def result_dict(result: TrainResult) -> dict:
    """A JSON-friendly view of a :class:`TrainResult`."""
    d = asdict(result)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}
