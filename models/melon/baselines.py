"""Melon baselines, both :class:`~models.melon.recommend.Scorer` s.

- :class:`MostPopular`: songs and tags by train popularity (playlists holding them), the same list for
  every playlist.
- :class:`ItemCooccurrence`: item-based neighbours. With ``Xs`` (train playlists x songs) and ``Xt``
  (train playlists x tags) binary, item-item similarity is cosine-normalised co-occurrence,
  ``S_ab = C_ab / sqrt(n_a n_b)`` (``C = X_a^T X_b``, ``n`` the items' train counts), and a question
  ``q`` (its songs, and its tags weighted by ``tag_weight``) scores ``sum_{i in q} S_i``. The item-item
  matrices are never built (708K^2 at real size): ``q S = ((q D^-1/2) X^T) X D^-1/2``, two sparse
  products through the train playlists, batch by batch. Items never co-occurring with the question
  score -inf ("no opinion"), so :func:`~models.melon.recommend.recommend` fills them, and every
  playlist without songs or tags, from the most popular.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from featurestore.store import Store

from .recommend import load_split, load_vocab, popularity_rank_scores

__all__ = ["ItemCooccurrence", "MostPopular"]


class MostPopular:
    """Every playlist gets the train-popularity order (unique scores: ties broken by code)."""

    def __init__(self, store: Store):
        vocab = load_vocab(store)
        self.song_scores = popularity_rank_scores(vocab.song_pop)[None]
        self.tag_scores = popularity_rank_scores(vocab.tag_pop)[None]

    def scores(self, split: str, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(rows)
        return self.song_scores.expand(n, -1), self.tag_scores.expand(n, -1)


def _binary(offsets: np.ndarray, values: np.ndarray, n_cols: int) -> sp.csr_matrix:
    """A ragged set as a (rows, n_cols) binary CSR matrix (repeats were dropped at ingest)."""
    data = np.ones(values.size, dtype=np.float32)
    return sp.csr_matrix((data, values.astype(np.int32), offsets.astype(np.int64)),
                         shape=(offsets.size - 1, n_cols))


def _inv_sqrt(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(counts.size, dtype=np.float32)
    seen = counts > 0
    out[seen] = 1.0 / np.sqrt(counts[seen])
    return out


class ItemCooccurrence:
    """Item-based neighbours over train co-occurrence (see the module docstring)."""

    def __init__(self, store: Store, tag_weight: float = 0.5):
        self.store = store
        vocab = load_vocab(store)
        train = load_split(store, "train")
        self.n_songs, self.n_tags = vocab.n_songs, vocab.n_tags
        self.tag_weight = tag_weight
        xs = _binary(train.song_offsets, train.songs, self.n_songs)
        xt = _binary(train.tag_offsets, train.tags, self.n_tags)
        self.song_norm = _inv_sqrt(vocab.song_pop)
        self.tag_norm = _inv_sqrt(vocab.tag_pop)
        # item -> playlists (for q X^T) and playlist -> items (for H X), both CSR for fast row products
        self.xs_t, self.xt_t = xs.T.tocsr(), xt.T.tocsr()
        self.xs, self.xt = xs, xt

    def _question(self, offsets: np.ndarray, values: np.ndarray, rows: np.ndarray, norm: np.ndarray,
                  n_cols: int, weight: float) -> sp.csr_matrix:
        lengths = offsets[rows + 1] - offsets[rows]
        cols = np.concatenate([values[offsets[r]:offsets[r + 1]] for r in rows]) if lengths.sum() else \
            np.zeros(0, dtype=np.int64)
        indptr = np.concatenate(([0], np.cumsum(lengths)))
        return sp.csr_matrix((weight * norm[cols], cols, indptr), shape=(rows.size, n_cols))

    def scores(self, split: str, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.asarray(rows, dtype=np.int64)
        data = load_split(self.store, split)
        qs = self._question(data.song_offsets, data.songs, rows, self.song_norm, self.n_songs, 1.0)
        qt = self._question(data.tag_offsets, data.tags, rows, self.tag_norm, self.n_tags, self.tag_weight)
        hits = (qs @ self.xs_t + qt @ self.xt_t).tocsr()  # (B, train playlists), sparse
        songs = np.asarray((hits @ self.xs).todense(), dtype=np.float32) * self.song_norm[None]
        tags = np.asarray((hits @ self.xt).todense(), dtype=np.float32) * self.tag_norm[None]
        songs[songs <= 0] = -np.inf  # no co-occurrence with the question: no opinion
        tags[tags <= 0] = -np.inf
        return torch.from_numpy(songs), torch.from_numpy(tags)
