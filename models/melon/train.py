"""``train_melon``: the denoising autoencoder (on :func:`models.training.fit`) and the title model.

The autoencoder trains on the train split with :class:`~loaders.playlists.PlaylistBatches` (denoised
inputs, full targets) and is validated every epoch on the val split with the official metric
(:func:`~models.melon.recommend.recommend` + :func:`~models.melon.recommend.score_split`) on a fixed
sample of at most ``val_sample`` of its playlists, which drives early stopping and ``best.pt``. The
title model (``models.melon.title``) gets what is left of ``max_minutes`` (about ``title_share`` of it:
``max_minutes`` bounds the whole command, set-up included) and is written to
``out_dir/title/title_model.pt``; ``fstore evaluate melon`` reads both.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from featurestore.schemas import melon as schema
from featurestore.store import Store
from featurestore.store.errors import FstoreError
from loaders.playlists import PlaylistBatches
from loaders.splits import VAL_SAMPLE, bounded_sample
from models.training import FitResult, TrainTask, fit, parse_device, seed_everything

from .data import DAEScorer, vocab_to_save
from .model import PlaylistDAE, dae_loss
from .recommend import recommend, score_split
from .title import train_title_model

__all__ = ["DEFAULT_MODEL", "MelonTrainResult", "TITLE_DIR", "train_melon"]

DEFAULT_MODEL = {"d_model": 64, "layers": 2, "heads": 4, "ff": 256, "dropout": 0.0, "share_artists": True}
TITLE_DIR = "title"


@dataclass
class MelonTrainResult:
    dae: FitResult
    title_model: Path | None
    title_seconds: float
    vocab: tuple[int, int, int]  # songs, tags, artists the autoencoder knows
    left_out: dict  # train items outside the vocabulary, and input items cut by the width caps

    def lines(self) -> list[str]:
        title = f"{self.title_model} ({self.title_seconds:.0f} s)" if self.title_model else "- (skipped)"
        left = ", ".join(f"{k} {v}" for k, v in self.left_out.items())
        return [*self.dae.lines(), f"vocabulary     {self.vocab[0]} songs, {self.vocab[1]} tags, {self.vocab[2]} artists"
                f" (left out: {left})", f"title model    {title}"]


def train_melon(store: str | os.PathLike[str] | Store, out_dir: str | os.PathLike[str], *, epochs: int = 6,
                max_minutes: float | None = None, title_share: float = 0.3, device: str | torch.device = "cpu",
                batch_size: int = 256, lr: float = 1e-2, denoise: float = 0.7, question_mix: tuple[float, float] = (0.0, 0.0), min_count: int = 2,
                max_songs: int = 50, max_tags: int = 16, max_artists: int = 32, seed: int = 0, patience: int = 3,
                resume: bool = True, progress: bool = True, model: dict | None = None,
                val_split: str = "val", val_sample: int = VAL_SAMPLE) -> MelonTrainResult:
    """Train both models into ``out_dir`` (``best.pt``/``checkpoint.pt``/``history.csv`` for the
    autoencoder, ``title/`` for the title model; ``title_share=0`` skips it). Each validation scores the
    same ``val_sample`` playlists of ``val_split`` (0: all of them)."""
    if not 0.0 <= title_share < 1.0:
        raise FstoreError(f"title_share must be in [0, 1), got {title_share}")
    unknown = set(model or {}) - set(DEFAULT_MODEL)
    if unknown:
        raise FstoreError(f"unknown model settings {sorted(unknown)} (known: {sorted(DEFAULT_MODEL)})")
    started = time.perf_counter()
    store = store if isinstance(store, Store) else Store(store)
    out_dir = Path(out_dir)
    dev = parse_device(device)
    seed_everything(seed)
    widths = {"max_songs": max_songs, "max_tags": max_tags, "max_artists": max_artists}
    train = PlaylistBatches(store, "train", batch_size, denoise=denoise, question_mix=question_mix, min_count=min_count,
                            order="random",
                            seed=seed, device=dev, **widths)
    vocab = train.vocab
    settings = {**DEFAULT_MODEL, **(model or {})}
    net = PlaylistDAE(vocab.n_songs, vocab.n_tags, vocab.n_artists,
                      **{k: v for k, v in settings.items() if k != "share_artists"},
                      song_artists=vocab["song_artists"] if settings["share_artists"] else None)
    n = float(train.items.size)
    net.init_bias(tuple(_rates(t, size, n) for t, size in ((train.targets[0], vocab.n_songs),
                                                              (train.targets[1], vocab.n_tags))) + (
        _artist_rates(train, vocab.n_artists, n),))
    config = {**DEFAULT_MODEL, **(model or {}), "widths": widths, "denoise": denoise, "question_mix": list(question_mix), "min_count": min_count,
              "vocab": [vocab.n_songs, vocab.n_tags, vocab.n_artists]}
    has_val = store.tables.get(f"{val_split}_answer_songs") is not None
    val_rows = None
    if has_val:
        playlists = store.tables[schema.playlists_table(val_split)]["rows"]
        val_rows = bounded_sample(np.arange(playlists), val_sample, seed)

    def validate(m: torch.nn.Module) -> dict[str, float]:
        scorer = DAEScorer(net, vocab, store, dev, widths)  # ``net``: the weights ``m`` trains
        recs = recommend(store, val_split, scorer, device=dev, progress=False, rows=val_rows)
        score = score_split(store, val_split, recs, rows=val_rows)
        return {"val_score": score["score"], "val_song_ndcg": score["song_ndcg"], "val_tag_ndcg": score["tag_ndcg"]}

    task = TrainTask(model=net, config=config, loss=dae_loss, validate=validate if has_val else None,
                     metric="val_score" if has_val else "val_loss", higher_is_better=True, item_name="playlists",
                     extra={"vocab": vocab_to_save(vocab)})
    # ``max_minutes`` bounds the whole command: set-up (vocabulary, loaders) and the autoencoder share
    # ``1 - title_share`` of it, the title model (tokenizer included) what is left (at full Melon size the
    # title model's own fixed share came on top of the set-up: 846 s for --max-minutes 5, under load)
    dae_minutes = None if max_minutes is None else _minutes_left(started, max_minutes * (1 - title_share))
    result = fit(task, train, out_dir, epochs=epochs, device=dev, lr=lr, patience=patience, max_minutes=dae_minutes,
                 resume=resume, progress=progress)
    title_path, t0 = None, time.perf_counter()
    if title_share > 0:
        title_path = train_title_model(store, out_dir / TITLE_DIR, device=str(dev), seed=seed, resume=resume,
                                       progress=progress,
                                       max_minutes=None if max_minutes is None else _minutes_left(started, max_minutes))
    left_out = {f"{k} below min_count": v for k, v in train.dropped.items()}
    left_out |= {f"input {k} beyond max_{k}": v for k, v in train.truncated.items()}
    return MelonTrainResult(result, title_path, time.perf_counter() - t0,
                            (vocab.n_songs, vocab.n_tags, vocab.n_artists), left_out)


def _minutes_left(started: float, budget_minutes: float, floor: float = 0.05) -> float:
    """What is left of ``budget_minutes`` counted from ``started`` (``time.perf_counter()``), at least
    ``floor`` minutes, so a phase whose share the set-up ate still takes a step and leaves a model."""
    return max(floor, budget_minutes - (time.perf_counter() - started) / 60.0)


def _rates(csr: tuple[np.ndarray, np.ndarray], size: int, n: float) -> np.ndarray:
    return np.bincount(csr[1], minlength=size) / max(n, 1.0)


def _artist_rates(train: PlaylistBatches, size: int, n: float) -> np.ndarray:
    """Share of train playlists holding each artist (through the vocabulary's song -> artist table)."""
    off, songs = train.targets[0]
    table = train.vocab["song_artists"]
    rows = np.repeat(np.arange(off.size - 1), np.diff(off))
    a = table[songs]
    pairs = np.unique(np.stack([np.repeat(rows, a.shape[1]), a.ravel()]), axis=1)
    pairs = pairs[:, pairs[1] >= 0]
    return np.bincount(pairs[1], minlength=size) / max(n, 1.0)
