"""Traversal orders: which items an epoch visits, in what order. Deterministic given (seed, epoch).

- sequential: storage order (fastest reads, no mixing);
- random: a full permutation (best mixing, random reads: needs the data in page cache);
- quasi_random: shuffle chunks of consecutive items, then shuffle items within a window of chunks.
  Reads stay inside ``window`` chunks at a time (locality for stores larger than RAM) while
  neighbours in a batch come from ``window`` different places of the store (LitData #797).
"""

from __future__ import annotations

import numpy as np

ORDERS = ("sequential", "random", "quasi_random")


def item_ids(n: int) -> np.ndarray:
    """0..n-1 in the narrowest index dtype: the epoch order is the loader's one per-item array
    (4 bytes an item below 2**31 items: 0.5 GB for MSSD's 130M sessions)."""
    return np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch])


def epoch_order(items: np.ndarray, order: str, seed: int, epoch: int, chunk: int = 4096,
                window: int = 8) -> np.ndarray:
    """A permutation of ``items`` (item ids in storage order) for one epoch."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    if order == "sequential" or items.size == 0:
        return items.copy()
    rng = epoch_rng(seed, epoch)
    if order == "random":
        return rng.permutation(items)
    n_chunks = -(-items.size // chunk)
    chunk_order = rng.permutation(n_chunks)
    out = np.empty_like(items)
    pos = 0
    for w in range(0, n_chunks, window):
        picked = np.concatenate([items[c * chunk : (c + 1) * chunk] for c in chunk_order[w : w + window]])
        out[pos : pos + picked.size] = rng.permutation(picked)
        pos += picked.size
    return out
