"""Train an :class:`~models.yandex.model.ArtistEncoder` from a Yandex store.

Batches: ``SegmentBatches(balanced=(m, P), label="artist")``, m tracks of each of P artists, no artist
in two batches of an epoch, random crops whose length follows ``linear_curriculum`` (10 -> 81 steps
over the first ``curriculum_epochs``; ``curriculum=None`` trains on full-length crops throughout).
The artists of an artist-disjoint holdout (:func:`~models.yandex.data.artist_split`) are never
trained on nor tuned on: they are what ``evaluate yandex`` scores. Validation uses a second
artist-disjoint split carved out of the remaining artists (:func:`~models.yandex.data.validation_split`):
every epoch they (whole artists, up to ``val_sample`` tracks) are embedded and scored with the official
nDCG@100 (``val_ndcg``), which drives early stopping and ``best.pt``. Loss:
:class:`~models.yandex.losses.MetricLoss` on augmented frames (:func:`~models.yandex.augment.augment_frames`,
on the device). The loop, checkpoints, resume and history are :func:`models.training.fit`'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from featurestore.store import Store
from featurestore.store.errors import FstoreError
from loaders import SegmentBatches, linear_curriculum
from loaders.splits import VAL_SAMPLE, bounded_sample
from models.metrics.yandex_ndcg import ndcg_at_100
from models.training import FitResult, TrainTask, fit, parse_device, seed_everything

from .augment import DEFAULT_AUGMENT, augment_frames
from .data import ARTIST, artist_split, feature_stats, open_store, track_ids, validation_split
from .embed import embed_clips
from .losses import DEFAULT_LOSS, MetricLoss
from .model import ARCHS, ArtistEncoder
from .rerank import top_k

__all__ = ["DEFAULT_MODEL", "VAL_HOLDOUT", "retrieval_ndcg", "train_yandex"]

DEFAULT_MODEL = {"d_model": 128, "layers": 2, "heads": 4, "ff": 256, "emb_dim": 128, "dropout": 0.1,
                 "kernel_size": 7, "pooled_branch": True, "pooling": "mean+std"}
MAX_CROP = 81
VAL_HOLDOUT = 0.125  # of the artists outside the evaluation holdout: 20 of the default 160


def retrieval_ndcg(rankings: torch.Tensor, ids: np.ndarray, artists: np.ndarray) -> float:
    """Official nDCG@100 of (n, k) neighbour rows (indices into ``ids``) for tracks ``ids`` by ``artists``."""
    neighbours = ids[rankings.cpu().numpy()]
    submission = {int(q): row.tolist() for q, row in zip(ids, neighbours, strict=True)}
    return ndcg_at_100(submission, {int(t): int(a) for t, a in zip(ids, artists, strict=True)})


def validation_scores(model: torch.nn.Module, store: Store, clips: np.ndarray, window: int | None,
                      hop: int | None, device: torch.device) -> dict[str, float]:
    """``val_ndcg``: nDCG@100 of plain top-100 search among the held-out artists' tracks."""
    ids, emb = embed_clips(model, store, "train", clips=clips, window=window, hop=hop, device=device)
    ranking = top_k(emb, k=min(100, ids.size - 1))
    return {"val_ndcg": retrieval_ndcg(ranking, track_ids(store, "train")[ids],
                                       store.frames("train").column(ARTIST)[ids])}


def _unknown(given: dict | None, known: dict, what: str) -> None:
    extra = set(given or {}) - set(known)
    if extra:
        raise FstoreError(f"unknown {what} settings {sorted(extra)} (known: {sorted(known)})")


