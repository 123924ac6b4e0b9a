"""The FSD tagging network: a small single-channel ResNet over log-mel crops.

Input frames are (B, T, bins) in the store's units (dB log-mel), standardized per mel bin with
statistics measured on the training frames (buffers ``mean`` / ``std``, saved with the weights), and
viewed as a one-channel image (bins x T). A stem convolution (then a ``stem_pool`` x average pool of
time: 5 ms frames are finer than tags need, and it halves the cost on a CPU) is followed by ``stages`` stages of
``depth`` residual basic blocks (two 3x3 convolutions, batch norm); channels start at ``width`` and
double each stage, and each stage ends with a 2x2 average pool. The head keeps the (pooled) frequency
axis as features, because where in frequency a sound sits is much of what tells classes apart, then
pools over time with the mean plus the max of the real (unpadded) positions, the usual time pooling of
the FSDKaggle2019 CNNs, before a linear layer to one logit per class (its bias starts at the class
prior's log-odds when given, so the first steps go to features, not to learning how common each class is).

The mask matters for short clips: padded frames are zero after standardization and never reach the
time pooling (the mask is pooled along with the features).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["FsdCNN"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a (projected when the width changes) shortcut."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (nn.Identity() if c_in == c_out
                         else nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def _pool_mask(mask: torch.Tensor, frames: int, factor: int = 2) -> torch.Tensor:
    """The time mask after a ``factor`` x average pool of the time axis down to ``frames`` positions."""
    return mask[:, : factor * frames].reshape(mask.shape[0], frames, factor).any(-1)


class FsdCNN(nn.Module):
    """Single-channel ResNet tagger; ``config`` holds the constructor arguments (checked on resume)."""

    def __init__(self, n_mels: int, classes: int, width: int = 16, depth: int = 1, stages: int = 4,
                 dropout: float = 0.2, stem_pool: int = 2):
        super().__init__()
        if min(n_mels, classes, width, depth, stages, stem_pool) < 1:
            raise ValueError("n_mels, classes, width, depth, stages and stem_pool must all be >= 1")
        self.config = {"n_mels": n_mels, "classes": classes, "width": width, "depth": depth, "stages": stages,
                       "dropout": dropout, "stem_pool": stem_pool}
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        blocks: list[nn.Module] = []
        c = width
        for s in range(stages):
            c_out = width * 2**s
            for _ in range(depth):
                blocks.append(BasicBlock(c, c_out))
                c = c_out
        self.blocks = nn.ModuleList(blocks)
        bins = n_mels
        for _ in range(stages):
            bins = bins // 2 if bins >= 2 else bins
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * c * bins, classes)

    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-bin mean and standard deviation of the training frames (store units)."""
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(1e-3))

    def set_prior(self, prior: torch.Tensor) -> None:
        """Start the output bias at the log-odds of each class's share of positive labels."""
        p = prior.clamp(1e-4, 1 - 1e-4)
        with torch.no_grad():
            self.head.bias.copy_(torch.log(p / (1 - p)))

    def standardize(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, bins) store units -> standardized, zero on padded frames."""
        return (frames - self.mean) / self.std * mask[..., None]

    def forward(self, frames: torch.Tensor, mask: torch.Tensor, standardized: bool = False) -> torch.Tensor:
        """Logits (B, classes) of (B, T, bins) frames; ``standardized`` when :meth:`standardize` was applied
        already (training augments standardized frames, so that masks fill with the mean)."""
        x = frames if standardized else self.standardize(frames, mask)
        x = self.stem(x.transpose(1, 2).unsqueeze(1))  # (B, C, bins, T)
        pool = self.config["stem_pool"]
        if pool > 1 and x.shape[-1] >= pool:  # 5 ms frames are finer than the tags need: pool time first
            x = F.avg_pool2d(x, (1, pool))
            mask = _pool_mask(mask, x.shape[-1], pool)
        depth = self.config["depth"]
        for i, block in enumerate(self.blocks):
            x = block(x)
            if (i + 1) % depth == 0:  # end of a stage: halve frequency (always: the head's size) and time
                t = 2 if x.shape[-1] >= 2 else 1  # a very short clip keeps its last time step
                x = F.avg_pool2d(x, (2 if x.shape[-2] >= 2 else 1, t))
                if t == 2:
                    mask = _pool_mask(mask, x.shape[-1])
        x = x.flatten(1, 2)  # (B, C * bins', T')
        m = mask[:, None, : x.shape[-1]].to(x.dtype)
        mean = (x * m).sum(-1) / m.sum(-1).clamp_min(1)
        peak = x.masked_fill(m == 0, float("-inf")).amax(-1)
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        return self.head(self.dropout(torch.cat([mean, peak], dim=1)))
