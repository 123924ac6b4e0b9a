"""The strongest simple baseline for skip prediction: one logistic regression (scikit-learn) per
second-half position, on first-half statistics plus the position's own track features.

Every second-half row of a session is one sample; its features are

* the session's first half, summarised: the share of each log flag (skips, pauses, shuffle, premium,
  context switches; seek counts as ``log1p``), the last three ``skip_2`` and the last ``skip_1``,
  ``skip_3`` and ``not_skipped``, the last ``reason_end`` (one-hot), the shares of each context type and
  reason, the session length and the hour of day (as a point on the circle);
* the row itself: the standardised track features of its track, its position in the second half
  (one-hot) and the last first-half ``skip_2`` divided by the distance to it (how far the skip chain
  carries).

It is linear per row: it cannot see how consecutive tracks relate to each other or how the first half's
skips relate to the first half's tracks, which is where a sequence model earns its margin. It is fitted
on a bounded by-session sample of the train split (``max_sessions``), so its memory does not grow with
the store, and batches come from the same ``SessionBatches`` the model trains on.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from featurestore.schemas.mssd import BATCH_LOG_COLUMNS
from featurestore.store import Store
from loaders import SessionBatches
from loaders.splits import bounded_sample

__all__ = ["FIT_SESSIONS", "fit_logreg", "predict_logreg", "session_design"]

FIT_SESSIONS = 20_000  # train sessions sampled for the fit: ~170,000 rows, a few seconds of lbfgs

_COL = {c: i for i, c in enumerate(BATCH_LOG_COLUMNS)}
_FLAGS = [_COL[c] for c in ("skip_1", "skip_2", "skip_3", "not_skipped", "context_switch", "no_pause_before_play",
                            "short_pause_before_play", "long_pause_before_play", "hist_user_behavior_is_shuffle",
                            "premium")]
_COUNTS = [_COL["hist_user_behavior_n_seekfwd"], _COL["hist_user_behavior_n_seekback"]]
# categorical log codes are the store's dictionary codes; codes past the width share the last column
_CATEGORIES = {"context_type": 8, "hist_user_behavior_reason_start": 16, "hist_user_behavior_reason_end": 16}


def _one_hot(codes: np.ndarray, width: int) -> np.ndarray:
    return np.eye(width, dtype=np.float32)[np.minimum(codes, width - 1)]


def session_design(batch: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X, session, position)`` of every real second-half row of a CPU ``SessionBatches`` batch:
    one row of features each (module docstring), the session id and the 0-based second-half position."""
    log = batch["ctx_log"].numpy()
    cmask = batch["ctx_mask"].numpy()
    tmask = batch["tgt_mask"].numpy()
    b, h, _ = log.shape
    n_ctx = cmask.sum(1)
    w = (cmask / np.maximum(n_ctx, 1)[:, None]).astype(np.float32)[..., None]  # mean over the first half
    last = np.maximum(n_ctx - 1, 0)
    rows = np.arange(b)

    def back(k: int, col: int) -> np.ndarray:  # the k-th last first-half value of a log column (0 if none)
        idx = last - k
        return np.where(idx >= 0, log[rows, np.maximum(idx, 0), col], 0).astype(np.float32)

    session = [(log[..., _FLAGS] * w).sum(1), (np.log1p(log[..., _COUNTS].astype(np.float32)) * w).sum(1)]
    session += [np.stack([back(k, _COL["skip_2"]) for k in range(3)], 1)]
    session += [np.stack([back(0, _COL[c]) for c in ("skip_1", "skip_3", "not_skipped")], 1)]
    end = _CATEGORIES["hist_user_behavior_reason_end"]
    session += [_one_hot(back(0, _COL["hist_user_behavior_reason_end"]).astype(np.int64), end)]
    session += [(_one_hot(log[..., _COL[c]], width) * w).sum(1) for c, width in _CATEGORIES.items()]
    hour = 2 * np.pi * back(0, _COL["hour_of_day"]) / 24
    length = batch["length"].numpy().astype(np.float32)
    session += [np.stack([np.sin(hour), np.cos(hour), length, n_ctx.astype(np.float32)], 1)]
    per_session = np.concatenate(session, 1)

    s, p = np.nonzero(tmask)
    last_skip = back(0, _COL["skip_2"])[s]
    x = np.concatenate([per_session[s], batch["tgt_features"].numpy()[s, p].astype(np.float32),
                        np.eye(h, dtype=np.float32)[p], ((2 * last_skip - 1) / (p + 1))[:, None]], 1)
    return x, batch["session"].numpy()[s], p


def _rows(loader: SessionBatches) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Design rows, targets, sessions and positions over every batch of ``loader``."""
    parts = [(*session_design(batch), batch["tgt_skip"].numpy()[batch["tgt_mask"].numpy()]) for batch in loader]
    if not parts:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int8), np.zeros(0, np.int64), np.zeros(0, np.int64)
    x, s, p, y = (np.concatenate(c) for c in zip(*parts, strict=True))
    return x, y.astype(np.int8), s, p


def fit_logreg(store: Store, max_sessions: int = FIT_SESSIONS, seed: int = 0) -> Pipeline:
    """The baseline fitted on at most ``max_sessions`` train sessions (a seeded sample)."""
    loader = SessionBatches(store, "train", batch_size=1024, order="sequential", seed=seed, threads=1)
    loader.items = bounded_sample(loader.items, max_sessions, seed)
    x, y, _, _ = _rows(loader)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    return model.fit(x, y)


def predict_logreg(model: Pipeline, store: Store, split: str = "test") -> list[np.ndarray]:
    """0/1 predictions (probability > 0.5) of every session of ``split``, in store order."""
    loader = SessionBatches(store, split, batch_size=1024, order="sequential", threads=1)
    preds = [np.zeros(0, np.int8)] * int(loader.items.size)
    for batch in loader:
        x, s, p = session_design(batch)
        guess = (model.predict_proba(x)[:, 1] > 0.5).astype(np.int8)
        for session in np.unique(s):
            at = s == session
            preds[int(session)] = guess[at][np.argsort(p[at])]
    return preds
