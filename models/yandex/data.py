"""What training and evaluation read from a Yandex store: the artist-disjoint split, feature statistics,
track ids and artists."""

from __future__ import annotations

import os

import numpy as np
import torch

from featurestore.store import Store
from featurestore.store.errors import FstoreError
from loaders.splits import group_holdout

__all__ = ["ARTIST", "artist_split", "feature_stats", "open_store", "track_ids", "validation_split"]

ARTIST = "artist"  # the per-clip label column of the train frame set
STATS_FRAMES = 32768  # frames the standardisation statistics are estimated on


def open_store(store: str | os.PathLike[str] | Store) -> Store:
    store = store if isinstance(store, Store) else Store(store)
    table = store.tables.get("train")
    if table is None or table.get("kind") != "frames" or ARTIST not in store.frames("train").clip_columns:
        raise FstoreError(f"{store.path}: no 'train' frame set with per-clip artists (not a Yandex store?)")
    return store


def artist_split(store: Store, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, holdout) clip ids of ``train``: a ``fraction`` of the artists, with all their tracks, held
    out (deterministic by ``seed``); ``fraction=0`` holds nothing out."""
    artists = store.frames("train").column(ARTIST)
    if fraction == 0:
        return np.arange(artists.size), np.zeros(0, dtype=np.int64)
    try:
        return group_holdout(artists, fraction, seed)
    except ValueError as e:
        raise FstoreError(f"{store.path}: artist holdout: {e}") from None


def validation_split(store: Store, clips: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) subsets of ``clips``: a ``fraction`` of their artists, with all their tracks, for
    validation during training (so the :func:`artist_split` holdout stays unseen by model selection);
    ``fraction=0`` keeps every clip for fitting."""
    clips = np.asarray(clips, dtype=np.int64)
    if fraction == 0 or clips.size == 0:
        return clips, np.zeros(0, dtype=np.int64)
    try:
        fit, val = group_holdout(store.frames("train").column(ARTIST)[clips], fraction, seed + 1)
    except ValueError as e:
        raise FstoreError(f"{store.path}: validation artists: {e}") from None
    return clips[fit], clips[val]


def feature_stats(store: Store, clips: np.ndarray, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and std of the decoded frames of ``clips`` (train), from up to
    :data:`STATS_FRAMES` frames drawn without replacement."""
    fs = store.frames("train")
    offsets = fs.offsets.astype(np.int64)
    rows = np.concatenate([np.arange(offsets[c], offsets[c + 1]) for c in clips]) if len(clips) else []
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        raise FstoreError(f"{store.path}: no training frames")
    if rows.size > STATS_FRAMES:
        rows = np.sort(np.random.default_rng([seed, 7]).choice(rows, STATS_FRAMES, replace=False))
    x = fs.dequantize(fs.memmap()[rows]).astype(np.float64)
    return torch.as_tensor(x.mean(0), dtype=torch.float32), torch.as_tensor(x.std(0), dtype=torch.float32)


def track_ids(store: Store, split: str) -> np.ndarray:
    """Integer track ids of a split's clips (row = clip index)."""
    ids = store.ids(split)
    try:
        return np.asarray([int(t) for t in ids], dtype=np.int64)
    except ValueError:
        raise FstoreError(f"{store.path}: {split} track ids are not integers (the submission needs them)") from None
