"""Clip-level scores: every clip is cut into crop-length windows that cover it (the last one aligned
with its end; a clip shorter than the crop is one padded window), and the class probabilities of its
windows are averaged."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from featurestore.store import Store
from loaders import SegmentBatches
from models.training import autocast

__all__ = ["predict_clips", "sliding_windows", "window_starts"]


def window_starts(length: torch.Tensor, crop: int, hop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(item, start) of every window: for a clip of n frames, starts min(k * hop, n - crop) for
    k = 0 .. ceil((n - crop) / hop), so the windows cover the clip and none runs past its end
    (a clip of at most ``crop`` frames has one window at 0)."""
    room = (length - crop).clamp_min(0)
    counts = torch.div(room + hop - 1, hop, rounding_mode="floor") + 1
    item = torch.repeat_interleave(torch.arange(length.numel(), device=length.device), counts)
    first = torch.cumsum(counts, 0) - counts
    k = torch.arange(item.numel(), device=length.device) - first[item]
    return item, torch.minimum(k * hop, room[item])


def sliding_windows(frames: torch.Tensor, length: torch.Tensor, crop: int,
                    hop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(windows (W, crop, bins), window mask (W, crop), item (W,)) of a (B, T, bins) whole-clip batch."""
    item, start = window_starts(length, crop, hop)
    if frames.shape[1] < crop:
        frames = torch.nn.functional.pad(frames, (0, 0, 0, crop - frames.shape[1]))
    pos = start[:, None] + torch.arange(crop, device=frames.device)[None]
    mask = pos < length[item][:, None]
    return frames[item[:, None], pos], mask, item


@torch.no_grad()
def predict_clips(model: torch.nn.Module, store: Store, split: str, clips: np.ndarray | None, crop: int,
                  hop: int, device: torch.device, batch_size: int = 32, windows_per_step: int = 256,
                  progress: str | None = None) -> np.ndarray:
    """(n, classes) float32 probabilities of ``clips`` (sorted ids; None: every clip of ``split``), row i
    for the i-th clip in id order, each the mean over its sliding windows. ``progress`` labels a bar of
    clips (None: no bar). Memory: one batch of whole clips and its windows, beside the (n, classes) result."""
    loader = SegmentBatches(store, split, batch_size=batch_size, mode="whole", device=device, threads=1,
                            clips=clips)
    order = np.sort(loader.items)
    row = np.empty(loader.fs.clips, dtype=np.int64)
    row[order] = np.arange(order.size)
    out = np.zeros((order.size, model.config["classes"]), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        bar = tqdm(total=order.size, unit="clip", desc=progress, disable=progress is None)
        for batch in loader:
            windows, mask, item = sliding_windows(batch["frames"], batch["length"], crop, hop)
            probs = torch.cat([_probs(model, windows[i : i + windows_per_step], mask[i : i + windows_per_step],
                                      device) for i in range(0, item.numel(), windows_per_step)])
            n = batch["length"].numel()
            total = torch.zeros(n, probs.shape[1], device=probs.device).index_add_(0, item, probs)
            mean = total / torch.bincount(item, minlength=n)[:, None]
            out[row[batch["clip"].cpu().numpy()]] = mean.cpu().numpy()
            bar.update(n)
        bar.close()
    finally:
        model.train(was_training)
    return out


def _probs(model: torch.nn.Module, windows: torch.Tensor, mask: torch.Tensor, device: torch.device) -> torch.Tensor:
    with autocast(device):
        return torch.sigmoid(model(windows, mask).float())