def train_yandex(store: str | os.PathLike[str] | Store, out_dir: str | os.PathLike[str], arch: str = "transformer",
                 epochs: int = 40, m: int = 4, artists_per_batch: int = 16, lr: float = 1e-3,
                 holdout: float = 0.2, seed: int = 0, curriculum: tuple[int, int] | None = (10, MAX_CROP),
                 curriculum_epochs: int | None = None, window: int | None = None, hop: int | None = None,
                 device: str | torch.device = "cpu", max_minutes: float | None = None, resume: bool = True,
                 progress: bool = True, patience: int = 8, weight_decay: float = 0.01, warmup: float = 0.05,
                 model: dict | None = None, loss: dict | None = None, augment: dict | None = None,
                 torch_threads: int | None = None, val_sample: int = VAL_SAMPLE,
                 val_holdout: float = VAL_HOLDOUT) -> FitResult:
    """Train one encoder on ``store``'s train frame set; see the module docstring.

    ``curriculum=(start, stop)`` ramps the crop from ``start`` to ``stop`` steps over ``curriculum_epochs``
    (default: half of ``epochs``); ``window`` / ``hop`` set the validation's rolling windows (None: whole
    clips). ``model``, ``loss`` and ``augment`` override :data:`DEFAULT_MODEL`, ``DEFAULT_LOSS`` and
    ``DEFAULT_AUGMENT`` entries. ``holdout=0`` trains on every artist without validation. Each validation
    ranks the same validation artists' tracks (a ``val_holdout`` fraction of the artists left after the
    evaluation holdout), whole artists up to ``val_sample`` tracks (0: all of them).
    The other arguments are :func:`models.training.fit`'s.
    """
    if arch not in ARCHS:
        raise FstoreError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    if not 0.0 <= holdout < 1.0:
        raise FstoreError(f"holdout must be in [0, 1), got {holdout}")
    for given, known, what in ((model, DEFAULT_MODEL, "model"), (loss, DEFAULT_LOSS, "loss"),
                               (augment, DEFAULT_AUGMENT, "augment")):
        _unknown(given, known, what)
    store = open_store(store)
    device = parse_device(device)
    if torch_threads:
        torch.set_num_threads(torch_threads)
    seed_everything(seed)

    fit_clips, _ = artist_split(store, holdout, seed)  # the evaluation artists: never trained or tuned on
    fit_clips, held = validation_split(store, fit_clips, val_holdout if holdout else 0.0, seed)
    ramp = curriculum_epochs or max(1, epochs // 2)
    crop: int | Callable[[int], int] = (linear_curriculum(curriculum[0], curriculum[1], ramp) if curriculum
                                        else MAX_CROP)
    try:
        batches = SegmentBatches(store, "train", crop=crop, balanced=(m, artists_per_batch), label=ARTIST,
                                 seed=seed, device=device, clips=fit_clips, threads=1 if device.type == "cpu" else 2)
        if len(batches) == 0:
            raise ValueError("no batches")
    except ValueError as e:
        raise FstoreError(f"{store.path}: cannot build artist-balanced batches of {m} x {artists_per_batch}: {e}; "
                          "use fewer --artists-per-batch or a smaller --holdout") from None

    model_cfg = {"arch": arch, "n_features": store.frames("train").bins, **DEFAULT_MODEL, **(model or {})}
    config = {"model": model_cfg, "loss": {**DEFAULT_LOSS, **(loss or {})},
              "augment": {**DEFAULT_AUGMENT, **(augment or {})},
              "batches": {"m": m, "artists_per_batch": artists_per_batch,
                          "curriculum": [*curriculum, ramp] if curriculum else None},
              "holdout": {"fraction": holdout, "seed": seed}, "validation": {"fraction": val_holdout},
              "inference": {"window": window, "hop": hop}}
    net = ArtistEncoder(**model_cfg)
    net.set_feature_stats(*feature_stats(store, fit_clips, seed))
    objective = MetricLoss(**config["loss"])

    def step_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        frames = augment_frames(batch["frames"], batch["mask"], **config["augment"], fill=net.mean)
        return objective(model(frames, batch["mask"]), batch["label"])

    validate = None
    sample = bounded_sample(held, val_sample, seed, groups=store.frames("train").column(ARTIST)[held])
    if sample.size > 1:
        def validate(model: torch.nn.Module) -> dict[str, float]:
            return validation_scores(model, store, sample, window, hop, device)

    task = TrainTask(model=net, config=config, loss=step_loss, validate=validate, metric="val_ndcg",
                     higher_is_better=True, item_name="clips")
    return fit(task, batches, out_dir, epochs=epochs, device=device, lr=lr, weight_decay=weight_decay, warmup=warmup,
               patience=patience, max_minutes=max_minutes, resume=resume, progress=progress)
