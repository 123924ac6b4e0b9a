"""Where and how precisely training runs: device parsing, the one mixed-precision choice, seeds and RNG state."""

from __future__ import annotations

import contextlib
import ctypes
import random
from collections.abc import Iterator

import numpy as np
import torch

from featurestore.store.errors import FstoreError

__all__ = ["amp_dtype", "autocast", "keep_torch_threads", "large_blocks_released", "parse_device",
           "release_large_blocks", "rng_state", "seed_everything", "set_rng_state"]


def parse_device(device: str | torch.device) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a device; :class:`FstoreError` for anything else or a missing GPU."""
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        d = None
    if d is None or d.type not in ("cpu", "cuda"):
        raise FstoreError(f"unknown device {str(device)!r}: use cpu, cuda or cuda:N")
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise FstoreError(f"device {str(device)!r} requested but CUDA is not available")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise FstoreError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return d


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The one mixed-precision choice, for training and inference alike: bf16 on CUDA where supported,
    else fp16 (training then scales the loss); full precision on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` with :func:`amp_dtype`; a no-op on the CPU."""
    dtype = amp_dtype(device)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def keep_torch_threads() -> Iterator[None]:
    """Run a numba ``parallel=True`` kernel without changing torch's CPU thread count.

    numba's ``omp`` threading layer (the one it picks here) and torch share one libgomp, and a parallel
    launch sets the calling thread's OpenMP thread count to numba's (every core): torch then runs its
    ops on that many threads too. After the first Melon validation, ``fstore train melon`` (one torch
    thread on the CPU) trained on two, whose idle OpenMP worker spun in a barrier between ops: on a
    2-core host with one core busy the title model fell from 1,360 to 107 playlists/s."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            # NumPy's key as a tensor: checkpoints load with weights_only=True, which refuses ndarrays
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, gauss))


def release_large_blocks() -> None:
    """Make glibc serve every block of 64 KiB or more by its own mmap, returned to the system when freed;
    for scoring passes over whole utterances or clips (speakers, FSD). Batches of whole items differ in
    length, so the model's activations change size every batch; glibc by default raises its mmap threshold after the first large free and serves later ones from the heap,
    which fragments and keeps growing with the number of batches (one process predicting the 320 longest
    test utterances of a 0.11-size store: 1.87 GB peak, 1.19 GB with this; one batch of 64: 1.28 GB)."""
    _mmap_threshold(1 << 16)


@contextlib.contextmanager
def large_blocks_released() -> Iterator[None]:
    """:func:`release_large_blocks` for the duration of a scoring pass inside training (validation over
    whole utterances), then large blocks from the heap again (a fixed 32 MiB threshold, the most glibc's
    dynamic one reaches): a training step's activations are allocated and freed every step, and serving
    each by its own mmap made a speakers training step 1.5x slower."""
    release_large_blocks()
    try:
        yield
    finally:
        _mmap_threshold(32 << 20)


def _mmap_threshold(nbytes: int) -> None:
    """glibc's M_MMAP_THRESHOLD (setting it also turns the dynamic threshold off); elsewhere nothing: a
    non-glibc allocator (macOS) returns large blocks anyway."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, nbytes)
