"""Track encoders: (B, T, 512) frames + mask -> (B, emb_dim) L2-normalized artist embeddings
((B, emb_dim + 512) with ``pooled_branch``).

Two backbones behind one module, :class:`ArtistEncoder`:

* ``transformer``: ``torch.nn.TransformerEncoder`` (pre-norm) with a key-padding mask;
* ``conformer``: ``torchaudio.models.Conformer`` (padding from lengths).

Both start with a per-feature standardisation (train-set mean / std held as buffers, so a checkpoint
carries it: the Yandex features have per-feature scales spread over decades) and a linear projection,
and end with masked statistics pooling (``pooling="mean+std"``: the mean and the standard deviation
over time of each backbone feature, as in x-vectors; ``"mean"``: the mean alone) and a linear head.
The std half is what sees how an artist's features co-vary from frame to frame: those variations are
zero-mean over a track, so no average of frames, however transformed linearly, carries them. With ``pooled_branch`` the embedding also holds
the time-averaged standardised input weighted per feature by learned gains (initialised to 1, so
training can silence features that carry no artist signal), beside the backbone's head: the
Yandex features are already track-level descriptors, and a projection to ``emb_dim`` alone loses
what a plain average keeps. There is no positional encoding: training permutes
time steps as augmentation and inference averages rolling windows, so only the set of frames matters.
"""

from __future__ import annotations

import torch
from torch import nn

from featurestore.torch_pair import import_torchaudio

Conformer = import_torchaudio("models").Conformer  # one line naming the fix on a mismatched torchaudio

__all__ = ["ARCHS", "POOLINGS", "ArtistEncoder"]

ARCHS = ("transformer", "conformer")
POOLINGS = ("mean", "mean+std")


class ArtistEncoder(nn.Module):
    """One artist-embedding model; ``config`` (the constructor's arguments) rebuilds it."""

    def __init__(self, arch: str = "transformer", n_features: int = 512, d_model: int = 128, layers: int = 2,
                 heads: int = 4, ff: int = 256, emb_dim: int = 128, dropout: float = 0.1, kernel_size: int = 7,
                 pooled_branch: bool = False, pooling: str = "mean"):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.config = {"arch": arch, "n_features": n_features, "d_model": d_model, "layers": layers,
                       "heads": heads, "ff": ff, "emb_dim": emb_dim, "dropout": dropout,
                       "kernel_size": kernel_size, "pooled_branch": pooled_branch, "pooling": pooling}
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.project = nn.Sequential(nn.Linear(n_features, d_model), nn.Dropout(dropout))
        if arch == "transformer":
            layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout, batch_first=True, norm_first=True,
                                               activation="gelu")
            self.backbone = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        else:
            self.backbone = Conformer(input_dim=d_model, num_heads=heads, ffn_dim=ff,
                                                        num_layers=layers, depthwise_conv_kernel_size=kernel_size,
                                                        dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model * (2 if pooling == "mean+std" else 1), emb_dim)
        self.gain = nn.Parameter(torch.ones(n_features)) if pooled_branch else None

    @property
    def arch(self) -> str:
        return self.config["arch"]

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-feature standardisation (a zero std is treated as 1)."""
        self.mean.copy_(mean)
        self.std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``frames`` (B, T, F) float, ``mask`` (B, T) bool (True = real frame; every row needs one)."""
        z = (frames - self.mean) / self.std
        x = self.project(z) * mask[..., None]
        if self.arch == "transformer":
            x = self.backbone(x, src_key_padding_mask=~mask)
        else:  # torchaudio builds its padding mask from lengths, up to the longest one: trim to it
            lengths = mask.sum(1).to(torch.int64)
            longest = int(lengths.max())
            x, mask = x[:, :longest], mask[:, :longest]
            x, _ = self.backbone(x, lengths)
        x = self.norm(x) * mask[..., None]
        count = mask.sum(1, keepdim=True).clamp(min=1).to(x.dtype)
        pooled = x.sum(1) / count
        if self.config["pooling"] == "mean+std":
            spread = ((x - pooled[:, None]) * mask[..., None]).pow(2).sum(1) / count
            pooled = torch.cat([pooled, (spread + 1e-5).sqrt()], dim=-1)
        emb = nn.functional.normalize(self.head(pooled), dim=-1)
        if self.gain is None:
            return emb
        averaged = (z[:, : mask.shape[1]] * mask[..., None]).sum(1) / count  # the conformer trimmed mask
        branch = nn.functional.normalize(averaged * self.gain, dim=-1)
        return torch.cat([emb, branch], dim=-1) / 2**0.5  # unit norm: mean of the two cosines
