"""The strongest simple baseline of the FSD tagger: one-vs-rest logistic regression (scikit-learn) on
each clip's log-mel pooled over time (per-bin mean and standard deviation), the usual clip-level
summary of pre-CNN audio tagging. It is fitted on the clips and per-clip weights the model trained on
(the noisy-clip policy included) and scored on the same held-out clips, so the margin is the share of
the model's lwlrap that pooled spectra do not explain.

The inverse regularization ``C`` is chosen from :data:`C_GRID` by lwlrap on the curated clips of
k-fold splits of the training clips (never on the validation clips), then the model is refitted on all
of them.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from featurestore.store.frames import FrameSet
from models.metrics import lwlrap

__all__ = ["C_GRID", "LogisticBaseline", "pooled_features"]

C_GRID = (0.03, 0.1, 0.3, 1.0, 3.0)
FOLDS = 3


def pooled_features(fs: FrameSet, clips: np.ndarray) -> np.ndarray:
    """(len(clips), 2 * bins) float32: each clip's per-bin mean, then per-bin standard deviation, of its
    decoded log-mel frames (one clip in memory at a time)."""
    out = np.empty((clips.size, 2 * fs.bins), dtype=np.float32)
    for row, c in enumerate(clips.tolist()):
        x = fs.dequantize(fs.clip(c)).astype(np.float64)
        out[row, : fs.bins] = x.mean(0)
        out[row, fs.bins :] = x.std(0)
    return out


class LogisticBaseline:
    """One binary :class:`~sklearn.linear_model.LogisticRegression` per class on standardized pooled
    features; a class without both outcomes among the training clips scores its weighted frequency."""

    def __init__(self, c: float = 1.0):
        self.c = c
        self.scaler = StandardScaler()
        self.models: list[LogisticRegression | float] = []

    def fit(self, x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> LogisticBaseline:
        """``x`` (n, features), ``y`` (n, classes) 0/1, ``weight`` (n,) per-clip loss weights."""
        z = self.scaler.fit_transform(x)
        self.models = []
        # one BLAS thread: on this kind of busy 2-core host, lbfgs with a thread per core ran 15x slower
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore", ConvergenceWarning)
            for k in range(y.shape[1]):
                target = y[:, k]
                if target.min() == target.max():
                    self.models.append(float(np.average(target, weights=weight)))
                    continue
                model = LogisticRegression(C=self.c, max_iter=500)
                self.models.append(model.fit(z, target, sample_weight=weight))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n, classes) probabilities."""
        z = self.scaler.transform(x)
        with threadpool_limits(1):
            cols = [np.full(len(z), m) if isinstance(m, float) else m.predict_proba(z)[:, 1] for m in self.models]
        return np.stack(cols, axis=1)

    @classmethod
    def tuned(cls, x: np.ndarray, y: np.ndarray, weight: np.ndarray, curated: np.ndarray,
              seed: int = 0) -> tuple[LogisticBaseline, dict[float, float]]:
        """Fitted on all rows with the ``C`` of :data:`C_GRID` whose mean lwlrap over :data:`FOLDS` folds
        (scored on each held-out fold's ``curated`` rows, whose labels are clean) is highest; also
        returns that lwlrap per ``C``."""
        folds = list(KFold(FOLDS, shuffle=True, random_state=seed).split(x))
        cv: dict[float, float] = {}
        for c in C_GRID:
            scores = []
            for fit, held in folds:
                held = held[curated[held]]
                truth = y[held]
                if not held.size or not truth.any():
                    continue
                scores.append(lwlrap(truth, cls(c).fit(x[fit], y[fit], weight[fit]).predict(x[held])))
            cv[c] = float(np.mean(scores)) if scores else float("nan")
        best = max(C_GRID, key=lambda c: (np.nan_to_num(cv[c], nan=-1.0), -c))
        return cls(best).fit(x, y, weight), cv
