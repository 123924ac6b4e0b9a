"""What training and evaluation read from a speakers store: the split, labels, names, pooled mel statistics."""

from __future__ import annotations

import os

import numpy as np

from featurestore.store import Store
from featurestore.store.errors import FstoreError
from featurestore.store.frames import FrameSet
from loaders.base import require_table
from loaders.splits import stratified_holdout

__all__ = ["LABEL", "TRAIN", "TEST", "clip_stats", "open_speakers", "speaker_labels", "validation_split"]

TRAIN, TEST, LABEL = "train", "test", "speaker"
_CHUNK_FRAMES = 1 << 18  # frames decoded at a time: bounded memory on the real homework's 56k utterances


def open_speakers(store: str | os.PathLike[str] | Store) -> Store:
    """The store, checked to hold a ``train`` frame set with per-utterance ``speaker`` codes."""
    store = store if isinstance(store, Store) else Store(store)
    require_table(store, TRAIN, "frames", "frame set")
    if LABEL not in store.frames(TRAIN).clip_columns:
        raise FstoreError(f"{store.path}: frame set 'train' has no '{LABEL}' column: not a speakers store "
                          "(`fstore ingest speakers` writes one)")
    return store


def speaker_labels(store: Store, split: str = TRAIN) -> np.ndarray:
    """Speaker codes (int64) of a split's utterances; code i is mapping.json's speaker id i."""
    return store.frames(split).column(LABEL).astype(np.int64)


def validation_split(store: Store, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) utterance ids of ``train``: by utterance, stratified by speaker, a pure function of
    (labels, holdout, seed); with ``holdout == 0`` everything is fit and nothing is held out."""
    labels = speaker_labels(store)
    if holdout == 0:
        return np.arange(labels.size), np.zeros(0, dtype=np.int64)
    try:
        return stratified_holdout(labels, holdout, seed)
    except ValueError as e:
        raise FstoreError(f"--holdout: {e}") from None


def clip_stats(fs: FrameSet, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per utterance of ``clips`` the mean of its dequantized frames (n, bins), and over all their frames
    the per-band mean and standard deviation (bins,), float64. Reads contiguous runs of frames in chunks."""
    clips = np.asarray(clips, dtype=np.int64)
    offsets, frames = fs.offsets.astype(np.int64), fs.memmap()
    sums = np.zeros((clips.size, fs.bins))
    total, total_sq, count = np.zeros(fs.bins), np.zeros(fs.bins), 0
    for i, c in enumerate(clips):
        a, b = int(offsets[c]), int(offsets[c + 1])
        for s in range(a, b, _CHUNK_FRAMES):
            x = fs.dequantize(frames[s : min(b, s + _CHUNK_FRAMES)]).astype(np.float64)
            sums[i] += x.sum(0)
            total += x.sum(0)
            total_sq += (x * x).sum(0)
        count += b - a
    lengths = offsets[clips + 1] - offsets[clips]
    means = sums / np.maximum(lengths, 1)[:, None]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean * mean, 0.0))
    return means, mean, std
