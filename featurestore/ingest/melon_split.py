"""Questions and answers the way Kakao's official split script makes them, and ``fstore split melon``.

A question playlist falls into one category (official shares: 30 / 50 / 15 / 5 %):

==============  ==================================  ==================================  ===========
category        songs                               tags                                title
==============  ==================================  ==================================  ===========
songs only      half kept (rest -> answer)          all -> answer                       emptied
songs + tags    half kept (rest -> answer)          half kept (rest -> answer)          kept 50 %
tags only       all -> answer                       half kept (rest -> answer)          kept
title only      all -> answer                       all -> answer                       kept
==============  ==================================  ==================================  ===========

"Half kept" keeps ``n // 2`` items chosen at random (original order), as the official ``_mask``; answers
keep the original order and are cut to 100 songs and 10 tags. Answers are the full playlist record (id,
original title, like_cnt, updt_date) with the removed songs and tags. A playlist needs at least one song
and one tag to be a question (the metric needs both in every answer); others stay in train, counted.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from ..schemas import melon as S
from ..store.errors import FstoreError
from ..store.folders import prepare_out_dir
from .json_array import iter_items

CATEGORIES = ("songs", "songs_tags", "tags", "title")
SHARES = (0.30, 0.50, 0.15, 0.05)


def _half(items: list, rng: np.random.Generator) -> tuple[list, list]:
    keep = np.zeros(len(items), dtype=bool)
    keep[rng.permutation(len(items))[: len(items) // 2]] = True
    return [x for x, k in zip(items, keep, strict=True) if k], [x for x, k in zip(items, keep, strict=True) if not k]


def categories(n: int, rng: np.random.Generator) -> np.ndarray:
    """A category index (into :data:`CATEGORIES`) per question, in the official shares, shuffled."""
    counts = np.floor(np.asarray(SHARES) * n).astype(int)
    counts[1] += n - counts.sum()
    return rng.permutation(np.repeat(np.arange(len(CATEGORIES)), counts))


def mask(playlist: dict, category: int, rng: np.random.Generator) -> tuple[dict, dict]:
    """(question, answer) of one playlist (a dict in the raw format) for one category."""
    # a repeated song would land in both question and answer: kept once, as ingest keeps it
    songs, tags = list(dict.fromkeys(playlist["songs"])), list(dict.fromkeys(playlist["tags"]))
    title = playlist["plylst_title"]
    name = CATEGORIES[category]
    if name in ("songs", "songs_tags"):
        q_songs, a_songs = _half(songs, rng)
    else:
        q_songs, a_songs = [], songs
    if name in ("tags", "songs_tags"):
        q_tags, a_tags = _half(tags, rng)
    else:
        q_tags, a_tags = [], tags
    keep_title = name in ("tags", "title") or (name == "songs_tags" and rng.random() < 0.5)
    question = {**playlist, "tags": q_tags, "plylst_title": title if keep_title else "", "songs": q_songs}
    answer = {**playlist, "tags": a_tags[: S.N_TAGS], "songs": a_songs[: S.N_SONGS]}
    return question, answer


def make_questions(playlists: list[dict], rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
    """Questions and answers (aligned) for playlists that each hold at least one song and one tag."""
    cats = categories(len(playlists), rng)
    pairs = [mask(p, int(c), rng) for p, c in zip(playlists, cats, strict=True)]
    return [q for q, _ in pairs], [a for _, a in pairs]


@dataclass(frozen=True)
class SplitSummary:
    train: int
    questions: int
    ineligible: int  # train playlists without a song or a tag: never questions

    def lines(self) -> list[str]:
        return [f"train          {self.train} playlists",
                f"val            {self.questions} questions (answers/val.json)",
                f"kept in train  {self.ineligible} playlists without songs or tags (cannot be questions)"]


def split_melon(raw_dir: str | Path, out_dir: str | Path, fraction: float = 0.1, seed: int = 0,
                overwrite: bool = False) -> SplitSummary:
    """An offline validation split of ``raw_dir/train.json``: a ``fraction`` of its eligible playlists
    (a song and a tag) become val questions with answers; OUT gets train.json, val.json, answers/val.json
    and song_meta.json / genre_gn_all.json (hard links when possible), so ``fstore ingest melon OUT`` reads
    it. Two streaming passes over train.json (ids and eligibility, then the split): memory holds one block
    of playlists and a few bytes per playlist."""
    raw = Path(raw_dir)
    for name in (S.SONG_META, S.GENRES, "train.json"):
        if not (raw / name).is_file():
            raise FstoreError(f"{raw / name}: file missing")
    source = raw / "train.json"
    ids, eligible = [], []
    for _, block in iter_items(source, S.Playlist):
        ids += [p.id for p in block]
        eligible += [bool(p.songs) and bool(p.tags) for p in block]
    id_arr = np.asarray(ids, dtype=np.int64)
    order = np.argsort(id_arr, kind="stable")
    dup = np.flatnonzero(id_arr[order][1:] == id_arr[order][:-1])
    if dup.size:
        item = int(order[dup[0] + 1])
        raise FstoreError(f"{source}: item {item}, field id: playlist id {ids[item]} seen twice")
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(eligible)
    n_q = int(round(fraction * candidates.size))
    category = np.full(len(ids), -1, dtype=np.int8)  # -1: stays in train
    category[np.sort(rng.choice(candidates, size=n_q, replace=False))] = categories(n_q, rng)
    out = prepare_out_dir(out_dir, overwrite)
    (out / S.ANSWERS_DIR).mkdir()
    writers = [ArrayWriter(out / "train.json"), ArrayWriter(out / "val.json"),
               ArrayWriter(out / S.ANSWERS_DIR / "val.json")]
    try:
        for first, block in iter_items(source, S.Playlist):
            for k, p in enumerate(block):
                record = msgspec.structs.asdict(p)
                c = int(category[first + k])
                if c < 0:
                    writers[0].write(record)
                else:
                    question, answer = mask(record, c, rng)
                    writers[1].write(question)
                    writers[2].write(answer)
    finally:
        for w in writers:
            w.close()
    for name in (S.SONG_META, S.GENRES):
        try:
            os.link(raw / name, out / name)
        except OSError:
            shutil.copyfile(raw / name, out / name)
    return SplitSummary(len(ids) - n_q, n_q, len(ids) - candidates.size)


class ArrayWriter:
    """A JSON array written element by element (UTF-8, one element a line)."""

    def __init__(self, path: Path):
        self.f = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.enc = msgspec.json.Encoder()
        self.n = 0
        self.f.write(b"[")

    def write(self, item: dict) -> None:
        self.f.write(b"\n" if self.n == 0 else b",\n")
        self.f.write(self.enc.encode(item))
        self.n += 1

    def extend(self, items: list[dict]) -> None:
        for item in items:
            self.write(item)

    def close(self) -> None:
        self.f.write(b"\n]\n")
        self.f.close()
