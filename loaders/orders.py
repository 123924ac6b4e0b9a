"""Traversal orders: which items an epoch visits, in what order. Deterministic given (seed, epoch).

A registry of small classes (``ORDERS``, name -> class); a new order is one subclass with
``@register``. Each takes the loader's options and ignores those it does not use.

- sequential: storage order (fastest reads, no mixing);
- random: a full permutation (best mixing, random reads: needs the data in page cache);
- quasi_random: shuffle chunks of consecutive items, then shuffle items within a window of chunks.
  Reads stay inside ``window`` chunks at a time (locality for stores larger than RAM) while
  neighbours in a batch come from ``window`` different places of the store (LitData #797);
- by_length: shortest first (evaluation of whole variable-length items: each batch pads to its own
  longest item; not random, so not in ``TRAINING_ORDERS``);
- length_bucketed: training batches of similar-length items. Items are shuffled, sorted by length
  within windows of ``window`` groups, cut into groups of ``group`` items (one group is one global
  batch: batch_size * world_size items, dealt to ranks by ``sharding.rank_batches``), and the full
  groups are shuffled; a short last group stays last so it cannot split the others.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np


def item_ids(n: int) -> np.ndarray:
    """0..n-1 in the narrowest index dtype: the epoch order is the loader's one per-item array
    (4 bytes an item below 2**31 items: 0.5 GB for MSSD's 130M sessions)."""
    return np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch])


class Order:
    """One traversal order: ``order(items, seed, epoch)`` is a permutation of ``items``."""

    name: ClassVar[str] = ""

    def __init__(self, chunk: int = 4096, window: int = 8, lengths: np.ndarray | None = None, group: int = 1):
        if chunk < 1 or window < 1 or group < 1:
            raise ValueError(f"chunk, window and group must be >= 1, got {chunk}, {window}, {group}")
        self.chunk, self.window, self.lengths, self.group = chunk, window, lengths, group

    def __call__(self, items: np.ndarray, seed: int, epoch: int) -> np.ndarray:
        if items.size == 0:
            return items.copy()
        return self.permute(items, epoch_rng(seed, epoch))

    def permute(self, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _item_lengths(self, items: np.ndarray) -> np.ndarray:
        if self.lengths is None:
            raise ValueError(f"order {self.name!r} needs item lengths (variable-length items only)")
        return self.lengths[items]


ORDERS: dict[str, type[Order]] = {}
TRAINING_ORDERS = ("sequential", "random", "quasi_random")  # orders over any item set (fixed-size items)


def register(cls: type[Order]) -> type[Order]:
    ORDERS[cls.name] = cls
    return cls


def check_order(name: str) -> None:
    if name not in ORDERS:
        raise ValueError(f"unknown order {name!r}; choose one of {', '.join(ORDERS)}")


@register
class Sequential(Order):
    name = "sequential"

    def __call__(self, items: np.ndarray, seed: int, epoch: int) -> np.ndarray:
        return items.copy()


@register
class Random(Order):
    name = "random"

    def permute(self, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(items)


@register
class QuasiRandom(Order):
    name = "quasi_random"

    def permute(self, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        chunk, window = self.chunk, self.window
        n_chunks = -(-items.size // chunk)
        chunk_order = rng.permutation(n_chunks)
        out = np.empty_like(items)
        pos = 0
        for w in range(0, n_chunks, window):
            picked = np.concatenate([items[c * chunk : (c + 1) * chunk] for c in chunk_order[w : w + window]])
            out[pos : pos + picked.size] = rng.permutation(picked)
            pos += picked.size
        return out


@register
class ByLength(Order):
    name = "by_length"

    def __call__(self, items: np.ndarray, seed: int, epoch: int) -> np.ndarray:
        return items[np.argsort(self._item_lengths(items), kind="stable")]


@register
class LengthBucketed(Order):
    name = "length_bucketed"

    def permute(self, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        lengths = self._item_lengths(items)
        shuffled = rng.permutation(items.size)
        span = self.window * self.group
        bucketed = np.concatenate([w[np.argsort(lengths[w], kind="stable")]
                                   for w in np.split(shuffled, range(span, items.size, span))])
        full = items.size // self.group
        groups = bucketed[: full * self.group].reshape(full, self.group)[rng.permutation(full)]
        return items[np.concatenate([groups.reshape(-1), bucketed[full * self.group :]])]


def make_order(name: str, chunk: int = 4096, window: int = 8, lengths: np.ndarray | None = None,
               group: int = 1) -> Order:
    check_order(name)
    return ORDERS[name](chunk=chunk, window=window, lengths=lengths, group=group)


def epoch_order(items: np.ndarray, order: str, seed: int, epoch: int, chunk: int = 4096,
                window: int = 8) -> np.ndarray:
    """A permutation of ``items`` (item ids in storage order) for one epoch, by a named order."""
    return make_order(order, chunk, window)(items, seed, epoch)
