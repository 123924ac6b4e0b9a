"""The title model's network and its batches.

:class:`TitleEncoder`: a small pre-norm transformer encoder over ``[CLS, title tokens...]`` (learned
positions: titles are short phrases whose word order carries meaning). Two heads: masked-language-model
logits tied to the token embedding (pre-training), and from the CLS state, song and tag logits
(fine-tuning: binary cross-entropy over the vocabularies).

:class:`TitleBatches`: train playlists with a title, on the loader base (orders, resume): title tokens,
and song / tag targets as padded index lists (-1) that :func:`multi_hot` turns into targets on the
device; a dense (B, songs) float batch never exists on the host.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from featurestore.schemas import melon as schema
from featurestore.store import Store
from loaders.base import BatchLoader
from loaders.prefetch import numpy_views

__all__ = ["TitleBatches", "TitleEncoder", "mask_tokens", "multi_hot"]

PAD = 0  # sentencepiece's pad id; the tokenizer never emits it for text


class TitleEncoder(nn.Module):
    """Title tokens -> MLM logits (``head="mlm"``) or (song logits, tag logits) (``head="items"``)."""

    def __init__(self, n_pieces: int, n_songs: int, n_tags: int, dim: int = 128, layers: int = 2, heads: int = 4,
                 max_tokens: int = 24, dropout: float = 0.1):
        super().__init__()
        self.mask_id, self.cls_id = n_pieces, n_pieces + 1  # two ids past the tokenizer's pieces
        self.tokens = nn.Embedding(n_pieces + 2, dim, padding_idx=PAD)
        self.positions = nn.Embedding(max_tokens + 1, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.song_head = nn.Linear(dim, n_songs)
        self.tag_head = nn.Linear(dim, n_tags)

    @torch.no_grad()
    def init_output_bias(self, song_rate: np.ndarray, tag_rate: np.ndarray) -> None:
        """Start each output at the logit of its train rate: BCE over thousands of mostly-absent items
        otherwise spends its first epochs learning only that most items are absent."""
        for head, rate in ((self.song_head, song_rate), (self.tag_head, tag_rate)):
            p = torch.as_tensor(np.clip(rate, 1e-6, 1 - 1e-6), dtype=torch.float32)
            head.bias.copy_(torch.log(p) - torch.log1p(-p))

    def forward(self, tokens: torch.Tensor, head: str = "items") -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        cls = torch.full((tokens.shape[0], 1), self.cls_id, dtype=tokens.dtype, device=tokens.device)
        x = torch.cat([cls, tokens], dim=1)
        h = self.tokens(x) + self.positions(torch.arange(x.shape[1], device=x.device))[None]
        h = self.norm(self.encoder(h, src_key_padding_mask=x == PAD))
        if head == "mlm":
            return h[:, 1:] @ self.tokens.weight.T
        return self.song_head(h[:, 0]), self.tag_head(h[:, 0])


def multi_hot(index: torch.Tensor, n: int) -> torch.Tensor:
    """(B, M) index lists padded with -1 -> (B, n) float multi-hot, built where ``index`` lives."""
    padded = torch.where(index >= 0, index, n)  # pads land in an extra column, dropped below
    out = torch.zeros(index.shape[0], n + 1, device=index.device)
    return out.scatter_(1, padded, 1.0)[:, :n]


def mask_tokens(tokens: torch.Tensor, mask_id: int, rate: float,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style masking: each real token is picked with probability ``rate`` (at least one per
    non-empty title) and replaced by ``mask_id``. Returns (masked tokens, picked positions)."""
    real = tokens != PAD
    noise = torch.rand(tokens.shape, device=tokens.device, generator=generator)
    picked = real & (noise < rate)
    # titles are short: without a forced pick most 2-3 token titles would teach nothing
    forced = torch.where(real, noise, 2.0).argmin(dim=1)
    none = real.any(dim=1) & ~picked.any(dim=1)
    picked[none, forced[none]] = True
    return torch.where(picked, mask_id, tokens), picked


def mlm_loss(model: nn.Module, tokens: torch.Tensor, mask_id: int, rate: float,
             generator: torch.Generator | None = None) -> torch.Tensor:
    masked, picked = mask_tokens(tokens, mask_id, rate, generator)
    logits = model(masked, head="mlm")
    if not bool(picked.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[picked].float(), tokens[picked])


