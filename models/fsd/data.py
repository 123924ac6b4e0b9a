"""What the FSD model reads from a store: the class list, the curated validation split, the noisy-clip
policy as per-clip loss weights, and the per-bin statistics that standardize the frames."""

from __future__ import annotations

import numpy as np
import torch

from featurestore.store import Store
from featurestore.store.errors import FstoreError
from featurestore.store.frames import FrameSet
from loaders.base import require_table
from loaders.splits import rarest_label, stratified_holdout

__all__ = ["NOISY_POLICIES", "STATS_FRAMES", "class_names", "clip_weights", "curated_split", "frame_stats",
           "multi_hot", "train_frames"]

# how the noisy clips enter training: not at all, like curated ones, or with a lower loss weight
NOISY_POLICIES = ("curated", "mixed", "weighted")
STATS_FRAMES = 1_000_000  # frames the standardization statistics are measured on (strided sample)


def train_frames(store: Store) -> FrameSet:
    """The labelled ``train`` frame set of an FSD store (``curated`` column, multi-label ``labels``)."""
    require_table(store, "train", "frames", "frame set")
    fs = store.frames("train")
    if "curated" not in fs.clip_columns or fs.labels() is None:
        raise FstoreError(f"{store.path}: frame set 'train' has no 'curated' column or no multi-label 'labels': "
                          "not an FSDKaggle2019 store (fstore ingest fsd writes one)")
    return fs


def class_names(store: Store, fs: FrameSet) -> list[str]:
    """Class names in code order (the ingest takes them from sample_submission.csv, in its order)."""
    return [str(v) for v in store.dictionary(fs.meta["labels"]["dictionary"]).values]


def multi_hot(fs: FrameSet, clips: np.ndarray, classes: int) -> np.ndarray:
    """(len(clips), classes) uint8 label matrix of ``clips``."""
    ragged = fs.labels()
    offsets = np.asarray(ragged.offsets, dtype=np.int64)
    values = ragged.read("class").astype(np.int64)
    out = np.zeros((clips.size, classes), dtype=np.uint8)
    for row, c in enumerate(clips):
        out[row, values[offsets[c] : offsets[c + 1]]] = 1
    return out


def curated_split(fs: FrameSet, classes: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) clip ids of the curated clips, sorted: stratified by each clip's rarest label
    (``loaders.splits``), deterministic by ``seed``."""
    curated = np.flatnonzero(fs.column("curated"))
    if curated.size < 2:
        raise FstoreError(f"need at least 2 curated clips for a validation split, the store has {curated.size}")
    ragged = fs.labels()
    offsets = np.asarray(ragged.offsets, dtype=np.int64)
    values = ragged.read("class").astype(np.int64)
    lengths = offsets[curated + 1] - offsets[curated]
    sub_offsets = np.concatenate([[0], np.cumsum(lengths)])
    sub_values = np.concatenate([values[offsets[c] : offsets[c + 1]] for c in curated])
    try:
        fit, held = stratified_holdout(rarest_label(sub_offsets, sub_values, classes), holdout, seed)
    except ValueError as e:
        raise FstoreError(f"holdout: {e}") from None
    if held.size == 0:
        raise FstoreError(f"holdout {holdout} leaves no curated clip for validation (every rarest label is unique)")
    return curated[fit], curated[held]


def clip_weights(fs: FrameSet, fit: np.ndarray, policy: str, noisy_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(training clip ids, per-clip loss weight over every clip of the set) for a noisy-clip ``policy``.

    Held-out clips never train (weight 0); curated fit clips weigh 1; noisy clips 0 (``curated``),
    1 (``mixed``) or ``noisy_weight`` (``weighted``).
    """
    if policy not in NOISY_POLICIES:
        raise FstoreError(f"noisy-clip policy must be one of {', '.join(NOISY_POLICIES)}, got {policy!r}")
    if policy == "weighted" and not 0.0 < noisy_weight <= 1.0:
        raise FstoreError(f"noisy weight must be in (0, 1], got {noisy_weight}")
    noisy = np.flatnonzero(fs.column("curated") == 0)
    weights = np.zeros(fs.clips, dtype=np.float32)
    weights[fit] = 1.0
    if policy == "curated" or noisy.size == 0:
        return np.sort(fit), weights
    weights[noisy] = 1.0 if policy == "mixed" else noisy_weight
    return np.sort(np.concatenate([fit, noisy])), weights


def frame_stats(fs: FrameSet, max_frames: int = STATS_FRAMES) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and standard deviation (store units) of a strided sample of the set's frames,
    computed from code histograms and the quantizers' lookup table (no float copy of the frames)."""
    codes = fs.memmap()
    if codes.shape[0] == 0:
        raise FstoreError("frame set 'train' holds no frames")
    sample = np.asarray(codes[:: max(1, -(-codes.shape[0] // max_frames))])
    counts = np.stack([np.bincount(sample[:, b], minlength=256) for b in range(sample.shape[1])], axis=1)
    lut = np.nan_to_num(fs.lut().astype(np.float64))  # (256, bins); code 255 (NaN) is never counted
    if counts[255].any():
        raise FstoreError("frame set 'train' holds NaN frames (code 255)")
    n = counts.sum(0)
    mean = (counts * lut).sum(0) / n
    var = (counts * (lut - mean) ** 2).sum(0) / n
    return torch.from_numpy(mean).float(), torch.from_numpy(np.sqrt(var)).float()
