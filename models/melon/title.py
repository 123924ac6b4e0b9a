"""The Melon title model: playlist title -> songs and tags.

1. A sentencepiece BPE tokenizer trained on the train playlists' titles (seed: 6,000 pieces). The
   vocabulary is a soft limit (``hard_vocab_limit=False``): a title corpus that supports fewer pieces
   gets fewer, and the trained size is recorded in the checkpoint (``pieces``).
2. A small transformer encoder (:class:`~models.melon.title_model.TitleEncoder`) pre-trained as a masked
   language model on those titles, then fine-tuned title -> songs and tags with binary cross-entropy
   over the vocabularies; both phases run on the shared training loop (:func:`models.training.fit`),
   each with its share of ``max_minutes``, in ``out_dir/pretrain`` and ``out_dir/finetune``.
3. ``out_dir/title_model.pt``: the fine-tuned weights (best held-out loss), config, tokenizer model
   bytes and the song vocabulary; :meth:`TitleScorer.load` reads it and scores a split's titles.

Under ``torchrun`` both phases are sharded across the ranks through DDP like every family's training
(the work divided, not repeated; no rank waits at a barrier for the whole title share of the time);
every rank trains the same deterministic tokenizer, rank 0 writes ``title_model.pt``.

Playlists with an empty title get no opinion (-inf), so a recommender falls back to other scorers or
to popularity for them.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch

from featurestore.store import Store
from featurestore.store.errors import FstoreError
from models.training import (
    TrainTask,
    autocast,
    distributed,
    fit,
    parse_device,
    read_checkpoint,
    save,
    seed_everything,
)

from .recommend import load_split, load_vocab
from .title_model import TitleBatches, TitleEncoder, items_loss, mlm_loss

__all__ = ["TITLE_MODEL", "TitleScorer", "TitleTokenizer", "tokenize", "train_title_model"]

TITLE_MODEL = "title_model.pt"
MAX_TOKENS = 24  # pieces kept per title (titles are short phrases; longer ones are cut and counted)


class TitleTokenizer:
    """A sentencepiece BPE model: titles -> padded piece ids (0 pads, 1 is unknown)."""

    def __init__(self, model: bytes, max_tokens: int = MAX_TOKENS):
        self.model_bytes = bytes(model)
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_bytes)
        self.max_tokens = max_tokens

    @classmethod
    def train(cls, titles: list[str], vocab_size: int = 6000, max_tokens: int = MAX_TOKENS) -> TitleTokenizer:
        """BPE on ``titles`` (empty ones skipped; BPE merges are deterministic, no seed needed); at most
        ``vocab_size`` pieces, fewer when the corpus supports fewer (``pieces`` says how many)."""
        corpus = [t.strip() for t in titles if t and t.strip()]
        if not corpus:
            raise FstoreError("no non-empty playlist title to train the title tokenizer on")
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(corpus), model_writer=buf, model_type="bpe", vocab_size=vocab_size,
            hard_vocab_limit=False, character_coverage=0.9995, pad_id=0, unk_id=1, bos_id=-1, eos_id=-1,
            num_threads=1, minloglevel=2)
        return cls(buf.getvalue(), max_tokens)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> TitleTokenizer:
        """The tokenizer saved in a ``title_model.pt`` (what a playlist loader uses to carry title tokens
        that the trained title model understands)."""
        ckpt = read_checkpoint(path, "cpu", "melon title-model")
        if "tokenizer" not in ckpt or "config" not in ckpt:
            raise FstoreError(f"{path}: not a melon title-model checkpoint (no tokenizer)")
        return cls(ckpt["tokenizer"], ckpt["config"]["max_tokens"])

    @property
    def pieces(self) -> int:
        return self.sp.get_piece_size()

    def tokenize(self, titles: list[str]) -> tuple[np.ndarray, int]:
        """(len(titles), max_tokens) int32 piece ids padded with 0, and how many titles were cut."""
        ids = self.sp.encode([t or "" for t in titles])
        out = np.zeros((len(titles), self.max_tokens), dtype=np.int32)
        cut = 0
        for i, seq in enumerate(ids):
            cut += len(seq) > self.max_tokens
            seq = seq[: self.max_tokens]
            out[i, : len(seq)] = seq
        return out, cut


def tokenize(titles: list[str], tokenizer: TitleTokenizer) -> np.ndarray:
    """Padded title token ids (``(len(titles), tokenizer.max_tokens)`` int32, 0 pads): what a playlist
    loader carries for the title model."""
    return tokenizer.tokenize(titles)[0]


def song_vocabulary(store: Store, min_count: int, max_songs: int) -> np.ndarray:
    """Store song codes the model predicts: seen in >= ``min_count`` train playlists, the ``max_songs``
    most popular of them (the output layer is dim x songs: 708K songs at real size)."""
    pop = load_vocab(store).song_pop
    order = np.lexsort((np.arange(pop.size), -pop))
    order = order[pop[order] >= min_count][:max_songs]
    return np.sort(order)


def _holdout(n: int, share: float, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 7]).random(n) < share


def train_title_model(store: Store | str | Path, out_dir: str | Path, *, max_minutes: float = 5.0,
                      device: str = "cpu", seed: int = 0, vocab_size: int = 6000, dim: int = 64, layers: int = 2,
                      heads: int = 4, max_tokens: int = MAX_TOKENS, batch_size: int = 128, lr: float = 1e-2,
                      pretrain_share: float = 0.15, pretrain_epochs: int = 10, epochs: int = 20,
                      mask_rate: float = 0.15, tag_weight: float = 1.0, min_song_count: int = 1,
                      max_songs: int = 200_000, holdout: float = 0.05, resume: bool = True,
                      progress: bool = True) -> Path:
    """Tokenizer, MLM pre-training and title -> items fine-tuning; returns ``out_dir/title_model.pt``.

    Defaults are sized for a 2-core CPU and the default synth store (12K train titles, 28K songs): the
    dim x songs output layer and the (batch x songs) BCE are most of a step, and dim 64 steps ran 4x
    faster than dim 128 (2,284 against 538 playlists/s at batch 512 / 256, load 3.0); ``lr`` 1e-2 with
    the loop's warmup, because a 5-minute budget allows only a handful of epochs. Batch 128: a 1-minute
    budget (one epoch on a loaded CPU) then makes 4x the updates of batch 512; title-only val score after
    1 minute, default synth, load 4.7-5.0: 0.214 at 128 against 0.172 at 64 and 0.138 at 512.
    """
    started = time.perf_counter()
    store = store if isinstance(store, Store) else Store(store)
    dev = parse_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    train, vocab = load_split(store, "train"), load_vocab(store)
    tokenizer = TitleTokenizer.train(train.titles, vocab_size, max_tokens)
    tokens, cut = tokenizer.tokenize(train.titles)
    titled = np.flatnonzero((tokens != 0).any(axis=1))
    if titled.size < 2:
        raise FstoreError(f"{store.path}: {titled.size} train playlists with a title; the title model needs more")
    held = _holdout(titled.size, holdout, seed)
    fit_rows, held_rows = titled[~held], titled[held]
    if held_rows.size == 0:  # tiny stores: still validate on something
        fit_rows, held_rows = titled[1:], titled[:1]
    song_codes = song_vocabulary(store, min_song_count, max_songs)
    remap = np.full(vocab.n_songs, -1, dtype=np.int64)
    remap[song_codes] = np.arange(song_codes.size)
    config = {"pieces": tokenizer.pieces, "songs": int(song_codes.size), "tags": vocab.n_tags, "dim": dim,
              "layers": layers, "heads": heads, "max_tokens": max_tokens}
    model = TitleEncoder(tokenizer.pieces, int(song_codes.size), vocab.n_tags, dim, layers, heads, max_tokens)
    model.init_output_bias(vocab.song_pop[song_codes] / len(train), vocab.tag_pop / len(train))

    def loader(rows: np.ndarray, order: str) -> TitleBatches:
        return TitleBatches(store, tokens, rows, remap, batch_size=batch_size, order=order, seed=seed, device=dev)

    train_batches, held_batches = loader(fit_rows, "random"), loader(held_rows, "sequential")

    def mean_over_held(loss_fn) -> dict[str, float]:
        losses = [float(loss_fn(b)) * b["tokens"].shape[0] for b in held_batches]
        return {"val_loss": sum(losses) / held_rows.size}

    def mlm_validate(m: torch.nn.Module) -> dict[str, float]:
        gen = torch.Generator(device=dev).manual_seed(seed)  # the same masks every epoch
        return mean_over_held(lambda b: mlm_loss(m, b["tokens"], model.mask_id, mask_rate, gen))

    # the MLM phase predicts pieces through the tied embedding: the song and tag heads get no gradient,
    # which DDP must be told (the fine-tuning phase uses every parameter and keeps DDP's faster default)
    pre = TrainTask(model=model, config={**config, "phase": "mlm", "mask_rate": mask_rate},
                    loss=lambda m, b: mlm_loss(m, b["tokens"], model.mask_id, mask_rate), validate=mlm_validate,
                    item_name="playlists", find_unused_parameters=True)
    # ``max_minutes`` bounds the whole function: tokenizer and set-up, then pre-training to its share,
    # then fine-tuning with what is left (at least a few seconds, so it leaves a model)
    def left(share: float) -> float | None:
        if max_minutes is None:
            return None
        return max(0.05, max_minutes * share - (time.perf_counter() - started) / 60.0)

    fit(pre, train_batches, out_dir / "pretrain", epochs=pretrain_epochs, device=dev, lr=lr,
        max_minutes=left(pretrain_share), resume=resume, progress=progress)

    tune = TrainTask(model=model, config={**config, "phase": "items", "tag_weight": tag_weight},
                     loss=lambda m, b: items_loss(m, b, tag_weight),
                     validate=lambda m: mean_over_held(lambda b: items_loss(m, b, tag_weight)),
                     item_name="playlists")
    result = fit(tune, train_batches, out_dir / "finetune", epochs=epochs, device=dev, lr=lr,
                 max_minutes=left(1.0), resume=resume, progress=progress)
    path = out_dir / TITLE_MODEL
    if not distributed.is_main():  # under torchrun both phases were sharded across the ranks; rank 0 writes
        return path
    weights = model.state_dict()
    if result.best_checkpoint is not None:
        weights = read_checkpoint(result.best_checkpoint, dev, "title-model")["model"]
    save({"model": weights, "config": config, "tokenizer": tokenizer.model_bytes,
          "song_codes": torch.from_numpy(song_codes), "store_songs": vocab.n_songs,
          "train": {"playlists": int(fit_rows.size), "held_out": int(held_rows.size), "titles_cut": int(cut),
                    "epochs": result.epochs_completed, "best_val_loss": result.best_metric,
                    "playlists_per_s": result.items_per_s, "data_wait_share": result.data_wait_share}}, path)
    return path


class TitleScorer:
    """Scores a split's playlists from their titles alone (a :class:`~models.melon.recommend.Scorer`)."""

    def __init__(self, model: TitleEncoder, tokenizer: TitleTokenizer, song_codes: np.ndarray, store: Store,
                 device: torch.device, info: dict | None = None):
        self.model, self.tokenizer, self.store, self.device = model.eval(), tokenizer, store, device
        self.song_codes = torch.from_numpy(np.asarray(song_codes, dtype=np.int64)).to(device)
        vocab = load_vocab(store)
        self.n_songs, self.n_tags = vocab.n_songs, vocab.n_tags
        self.info = info or {}
        self._tokens: dict[str, np.ndarray] = {}

    @classmethod
    def load(cls, path: str | Path, store: Store, device: str = "cpu") -> TitleScorer:
        dev = parse_device(device)
        ckpt = read_checkpoint(path, dev, "melon title-model")
        missing = {"model", "config", "tokenizer", "song_codes", "store_songs"} - set(ckpt)
        if missing:
            raise FstoreError(f"{path}: not a melon title-model checkpoint (no {', '.join(sorted(missing))})")
        vocab = load_vocab(store)
        c = ckpt["config"]
        if ckpt["store_songs"] != vocab.n_songs or c["tags"] != vocab.n_tags:
            raise FstoreError(f"{path}: trained on a store with {ckpt['store_songs']} songs and {c['tags']} tags; "
                              f"{store.path} has {vocab.n_songs} and {vocab.n_tags}")
        model = TitleEncoder(c["pieces"], c["songs"], c["tags"], c["dim"], c["layers"], c["heads"], c["max_tokens"])
        model.load_state_dict(ckpt["model"])
        tokenizer = TitleTokenizer(ckpt["tokenizer"], c["max_tokens"])
        return cls(model.to(dev), tokenizer, ckpt["song_codes"].cpu().numpy(), store, dev, ckpt.get("train"))

    def tokens(self, split: str) -> np.ndarray:
        if split not in self._tokens:
            self._tokens[split] = tokenize(load_split(self.store, split).titles, self.tokenizer)
        return self._tokens[split]

    @torch.no_grad()
    def vocab_scores(self, split: str, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Song logits (len(rows), model songs; columns in the order of ``song_codes``), tag logits
        (len(rows), store tags) and which rows have no title (no opinion: :meth:`scores` makes them -inf)."""
        tokens = torch.from_numpy(self.tokens(split)[np.asarray(rows)]).long().to(self.device)
        with autocast(self.device):
            song_logits, tag_logits = self.model(tokens, head="items")
        return song_logits.float(), tag_logits.float(), ~(tokens != 0).any(dim=1)

    def scores(self, split: str, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        song_logits, tags, empty = self.vocab_scores(split, rows)
        songs = torch.full((song_logits.shape[0], self.n_songs), -torch.inf, device=self.device)
        songs[:, self.song_codes] = song_logits
        songs[empty] = -torch.inf  # no title: no opinion
        tags[empty] = -torch.inf
        return songs, tags
