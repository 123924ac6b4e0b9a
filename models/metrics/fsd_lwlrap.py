"""Label-weighted label-ranking average precision (lwlrap), the FSDKaggle2019 metric.

Follows Dan Ellis's reference implementation (``_one_sample_positive_class_precisions`` and
``lwlrap_accumulator`` / ``calculate_per_class_lwlrap``, as shipped in the Freesound Audio Tagging 2019
baseline ``utils.py``), vectorized over samples.

Tie behaviour matches the reference: classes are ranked by ``np.argsort(scores)[::-1]`` with NumPy's
default sort applied per row, exactly as the reference does per sample, so tied scores get the same
ranks. Per-class precisions are accumulated in sample order (sequential cumulative sum), so the values
are bit-identical to the reference accumulator.
"""

from __future__ import annotations

import numpy as np

__all__ = ["lwlrap", "lwlrap_per_class"]


def _check(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(truth)
    scores = np.asarray(scores)  # keep the caller's dtype: argsort (and so tie order) runs on it as-is
    if truth.ndim != 2 or scores.ndim != 2:
        raise ValueError(
            f"truth and scores must be 2-D (n_samples, n_classes); got {truth.shape}, {scores.shape}"
        )
    if truth.shape != scores.shape:
        raise ValueError(f"truth shape {truth.shape} != scores shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(scores.dtype, np.complexfloating):
        raise ValueError(f"scores must be real numbers, got dtype {scores.dtype}")
    if np.issubdtype(scores.dtype, np.floating) and np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return truth > 0, scores


def lwlrap_per_class(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class lwlrap and per-class weight (Dan Ellis's ``calculate_per_class_lwlrap``).

    ``truth`` is an (n, C) 0/1 (or boolean) label matrix, ``scores`` an (n, C) real score matrix.
    Returns ``(per_class_lwlrap, per_class_weight)``, both float64 of length C; the weight of a class is
    its share of all positive labels, and ``lwlrap == sum(per_class_lwlrap * per_class_weight)``.
    """
    positive, scores = _check(truth, scores)
    n, num_classes = scores.shape
    labels_per_class = np.count_nonzero(positive, axis=0)
    total_labels = int(labels_per_class.sum())
    if total_labels == 0:
        raise ValueError("truth has no positive labels; lwlrap is undefined")

    # Reference: retrieved_classes = np.argsort(scores)[::-1] (per sample; same sort kind per row here).
    retrieved = np.argsort(scores, axis=1)[:, ::-1]
    rank = np.empty_like(retrieved)
    np.put_along_axis(rank, retrieved, np.broadcast_to(np.arange(num_classes), (n, num_classes)), axis=1)
    # Cumulative number of true classes at each retrieved position, then looked up at each class's rank.
    cumulative_hits = np.cumsum(np.take_along_axis(positive, retrieved, axis=1), axis=1)
    hits_at_rank = np.take_along_axis(cumulative_hits, rank, axis=1)
    precision = np.where(positive, hits_at_rank / (1.0 + rank), 0.0)

    # The accumulator adds samples one after another; cumsum along axis 0 keeps that order.
    per_class_precision = np.cumsum(precision, axis=0)[-1]
    per_class_lwlrap = per_class_precision / np.maximum(1, labels_per_class)
    per_class_weight = labels_per_class / float(total_labels)
    return per_class_lwlrap, per_class_weight


def lwlrap(truth: np.ndarray, scores: np.ndarray) -> float:
    """Overall lwlrap (Dan Ellis's ``lwlrap_accumulator.overall_lwlrap``), the FSDKaggle2019 score."""
    per_class_lwlrap, per_class_weight = lwlrap_per_class(truth, scores)
    return float(np.sum(per_class_lwlrap * per_class_weight))
