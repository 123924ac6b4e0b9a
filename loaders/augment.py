"""On-device augmentation of frame batches: mixup and SpecAugment-style masking.

Both run on whatever device the batch is on, after dequantization; masking uses torchaudio's
transforms (which draw from torch's global RNG: seed it for reproducible runs).
"""

from __future__ import annotations

import torch

from featurestore.torch_pair import import_torchaudio

torchaudio = import_torchaudio()  # one line naming the fix when torch and torchaudio do not match


def mixup(batch: dict, alpha: float = 0.4, generator: torch.Generator | None = None) -> dict:
    """Mix each example with a random partner: frames and (one-hot or multi-hot) targets alike.

    Adds ``mix_lambda`` (B,) and ``mix_partner`` (B,); for single labels also ``label_onehot``
    is not built (classes unknown): use ``mix_lambda``/``mix_partner`` in the loss instead.
    """
    frames = batch["frames"]
    B = frames.shape[0]
    dist = torch.distributions.Beta(torch.tensor(alpha), torch.tensor(alpha))
    lam = dist.sample((B,)).to(frames.device, frames.dtype)
    perm = torch.randperm(B, device=frames.device, generator=generator)
    out = dict(batch)
    out["frames"] = lam[:, None, None] * frames + (1 - lam[:, None, None]) * frames[perm]
    out["mask"] = batch["mask"] | batch["mask"][perm]
    if "labels" in batch:
        out["labels"] = lam[:, None] * batch["labels"] + (1 - lam[:, None]) * batch["labels"][perm]
    out["mix_lambda"], out["mix_partner"] = lam, perm
    return out


def spec_augment(batch: dict, freq_mask: int = 8, time_mask: int = 16, n_freq: int = 1, n_time: int = 1) -> dict:
    """SpecAugment masking (torchaudio FrequencyMasking / TimeMasking), per example, on the device."""
    x = batch["frames"].transpose(1, 2)  # (B, bins, T): torchaudio's (..., freq, time)
    fm = torchaudio.transforms.FrequencyMasking(freq_mask, iid_masks=True)
    tm = torchaudio.transforms.TimeMasking(time_mask, iid_masks=True)
    x = x.unsqueeze(1)  # iid masks need a channel dim
    for _ in range(n_freq):
        x = fm(x)
    for _ in range(n_time):
        x = tm(x)
    out = dict(batch)
    out["frames"] = x.squeeze(1).transpose(1, 2) * batch["mask"][..., None]
    return out
