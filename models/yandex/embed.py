"""Inference: an embedding per clip from whole clips, optionally averaged over rolling windows.

The seed embeds a track as the mean of its windows (81 steps as 15 windows of 10 with hop 5); with
``window=None`` the whole clip is one window. Windows that would run past a clip's end are left out,
and a clip shorter than the window is one window of its own length.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from featurestore.store import Store
from loaders import SegmentBatches
from models.training import autocast

__all__ = ["embed_clips", "embed_windows"]


def embed_windows(model: torch.nn.Module, frames: torch.Tensor, length: torch.Tensor, window: int | None,
                  hop: int | None = None) -> torch.Tensor:
    """(B, d) L2-normalized mean of the window embeddings of each clip of a (B, T, F) batch."""
    B, T, _ = frames.shape
    steps = torch.arange(T, device=frames.device)
    if window is None or window >= T:
        return model(frames, steps[None] < length[:, None])
    hop = hop or max(1, window // 2)
    starts = torch.arange(0, T - window + 1, hop, device=frames.device)  # (W,)
    W = starts.numel()
    x = frames.unfold(1, window, hop).transpose(2, 3)  # (B, W, window, F)
    real = (length[:, None] - starts[None]).clamp(min=0, max=window)  # real frames per window (B, W)
    # a window counts when it lies inside the clip; the first always counts (a short clip)
    valid = (starts[None] + window <= length[:, None]) | (starts[None] == 0)
    mask = torch.arange(window, device=frames.device)[None, None] < real[..., None]  # (B, W, window)
    keep = valid.reshape(-1)  # only windows that count are embedded (a window of padding has no frame)
    emb = model(x.reshape(B * W, window, -1)[keep], mask.reshape(B * W, window)[keep]).float()
    owner = torch.arange(B, device=frames.device).repeat_interleave(W)[keep]
    emb = torch.zeros((B, emb.shape[1]), device=emb.device).index_add_(0, owner, emb)
    return F.normalize(emb, dim=1)


@torch.no_grad()
def embed_clips(model: torch.nn.Module, store: str | os.PathLike[str] | Store, split: str,
                clips: np.ndarray | None = None, window: int | None = None, hop: int | None = None,
                batch_size: int = 128, device: str | torch.device = "cpu",
                progress: str | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """``(clip_ids, embeddings)``: the clips of ``split`` (or the ``clips`` subset) in storage order and
    their (n, d) float32 embeddings on ``device``; ``progress`` labels a bar of clips (None: no bar).
    Memory: one batch of whole clips beside the (n, d) result."""
    loader = SegmentBatches(store, split, batch_size=batch_size, mode="whole", clips=clips, device=device,
                            threads=1)
    ids = np.sort(loader.items).astype(np.int64)
    row = {int(c): i for i, c in enumerate(ids)}
    was_training = model.training
    model.eval()
    out: torch.Tensor | None = None
    bar = tqdm(total=ids.size, unit="clip", desc=progress, disable=progress is None)
    try:
        for batch in loader:
            with autocast(loader.device):
                emb = embed_windows(model, batch["frames"], batch["length"], window, hop).float()
            if out is None:
                out = torch.empty((ids.size, emb.shape[1]), dtype=torch.float32, device=emb.device)
            rows = torch.as_tensor([row[int(c)] for c in batch["clip"].tolist()], device=emb.device)
            out[rows] = emb
            bar.update(rows.numel())
    finally:
        bar.close()
        model.train(was_training)
    if out is None:
        raise ValueError(f"no clips to embed in split {split!r}")
    return ids, out
