"""Spotify Sequential Skip Prediction Challenge metrics.

Follows the official crowdAI scorer (``skip-prediction-challenge-starter-kit``,
``local_evaluation.ipynb``: ``ave_pre`` and ``evaluate``). Every session's ground truth is the
0/1 skip vector of the *second half* of that session; a submission is one line per test session
holding that many ``0``/``1`` digits.

The summation order of the official pure-Python loops is reproduced (sequential cumulative sums),
so results are bit-identical to the reference, not just close.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featurestore.store.atomic import atomic_write_bytes

__all__ = [
    "SkipScore",
    "average_accuracy",
    "evaluate_skip",
    "read_submission",
    "write_submission",
]


@dataclass(frozen=True)
class SkipScore:
    """Result of :func:`evaluate_skip` (the challenge's primary and secondary metrics)."""

    mean_average_accuracy: float
    first_prediction_accuracy: float
    per_session: np.ndarray  # float64, average accuracy of every session


def _as_binary_session(values: Sequence[int] | np.ndarray, what: str, index: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what} session {index}: expected a 1-D sequence of 0/1, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what} session {index}: empty session")
    if arr.dtype == np.bool_:
        return arr.astype(np.int8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{what} session {index}: values must be 0 or 1, got dtype {arr.dtype}")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{what} session {index}: values must be 0 or 1, got {arr[pos].item()!r} at position {pos}"
        )
    return arr.astype(np.int8)


def _aa_rows(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Average accuracy of every row of equal-length (m, L) 0/1 matrices, official summation order."""
    length = truth.shape[1]
    correct = truth == pred
    hits = np.cumsum(correct, axis=1)  # s in ave_pre: correct predictions so far
    terms = np.where(correct, hits / np.arange(1, length + 1, dtype=np.float64), 0.0)
    # ave_pre adds s/c only on hits; adding 0.0 elsewhere is exact, and cumsum is sequential.
    return np.cumsum(terms, axis=1)[:, -1] / length


def average_accuracy(truth: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray) -> float:
    """Average accuracy (AA) of one session, as crowdAI ``ave_pre``.

    ``AA = (1/T) * sum_i A(i) * L(i)`` where ``A(i)`` is the accuracy of the first ``i`` predictions and
    ``L(i)`` is 1 when prediction ``i`` is correct.
    """
    t = _as_binary_session(truth, "truth", 0)
    p = _as_binary_session(pred, "prediction", 0)
    if t.shape != p.shape:
        raise ValueError(f"session 0: prediction has {p.size} values, ground truth has {t.size}")
    return float(_aa_rows(t[None, :], p[None, :])[0])


def evaluate_skip(
    truth: Sequence[Sequence[int] | np.ndarray],
    predictions: Sequence[Sequence[int] | np.ndarray],
) -> SkipScore:
    """Mean average accuracy and first-prediction accuracy, as crowdAI ``evaluate``.

    Sessions are matched by position. Raises ``ValueError`` naming the session index when a prediction's
    length differs from its ground truth, or when any value is not 0/1.
    """
    if len(truth) != len(predictions):
        raise ValueError(f"got {len(predictions)} predicted sessions for {len(truth)} ground-truth sessions")
    n = len(truth)
    if n == 0:
        raise ValueError("no sessions to evaluate")
    t_sessions = [_as_binary_session(s, "truth", i) for i, s in enumerate(truth)]
    p_sessions = [_as_binary_session(s, "prediction", i) for i, s in enumerate(predictions)]
    lengths = np.fromiter((s.size for s in t_sessions), dtype=np.int64, count=n)
    for i, (t, p) in enumerate(zip(t_sessions, p_sessions, strict=True)):
        if t.size != p.size:
            raise ValueError(f"session {i}: prediction has {p.size} values, ground truth has {t.size}")

    flat_t = np.concatenate(t_sessions)
    flat_p = np.concatenate(p_sessions)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    per_session = np.empty(n, dtype=np.float64)
    for length in np.unique(lengths):  # one vectorized pass per distinct session length
        rows = np.flatnonzero(lengths == length)
        cols = starts[rows, None] + np.arange(length)
        per_session[rows] = _aa_rows(flat_t[cols], flat_p[cols])

    first_correct = int(np.count_nonzero(flat_t[starts] == flat_p[starts]))
    # The official loop accumulates ``ap_sum += ...`` sequentially; cumsum keeps that order.
    mean_aa = float(np.cumsum(per_session)[-1] / n)
    return SkipScore(
        mean_average_accuracy=mean_aa,
        first_prediction_accuracy=first_correct / n,
        per_session=per_session,
    )


def read_submission(path: str | os.PathLike[str], expected_lengths: Sequence[int]) -> list[np.ndarray]:
    """Read a skip-prediction submission: one line of ``0``/``1`` digits per test session.

    ``expected_lengths[i]`` is the number of predictions (second-half tracks) of session ``i``.
    Raises ``ValueError`` naming the file and 1-based line number on any malformed line, and when the
    file has the wrong number of lines. Returns one int8 array per session.
    """
    path = Path(path)
    with path.open("r", encoding="ascii", errors="replace", newline=None) as fh:
        lines = fh.read().splitlines()
    # A single trailing newline is normal; splitlines() already drops it. Allow trailing blank lines too.
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != len(expected_lengths):
        raise ValueError(
            f"{path}: expected {len(expected_lengths)} lines (one per session), found {len(lines)}"
        )
    out: list[np.ndarray] = []
    for i, (raw, expected) in enumerate(zip(lines, expected_lengths, strict=True)):
        line_no = i + 1
        line = raw.strip()
        for col, ch in enumerate(line):
            if ch not in "01":
                raise ValueError(
                    f"{path}:{line_no}: invalid character {ch!r} at column {col + 1}; only '0' and '1' are allowed"
                )
        if len(line) != expected:
            raise ValueError(f"{path}:{line_no}: expected {expected} predictions, found {len(line)}")
        out.append((np.frombuffer(line.encode("ascii"), dtype=np.uint8) - ord("0")).astype(np.int8))
    return out


def write_submission(path: str | os.PathLike[str], predictions: Sequence[Sequence[int] | np.ndarray]) -> None:
    """Write a skip-prediction submission (one ``0``/``1`` digit string per session) atomically.

    The text goes to a temporary file in the destination directory which then replaces ``path``.
    """
    path = Path(path)
    lines = []
    for i, session in enumerate(predictions):
        arr = _as_binary_session(session, "prediction", i)
        lines.append((arr.astype(np.uint8) + ord("0")).tobytes().decode("ascii"))
    atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode())
