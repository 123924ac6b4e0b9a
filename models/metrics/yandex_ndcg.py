"""Yandex Cup 2022 (ML, audio track) artist-retrieval metric: mean nDCG@100.

Follows the official ``compute_score.py`` (``load_submission`` / ``eval_submission``):

* a submission line is ``query_trackid<TAB>id1 id2 ... id100``; the query itself is removed from its
  ranking and the ranking is cut at 100 items;
* a result is relevant when it has the query's artist; the discount is ``1 / log2(position + 1)``;
* IDCG is over ``min(100, tracks of the query's artist - 1)`` items; queries whose artist has a single
  track (IDCG 0) are skipped;
* every track of the metadata is a query; a track missing from the submission scores 0;
* the score is ``np.mean`` of the per-query nDCG values in metadata order.

Summation orders of the reference are kept, so values are bit-identical to it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.store.atomic import atomic_write_bytes

__all__ = [
    "ndcg_at_100",
    "ndcg_per_query",
    "parse_submission_lines",
    "read_submission",
    "write_submission",
]

TOP_SIZE = 100


def _discounts(n: int) -> np.ndarray:
    """``1 / log2(position + 1)`` for positions 1..n (same values as the reference's scalar calls)."""
    return 1.0 / np.log2(np.arange(1, n + 1, dtype=np.float64) + 1)


def _clean_ranking(query: int, ranking: Iterable[int], top_size: int) -> list[int]:
    out: list[int] = []
    for item in ranking:
        item = int(item)
        if item != query:
            out.append(item)
        if len(out) >= top_size:
            break
    return out


def ndcg_per_query(
    submission: Mapping[int, Sequence[int]],
    track_artist: Mapping[int, int],
    top_size: int = TOP_SIZE,
) -> dict[int, float]:
    """nDCG@``top_size`` of every scorable query, in ``track_artist`` order (official ``eval_submission``).

    ``track_artist`` maps every track of the evaluated set to its artist; each of its tracks is a query.
    Queries whose artist has only one track are absent from the result. Rankings are cleaned as the
    official ``load_submission`` does (query removed, cut at ``top_size``), so raw rankings may be passed.
    """
    if top_size < 1:
        raise ValueError(f"top_size must be >= 1, got {top_size}")
    artist_tracks = Counter(track_artist.values())
    discounts = _discounts(top_size)
    # Reference get_ideal_dcg: sequential sum of the first k discounts; cumsum is sequential too.
    ideal = np.concatenate(([0.0], np.cumsum(discounts)))

    result: dict[int, float] = {}
    for query, artist in track_artist.items():
        ideal_dcg = float(ideal[min(top_size, artist_tracks[artist] - 1)])
        if ideal_dcg == 0:
            continue
        ranking = _clean_ranking(query, submission.get(query, ()), top_size)
        dcg = 0.0
        for pos, track in enumerate(ranking):
            try:
                track_art = track_artist[track]
            except KeyError:
                raise ValueError(
                    f"query {query}: result track {track} is not in the track metadata"
                ) from None
            if track_art == artist:
                dcg += discounts[pos]
        result[query] = float(dcg / ideal_dcg)
    return result


def ndcg_at_100(
    submission: Mapping[int, Sequence[int]],
    track_artist: Mapping[int, int],
    top_size: int = TOP_SIZE,
) -> float:
    """Mean nDCG@100 over queries, as the official Yandex Cup 2022 audio ``compute_score.py``."""
    values = ndcg_per_query(submission, track_artist, top_size=top_size)
    if not values:
        raise ValueError("no scorable queries (every artist has a single track)")
    return float(np.mean(list(values.values())))


def parse_submission_lines(
    lines: Iterable[str], source: str = "<lines>", top_size: int = TOP_SIZE
) -> dict[int, list[int]]:
    """Parse ``query<TAB>id1 id2 ...`` lines into ``{query: ranking}`` (official ``load_submission``).

    The query is dropped from its own ranking and the ranking is cut at ``top_size``. Raises
    ``ValueError`` naming ``source`` and the 1-based line number for a line without a tab, a non-integer
    id, an empty ranking, a blank line before the end, or a repeated query.
    """
    raw = list(lines)
    while raw and not raw[-1].strip():  # tolerate trailing blank lines only
        raw.pop()
    result: dict[int, list[int]] = {}
    for i, line in enumerate(raw):
        where = f"{source}:{i + 1}"
        line = line.rstrip()
        if not line:
            raise ValueError(f"{where}: blank line")
        head, sep, tail = line.partition("\t")
        if not sep:
            if head.strip().lstrip("+-").isdigit():
                raise ValueError(f"{where}: query {head.strip()} has an empty ranking")
            raise ValueError(f"{where}: expected 'query<TAB>id1 id2 ...', found no tab")
        try:
            query = int(head)
        except ValueError:
            raise ValueError(f"{where}: query id {head!r} is not an integer") from None
        tokens = tail.split(" ")
        if tokens == [""]:
            raise ValueError(f"{where}: query {query} has an empty ranking")
        ranking: list[int] = []
        for col, token in enumerate(tokens):
            try:
                ranking.append(int(token))
            except ValueError:
                raise ValueError(
                    f"{where}: result #{col + 1} {token!r} is not an integer (ids are separated by single spaces)"
                ) from None
        if query in result:
            raise ValueError(f"{where}: query {query} appears more than once")
        result[query] = _clean_ranking(query, ranking, top_size)
    return result


def read_submission(path: str | os.PathLike[str], top_size: int = TOP_SIZE) -> dict[int, list[int]]:
    """Read a Yandex Cup 2022 audio submission file (see :func:`parse_submission_lines`)."""
    path = Path(path)
    with path.open("r", encoding="utf-8") as fh:
        return parse_submission_lines(fh.read().splitlines(), source=str(path), top_size=top_size)


def _to_nested(values: Any) -> Any:
    if hasattr(values, "detach"):  # torch.Tensor (possibly on an accelerator)
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray):
        return values.tolist()
    return values


def write_submission(
    path: str | os.PathLike[str],
    query_ids: Sequence[int] | np.ndarray,
    neighbour_ids: Sequence[Sequence[int]] | np.ndarray,
) -> None:
    """Write ``query<TAB>id1 id2 ...`` lines atomically (temp file in the same dir, then ``os.replace``).

    ``neighbour_ids`` may be a list of rankings, an (n, k) integer array or a tensor.
    """
    path = Path(path)
    queries = _to_nested(query_ids)
    rows = _to_nested(neighbour_ids)
    if len(queries) != len(rows):
        raise ValueError(f"{len(queries)} query ids but {len(rows)} neighbour rows")
    out = []
    for i, (query, row) in enumerate(zip(queries, rows, strict=True)):
        if len(row) == 0:
            raise ValueError(f"row {i} (query {query}): empty ranking")
        out.append(f"{int(query)}\t{' '.join(str(int(x)) for x in row)}\n")
    atomic_write_bytes(path, "".join(out).encode())
