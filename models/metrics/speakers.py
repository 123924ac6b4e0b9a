"""Speaker classification (the VoxCeleb-subset homework): accuracy of predicted speaker ids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def accuracy(truth: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray) -> float:
    """Share of utterances whose predicted speaker id equals the true one (the homework's grader)."""
    t = np.asarray(truth)
    p = np.asarray(predictions)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"truth {t.shape} and predictions {p.shape} must be 1-D of equal length")
    if t.size == 0:
        raise ValueError("no utterances to score")
    return float(np.mean(t == p))
