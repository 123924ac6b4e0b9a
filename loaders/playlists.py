"""``PlaylistBatches``: Melon playlists as padded id lists for set models (the denoising autoencoder).

A batch (on ``device``):

    row          (B,)            int64  playlist rows of the split
    songs        (B, S)          int64  input song ids (model vocabulary), -1 on padding; song_mask (B, S)
    tags         (B, T)          int64  input tag ids, -1 on padding; tag_mask
    artists      (B, A)          int64  artists of the input songs (gathered on the device), -1 pads; artist_mask
    tgt_songs    (B, Ls) / tgt_tags (B, Lt) / tgt_artists (B, La)   target index lists, -1 pads
    tgt_song_len / tgt_tag_len (B,)  int64

Targets are the full playlist (train) or the answers (``answers=True``, val/test with answers); a
denoising loader (``denoise`` > 0) drops that share of each playlist's songs and tags from the input,
never all of them. :func:`multi_hot` turns index lists into (B, vocab) targets on the device, so no
dense (B, vocab) batch is ever built on the host.

The vocabulary (``min_count``: train playlists holding the item) is built once into remaps (store
code -> model id, -1 = dropped, counted) kept in :attr:`vocab` and saved with checkpoints; a loader
for another split takes that ``vocab`` so ids agree. Titles are not part of the batch: the title
model (``models.melon.title``) owns its tokenizer and tokens.
"""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np
import torch

from featurestore.schemas import melon as schema
from featurestore.store import Store, StoreError

from .base import BatchLoader
from .orders import item_ids
from .prefetch import numpy_views

__all__ = ["PlaylistBatches", "PlaylistVocab", "build_vocab", "multi_hot"]


def multi_hot(index: torch.Tensor, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, L) index lists (-1 pads) -> (B, n) 0/1 rows, by one scatter on the index's device."""
    out = torch.zeros(index.shape[0], n + 1, dtype=dtype, device=index.device)
    out.scatter_(1, torch.where(index < 0, n, index), 1.0)  # padding lands in a spare column, cut below
    return out[:, :n]


class PlaylistVocab(dict):
    """``song_codes`` / ``tag_codes`` (store codes the model knows, sorted), ``song_artists`` (model song ->
    padded model artist ids), ``n_artists`` and ``min_count``: plain arrays, so it saves with a checkpoint."""

    @property
    def n_songs(self) -> int:
        return int(self["song_codes"].size)

    @property
    def n_tags(self) -> int:
        return int(self["tag_codes"].size)

    @property
    def n_artists(self) -> int:
        return int(self["n_artists"])

    def remap(self, what: str, n_store: int) -> np.ndarray:
        out = np.full(n_store, -1, dtype=np.int64)
        out[self[f"{what}_codes"]] = np.arange(self[f"{what}_codes"].size)
        return out


