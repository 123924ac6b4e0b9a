"""Speaker classifier: linear prenet -> torchaudio Conformer -> masked self-attention pooling -> batch norm
-> additive-margin softmax (AM-softmax, CosFace).

Padding never changes a prediction in eval mode:

* attention: the Conformer layers get the batch's key padding mask (its own ``Conformer.forward``
  rebuilds one from ``lengths.max()``, which breaks when a crop batch is all shorter than the window
  and syncs the host), so real frames never attend to padded ones;
* depthwise convolution (kernel 31): it would mix the padded frames' values into the last 15 real
  frames. A forward pre-hook on each layer's depthwise ``Conv1d`` zeroes the padded frames first,
  which is exactly the convolution's own zero padding at the end of an utterance seen alone. A hook
  keeps torchaudio's layer code as it is (no copied forward to drift from it);
* the batch norm inside the convolution module normalizes per channel with running statistics in
  eval mode (per-frame arithmetic); in training mode its batch statistics do see padded frames, which
  random crops only have for utterances shorter than the crop;
* pooling: attention weights are a softmax over real frames only (padded scores are -inf), the
  optional max pooling takes the max over real frames only.

The AM-softmax head returns ``scale * cos(embedding, class weight)``; the margin is subtracted from the
true class's cosine only in training mode (``forward(..., labels)``), never at inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from featurestore.torch_pair import import_torchaudio

Conformer = import_torchaudio("models").Conformer  # one line naming the fix on a mismatched torchaudio

__all__ = ["POOLINGS", "AMSoftmax", "AttentionPooling", "SpeakerNet"]

POOLINGS = ("attention", "attention+max")


class AttentionPooling(nn.Module):
    """Self-attention pooling: a learned score per frame, softmax over the real frames, weighted sum."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, D) frames, (B, T) bool mask of real frames -> (B, D)."""
        scores = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        # padded frames get weight 0; zero them too so that a non-finite padded value cannot leak (0 * inf)
        return torch.einsum("bt,btd->bd", weights, x.masked_fill(~mask[..., None], 0.0))


class AMSoftmax(nn.Module):
    """Additive-margin softmax logits: ``scale * (cos - margin * onehot(label))``, margin in training only."""

    def __init__(self, dim: int, classes: int, scale: float = 30.0, margin: float = 0.35):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(classes, dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale, self.margin = scale, margin

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = F.normalize(embedding.float(), dim=1) @ F.normalize(self.weight.float(), dim=1).T
        if labels is not None and self.training:
            cos = cos - self.margin * F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return self.scale * cos


class SpeakerNet(nn.Module):
    """Frames (B, T, n_mels) + mask (B, T) -> speaker logits (B, n_speakers); see the module docstring."""

    def __init__(self, n_mels: int, n_speakers: int, d_model: int = 256, layers: int = 2, heads: int = 4,
                 ffn: int = 512, kernel: int = 31, dropout: float = 0.3, pooling: str = "attention",
                 scale: float = 30.0, margin: float = 0.35):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if d_model % heads:
            raise ValueError(f"d_model {d_model} must be a multiple of heads {heads}")
        if kernel % 2 == 0:
            raise ValueError(f"kernel {kernel} must be odd (same-length depthwise convolution)")
        self.config = {"n_mels": n_mels, "n_speakers": n_speakers, "d_model": d_model, "layers": layers,
                       "heads": heads, "ffn": ffn, "kernel": kernel, "dropout": dropout, "pooling": pooling,
                       "scale": scale, "margin": margin}
        # input normalization per mel band, set from the training frames (set_feature_stats)
        self.register_buffer("mel_mean", torch.zeros(n_mels))
        self.register_buffer("mel_std", torch.ones(n_mels))
        self.prenet = nn.Linear(n_mels, d_model)
        self.conformer = Conformer(input_dim=d_model, num_heads=heads, ffn_dim=ffn, num_layers=layers,
                                   depthwise_conv_kernel_size=kernel, dropout=dropout)
        self._keep: torch.Tensor | None = None  # (B, 1, T) real-frame mask of the forward in progress
        for layer in self.conformer.conformer_layers:
            depthwise = layer.conv_module.sequential[2]
            assert isinstance(depthwise, nn.Conv1d) and depthwise.groups == d_model, "torchaudio layout changed"
            depthwise.register_forward_pre_hook(self._zero_padding)
        self.pool = AttentionPooling(d_model)
        self.embedding_dim = d_model * (2 if pooling == "attention+max" else 1)
        self.norm = nn.BatchNorm1d(self.embedding_dim)
        self.head = AMSoftmax(self.embedding_dim, n_speakers, scale, margin)

    def _zero_padding(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Depthwise conv input (B, C, T): padded frames set to zero, as at an utterance's own end."""
        x = args[0]
        return (x * self._keep.to(x.dtype),) if self._keep is not None else args

    @torch.no_grad()
    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mel_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.mel_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-5))

    def embed(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The batch-normalized utterance embedding (B, embedding_dim)."""
        x = self.prenet((frames.float() - self.mel_mean) / self.mel_std)
        x = x.masked_fill(~mask[..., None], 0.0)
        self._keep = mask[:, None, :]
        try:
            h = x.transpose(0, 1)  # the layers take (T, B, D)
            for layer in self.conformer.conformer_layers:
                h = layer(h, ~mask)
        finally:
            self._keep = None
        h = h.transpose(0, 1)
        pooled = self.pool(h, mask)
        if self.config["pooling"] == "attention+max":
            pooled = torch.cat([pooled, h.masked_fill(~mask[..., None], float("-inf")).amax(1)], dim=1)
        return self.norm(pooled)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, n_speakers); with ``labels`` in training mode the true class gets the margin."""
        return self.head(self.embed(frames, mask), labels)

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
