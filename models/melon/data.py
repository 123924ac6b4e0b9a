"""What the autoencoder reads and writes besides its weights: the vocabulary in a checkpoint, and
:class:`DAEScorer` (a :class:`~models.melon.recommend.Scorer`) that scores a split's questions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from featurestore.store import Store
from featurestore.store.errors import FstoreError
from loaders.playlists import PlaylistBatches, PlaylistVocab
from models.training import autocast, parse_device, read_checkpoint

from .model import PlaylistDAE
from .recommend import load_vocab

__all__ = ["DAEScorer", "vocab_from_saved", "vocab_to_save"]

_ARRAYS = ("song_codes", "tag_codes", "song_artists")


def vocab_to_save(vocab: PlaylistVocab) -> dict:
    """Tensors and ints only: checkpoints are read with ``weights_only=True``."""
    return {**{k: torch.from_numpy(np.asarray(vocab[k])) for k in _ARRAYS},
            "n_artists": vocab.n_artists, "min_count": int(vocab["min_count"])}


def vocab_from_saved(saved: dict) -> PlaylistVocab:
    return PlaylistVocab(**{k: saved[k].cpu().numpy() for k in _ARRAYS}, n_artists=int(saved["n_artists"]),
                         min_count=int(saved["min_count"]))


class DAEScorer:
    """Scores every store song and tag for a split's playlists from their question (songs, tags and
    the songs' artists); items outside the model's vocabulary get no opinion (-inf)."""

    def __init__(self, model: PlaylistDAE, vocab: PlaylistVocab, store: Store, device: str | torch.device = "cpu",
                 widths: dict | None = None):
        self.model, self.vocab, self.store = model.eval(), vocab, store
        self.device = parse_device(device)
        self.widths = widths or {}
        v = load_vocab(store)
        self.n_songs, self.n_tags = v.n_songs, v.n_tags
        self.song_codes = torch.from_numpy(np.asarray(vocab["song_codes"], dtype=np.int64)).to(self.device)
        self.tag_codes = torch.from_numpy(np.asarray(vocab["tag_codes"], dtype=np.int64)).to(self.device)
        self._loaders: dict[str, PlaylistBatches] = {}

    @classmethod
    def load(cls, path: str | Path, store: Store, device: str = "cpu") -> DAEScorer:
        dev = parse_device(device)
        ckpt = read_checkpoint(path, dev, "melon autoencoder")
        if "vocab" not in ckpt or "config" not in ckpt:
            raise FstoreError(f"{path}: not a melon autoencoder checkpoint (no vocabulary)")
        c = ckpt["config"]
        vocab = vocab_from_saved(ckpt["vocab"])
        # checkpoints from before artist sharing have no ``share_artists``: their songs stand alone
        model = PlaylistDAE(vocab.n_songs, vocab.n_tags, vocab.n_artists, c["d_model"], c["layers"], c["heads"],
                            c["ff"], c["dropout"], song_artists=vocab["song_artists"] if c.get("share_artists") else None)
        model.load_state_dict(ckpt["model"])
        return cls(model.to(dev), vocab, store, dev, c.get("widths"))

    def loader(self, split: str) -> PlaylistBatches:
        if split not in self._loaders:
            self._loaders[split] = PlaylistBatches(self.store, split, 256, vocab=self.vocab, order="sequential",
                                                   device=self.device, **self.widths)
        return self._loaders[split]

    @torch.no_grad()
    def vocab_scores(self, split: str, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(len(rows), model songs) and (len(rows), model tags) probabilities, columns in the order of
        ``vocab["song_codes"]`` / ``vocab["tag_codes"]``: what :meth:`scores` spreads over the store's codes."""
        b = self.loader(split).batch(np.asarray(rows))
        with autocast(self.device):
            song_logits, tag_logits = self.model(b["songs"], b["tags"], b["artists"], heads=2)
        # probabilities, not logits: the same ranking, and blends (min-max normalised) then weigh the
        # few likely items rather than the bulk of the logit range (in place: a (batch x vocabulary) copy less)
        return song_logits.float().sigmoid_(), tag_logits.float().sigmoid_()

    def scores(self, split: str, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        song_p, tag_p = self.vocab_scores(split, rows)
        n = song_p.shape[0]
        songs = torch.full((n, self.n_songs), -torch.inf, device=self.device)
        songs[:, self.song_codes] = song_p
        tags = torch.full((n, self.n_tags), -torch.inf, device=self.device)
        tags[:, self.tag_codes] = tag_p
        return songs, tags
