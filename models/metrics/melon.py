"""Kakao Arena Melon Playlist Continuation metric.

Follows the official ``evaluate.py`` (``ArenaEvaluator._eval``): per playlist, song nDCG over the 100
recommended songs and tag nDCG over the 10 recommended tags, with discount ``1 / ln(rank + 1)`` and IDCG
over ``len(ground truth)`` items (not capped at the list length); both are averaged over playlists and
combined as ``0.85 * song + 0.15 * tag``. The official submission checks (same playlist ids, exactly 100
unique songs and 10 unique tags per playlist) are enforced. Summation orders match the reference, so the
values are bit-identical to it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["melon_score", "SONG_WEIGHT", "TAG_WEIGHT", "N_SONGS", "N_TAGS"]

SONG_WEIGHT = 0.85
TAG_WEIGHT = 0.15
N_SONGS = 100
N_TAGS = 10


class _IdealDCG:
    """Cache of IDCG(l) = sum_{i<l} 1/ln(i+2), grown on demand (the reference precomputes l <= 100)."""

    def __init__(self, size: int = 101) -> None:
        self._grow(size)

    def _grow(self, size: int) -> None:
        self.discounts = 1.0 / np.log(np.arange(size, dtype=np.float64) + 2)
        self.ideal = np.concatenate(([0.0], np.cumsum(self.discounts)))

    def __getitem__(self, length: int) -> float:
        if length >= self.ideal.size:
            self._grow(2 * length)
        return float(self.ideal[length])


def _ndcg(gt: Sequence[Hashable], rec: Sequence[Hashable], table: _IdealDCG) -> float:
    relevant = set(gt)
    dcg = 0.0
    for i, item in enumerate(rec):
        if item in relevant:
            dcg += table.discounts[i]
    return dcg / table[len(gt)]


def melon_score(
    ground_truth: Sequence[Mapping[str, Any]], recommendations: Sequence[Mapping[str, Any]]
) -> dict[str, float]:
    """Melon playlist continuation score, as kakao-arena ``evaluate.py`` (``ArenaEvaluator._eval``).

    Both arguments are lists of ``{"id": ..., "songs": [...], "tags": [...]}`` playlists. Returns
    ``{"song_ndcg": ..., "tag_ndcg": ..., "score": ...}``. Raises ``ValueError`` when the playlist ids
    differ, a recommendation does not hold exactly 100 songs / 10 tags, or repeats a song or tag, or a
    ground-truth playlist is empty.
    """
    gt_by_id = {g["id"]: g for g in ground_truth}
    if len(gt_by_id) != len(ground_truth):
        raise ValueError("ground truth has repeated playlist ids")
    rec_ids = [r["id"] for r in recommendations]
    if set(rec_ids) != set(gt_by_id):
        missing = sorted(set(gt_by_id) - set(rec_ids), key=str)[:5]
        extra = sorted(set(rec_ids) - set(gt_by_id), key=str)[:5]
        raise ValueError(
            f"recommendation playlist ids differ from ground truth (missing {missing}, extra {extra})"
        )
    if not recommendations:
        raise ValueError("no playlists to evaluate")

    for rec in recommendations:
        pid = rec["id"]
        for key, expected in (("songs", N_SONGS), ("tags", N_TAGS)):
            items = rec[key]
            if len(items) != expected:
                raise ValueError(f"playlist {pid}: expected {expected} recommended {key}, got {len(items)}")
            if len(set(items)) != expected:
                raise ValueError(f"playlist {pid}: recommended {key} contain duplicates")
        gt = gt_by_id[pid]
        if not gt["songs"] or not gt["tags"]:
            raise ValueError(f"playlist {pid}: ground truth has no songs or no tags (nDCG undefined)")

    table = _IdealDCG()
    song_total = 0.0
    tag_total = 0.0
    for rec in recommendations:  # sequential accumulation in submission order, as the reference
        gt = gt_by_id[rec["id"]]
        song_total += _ndcg(gt["songs"], rec["songs"][:N_SONGS], table)
        tag_total += _ndcg(gt["tags"], rec["tags"][:N_TAGS], table)
    song_ndcg = song_total / len(recommendations)
    tag_ndcg = tag_total / len(recommendations)
    score = song_ndcg * SONG_WEIGHT + tag_ndcg * TAG_WEIGHT
    return {"song_ndcg": float(song_ndcg), "tag_ndcg": float(tag_ndcg), "score": float(score)}
