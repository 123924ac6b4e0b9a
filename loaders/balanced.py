"""Class-balanced epochs: m clips per class, P classes per batch, no class in two batches of an epoch.

Locality vs mixing: a batch's classes are drawn from a window of classes that sit close together
in storage (classes sorted by the position of their clips, then shuffled within windows of
``window`` batches, the quasi-random idea applied to classes). So consecutive batches read from
one region of the frame array at a time, while inside a window the pairing of classes into
batches is random. ``window=None`` gives a fully random class order (best mixing, random reads).
``bench loader`` prints how many distinct storage blocks a window of batches touches either way.
"""

from __future__ import annotations

import numpy as np

from .orders import epoch_rng


def eligible_classes(labels: np.ndarray, min_clips: int = 2) -> tuple[np.ndarray, int]:
    """Classes with at least ``min_clips`` clips (pairs are needed), and how many were skipped."""
    classes, counts = np.unique(labels, return_counts=True)
    keep = counts >= min_clips
    return classes[keep], int((~keep).sum())


def balanced_batches(labels: np.ndarray, m: int, classes_per_batch: int, seed: int, epoch: int,
                     window: int | None = 8, min_clips: int = 2) -> list[np.ndarray]:
    """One epoch of batches of clip ids (each P*m long, classes with < m clips sampled with replacement)."""
    if m < 1 or classes_per_batch < 1:
        raise ValueError(f"m and classes_per_batch must be >= 1, got {m} and {classes_per_batch}")
    rng = epoch_rng(seed, epoch)
    classes, _ = eligible_classes(labels, min_clips)
    if classes.size < classes_per_batch:
        raise ValueError(f"{classes.size} classes with >= {min_clips} clips, fewer than classes_per_batch "
                         f"{classes_per_batch}")
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, classes, side="left")
    stops = np.searchsorted(sorted_labels, classes, side="right")
    # classes in storage order (by their first clip), then shuffled within windows of classes
    position = np.array([order[a:b].min() for a, b in zip(starts, stops, strict=True)])
    by_storage = np.argsort(position, kind="stable")
    if window is None:
        class_order = rng.permutation(classes.size)
    else:
        span = window * classes_per_batch
        class_order = np.concatenate([rng.permutation(by_storage[i : i + span])
                                      for i in range(0, classes.size, span)])
    n_batches = classes.size // classes_per_batch
    batches = []
    for i in range(n_batches):
        picked = []
        for k in class_order[i * classes_per_batch : (i + 1) * classes_per_batch]:
            members = order[starts[k] : stops[k]]
            picked.append(rng.choice(members, size=m, replace=members.size < m))
        batches.append(np.concatenate(picked))
    if window is not None:  # batch order: shuffle within windows too, so windows are the unit of locality
        batches = [batches[j] for w in range(0, n_batches, window)
                   for j in w + rng.permutation(min(window, n_batches - w))]
    return batches
