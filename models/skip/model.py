"""A small encoder-decoder for Spotify sequential skip prediction (skip_2 of the second half).

In the spirit of the WSDM Cup 2019 seed's best submission:

* **encoder** over the first half: every position is the sum of a projection of its (standardised)
  track features, a projection of its log row (skips, flags and seek counts as floats; hour, context
  type and the two reasons as learned embeddings) and a position embedding, followed by residual
  blocks of dilated 1-D convolutions with gated linear units (GLU);
* **summary**: the masked mean of the encoder states and the state of the last first-half position
  (which carries the last observed skip), mixed by highway layers;
* **decoder** over the second half: track features only (plus a position embedding and the summary),
  the same kind of dilated GLU convolution blocks, then highway layers and one logit per position.

Convolutions are not causal (the second half's track features are all known in advance). Padding
never leaks: states are multiplied by the mask before every convolution, pooling is masked, and the
logits of padded second-half positions are 0. Every constructor argument is kept in ``config`` so a
checkpoint can be checked for shape compatibility before loading.
"""

from __future__ import annotations

import torch
from torch import nn

from featurestore.schemas.mssd import BATCH_LOG_COLUMNS, MAX_HALF

# log bytes fed as learned embeddings (any byte value has a row: 256 entries per column)
CATEGORICAL_LOG = ("hour_of_day", "context_type", "hist_user_behavior_reason_start",
                   "hist_user_behavior_reason_end")
COUNT_LOG = ("hist_user_behavior_n_seekfwd", "hist_user_behavior_n_seekback")  # fed as log1p
FLOAT_LOG = tuple(c for c in BATCH_LOG_COLUMNS if c not in CATEGORICAL_LOG)  # 0/1 flags, skips and counts


class Highway(nn.Module):
    """``y = t * relu(W_h x) + (1 - t) * x`` with the gate ``t = sigmoid(W_t x)`` (Srivastava et al.)."""

    def __init__(self, dim: int):
        super().__init__()
        self.transform = nn.Linear(dim, dim)
        self.gate = nn.Linear(dim, dim)
        nn.init.constant_(self.gate.bias, -1.0)  # start close to the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.sigmoid(self.gate(x))
        return t * torch.relu(self.transform(x)) + (1 - t) * x


class GLUConvBlock(nn.Module):
    """Pre-norm residual block: LayerNorm -> mask -> dilated Conv1d(d -> 2d) -> GLU -> dropout -> + x."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, 2 * dim, kernel_size, dilation=dilation,
                              padding=dilation * (kernel_size - 1) // 2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, d), ``mask`` (B, L, 1) float; padded positions of the result are 0."""
        y = self.norm(x) * mask  # zero padding before the convolution: nothing leaks across positions
        y = nn.functional.glu(self.conv(y.transpose(1, 2)), dim=1).transpose(1, 2)
        return (x + self.drop(y)) * mask


