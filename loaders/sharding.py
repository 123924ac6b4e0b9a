"""Split an epoch's order into per-rank batches: disjoint, the union is the epoch, equal counts.

Rank r takes every world_size-th item of the epoch order (parts differ by at most one item, and
all ranks read from the same window of a quasi-random order). Each rank then has the same number
of batches ``ceil(max_part / batch_size)``: full batches first, the remainder spread over the last
ones, so no rank waits at a collective for a batch that never comes (WebDataset #188).

Samplers that build whole batches themselves (class-balanced epochs) deal those batches to ranks
with ``split_batches``: round-robin, equal counts, the remainder of fewer than world_size batches
left out of this epoch (the next epoch draws new batches).
"""

from __future__ import annotations

import numpy as np


def check_rank(rank: int, world_size: int) -> None:
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")


def batches_per_rank(n: int, batch_size: int, world_size: int, drop_last: bool = False) -> int:
    if drop_last:
        return (n // world_size) // batch_size
    largest_part = -(-n // world_size)
    return -(-largest_part // batch_size)


def rank_batches(order: np.ndarray, batch_size: int, rank: int, world_size: int,
                 drop_last: bool = False) -> list[np.ndarray]:
    """This rank's batches (arrays of item ids) for one epoch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_rank(rank, world_size)
    n = order.size
    if n and n < world_size:
        raise ValueError(f"{n} items cannot be shared by {world_size} ranks")
    part = order[rank::world_size]
    nb = batches_per_rank(n, batch_size, world_size, drop_last)
    if drop_last:
        return [part[i * batch_size : (i + 1) * batch_size] for i in range(nb)]
    full = min(part.size // batch_size, max(nb - 1, 0))
    while full > 0 and part.size - full * batch_size < nb - full:
        full -= 1  # a part that is an exact multiple of batch_size must still fill its last batches
    out = [part[i * batch_size : (i + 1) * batch_size] for i in range(full)]
    rest = part[full * batch_size :]
    if nb - full > 0:
        if rest.size < nb - full:
            raise ValueError(
                f"cannot give {world_size} ranks equal batch counts with batch_size {batch_size} "
                f"for {n} items; use drop_last=True or a larger batch_size"
            )
        out += np.array_split(rest, nb - full)
    return out


def split_batches(batches: list[np.ndarray], rank: int, world_size: int) -> list[np.ndarray]:
    """This rank's share of an epoch of ready-made batches: every world_size-th, equal counts."""
    check_rank(rank, world_size)
    per_rank = len(batches) // world_size
    return batches[rank : per_rank * world_size : world_size]
