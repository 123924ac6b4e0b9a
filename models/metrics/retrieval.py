"""Exact brute-force cosine nearest neighbours, for building retrieval submissions.

Used to produce the rankings scored by :mod:`models.metrics.yandex_ndcg` (and similar "top-100 most
similar tracks" tasks). Runs on whatever device the embeddings live on (CPU or CUDA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["top_k_cosine", "top_k_cosine_queries", "write_top100_submission"]


@torch.no_grad()
def top_k_cosine(
    embeddings: torch.Tensor,
    k: int = 100,
    batch_size: int = 4096,
    exclude_self: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` cosine neighbours of every row of an (n, d) embedding matrix.

    Rows are L2-normalized, then similarities are computed one query batch at a time
    (``batch_size`` x n matmul on the embeddings' device) and reduced with ``torch.topk``, so memory stays
    O(batch_size * n). With ``exclude_self`` a row never appears among its own neighbours.

    Returns ``(indices, scores)``: an int64 (n, k) tensor of row indices, most similar first, and the
    matching (n, k) cosine similarities, both on the embeddings' device.
    """
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, d), got shape {tuple(embeddings.shape)}")
    if embeddings.is_complex() or not embeddings.is_floating_point():
        raise ValueError(f"embeddings must be a real floating tensor, got {embeddings.dtype}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = embeddings.shape[0]
    available = n - 1 if exclude_self else n
    if not 1 <= k <= available:
        raise ValueError(
            f"k={k} is out of range for {n} rows (at most {available} neighbours with exclude_self={exclude_self})"
        )

    normed = F.normalize(embeddings, p=2.0, dim=1)
    device = embeddings.device
    indices = torch.empty((n, k), dtype=torch.long, device=device)
    scores = torch.empty((n, k), dtype=normed.dtype, device=device)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        sims = normed[start:stop] @ normed.T  # (b, n)
        if exclude_self:
            rows = torch.arange(stop - start, device=device)
            sims[rows, rows + start] = float("-inf")
        top_scores, top_idx = torch.topk(sims, k, dim=1, largest=True, sorted=True)
        indices[start:stop] = top_idx
        scores[start:stop] = top_scores
    return indices, scores


@torch.no_grad()
def top_k_cosine_queries(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int = 100,
    exclude: torch.Tensor | None = None,
    batch_size: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` cosine neighbours in an (n, d) ``gallery`` of each row of an (q, d) ``queries`` matrix.

    The query/gallery form of :func:`top_k_cosine` (re-ranking searches with expanded queries): one
    ``batch_size`` x n similarity block at a time, never (q x n). ``exclude`` (q, e) int64 names gallery
    rows each query must not return (-1 entries are ignored), e.g. the query itself. Returns ``(indices,
    scores)``, (q, k) each, most similar first, on the queries' device; a query with fewer than ``k``
    admissible rows gets -inf scores at the end of its row.
    """
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries (q, d) and gallery (n, d) must share d, got {tuple(queries.shape)} "
                         f"and {tuple(gallery.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = gallery.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k={k} is out of range for a gallery of {n} rows")
    if exclude is not None and (exclude.ndim != 2 or exclude.shape[0] != queries.shape[0]):
        raise ValueError(f"exclude must be (q, e) = ({queries.shape[0]}, e), got {tuple(exclude.shape)}")
    q_normed = F.normalize(queries, p=2.0, dim=1)
    g_normed = F.normalize(gallery, p=2.0, dim=1)
    device = queries.device
    indices = torch.empty((queries.shape[0], k), dtype=torch.long, device=device)
    scores = torch.empty((queries.shape[0], k), dtype=q_normed.dtype, device=device)
    for start in range(0, queries.shape[0], batch_size):
        stop = min(start + batch_size, queries.shape[0])
        sims = q_normed[start:stop] @ g_normed.T  # (b, n)
        if exclude is not None:
            ex = exclude[start:stop].to(device)
            # in place, no copy of the block: excluded entries take min(s, -inf), -1 entries min(s, +inf)
            marks = torch.where(ex < 0, float("inf"), float("-inf")).to(sims.dtype)
            sims.scatter_reduce_(1, ex.clamp(min=0), marks, reduce="amin")
        top_scores, top_idx = torch.topk(sims, k, dim=1, largest=True, sorted=True)
        indices[start:stop] = top_idx
        scores[start:stop] = top_scores
    return indices, scores


def write_top100_submission(path, track_ids, embeddings: torch.Tensor, k: int = 100,
                            batch_size: int = 4096) -> None:
    """Top-``k`` cosine neighbours of every track (on the embeddings' device) written in the Yandex
    Cup submission format, ``query<TAB>id1 id2 ... id100``, atomically."""
    from models.metrics.yandex_ndcg import write_submission

    if len(track_ids) != embeddings.shape[0]:
        raise ValueError(f"{len(track_ids)} track ids for {embeddings.shape[0]} embeddings")
    idx, _ = top_k_cosine(embeddings, k=k, batch_size=batch_size)
    ids = torch.as_tensor([int(t) for t in track_ids])
    write_submission(path, ids.tolist(), ids[idx.cpu()].tolist())
