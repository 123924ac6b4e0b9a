"""Deterministic validation splits of a loader's items (pass the parts as ``SegmentBatches(clips=...)``).

- ``stratified_holdout``: by item, each class keeps its share in both parts (a class with at least
  two items always has one on each side);
- ``group_holdout``: whole groups go to one side (artist-disjoint retrieval validation);
- ``rarest_label``: one stratification key per multi-label item (its rarest label), so rare classes
  reach the held-out part;
- ``bounded_sample``: at most N of a held-out part (whole groups, optionally), for validation during
  training that costs the same at any data size.
Every split is a pure function of (labels, fraction, seed): the same on every machine and rank.
"""

from __future__ import annotations

import numpy as np

__all__ = ["VAL_SAMPLE", "bounded_sample", "group_holdout", "rarest_label", "stratified_holdout"]

VAL_SAMPLE = 2000  # items validation during training scores by default (fstore train --val-sample)


def _check_fraction(fraction: float) -> None:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit, holdout) item ids, sorted: per class, round(fraction * count) items held out, at least
    one and at most count - 1 for classes with two or more items (single-item classes stay in fit)."""
    _check_fraction(fraction)
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 104729])
    held = np.zeros(labels.size, dtype=bool)
    order = np.argsort(labels, kind="stable")
    classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    for start, count in zip(starts, counts, strict=True):
        if count < 2:
            continue
        k = min(max(int(round(fraction * count)), 1), count - 1)
        members = order[start : start + count]
        held[rng.choice(members, size=k, replace=False)] = True
    ids = np.arange(labels.size)
    return ids[~held], ids[held]


def group_holdout(groups: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit, holdout) item ids, sorted: a random ``fraction`` of the groups (at least one, never all)
    is held out with every item it has."""
    _check_fraction(fraction)
    groups = np.asarray(groups)
    unique = np.unique(groups)
    if unique.size < 2:
        raise ValueError(f"a group holdout needs at least 2 groups, got {unique.size}")
    k = min(max(int(round(fraction * unique.size)), 1), unique.size - 1)
    chosen = np.random.default_rng([seed, 130363]).choice(unique, size=k, replace=False)
    held = np.isin(groups, chosen)
    ids = np.arange(groups.size)
    return ids[~held], ids[held]


def rarest_label(offsets: np.ndarray, values: np.ndarray, classes: int) -> np.ndarray:
    """Per item of a multi-label CSR (offsets (n + 1,), values = class codes): its rarest class, or
    ``classes`` (an extra key) for an item without labels."""
    offsets, values = np.asarray(offsets), np.asarray(values)
    freq = np.bincount(values, minlength=classes)
    key = np.full(offsets.size - 1, classes, dtype=np.int64)
    lengths = np.diff(offsets)
    has = np.flatnonzero(lengths)
    for i in has:
        labs = values[offsets[i] : offsets[i + 1]]
        key[i] = labs[np.argmin(freq[labs])]
    return key


def bounded_sample(items: np.ndarray, limit: int, seed: int = 0, groups: np.ndarray | None = None) -> np.ndarray:
    """``limit`` of ``items``, sorted: a random choice fixed by ``seed`` (the same on every call), or
    ``items`` itself when ``limit`` is 0 or not below their count. With ``groups`` (one per item),
    whole groups are taken in a random order while they fit in ``limit`` (at least one group)."""
    items = np.asarray(items)
    if limit < 0:
        raise ValueError(f"sample limit must be >= 0, got {limit}")
    if limit == 0 or items.size <= limit:
        return items
    rng = np.random.default_rng([seed, 15485863])
    if groups is None:
        return np.sort(rng.choice(items, size=limit, replace=False))
    groups = np.asarray(groups)
    unique, sizes = np.unique(groups, return_counts=True)
    order = rng.permutation(unique.size)
    fitting = int(np.count_nonzero(np.cumsum(sizes[order]) <= limit))  # a prefix of the order
    chosen = unique[order[: max(1, fitting)]]
    return np.sort(items[np.isin(groups, chosen)])
