"""What training writes: checkpoints (through the store's one atomic writer), ``history.csv`` and
TensorBoard events."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch

from featurestore.store.atomic import atomic_write, atomic_write_bytes
from featurestore.store.errors import FstoreError

__all__ = ["BEST", "CHECKPOINT", "HISTORY", "Events", "config_mismatch", "find_checkpoint", "load_checkpoint",
           "save", "write_history_csv"]

CHECKPOINT, BEST, HISTORY = "checkpoint.pt", "best.pt", "history.csv"
RESUME_KEYS = frozenset({"model", "optimizer", "scheduler", "scaler", "loader", "rng", "config", "epoch",
                         "best_metric", "best_epoch", "bad_epochs", "stopped", "history", "partial"})


def config_mismatch(saved: dict, wanted: dict) -> list[str]:
    """Keys whose values differ between two model configs (missing on either side counts)."""
    keys = sorted(set(saved) | set(wanted))
    return [k for k in keys if k not in saved or k not in wanted or saved[k] != wanted[k]]


def save(obj: Any, path: Path) -> None:
    """``torch.save`` through the store's atomic writer."""
    atomic_write(path, lambda f: torch.save(obj, f))


def find_checkpoint(path: str | Path) -> tuple[Path, str | None]:
    """The checkpoint file ``path`` names: itself, or for a training folder its ``best.pt`` (else its
    ``checkpoint.pt``), with a one-line note of which; a folder with neither is an FstoreError."""
    path = Path(path)
    if not path.is_dir():
        return path, None
    for name, why in ((BEST, ""), (CHECKPOINT, f" (no {BEST}: the latest weights)")):
        if (path / name).is_file():
            return path / name, f"using {path / name}{why}"
    raise FstoreError(f"{path}: folder has no {BEST} or {CHECKPOINT}: not a training output folder "
                      "(or its training has not taken a step)")


def read_checkpoint(path: str | Path, device: str | torch.device, what: str) -> dict:
    """A checkpoint file's dict, for evaluation: a missing, truncated or foreign file is one
    FstoreError line naming the file and ``what`` was expected (e.g. "FSD-model")."""
    path = Path(path)
    if not path.is_file():
        raise FstoreError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # a truncated or foreign file
        first = (str(e).splitlines() or [""])[0][:200]
        raise FstoreError(f"{path}: not a readable {what} checkpoint ({type(e).__name__}: {first})") from None
    if not isinstance(ckpt, dict):
        raise FstoreError(f"{path}: not a {what} checkpoint")
    return ckpt


def load_checkpoint(path: Path, config: dict, device: torch.device) -> dict:
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated or foreign file
        raise FstoreError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e}); "
                          "delete it or start afresh (--no-resume)") from None
    missing = sorted(RESUME_KEYS - set(ckpt)) if isinstance(ckpt, dict) else sorted(RESUME_KEYS)
    if missing:  # e.g. written before the shared loop: its best.pt still evaluates, the run cannot resume
        raise FstoreError(f"{path}: not a resumable checkpoint of this version (no {', '.join(missing)}); "
                          "use another output directory or start afresh (--no-resume)")
    saved = ckpt["config"]
    diff = config_mismatch(saved, config)
    if diff:
        what = ", ".join(f"{k} (checkpoint {saved.get(k, 'missing')!r}, requested {config.get(k, 'missing')!r})"
                         for k in diff)
        raise FstoreError(f"{path}: checkpoint was written for a different model shape: {what}; "
                          "use another output directory or matching model settings")
    return ckpt


def write_history_csv(path: Path, history: list[dict]) -> None:
    """One row per epoch; columns in first-seen order (epoch, train_loss, validation metrics, throughput)."""
    columns: list[str] = []
    for record in history:
        columns += [k for k in record if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_bytes(path, buf.getvalue().encode())


class Events:
    """TensorBoard scalars (imported lazily: tensorboard is slow to import and a finished run needs none)."""

    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def epoch(self, record: dict, lr: float) -> None:
        step = record["epoch"]
        for k, v in record.items():
            if k != "epoch":
                group = "train" if k == "train_loss" else "val" if k.startswith("val") else "throughput"
                self.writer.add_scalar(f"{group}/{k}", v, step)
        self.writer.add_scalar("train/lr", lr, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
