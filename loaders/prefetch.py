"""Background batch assembly into a ring of buffers allocated once, then copies to the device.

Batch i is assembled by a worker thread into slot i % ring (numba kernels release the GIL, so
threads run in parallel with training; no worker processes, so no per-worker RAM copies, FFCV's
lesson). On CUDA the slots are pinned and copied with ``non_blocking=True``; a slot is refilled
only after the CUDA event recorded behind its copy has completed. On the CPU there is no copy to
make: batches are handed out in the buffers they were built in, and a buffer is reused only when
no tensor (the batch, or any view the caller kept) still uses its storage. Fresh buffers per
batch cost a page fault per 4 KB (measured: 2.5x slower), so reuse matters. Batches come out in
index order whatever the number of threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

Slot = dict[str, torch.Tensor]


def allocate_slot(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]], pin: bool) -> Slot:
    return {k: torch.empty(shape, dtype=dtype, pin_memory=pin) for k, (shape, dtype) in shapes.items()}


def _use_count(t: torch.Tensor) -> int:
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


class BufferPool:
    """CPU batch buffers, reused once nothing outside the pool references their storage."""

    def __init__(self, shapes: dict):
        self.shapes = shapes
        self._slots: list[tuple[Slot, dict[str, int]]] = []
        self._busy: set[int] = set()
        self._lock = threading.Lock()

    def acquire(self) -> Slot:
        with self._lock:
            for i, (slot, idle) in enumerate(self._slots):
                if i not in self._busy and all(_use_count(t) == idle[k] for k, t in slot.items()):
                    self._busy.add(i)
                    return slot
            slot = allocate_slot(self.shapes, pin=False)
            self._slots.append((slot, {k: _use_count(t) for k, t in slot.items()}))
            self._busy.add(len(self._slots) - 1)
            return slot

    def handed_out(self, slot: Slot) -> None:
        """The batch reached the caller: from now on its references alone keep the buffer."""
        with self._lock:
            for i, (s, _) in enumerate(self._slots):
                if s is slot:
                    self._busy.discard(i)


def numpy_views(slot: Slot) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in slot.items()}


def pool_for(pools: dict, shapes: dict) -> BufferPool | None:
    """The loader's buffer pool for these shapes (kept across epochs; a curriculum changes shapes).

    None inside a DataLoader worker process: there buffers must not be reused (see ``prefetch``)."""
    if torch.utils.data.get_worker_info() is not None:
        return None
    key = tuple(sorted((k, tuple(s), str(d)) for k, (s, d) in shapes.items()))
    if key not in pools:
        pools.clear()  # old shapes will not come back: let their buffers go
        pools[key] = BufferPool(shapes)
    return pools[key]


def prefetch(n: int, start: int, fill: Callable[[int, Slot], Slot], shapes: dict, device: torch.device,
             ring: int = 4, threads: int = 2, buffers: BufferPool | None = None) -> Iterator[Slot]:
    """Yield batches start..n-1 on ``device``; ``fill(i, slot)`` writes batch i into the slot's
    tensors and returns the (possibly narrowed) tensors to ship.

    ``buffers``: a CPU pool to reuse; None allocates fresh CPU buffers per batch (needed in
    DataLoader workers, where sending a tensor moves its storage into shared memory in place)."""
    cuda = device.type == "cuda"
    ring = max(ring, threads + 1)
    slots = [allocate_slot(shapes, pin=True) for _ in range(ring)] if cuda else []
    events: list[torch.cuda.Event | None] = [None] * ring

    def job(i: int) -> tuple[Slot, Slot]:
        if not cuda:
            slot = buffers.acquire() if buffers is not None else allocate_slot(shapes, pin=False)
            return slot, fill(i, slot)
        slot = i % ring
        if events[slot] is not None:
            events[slot].synchronize()
        return slots[slot], fill(i, slots[slot])

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fstore-prefetch") as executor:
        futures = {i: executor.submit(job, i) for i in range(start, min(n, start + ring - 1))}
        try:
            for i in range(start, n):
                slot, host = futures.pop(i).result()
                if cuda:
                    out = {k: v.to(device, non_blocking=True) for k, v in host.items()}
                    ev = torch.cuda.Event()
                    ev.record()
                    events[i % ring] = ev
                else:
                    out = host
                    if buffers is not None:
                        buffers.handed_out(slot)
                del slot, host
                if i + ring - 1 < n:
                    futures[i + ring - 1] = executor.submit(job, i + ring - 1)
                yield out
        finally:
            for f in futures.values():
                f.cancel()
