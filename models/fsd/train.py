"""Train :class:`~models.fsd.model.FsdCNN` on an FSD store's random log-mel crops.

``train_fsd`` holds out a stratified part of the curated clips for validation (lwlrap with sliding-window
inference, every epoch), trains on the rest plus the noisy clips as the noisy-clip policy says, and
leaves the loop, checkpoints (``checkpoint.pt``, ``best.pt``), resume, early stopping, warmup + cosine
schedule and history to :func:`models.training.fit`. The loss step (:func:`make_loss`) standardizes the
crop, applies mixup and SpecAugment on the device (``loaders.augment``) and weighs each clip's binary
cross-entropy by its policy weight, looked up on the device from ``batch["clip"]`` (mixed pairs get the
mixed weight).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F

from featurestore.store import Store
from featurestore.store.errors import FstoreError
from loaders import SegmentBatches, mixup, spec_augment
from loaders.base import store_identity
from loaders.splits import VAL_SAMPLE, bounded_sample
from models.metrics import lwlrap
from models.training import FitResult, TrainTask, fit, parse_device, seed_everything

from .data import class_names, clip_weights, curated_split, frame_stats, multi_hot, train_frames
from .inference import predict_clips
from .model import FsdCNN

__all__ = ["DEFAULT_MODEL", "DEFAULT_NOISY", "FsdTrainResult", "make_loss", "train_fsd"]

DEFAULT_MODEL = {"width": 16, "depth": 1, "stages": 4, "dropout": 0.2, "stem_pool": 2}
DEFAULT_NOISY = "weighted"  # the best policy on validation (closing note of issue 13)


@dataclass
class FsdTrainResult(FitResult):
    """:class:`~models.training.FitResult` plus the split sizes."""

    split_sizes: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        s = self.split_sizes
        return [f"clips          {s['train']} training ({s['curated_fit']} curated + {s['noisy']} noisy, "
                f"policy {self.config['data']['noisy']}), {s['validation']} curated held out", *super().lines()]


def make_loss(net: FsdCNN, weights: torch.Tensor, mixup_alpha: float, spec_masks: tuple[int, int] | None,
              ) -> Callable[[torch.nn.Module, dict], torch.Tensor]:
    """The loss step: standardize, mixup (``mixup_alpha`` > 0), SpecAugment (``spec_masks`` = (frequency,
    time) mask widths), then the clip-weighted mean of the per-clip BCE with logits.

    ``net`` standardizes (the uncompiled module: ``model`` may be the ``torch.compile`` wrapper);
    ``weights`` (clips,) on the device is the noisy-clip policy.
    """

    def loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        b = {"frames": net.standardize(batch["frames"], batch["mask"]), "mask": batch["mask"],
             "labels": batch["labels"]}
        w = weights[batch["clip"]]
        if mixup_alpha > 0:
            b = mixup(b, alpha=mixup_alpha)
            lam = b["mix_lambda"].float()
            w = lam * w + (1 - lam) * w[b["mix_partner"]]
        if spec_masks is not None:
            b = spec_augment(b, freq_mask=spec_masks[0], time_mask=spec_masks[1])
        logits = model(b["frames"], b["mask"], standardized=True).float()
        per_clip = F.binary_cross_entropy_with_logits(logits, b["labels"].float(), reduction="none").mean(1)
        return (w * per_clip).sum() / w.sum().clamp_min(1e-6)

    return loss


def train_fsd(store: str | os.PathLike[str] | Store, out_dir: str | os.PathLike[str], epochs: int = 20,
              batch_size: int = 32, lr: float = 3e-3, crop: int = 128, noisy: str = DEFAULT_NOISY,
              noisy_weight: float = 0.5, mixup_alpha: float = 0.4, spec_augment_masks: bool = True,
              holdout: float = 0.2, seed: int = 0, device: str | torch.device = "cpu",
              max_minutes: float | None = None, resume: bool = True, progress: bool = True, patience: int = 10,
              weight_decay: float = 0.01, warmup: float = 0.05, model: dict | None = None,
              loader_threads: int | None = None, val_sample: int = VAL_SAMPLE,
              torch_threads: int | None = None) -> FsdTrainResult:
    """Train an FSD tagger on ``store``'s ``train`` frame set; see the module docstring.

    ``noisy`` is the noisy-clip policy (``curated``: curated clips only; ``mixed``: noisy clips like
    curated ones; ``weighted``: noisy clips with loss weight ``noisy_weight``). ``crop`` is the training
    crop in frames (inference windows have the same length, hop ``crop // 2``). ``mixup_alpha`` 0 turns
    mixup off. ``model`` overrides entries of :data:`DEFAULT_MODEL`. Each validation scores the same
    ``val_sample`` held-out clips (0: all of them; ``fstore evaluate`` scores all). The other arguments
    are :func:`models.training.fit`'s. ``torch_threads`` calls ``torch.set_num_threads`` (process-wide;
    default: leave it; ``fstore train fsd`` passes 1 on the CPU, see ``featurestore.cli.common``).
    """
    unknown = set(model or {}) - set(DEFAULT_MODEL)
    if unknown:
        raise FstoreError(f"unknown model settings {sorted(unknown)} (known: {sorted(DEFAULT_MODEL)})")
    if crop < 8:
        raise FstoreError(f"crop must be at least 8 frames, got {crop}")
    if mixup_alpha < 0:
        raise FstoreError(f"mixup alpha must be >= 0, got {mixup_alpha}")
    store = store if isinstance(store, Store) else Store(store)
    device = parse_device(device)
    if torch_threads:
        torch.set_num_threads(torch_threads)
    seed_everything(seed)

    fs = train_frames(store)
    names = class_names(store, fs)
    fit_curated, val_clips = curated_split(fs, len(names), holdout, seed)
    train_clips, weights = clip_weights(fs, fit_curated, noisy, noisy_weight)
    hop = max(1, crop // 2)
    threads = loader_threads or (1 if device.type == "cpu" else 4)
    train = SegmentBatches(store, "train", batch_size=batch_size, crop=crop, mode="crop", seed=seed, device=device,
                           threads=threads, clips=train_clips)
    sample = bounded_sample(val_clips, val_sample, seed)
    truth = multi_hot(fs, sample, len(names))

    settings = {**DEFAULT_MODEL, **(model or {})}
    net = FsdCNN(fs.bins, len(names), **settings)
    net.set_feature_stats(*frame_stats(fs))
    net.set_prior(torch.from_numpy(multi_hot(fs, train_clips, len(names)).mean(0)).float())
    config = {"model": net.config, "data": {"crop": crop, "hop": hop, "noisy": noisy,
                                            "noisy_weight": noisy_weight if noisy == "weighted" else None,
                                            "holdout": holdout, "seed": seed}}

    def validate(m: torch.nn.Module) -> dict[str, float]:
        scores = predict_clips(m, store, "train", sample, crop, hop, device)
        return {"val_lwlrap": lwlrap(truth, scores)}

    spec = (max(1, fs.bins // 8), max(1, crop // 8)) if spec_augment_masks else None
    task = TrainTask(model=net, config=config,
                     loss=make_loss(net, torch.from_numpy(weights).to(device), mixup_alpha, spec),
                     metric="val_lwlrap", higher_is_better=True, validate=validate, item_name="clips",
                     extra={"classes": names, "validation_clips": val_clips.tolist(),
                            "store_train": store_identity(store, ["train"]),
                            "augment": {"mixup_alpha": mixup_alpha, "spec_augment": list(spec) if spec else None}})
    result = fit(task, train, out_dir, epochs=epochs, device=device, lr=lr, weight_decay=weight_decay,
                 warmup=warmup, patience=patience, max_minutes=max_minutes, resume=resume, progress=progress)
    sizes = {"train": int(train_clips.size), "curated_fit": int(fit_curated.size),
             "noisy": int(np.count_nonzero(weights[train_clips] > 0) - fit_curated.size),
             "validation": int(val_clips.size)}
    return FsdTrainResult(**{f.name: getattr(result, f.name) for f in fields(result)}, split_sizes=sizes)
