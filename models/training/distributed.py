"""Training across processes and machines: the one place that reads torchrun's environment.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set) :func:`init_from_env` starts the process
group once: gloo on the CPU, NCCL on CUDA (each process on ``cuda:LOCAL_RANK``), with a timeout of
``FSTORE_DDP_TIMEOUT`` seconds (default 300) on every collective, so a rank that dies makes the others
fail in one line instead of waiting for ever. Without torchrun everything here is a no-op: one process,
rank 0 of 1.

The rest are the few collectives :func:`models.training.fit` needs, each on a small tensor or object:
:func:`max_across` (the time limit, the schedule's time share and the worst rank's data wait, in one
call), :func:`broadcast` (rank 0's checkpoint, validation row and stop decision) and :func:`barrier`.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

from featurestore.store.errors import FstoreError

__all__ = ["DEFAULT_TIMEOUT_S", "barrier", "broadcast", "init_from_env", "is_main", "lost_peer",
           "max_across", "rank", "sum_across", "timeout_s", "world_size"]

DEFAULT_TIMEOUT_S = 300.0


def _env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def timeout_s() -> float:
    """``FSTORE_DDP_TIMEOUT`` (seconds), default :data:`DEFAULT_TIMEOUT_S`."""
    raw = os.environ.get("FSTORE_DDP_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise FstoreError(f"FSTORE_DDP_TIMEOUT={raw!r}: not a number of seconds") from None
    if value <= 0:
        raise FstoreError(f"FSTORE_DDP_TIMEOUT={raw!r}: must be > 0 seconds")
    return value


def init_from_env(device: str | torch.device) -> torch.device:
    """Start the process group from torchrun's environment (once; later calls only return the device) and
    return this process's device: ``device`` itself, or on CUDA under torchrun ``cuda:LOCAL_RANK``."""
    device = torch.device(device)
    if _env_world() <= 1 and not dist.is_initialized():
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.index not in (None, local) and _env_world() > 1:
            raise FstoreError(f"--device {device} under torchrun: use --device cuda (each process takes "
                              f"cuda:LOCAL_RANK, here cuda:{local})")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s()))
    elif (dist.get_backend() == "nccl") != (device.type == "cuda"):
        raise FstoreError(f"process group backend {dist.get_backend()} does not fit device {device}")
    return device


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes files and prints."""
    return rank() == 0


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def max_across(values: list[float]) -> list[float]:
    """Each value's maximum over the ranks (one all_reduce of one small tensor); the values themselves
    in one process."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def sum_across(values: list[float]) -> list[float]:
    """Each value's sum over the ranks (one all_reduce); the values themselves in one process."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; small objects, a checkpoint at resume)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=_device())
    return box[0]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


_LOST = ("gloo", "nccl", "connection closed", "connection reset", "timed out", "timeout", "broken pipe")


def lost_peer(error: BaseException) -> str | None:
    """One line when ``error`` is a collective failing because a rank is gone (killed, crashed) or the
    process-group timeout passed; None for any other error (and in one process)."""
    if world_size() == 1 and not dist.is_initialized():
        return None
    dist_error = getattr(dist, "DistError", None)
    text = str(error)
    known = isinstance(dist_error, type) and isinstance(error, dist_error)
    if not known and not (isinstance(error, RuntimeError) and any(k in text.lower() for k in _LOST)):
        return None
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)[:160]
    return (f"rank {rank()} of {world_size()}: another rank is gone or did not answer within "
            f"FSTORE_DDP_TIMEOUT={timeout_s():g} s ({first})")
