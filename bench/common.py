"""Pieces both loader benchmarks share: timing a batch stream, epochs, the device cross-check."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

import torch

from .memory import peak_mb, reset_peak


def batch_bytes(batch: dict) -> int:
    return sum(v.numel() * v.element_size() for v in batch.values() if isinstance(v, torch.Tensor))


def timed(make_iter: Callable[[], Iterable[dict]], limit: int, count: Callable[[dict], int]
          ) -> tuple[float, int, int, float]:
    """(seconds, items, bytes delivered, peak RSS MB) for batches until ``limit`` items are counted."""
    reset_peak()
    n = nbytes = 0
    t = time.perf_counter()
    for b in make_iter():
        n += count(b)
        nbytes += batch_bytes(b)
        if n >= limit:
            break
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t, n, nbytes, peak_mb()


def over_epochs(loader, epochs: int) -> Callable[[], Iterator[dict]]:
    """Batches of epochs 1..epochs (epoch 0 was the warm-up)."""
    def it() -> Iterator[dict]:
        for e in range(epochs):
            loader.set_epoch(e + 1)
            yield from loader
    return it


def over_epochs_of(loader, iterable, epochs: int) -> Callable[[], Iterator[dict]]:
    """Like ``over_epochs``, iterating a wrapper (e.g. a DataLoader) of ``loader``."""
    def it() -> Iterator[dict]:
        for e in range(epochs):
            loader.set_epoch(e + 1)
            yield from iterable
    return it


def same_batches(device_loader, cpu_loader, n: int = 3) -> bool:
    """The device path must give the very batches the CPU path gives (same seed, same epoch)."""
    device_loader.set_epoch(0)
    cpu_loader.set_epoch(0)
    return all(all(torch.equal(a[k].cpu(), b[k]) for k in b)
               for a, b, _ in zip(device_loader, cpu_loader, range(n), strict=False))
