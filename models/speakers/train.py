"""Train :class:`~models.speakers.model.SpeakerNet` from a speakers store with ``SegmentBatches``.

``train_speakers`` trains on random ``crop``-frame windows of the ``fit`` utterances of the train split
(``SegmentBatches(mode="crop", label="speaker")``) and validates every epoch on whole held-out
utterances (``mode="whole"``: sorted by length, each batch padded only to its own longest one; a fixed
sample of at most ``val_sample`` of them) with the homework's accuracy. The held-out part is by
utterance, stratified by speaker, deterministic by seed (``loaders.splits.stratified_holdout``);
``holdout`` and ``seed`` go into the checkpoints so that ``evaluate`` scores the same (whole) part.
The loop, checkpoints, resume, early stopping and history are :func:`models.training.fit`'s.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from featurestore.store import Store
from featurestore.store.errors import FstoreError
from loaders import SegmentBatches
from loaders.splits import VAL_SAMPLE, bounded_sample
from models.metrics.speakers import accuracy
from models.training import FitResult, TrainTask, autocast, fit, parse_device, seed_everything
from models.training.runtime import large_blocks_released

from .data import LABEL, TRAIN, clip_stats, open_speakers, speaker_labels, validation_split
from .model import SpeakerNet

__all__ = ["DEFAULT_MODEL", "predict_clips", "speaker_loss", "train_speakers"]

# the architecture (4 heads, kernel 31, dropout 0.3, AM-softmax s = 30, m = 0.35) at half its width
# (d_model 256, ffn 512 there): a 5-minute run on 2 shared CPU cores gets several epochs instead of one or two
DEFAULT_MODEL = {"d_model": 128, "layers": 2, "heads": 4, "ffn": 256, "kernel": 31, "dropout": 0.3,
                 "pooling": "attention", "scale": 30.0, "margin": 0.35}


def speaker_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of the AM-softmax logits (the model applies the margin to the true class in training)."""
    logits = model(batch["frames"], batch["mask"], batch["label"])
    return torch.nn.functional.cross_entropy(logits.float(), batch["label"])


@torch.no_grad()
def predict_clips(model: torch.nn.Module, loader: SegmentBatches) -> np.ndarray:
    """Predicted speaker codes of every utterance the loader visits, in the order of ``np.sort(loader.items)``."""
    was_training = model.training
    model.eval()
    order = np.sort(loader.items)
    pred = np.full(order.size, -1, dtype=np.int64)
    try:
        for batch in loader:
            with autocast(loader.device):
                logits = model(batch["frames"], batch["mask"])
            pred[np.searchsorted(order, batch["clip"].cpu().numpy())] = logits.argmax(1).cpu().numpy()
    finally:
        model.train(was_training)
    return pred


def _validation(loader: SegmentBatches, truth: np.ndarray):
    def validate(model: torch.nn.Module) -> dict[str, float]:
        # whole utterances of every length: glibc's heap would fragment and grow with the validation sample
        # (a 2-minute run at the real size peaked at 5.6 GB)
        with large_blocks_released():
            return {"val_acc": accuracy(truth, predict_clips(model, loader))}
    return validate


def train_speakers(store: str | os.PathLike[str] | Store, out_dir: str | os.PathLike[str], epochs: int = 30,
                   batch_size: int = 32, crop: int = 128, lr: float = 1e-3, holdout: float = 0.1, seed: int = 0,
                   device: str | torch.device = "cpu", max_minutes: float | None = None, resume: bool = True,
                   progress: bool = True, patience: int = 8, weight_decay: float = 0.01, warmup: float = 0.05,
                   model: dict | None = None, loader_threads: int | None = None,
                   val_sample: int = VAL_SAMPLE) -> FitResult:
    """Train a speaker classifier on ``store``'s train split; see the module docstring.

    ``model`` overrides entries of :data:`DEFAULT_MODEL` (``n_mels`` and ``n_speakers`` come from the
    store). ``loader_threads`` sets the batch-assembly threads (default 1 on the CPU, 4 on CUDA). Each
    validation scores the same ``val_sample`` held-out utterances (0: all of them). The other arguments
    are :func:`models.training.fit`'s.
    """
    if not 0.0 <= holdout < 1.0:
        raise FstoreError(f"holdout must be in [0, 1), got {holdout}")
    if crop < 1:
        raise FstoreError(f"crop must be >= 1 frames, got {crop}")
    unknown = set(model or {}) - set(DEFAULT_MODEL)
    if unknown:
        raise FstoreError(f"unknown model settings {sorted(unknown)} (known: {sorted(DEFAULT_MODEL)})")
    store = open_speakers(store)
    device = parse_device(device)
    seed_everything(seed)
    fit_ids, held_ids = validation_split(store, holdout, seed)
    if fit_ids.size == 0:
        raise FstoreError(f"{store.path}: no training utterances left after the holdout")

    threads = loader_threads or (1 if device.type == "cpu" else 4)
    train = SegmentBatches(store, TRAIN, batch_size=batch_size, crop=crop, mode="crop", order="random",
                           label=LABEL, seed=seed, device=device, threads=threads, clips=fit_ids)
    validate = None
    if held_ids.size:
        sample = bounded_sample(held_ids, val_sample, seed)
        val = SegmentBatches(store, TRAIN, batch_size=max(batch_size, 64), mode="whole", seed=seed, device=device,
                             threads=threads, clips=sample)
        validate = _validation(val, speaker_labels(store)[sample])

    fs = store.frames(TRAIN)
    names = store.dictionary(LABEL).values
    config = {"n_mels": fs.bins, "n_speakers": len(names), **DEFAULT_MODEL, **(model or {})}
    try:
        net = SpeakerNet(**config)
    except ValueError as e:
        raise FstoreError(f"model settings: {e}") from None
    _, mean, std = clip_stats(fs, fit_ids)
    net.set_feature_stats(torch.from_numpy(mean), torch.from_numpy(std))
    task = TrainTask(model=net, config=config, loss=speaker_loss, validate=validate,
                     metric="val_acc" if validate else "val_loss", higher_is_better=validate is not None,
                     item_name="utterances",
                     extra={"holdout": holdout, "seed": seed, "crop": crop, "speakers": list(names)})
    return fit(task, train, out_dir, epochs=epochs, device=device, lr=lr, weight_decay=weight_decay, warmup=warmup,
               patience=patience, max_minutes=max_minutes, resume=resume, progress=progress)