class SkipModel(nn.Module):
    """Predict a skip_2 logit for every second-half position of a session.

    Args:
        n_features: track feature columns (``SessionBatches.feature_columns``).
        half: positions per half (MSSD: 10).
        d_model: width of every hidden state.
        blocks: dilated GLU convolution blocks per stack (encoder and decoder); block ``i`` has
            dilation ``2 ** i``.
        kernel_size: convolution width (odd).
        emb_dim: width of each categorical log embedding.
        highway: highway layers in the summary and in the output head.
        dropout: dropout after every convolution block.
    """

    def __init__(self, n_features: int, half: int = MAX_HALF, d_model: int = 64, blocks: int = 3,
                 kernel_size: int = 3, emb_dim: int = 8, highway: int = 2, dropout: float = 0.1):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.config = {"n_features": n_features, "half": half, "d_model": d_model, "blocks": blocks,
                       "kernel_size": kernel_size, "emb_dim": emb_dim, "highway": highway, "dropout": dropout}
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.register_buffer("float_index", torch.tensor([BATCH_LOG_COLUMNS.index(c) for c in FLOAT_LOG]))
        self.register_buffer("count_flag", torch.tensor([c in COUNT_LOG for c in FLOAT_LOG]))
        self.register_buffer("cat_index", torch.tensor([BATCH_LOG_COLUMNS.index(c) for c in CATEGORICAL_LOG]))
        # encoder inputs
        self.ctx_track = nn.Linear(n_features, d_model)
        self.log_embed = nn.ModuleList(nn.Embedding(256, emb_dim) for _ in CATEGORICAL_LOG)
        self.ctx_log = nn.Linear(len(FLOAT_LOG) + emb_dim * len(CATEGORICAL_LOG), d_model)
        self.ctx_pos = nn.Embedding(half, d_model)
        self.encoder = nn.ModuleList(GLUConvBlock(d_model, kernel_size, 2**i, dropout) for i in range(blocks))
        self.enc_norm = nn.LayerNorm(d_model)
        # summary of the first half
        self.summary_in = nn.Linear(2 * d_model, d_model)
        self.summary = nn.Sequential(*(Highway(d_model) for _ in range(highway)))
        # decoder
        self.tgt_track = nn.Linear(n_features, d_model)
        self.tgt_pos = nn.Embedding(half, d_model)
        self.tgt_summary = nn.Linear(d_model, d_model)
        self.decoder = nn.ModuleList(GLUConvBlock(d_model, kernel_size, 2**i, dropout) for i in range(blocks))
        self.dec_norm = nn.LayerNorm(d_model)
        self.head_in = nn.Linear(2 * d_model, d_model)
        self.head = nn.Sequential(*(Highway(d_model) for _ in range(highway)))
        self.out = nn.Linear(d_model, 1)

    # --- inputs -----------------------------------------------------------------------------------
    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-column mean/std used to standardise track features (saved in the state dict)."""
        self.feature_mean.copy_(mean.to(self.feature_mean))
        self.feature_std.copy_(std.to(self.feature_std).clamp_min(1e-6))

    def _standardise(self, features: torch.Tensor) -> torch.Tensor:
        return ((features.float() - self.feature_mean) / self.feature_std).clamp(-8.0, 8.0)

    def _log_inputs(self, ctx_log: torch.Tensor) -> torch.Tensor:
        floats = ctx_log.index_select(-1, self.float_index).float()
        floats = torch.where(self.count_flag, torch.log1p(floats), floats)
        cats = ctx_log.index_select(-1, self.cat_index).long()
        embs = [emb(cats[..., j]) for j, emb in enumerate(self.log_embed)]
        return torch.cat([floats, *embs], dim=-1)

    # --- forward ----------------------------------------------------------------------------------
    def forward(self, ctx_features: torch.Tensor, ctx_log: torch.Tensor, ctx_mask: torch.Tensor,
                tgt_features: torch.Tensor, tgt_mask: torch.Tensor) -> torch.Tensor:
        """Logits (B, h) of skip_2 for the second half; 0 at padded positions.

        ``ctx_features`` (B, h, C) float, ``ctx_log`` (B, h, F) uint8 in BATCH_LOG_COLUMNS order,
        ``ctx_mask`` (B, h) bool, ``tgt_features`` (B, h, C), ``tgt_mask`` (B, h) bool.
        """
        h = ctx_mask.shape[1]
        cm = ctx_mask.unsqueeze(-1).to(self.feature_mean.dtype)
        tm = tgt_mask.unsqueeze(-1).to(self.feature_mean.dtype)
        pos = torch.arange(h, device=ctx_mask.device)

        x = self.ctx_track(self._standardise(ctx_features)) + self.ctx_log(self._log_inputs(ctx_log))
        x = (x + self.ctx_pos(pos)) * cm
        for block in self.encoder:
            x = block(x, cm)
        x = self.enc_norm(x) * cm

        count = cm.sum(1)  # (B, 1)
        mean = x.sum(1) / count.clamp_min(1.0)
        last_index = (count.long() - 1).clamp_min(0)  # (B, 1)
        last = x.gather(1, last_index.unsqueeze(-1).expand(-1, 1, x.shape[-1])).squeeze(1)
        last = last * (count > 0)
        s = self.summary(self.summary_in(torch.cat([mean, last], dim=-1)))  # (B, d)

        y = self.tgt_track(self._standardise(tgt_features)) + self.tgt_pos(pos) + self.tgt_summary(s)[:, None]
        y = y * tm
        for block in self.decoder:
            y = block(y, tm)
        y = self.dec_norm(y)
        y = self.head(self.head_in(torch.cat([y, s[:, None].expand_as(y)], dim=-1)))
        return self.out(y).squeeze(-1).masked_fill(~tgt_mask, 0.0)

    def batch_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``forward`` on a ``SessionBatches`` batch."""
        return self(batch["ctx_features"], batch["ctx_log"], batch["ctx_mask"], batch["tgt_features"],
                    batch["tgt_mask"])

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

