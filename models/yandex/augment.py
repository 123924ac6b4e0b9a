"""The seed's augmentations, on the batch's device: random zeroing, and random permutations of channels
and of time steps. Draws come from torch's global generator (seeded by training; its state is in the
checkpoint), so a resumed run continues the same stream.
"""

from __future__ import annotations

import torch

__all__ = ["DEFAULT_AUGMENT", "augment_frames"]

DEFAULT_AUGMENT = {"zero_p": 0.1, "channel_swap_p": 0.05, "time_shuffle_p": 0.5}


def augment_frames(frames: torch.Tensor, mask: torch.Tensor, zero_p: float = 0.1, channel_swap_p: float = 0.05,
                   time_shuffle_p: float = 0.5, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Augmented copy of ``frames`` (B, T, F) with ``mask`` (B, T):

    - each value is zeroed with probability ``zero_p`` (dropout without rescaling), i.e. set to ``fill``
      (F,) when given: the encoder's feature means, so a dropped value is zero *after* its
      standardisation rather than a far outlier (raw Yandex features have large offsets);
    - a ``channel_swap_p`` fraction of the channels is permuted among itself (the same channels for the
      whole batch): feature identities are noisy, never wholly destroyed;
    - with probability ``time_shuffle_p`` a clip's real frames are put in a random order (padding stays
      at the end), so the encoder cannot rely on the order of steps.
    """
    B, T, F = frames.shape
    x = frames
    if zero_p > 0:
        drop = (torch.rand_like(x) < zero_p) & mask[..., None]  # padding stays zero
        x = x.masked_fill(drop, 0.0) if fill is None else torch.where(drop, fill.to(x.dtype), x)
    k = int(round(channel_swap_p * F))
    if k >= 2:
        chosen = torch.randperm(F, device=x.device)[:k]
        index = torch.arange(F, device=x.device)
        index[chosen] = chosen[torch.randperm(k, device=x.device)]
        x = x[..., index]
    if time_shuffle_p > 0:
        # random keys for real frames, +inf for padding: argsort keeps padding last and shuffles the rest
        keys = torch.rand(B, T, device=x.device).masked_fill(~mask, float("inf"))
        shuffled = torch.argsort(keys, dim=1)
        keep = torch.rand(B, 1, device=x.device) >= time_shuffle_p
        order = torch.where(keep, torch.arange(T, device=x.device).expand(B, T), shuffled)
        x = torch.gather(x, 1, order[..., None].expand(B, T, F))
    return x