def _ragged(store: Store, table: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    r = store.ragged(table)
    return np.asarray(r.offsets, dtype=np.int64), np.asarray(r.read(column), dtype=np.int64)


def build_vocab(store: Store, min_count: int = 1, artists_per_song: int = 2) -> PlaylistVocab:
    """Songs and tags in >= ``min_count`` train playlists; artists of those songs (first
    ``artists_per_song`` of each song's list)."""
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    so, s = _ragged(store, schema.songs_table("train"), "song")
    to, t = _ragged(store, schema.tags_table("train"), "tag")
    n_songs = store.ragged(schema.SONG_ARTISTS).offsets.shape[0] - 1
    n_tags = len(store.dictionary(schema.DICT_TAG).values)
    _check_codes(store, schema.songs_table("train"), so, s, n_songs)
    _check_codes(store, schema.tags_table("train"), to, t, n_tags)
    song_codes = np.flatnonzero(np.bincount(s, minlength=n_songs) >= min_count)
    tag_codes = np.flatnonzero(np.bincount(t, minlength=n_tags) >= min_count)
    ao, a = _ragged(store, schema.SONG_ARTISTS, "artist")
    n_store_artists = len(store.dictionary(schema.DICT_ARTIST).values)
    _check_codes(store, schema.SONG_ARTISTS, ao, a, n_store_artists)
    table = np.full((song_codes.size, artists_per_song), -1, dtype=np.int64)
    for j in range(artists_per_song):  # the j-th artist of each kept song, where it has one
        has = ao[song_codes + 1] - ao[song_codes] > j
        table[has, j] = a[ao[song_codes[has]] + j]
    used = np.unique(table[table >= 0])
    artist_remap = np.full(n_store_artists, -1, dtype=np.int64)
    artist_remap[used] = np.arange(used.size)
    table = np.where(table >= 0, artist_remap[np.maximum(table, 0)], -1)
    return PlaylistVocab(song_codes=song_codes, tag_codes=tag_codes, song_artists=table, n_artists=int(used.size),
                         min_count=int(min_count))


def _check_codes(store: Store, table: str, offsets: np.ndarray, values: np.ndarray, n: int) -> None:
    """Offsets and codes proved in bounds once, so kernels may index with them."""
    if offsets.size == 0 or offsets[0] != 0 or offsets[-1] != values.size or (np.diff(offsets) < 0).any():
        raise StoreError(f"{store.path}: table {table!r} has damaged offsets")
    if values.size and (values.min() < 0 or values.max() >= n):
        raise StoreError(f"{store.path}: table {table!r} has codes outside 0..{n - 1}")


def _remap_csr(offsets: np.ndarray, values: np.ndarray, remap: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The ragged set through ``remap`` (-1 dropped); returns offsets, values and the dropped count."""
    mapped = remap[values]
    keep = mapped >= 0
    rows = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    counts = np.bincount(rows[keep], minlength=offsets.size - 1)
    return (np.concatenate(([0], np.cumsum(counts))).astype(np.int64), mapped[keep].astype(np.int32),
            int((~keep).sum()))


@numba.njit(nogil=True, cache=True)
def _fill_lists(rows, offsets, values, out, length):
    """``out[b, :n]`` = row ``rows[b]``'s values (at most out.shape[1]), -1 after; -1 or the first bad b."""
    for b in range(rows.shape[0]):
        r = rows[b]
        if r < 0 or r + 1 >= offsets.shape[0]:
            return b
        lo, hi = offsets[r], offsets[r + 1]
        if lo < 0 or hi < lo or hi > values.shape[0]:
            return b
        n = min(hi - lo, out.shape[1])
        for p in range(n):
            out[b, p] = values[lo + p]
        for p in range(n, out.shape[1]):
            out[b, p] = -1
        length[b] = n
    return -1


@numba.njit(nogil=True, cache=True)
def _denoise(songs, n_songs, tags, n_tags, rate, no_tags, no_songs, seed):
    """Drop each input item with probability ``rate``, keeping the rest left-packed; a playlist that
    would lose every item keeps one (chosen at random). Before that, like the official questions, a
    playlist loses all its tags with probability ``no_tags`` (when it has songs) or else all its songs
    with probability ``no_songs`` (when it has tags). Deterministic in ``seed``."""
    np.random.seed(seed)
    for b in range(songs.shape[0]):
        ns, nt = n_songs[b], n_tags[b]
        total = ns + nt
        if total == 0:
            continue
        keep_one = np.random.randint(total)
        u = np.random.random()
        song_rate, tag_rate = rate, rate
        if u < no_tags and ns > 0:
            tag_rate = 1.0
            keep_one = keep_one % ns
        elif no_tags <= u < no_tags + no_songs and nt > 0:
            song_rate = 1.0
            keep_one = ns + keep_one % nt
        ks = 0
        kept = 0
        for p in range(ns):
            if np.random.random() >= song_rate:
                songs[b, ks] = songs[b, p]
                ks += 1
        kt = 0
        for p in range(nt):
            if np.random.random() >= tag_rate:
                tags[b, kt] = tags[b, p]
                kt += 1
        kept = ks + kt
        if kept == 0:
            if keep_one < ns:
                songs[b, 0] = songs[b, keep_one]
                ks = 1
            else:
                tags[b, 0] = tags[b, keep_one - ns]
                kt = 1
        for p in range(ks, ns):
            songs[b, p] = -1
        for p in range(kt, nt):
            tags[b, p] = -1
        n_songs[b], n_tags[b] = ks, kt


class PlaylistBatches(BatchLoader):
    """Batches of one Melon split's playlists (see the module docstring; ``BatchLoader`` for ranks,
    DataLoader use and resume)."""

    def __init__(self, store: str | Path | Store, split: str = "train", batch_size: int = 256, *,
                 denoise: float = 0.0, min_count: int = 1, vocab: PlaylistVocab | None = None, max_songs: int = 100,
                 max_tags: int = 16, max_artists: int = 64, order: str = "random", seed: int = 0,
                 rank: int = 0, world_size: int = 1, drop_last: bool = False, device: str | torch.device = "cpu",
                 answers: bool = False, threads: int = 1, ring: int = 3, version: int | str | None = None,
                 question_mix: tuple[float, float] = (0.0, 0.0)):
        """``question_mix=(no_tags, no_songs)``: with ``denoise``, the share of playlists whose input loses
        all its tags / all its songs, as the official questions do (songs-only and tags-only questions)."""
        if not 0.0 <= denoise < 1.0:
            raise ValueError(f"denoise must be in [0, 1), got {denoise}")
        no_tags, no_songs = (float(x) for x in question_mix)
        if min(no_tags, no_songs) < 0 or no_tags + no_songs > 1:
            raise ValueError(f"question_mix shares must be >= 0 and sum to <= 1, got {question_mix}")
        self.question_mix = (no_tags, no_songs)
        for name, v in (("max_songs", max_songs), ("max_tags", max_tags), ("max_artists", max_artists)):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        super().__init__(store, split, batch_size, order, seed, device, rank, world_size, drop_last, threads, ring,
                         torch.float32, 4096, 8, version=version)
        if schema.songs_table(split) not in self.store.tables:
            raise StoreError(f"{self.store.path}: no melon split {split!r}")
        self.denoise, self.answers = float(denoise), answers
        self.vocab = vocab if vocab is not None else build_vocab(self.store, min_count)
        n_store_songs = self.store.ragged(schema.SONG_ARTISTS).offsets.shape[0] - 1
        n_store_tags = len(self.store.dictionary(schema.DICT_TAG).values)
        song_remap, tag_remap = self.vocab.remap("song", n_store_songs), self.vocab.remap("tag", n_store_tags)
        tables = [schema.songs_table(split), schema.tags_table(split)]
        if answers:
            if schema.answer_songs_table(split) not in self.store.tables:
                raise StoreError(f"{self.store.path}: split {split!r} has no answers")
            tables += [schema.answer_songs_table(split), schema.answer_tags_table(split)]
        self.tables_read = tables
        self.dropped: dict[str, int] = {}  # items outside the vocabulary, per table (counted, not silent)
        csr = []
        for table, col, remap, n in zip(tables, ("song", "tag") * 2, (song_remap, tag_remap) * 2,
                                        (n_store_songs, n_store_tags) * 2, strict=False):
            off, val = _ragged(self.store, table, col)
            _check_codes(self.store, table, off, val, n)
            off, val, dropped = _remap_csr(off, val, remap)
            self.dropped[table] = dropped
            csr.append((off, val))
        self.inputs = csr[:2]
        self.targets = csr[2:] if answers else csr[:2]
        self.items = item_ids(csr[0][0].size - 1)
        widths = [int(np.diff(o).max(initial=0)) for o, _ in csr]
        self.width = {"songs": max(1, min(max_songs, widths[0])), "tags": max(1, min(max_tags, widths[1])),
                      "tgt_songs": max(1, widths[-2] if answers else widths[0]),
                      "tgt_tags": max(1, widths[-1] if answers else widths[1])}
        self.truncated = {"songs": int(np.maximum(np.diff(csr[0][0]) - max_songs, 0).sum()),
                          "tags": int(np.maximum(np.diff(csr[1][0]) - max_tags, 0).sum())}
        self.max_artists = max_artists
        self.song_artists = torch.from_numpy(self.vocab["song_artists"]).to(self.device)

    def state_config(self) -> dict:
        return {"items": int(self.items.size), "denoise": self.denoise, "question_mix": list(self.question_mix),
                "answers": self.answers,
                "vocab": [self.vocab.n_songs, self.vocab.n_tags, self.vocab.n_artists], "widths": dict(self.width)}

    # --- the batch kind --------------------------------------------------------------------------------
    def shapes(self, batches: list[np.ndarray]) -> dict:
        B = self.batch_size if not batches else max(b.size for b in batches)
        out = {"row": ((B,), torch.int64)}
        for k, w in self.width.items():
            out[k] = ((B, w), torch.int32)
            out[f"{k}_len"] = ((B,), torch.int64)
        return out

    def fill(self, i: int, rows: np.ndarray, slot: dict) -> dict:
        b = rows.size
        v = {k: a[:b] for k, a in numpy_views(slot).items()}
        v["row"][:] = rows
        sources = {"songs": self.inputs[0], "tags": self.inputs[1], "tgt_songs": self.targets[0],
                   "tgt_tags": self.targets[1]}
        for k, (off, val) in sources.items():
            if _fill_lists(rows, off, val, v[k], v[f"{k}_len"]) >= 0:
                raise StoreError(f"{self.store.path}: playlist rows out of bounds in split {self.split!r}")
        if self.denoise > 0:  # a seed per (seed, epoch, batch): a resumed epoch drops the same items
            seed = int(np.random.default_rng([self.seed, self.epoch, i]).integers(2**31 - 1))
            _denoise(v["songs"], v["songs_len"], v["tags"], v["tags_len"], self.denoise, *self.question_mix, seed)
        return {k: t[:b] for k, t in slot.items()}

    def finish(self, raw: dict) -> dict:
        """Device side: int64 ids, masks, and artists gathered from the songs through the vocabulary's table."""
        out = {"row": raw["row"]}
        for k in self.width:
            out[k] = raw[k].long()
            if not k.startswith("tgt"):
                out[f"{k[:-1]}_mask"] = out[k] >= 0
        out["tgt_song_len"], out["tgt_tag_len"] = raw["tgt_songs_len"], raw["tgt_tags_len"]
        out["artists"] = self._artists(out["songs"], self.max_artists)
        out["artist_mask"] = out["artists"] >= 0
        out["tgt_artists"] = self._artists(out["tgt_songs"], None)
        return out

    def _artists(self, songs: torch.Tensor, width: int | None) -> torch.Tensor:
        """(B, S) song ids -> artist ids of those songs, -1 pads: with a ``width``, real ones left-packed in song
        order and cut to ``width`` (one cumsum + scatter); without, as gathered (targets: order is irrelevant)."""
        a = self.song_artists[songs.clamp(min=0)]
        a = torch.where((songs >= 0)[..., None], a, -1).reshape(songs.shape[0], -1)
        if width is None:
            return a
        real = a >= 0
        pos = torch.where(real, real.cumsum(1) - 1, width).clamp(max=width)  # beyond width -> spare column
        out = torch.full((a.shape[0], width + 1), -1, dtype=a.dtype, device=a.device)
        out.scatter_(1, pos, torch.where(real, a, -1))
        return out[:, :width]

    def batch(self, rows: np.ndarray) -> dict:
        """The batch of exactly these playlist rows (no denoising), e.g. for scoring a split."""
        rows = np.asarray(rows, dtype=np.int64)
        shapes = self.shapes([rows])
        slot = {k: torch.empty(s, dtype=d) for k, (s, d) in shapes.items()}
        saved, self.denoise = self.denoise, 0.0
        try:
            raw = self.fill(0, rows, slot)
        finally:
            self.denoise = saved
        return self.finish({k: t.to(self.device) for k, t in raw.items()})
