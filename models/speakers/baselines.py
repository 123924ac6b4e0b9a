"""The simple baselines ``evaluate speakers`` prints beside the model, on pooled mel statistics.

* ``logistic_regression``: scikit-learn's multinomial logistic regression on the standardized mean and
  standard deviation over time of each mel band (80 numbers an utterance), fitted on the fit utterances;
* ``nearest_mean``: nearest class centroid (Euclidean) of the mean-pooled mels.

Pooled statistics are computed utterance by utterance in bounded frame chunks, in bounded batches of
utterances (:func:`pooled_batches`), so the memory they take is the (utterances, 80) matrix of the fit
set (36 MB at the real homework's size) and one batch, never a split's frames.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from featurestore.store import Store
from featurestore.store.frames import FrameSet

__all__ = ["QUERY_BATCH", "fit_logistic_regression", "nearest_mean", "pooled_mels", "pooled_batches"]

QUERY_BATCH = 2048  # utterances whose pooled statistics are held at a time while predicting
_CHUNK_FRAMES = 1 << 16  # frames decoded at a time within one utterance


def pooled_mels(fs: FrameSet, clips: np.ndarray) -> np.ndarray:
    """(len(clips), 2 * bins) float64: each utterance's per-band mean, then per-band standard deviation."""
    offsets, frames = fs.offsets.astype(np.int64), fs.memmap()
    out = np.zeros((clips.size, 2 * fs.bins))
    for i, c in enumerate(np.asarray(clips, dtype=np.int64)):
        a, b = int(offsets[c]), int(offsets[c + 1])
        total, total_sq = np.zeros(fs.bins), np.zeros(fs.bins)
        for s in range(a, b, _CHUNK_FRAMES):
            x = fs.dequantize(frames[s : min(b, s + _CHUNK_FRAMES)]).astype(np.float64)
            total += x.sum(0)
            total_sq += (x * x).sum(0)
        n = max(b - a, 1)
        mean = total / n
        out[i, : fs.bins] = mean
        out[i, fs.bins :] = np.sqrt(np.maximum(total_sq / n - mean * mean, 0.0))
    return out


def pooled_batches(store: Store, split: str, clips: np.ndarray, batch: int = QUERY_BATCH) -> Iterator[np.ndarray]:
    """:func:`pooled_mels` of ``clips`` in order, ``batch`` utterances at a time. Each batch maps the frame
    file afresh and drops the mapping after it, so the pages read stay out of this process's resident
    memory: a mapping kept open for a whole split holds every page it touched."""
    for start in range(0, clips.size, batch):
        yield pooled_mels(store.frames(split), clips[start : start + batch])


def fit_logistic_regression(features: np.ndarray, labels: np.ndarray, seed: int) -> Pipeline:
    """Standardize, then a multinomial logistic regression (L2, C = 1, lbfgs)."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    return model.fit(features, labels)


def nearest_mean(train_means: np.ndarray, train_labels: np.ndarray, query_means: np.ndarray,
                 classes: int) -> np.ndarray:
    """Class of the nearest (Euclidean) class centroid of the mean-pooled mels; a class without fit
    utterances is never predicted."""
    centroids = np.full((classes, train_means.shape[1]), np.inf)
    present = np.unique(train_labels)
    for c in present:
        centroids[c] = train_means[train_labels == c].mean(0)
    d = ((query_means[:, None, :] - centroids[None, present, :]) ** 2).sum(-1)
    return present[d.argmin(1)]
