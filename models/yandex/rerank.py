"""Retrieval on embeddings: plain top-k, the seed's re-ranking, and ensembles, all batched on the device.

Re-ranking (the seed's query expansion): take a query's top ``k``; keep the neighbours closer than
cosine ``threshold``; average them with the query; search again with that average and fill the ranking
after the kept neighbours with the new results, leaving out the ones already taken. Every step runs on
a ``batch_size`` x n block of similarities (:func:`models.metrics.retrieval.top_k_cosine_queries`),
never on the (n x n) matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.metrics.retrieval import top_k_cosine_queries

__all__ = ["ensemble", "rerank", "top_k"]


def ensemble(embeddings: list[torch.Tensor]) -> torch.Tensor:
    """One embedding per row from several models: the L2-normalized embeddings side by side, scaled so
    the cosine of two rows is the mean of the models' cosines."""
    if not embeddings:
        raise ValueError("ensemble of no embeddings")
    return torch.cat([F.normalize(e.float(), dim=1) for e in embeddings], dim=1) / len(embeddings) ** 0.5


def _blocks(n: int, batch_size: int, progress: str | None) -> tqdm:
    """The first row of each block of queries, behind a bar of blocks labelled ``progress`` (None: no bar)."""
    return tqdm(range(0, n, batch_size), unit="block", desc=progress, disable=progress is None)


def _self_index(start: int, stop: int, device: torch.device) -> torch.Tensor:
    return torch.arange(start, stop, device=device)[:, None]


@torch.no_grad()
def top_k(embeddings: torch.Tensor, k: int = 100, batch_size: int = 1024, progress: str | None = None) -> torch.Tensor:
    """(n, k) indices of each row's ``k`` nearest other rows by cosine, most similar first. ``progress``
    labels a bar of query blocks (None: no bar)."""
    n = embeddings.shape[0]
    out = torch.empty((n, k), dtype=torch.long, device=embeddings.device)
    for start in _blocks(n, batch_size, progress):
        stop = min(start + batch_size, n)
        out[start:stop], _ = top_k_cosine_queries(embeddings[start:stop], embeddings, k,
                                                  exclude=_self_index(start, stop, embeddings.device),
                                                  batch_size=batch_size)
    return out


@torch.no_grad()
def rerank(embeddings: torch.Tensor, k: int = 100, threshold: float = 0.85, batch_size: int = 1024,
           progress: str | None = None) -> torch.Tensor:
    """(n, k) re-ranked neighbour indices of every row (see the module docstring); ``progress`` as
    :func:`top_k`'s."""
    n = embeddings.shape[0]
    normed = F.normalize(embeddings.float(), dim=1)
    out = torch.empty((n, k), dtype=torch.long, device=embeddings.device)
    positions = torch.arange(k, device=embeddings.device)
    for start in _blocks(n, batch_size, progress):
        stop = min(start + batch_size, n)
        me = _self_index(start, stop, embeddings.device)
        idx, scores = top_k_cosine_queries(normed[start:stop], normed, k, exclude=me, batch_size=batch_size)
        keep = scores > threshold  # scores are sorted: the kept neighbours are a prefix of each row
        kept = keep.sum(1, keepdim=True)
        expanded = normed[start:stop] + (normed[idx] * keep[..., None]).sum(1)  # mean up to scale
        taken = torch.cat([me, torch.where(keep, idx, -1)], dim=1)
        new_idx, _ = top_k_cosine_queries(expanded, normed, k, exclude=taken, batch_size=batch_size)
        fill = new_idx.gather(1, (positions - kept).clamp(min=0))
        out[start:stop] = torch.where(positions < kept, idx, fill)
    return out
