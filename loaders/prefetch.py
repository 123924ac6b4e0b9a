"""Background batch assembly into a ring of buffers allocated once, then copies to the device.

Batch i is assembled by a worker thread into slot i % ring (numba kernels release the GIL, so
threads run in parallel with training; no worker processes, so no per-worker RAM copies, FFCV's
lesson). On CUDA the slots are pinned and copied with ``non_blocking=True``; a slot is refilled
only after the CUDA event recorded behind its copy has completed. On the CPU there is no copy to
make: each batch is filled into fresh tensors that are handed out as they are. Batches come out
in index order whatever the number of threads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

Slot = dict[str, torch.Tensor]


def allocate_slot(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]], pin: bool) -> Slot:
    return {k: torch.empty(shape, dtype=dtype, pin_memory=pin) for k, (shape, dtype) in shapes.items()}


def numpy_views(slot: Slot) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in slot.items()}


def prefetch(n: int, start: int, fill: Callable[[int, Slot], Slot], shapes: dict, device: torch.device,
             ring: int = 4, threads: int = 2) -> Iterator[Slot]:
    """Yield batches start..n-1 on ``device``; ``fill(i, slot)`` writes batch i into the slot's
    tensors and returns the (possibly narrowed) tensors to ship."""
    cuda = device.type == "cuda"
    ring = max(ring, threads + 1)
    slots = [allocate_slot(shapes, pin=True) for _ in range(ring)] if cuda else []
    events: list[torch.cuda.Event | None] = [None] * ring

    def job(i: int) -> Slot:
        if not cuda:
            return fill(i, allocate_slot(shapes, pin=False))
        slot = i % ring
        if events[slot] is not None:
            events[slot].synchronize()
        return fill(i, slots[slot])

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fstore-prefetch") as pool:
        futures = {i: pool.submit(job, i) for i in range(start, min(n, start + ring - 1))}
        try:
            for i in range(start, n):
                host = futures.pop(i).result()
                if cuda:
                    out = {k: v.to(device, non_blocking=True) for k, v in host.items()}
                    ev = torch.cuda.Event()
                    ev.record()
                    events[i % ring] = ev
                else:
                    out = host
                if i + ring - 1 < n:
                    futures[i + ring - 1] = pool.submit(job, i + ring - 1)
                yield out
        finally:
            for f in futures.values():
                f.cancel()
