"""Train :class:`~models.skip.model.SkipModel` straight from a store with ``SessionBatches``.

``train_skip`` trains on the ``fit`` part of the train split and validates (mean average accuracy,
the official metric) on a by-session ``holdout`` part (a fixed sample of at most ``val_sample``
sessions of it) every epoch. The loop, checkpoints
(``checkpoint.pt``, ``best.pt``), resume, early stopping and history (``history.csv``, TensorBoard
events) are :func:`models.training.fit`'s; this module supplies the model, the loss and the metric.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

import torch

from featurestore.store import Store
from featurestore.store.errors import FstoreError
from loaders import SessionBatches
from loaders.splits import VAL_SAMPLE, bounded_sample
from models.metrics import evaluate_skip
from models.training import BEST, CHECKPOINT, FitResult, TrainTask, fit, parse_device, seed_everything

from .evaluate import predict_loader
from .model import SkipModel

__all__ = ["BEST", "CHECKPOINT", "DEFAULT_MODEL", "TrainResult", "skip_loss", "train_skip"]

DEFAULT_MODEL = {"d_model": 64, "blocks": 3, "kernel_size": 3, "emb_dim": 8, "highway": 2, "dropout": 0.1}


@dataclass
class TrainResult(FitResult):
    """:class:`~models.training.FitResult` with the skip model's names for its numbers."""

    @property
    def best_val_aa(self) -> float:
        return self.best_metric

    @property
    def sessions_trained(self) -> int:
        return self.items_trained

    @property
    def sessions_per_s(self) -> float:
        return self.items_per_s


def skip_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Masked binary cross-entropy of skip_2 over the second half's real positions."""
    # call the module itself (not batch_logits): ``model`` may be the torch.compile wrapper
    logits = model(batch["ctx_features"], batch["ctx_log"], batch["ctx_mask"], batch["tgt_features"],
                   batch["tgt_mask"])
    mask = batch["tgt_mask"].float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), batch["tgt_skip"], reduction="none")
    return (loss * mask).sum() / mask.sum()


def validation_scores(model: torch.nn.Module, loader: SessionBatches) -> dict[str, float]:
    """``val_aa`` (mean average accuracy) and ``val_first_acc`` of 0/1 predictions on ``loader``'s sessions."""
    preds, truth = predict_loader(model, loader)
    score = evaluate_skip(truth, preds)
    return {"val_aa": score.mean_average_accuracy, "val_first_acc": score.first_prediction_accuracy}


def train_skip(store: str | os.PathLike[str] | Store, out_dir: str | os.PathLike[str], epochs: int = 10,
               batch_size: int = 256, lr: float = 3e-3, holdout: float = 0.05, seed: int = 0,
               device: str | torch.device = "cpu", max_minutes: float | None = None, resume: bool = True,
               progress: bool = True, patience: int = 3, weight_decay: float = 0.01, warmup: float = 0.05,
               model: dict | None = None, loader_threads: int | None = None,
               torch_threads: int | None = None, val_sample: int = VAL_SAMPLE) -> TrainResult:
    """Train a skip model on ``store``'s train split; see the module docstring for what is written.

    ``model`` overrides entries of :data:`DEFAULT_MODEL` (``n_features`` and ``half`` come from the
    store). ``loader_threads`` sets the batch-assembly threads (default 1 on the CPU, 4 on CUDA) and
    ``torch_threads`` calls ``torch.set_num_threads`` (process-wide; default: leave it). Each validation
    scores the same ``val_sample`` holdout sessions (0: all of them). The other arguments are
    :func:`models.training.fit`'s.
    """
    if not 0.0 <= holdout < 1.0:
        raise FstoreError(f"holdout must be in [0, 1), got {holdout}")
    unknown = set(model or {}) - set(DEFAULT_MODEL)
    if unknown:
        raise FstoreError(f"unknown model settings {sorted(unknown)} (known: {sorted(DEFAULT_MODEL)})")
    store = store if isinstance(store, Store) else Store(store)
    device = parse_device(device)
    if torch_threads:
        torch.set_num_threads(torch_threads)
    seed_everything(seed)

    threads = loader_threads or (1 if device.type == "cpu" else 4)
    train = SessionBatches(store, "train", batch_size=batch_size, order="quasi_random", seed=seed, device=device,
                           subset="fit" if holdout > 0 else "all", holdout=holdout, threads=threads)
    val = None
    if holdout > 0:
        val = SessionBatches(store, "train", batch_size=max(batch_size, 1024), order="sequential", seed=seed,
                             device=device, subset="holdout", holdout=holdout, threads=threads)
        val.items = bounded_sample(val.items, val_sample, seed)
        if val.items.size == 0:
            val = None
    if train.items.size == 0:
        raise FstoreError(f"{store.path}: no training sessions left after the holdout")

    config = {"n_features": len(train.feature_columns), "half": train.half, **DEFAULT_MODEL, **(model or {})}
    net = SkipModel(**config)
    table = train.track_features.float()
    net.set_feature_stats(table.mean(0), table.std(0))
    task = TrainTask(model=net, config=config, loss=skip_loss, metric="val_aa", higher_is_better=True,
                     validate=(lambda m: validation_scores(m, val)) if val is not None else None,
                     item_name="sessions", loss_units=lambda b: b["tgt_mask"].sum(), extra={"feature_columns": list(train.feature_columns)})
    result = fit(task, train, out_dir, epochs=epochs, device=device, lr=lr, weight_decay=weight_decay,
                 warmup=warmup, patience=patience, max_minutes=max_minutes, resume=resume, progress=progress)
    return TrainResult(**{f.name: getattr(result, f.name) for f in fields(result)})