def items_loss(model: nn.Module, batch: dict, tag_weight: float) -> torch.Tensor:
    song_logits, tag_logits = model(batch["tokens"], head="items")
    songs = multi_hot(batch["songs"], song_logits.shape[1])
    tags = multi_hot(batch["tags"], tag_logits.shape[1])
    return (F.binary_cross_entropy_with_logits(song_logits.float(), songs)
            + tag_weight * F.binary_cross_entropy_with_logits(tag_logits.float(), tags))


def _csr_remap(offsets: np.ndarray, values: np.ndarray, remap: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """A ragged set with its values mapped through ``remap`` (-1 = dropped), offsets rebuilt."""
    if remap is None:
        return offsets, values
    mapped = remap[values]
    keep = mapped >= 0
    rows = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    counts = np.bincount(rows[keep], minlength=offsets.size - 1)
    return np.concatenate(([0], np.cumsum(counts))).astype(np.int64), mapped[keep]


def _fill_padded(out: np.ndarray, batch: np.ndarray, offsets: np.ndarray, values: np.ndarray) -> None:
    """``out[j, :len]`` = row ``batch[j]``'s values, the rest -1, without a Python loop over rows."""
    out.fill(-1)
    lengths = offsets[batch + 1] - offsets[batch]
    total = int(lengths.sum())
    if total == 0:
        return
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    cols = np.arange(total) - starts
    src = np.repeat(offsets[batch], lengths) + cols
    out[np.repeat(np.arange(batch.size), lengths), cols] = values[src]


class TitleBatches(BatchLoader):
    """Batches of train playlists: ``tokens`` (B, L), ``songs`` / ``tags`` (B, M) index lists (-1 pads)
    over the model's song vocabulary (``song_remap``: store code -> vocabulary index or -1)."""

    def __init__(self, store: str | Path | Store, tokens: np.ndarray, items: np.ndarray, song_remap: np.ndarray,
                 batch_size: int = 256, order: str = "random", seed: int = 0, device: str | torch.device = "cpu",
                 threads: int = 1, ring: int = 3, split: str = "train"):
        super().__init__(store, split, batch_size, order, seed, device, rank=0, world_size=1, drop_last=False,
                         threads=threads, ring=ring, feature_dtype=torch.float32, chunk=4096, window=8)
        from .recommend import load_split

        self.tables_read = [schema.songs_table(split), schema.tags_table(split), "tables"]
        data = load_split(self.store, split)
        self.tokens = np.ascontiguousarray(tokens, dtype=np.int32)
        self.lengths = (self.tokens != PAD).sum(axis=1)
        self.items = np.asarray(items, dtype=np.int32)
        self.song_offsets, self.songs = _csr_remap(data.song_offsets, data.songs, song_remap)
        self.tag_offsets, self.tags = data.tag_offsets, data.tags
        self.max_songs = max(1, int(np.diff(self.song_offsets)[self.items].max(initial=0)))
        self.max_tags = max(1, int(np.diff(self.tag_offsets)[self.items].max(initial=0)))

    def state_config(self) -> dict:
        return {"items": int(self.items.size)}

    def shapes(self, batches: list[np.ndarray]) -> dict:
        B = self.batch_size
        return {"tokens": ((B, self.tokens.shape[1]), torch.int32), "songs": ((B, self.max_songs), torch.int32),
                "tags": ((B, self.max_tags), torch.int32)}

    def fill(self, i: int, batch: np.ndarray, slot: dict) -> dict:
        b = batch.size
        v = numpy_views(slot)
        v["tokens"][:b] = self.tokens[batch]
        _fill_padded(v["songs"][:b], batch, self.song_offsets, self.songs)
        _fill_padded(v["tags"][:b], batch, self.tag_offsets, self.tags)
        # titles are a few pieces: ship only up to the batch's longest (the encoder's cost is per position)
        width = max(1, int(self.lengths[batch].max()))
        return {"tokens": slot["tokens"][:b, :width], "songs": slot["songs"][:b], "tags": slot["tags"][:b]}

    def finish(self, raw: dict) -> dict:
        return {k: t.long().contiguous() for k, t in raw.items()}
