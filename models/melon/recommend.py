"""Melon recommendation layer: scorers in, official ``results.json`` out.

A :class:`Scorer` scores every song and tag code of the store for a batch of a split's playlists;
:func:`recommend` turns scores into exactly 100 unique songs and 10 unique tags per playlist (never an
item of the question, filled from the most popular items when a scorer has fewer valid candidates),
with ``topk`` on the device batch by batch so memory stays (batch x vocabulary). :func:`blend` and
:class:`BlendScorer` ensemble scorers; :func:`write_results` / :func:`read_results` /
:func:`score_split` write, read and score the official file.

A score of ``-inf`` (or NaN) means "no opinion": such items are never picked ahead of popular fill.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from featurestore.schemas import melon as schema
from featurestore.store import Store
from featurestore.store.atomic import atomic_write_bytes
from featurestore.store.errors import FstoreError, StoreError
from models.metrics.melon import melon_score
from models.training.runtime import keep_torch_threads

__all__ = ["BlendScorer", "MelonSplit", "Scorer", "Vocab", "Weight", "blend", "load_split", "load_vocab",
           "question_kinds", "read_results", "recommend", "score_split", "title_ensemble", "title_weights",
           "write_results"]

N_SONGS, N_TAGS = schema.N_SONGS, schema.N_TAGS
KINDS = ("songs_tags", "songs_only", "tags_only", "title_only", "empty")


class Scorer(Protocol):
    def scores(self, split: str, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(len(rows), n_songs) and (len(rows), n_tags) float scores over the store's song / tag codes."""
        ...


# --- what the layer reads from a store -------------------------------------------------------------

@dataclass
class MelonSplit:
    """One split's playlists, in file order (row = playlist row of the split's tables)."""

    split: str
    ids: np.ndarray  # int64 playlist ids
    titles: list[str]
    song_offsets: np.ndarray
    songs: np.ndarray  # song codes (the question's, for val/test)
    tag_offsets: np.ndarray
    tags: np.ndarray  # tag codes
    answers: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None  # song offs, songs, tag offs, tags

    def __len__(self) -> int:
        return self.ids.size

    def row_songs(self, row: int) -> np.ndarray:
        return self.songs[self.song_offsets[row]:self.song_offsets[row + 1]]

    def row_tags(self, row: int) -> np.ndarray:
        return self.tags[self.tag_offsets[row]:self.tag_offsets[row + 1]]


@dataclass
class Vocab:
    """Song and tag vocabularies of a store with their train popularity (playlists holding the item)."""

    song_ids: np.ndarray  # raw song id per song code (int64)
    tag_texts: list[str]  # tag text per tag code
    song_pop: np.ndarray  # int64 per song code
    tag_pop: np.ndarray  # int64 per tag code

    @property
    def n_songs(self) -> int:
        return self.song_ids.size

    @property
    def n_tags(self) -> int:
        return len(self.tag_texts)


def _ragged(store: Store, table: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    r = store.ragged(table)
    return np.asarray(r.offsets, dtype=np.int64), np.asarray(r.read(column), dtype=np.int64)


@functools.lru_cache(maxsize=8)
def load_split(store: Store, split: str) -> MelonSplit:
    """The split's playlists (ids, titles, question items and answers when the store has them)."""
    if schema.songs_table(split) not in store.tables:
        have = sorted(n[: -len("_songs")] for n in store.tables if n.endswith("_songs") and "answer" not in n)
        raise StoreError(f"{store.path}: no melon split {split!r} (have {have})")
    frame = store.parquet(schema.playlists_table(split)).select(["id", "title"])
    ids = np.asarray(frame.column("id").to_numpy(), dtype=np.int64)
    titles = [t or "" for t in frame.column("title").to_pylist()]
    so, s = _ragged(store, schema.songs_table(split), "song")
    to, t = _ragged(store, schema.tags_table(split), "tag")
    answers = None
    if schema.answer_songs_table(split) in store.tables:
        answers = (*_ragged(store, schema.answer_songs_table(split), "song"),
                   *_ragged(store, schema.answer_tags_table(split), "tag"))
    if not (ids.size == so.size - 1 == to.size - 1):
        raise StoreError(f"{store.path}: split {split!r} has {ids.size} playlists but {so.size - 1} song rows "
                         f"and {to.size - 1} tag rows (damaged store)")
    return MelonSplit(split, ids, titles, so, s, to, t, answers)


@functools.lru_cache(maxsize=4)
def load_vocab(store: Store) -> Vocab:
    """Raw song ids, tag texts and train popularity (counted from ``train_songs`` / ``train_tags``)."""
    song_ids = np.asarray([int(x) for x in store.ids(schema.SONG_IDS)], dtype=np.int64)
    tags = store.dictionary(schema.DICT_TAG).values
    train = load_split(store, "train")
    return Vocab(song_ids, tags, np.bincount(train.songs, minlength=song_ids.size).astype(np.int64),
                 np.bincount(train.tags, minlength=len(tags)).astype(np.int64))


def question_kinds(data: MelonSplit) -> np.ndarray:
    """Per playlist, the index in :data:`KINDS` of what its question holds (songs and tags, songs only,
    tags only, only a title, nothing)."""
    has_s = np.diff(data.song_offsets) > 0
    has_t = np.diff(data.tag_offsets) > 0
    has_title = np.asarray([bool(t.strip()) for t in data.titles])
    kinds = np.full(len(data), 4, dtype=np.int64)
    kinds[has_title & ~has_s & ~has_t] = 3
    kinds[~has_s & has_t] = 2
    kinds[has_s & ~has_t] = 1
    kinds[has_s & has_t] = 0
    return kinds


def popularity_rank_scores(pop: np.ndarray) -> torch.Tensor:
    """Scores that order items by popularity, ties by code: unique values, so ``topk`` is deterministic."""
    order = np.lexsort((np.arange(pop.size), -pop))
    scores = np.empty(pop.size, dtype=np.float32)
    scores[order] = -np.arange(pop.size, dtype=np.float32)
    return torch.from_numpy(scores)


# --- recommend -------------------------------------------------------------------------------------

def _mask_rows(scores: torch.Tensor, offsets: np.ndarray, values: np.ndarray, rows: np.ndarray) -> None:
    """Set ``scores[i, values of row rows[i]]`` to -inf, in one scatter."""
    lengths = offsets[rows + 1] - offsets[rows]
    if lengths.sum() == 0:
        return
    idx = np.concatenate([values[offsets[r]:offsets[r + 1]] for r in rows])
    r = np.repeat(np.arange(rows.size), lengths)
    scores[torch.from_numpy(r).to(scores.device), torch.from_numpy(idx).to(scores.device)] = -torch.inf


def _pick(scores: torch.Tensor, prior: torch.Tensor, offsets: np.ndarray, values: np.ndarray, rows: np.ndarray,
          k: int, what: str) -> torch.Tensor:
    """Top ``k`` codes per row, never an item of the row's question: the scorer's valid (not -inf/NaN)
    candidates first, then the ``prior``'s (popularity) best of the rest.

    On the CPU, for ``64 k <= n`` (where torch.topk runs ``std::partial_sort``), one numba pass over the
    scores (``kernels.topk_dense``: the same heap moves, so the same codes, ties included) instead of
    torch's copies (nan_to_num, the masked matrix, topk's per-row (value, index) vector)."""
    if scores.shape[1] < k:
        raise FstoreError(f"only {scores.shape[1]} {what} in the store: cannot recommend {k} per playlist")
    if scores.device.type == "cpu" and scores.dtype == torch.float32 and 64 * k <= scores.shape[1]:
        return _pick_cpu(scores, prior, offsets, values, rows, k, what)
    return _pick_torch(scores, prior, offsets, values, rows, k, what)


def _pick_cpu(scores: torch.Tensor, prior: torch.Tensor, offsets: np.ndarray, values: np.ndarray, rows: np.ndarray,
              k: int, what: str) -> torch.Tensor:
    import numba

    from . import kernels

    order = torch.argsort(prior[0].cpu(), descending=True, stable=True).numpy()  # the prior's unique values
    out = np.empty((rows.size, k), dtype=np.int64)
    with keep_torch_threads():
        bad = kernels.topk_dense(np.ascontiguousarray(scores.detach().numpy()), np.asarray(offsets, dtype=np.int64),
                                 np.asarray(values, dtype=np.int64), np.asarray(rows, dtype=np.int64), k, order, out,
                                 max(1, min(rows.size, numba.get_num_threads())))
    if bad >= 0:
        raise FstoreError(f"not enough {what} outside a question to recommend {k} per playlist")
    return torch.from_numpy(out)


def _pick_torch(scores: torch.Tensor, prior: torch.Tensor, offsets: np.ndarray, values: np.ndarray, rows: np.ndarray,
                k: int, what: str) -> torch.Tensor:
    scores = torch.nan_to_num(scores, nan=-torch.inf, posinf=torch.finfo(scores.dtype).max, neginf=-torch.inf)
    _mask_rows(scores, offsets, values, rows)
    top_v, top_i = scores.topk(k, dim=1)
    n_valid = (top_v > -torch.inf).sum(dim=1)
    if bool((n_valid == k).all()):
        return top_i
    # rows short of valid candidates picked all of them: fill from the prior, minus those and the question
    fill = torch.where(scores > -torch.inf, -torch.inf, prior.expand_as(scores))
    _mask_rows(fill, offsets, values, rows)
    fill_v, fill_i = fill.topk(k, dim=1)
    pos = torch.arange(k, device=top_i.device)[None]
    need = pos >= n_valid[:, None]
    at = (pos - n_valid[:, None]).clamp(min=0)
    if bool((need & torch.isneginf(torch.gather(fill_v, 1, at))).any()):
        raise FstoreError(f"not enough {what} outside a question to recommend {k} per playlist")
    return torch.where(need, torch.gather(fill_i, 1, at), top_i)


def recommend(store: Store, split: str, scorer: Scorer, batch: int = 256, device: str | torch.device = "cpu",
              progress: bool = True, rows: np.ndarray | None = None) -> list[dict]:
    """``[{"id", "songs": [100 raw song ids], "tags": [10 tag texts]}]`` for every playlist of ``split``
    (``rows``: only these rows of it), in file order. Scores move to ``device`` batch by batch; only the
    picked codes come back."""
    if batch < 1:
        raise FstoreError(f"batch must be >= 1, got {batch}")
    device = torch.device(device)
    data, vocab = load_split(store, split), load_vocab(store)
    song_prior = popularity_rank_scores(vocab.song_pop).to(device)[None]
    tag_prior = popularity_rank_scores(vocab.tag_pop).to(device)[None]
    every = np.arange(len(data)) if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
    out: list[dict] = []
    for start in tqdm(range(0, every.size, batch), unit="batch", desc=f"recommend {split}", disable=not progress):
        rows = every[start : start + batch]
        s, t = scorer.scores(split, rows)
        if s.shape != (rows.size, vocab.n_songs) or t.shape != (rows.size, vocab.n_tags):
            raise FstoreError(f"scorer {type(scorer).__name__} returned scores of shapes {tuple(s.shape)} and "
                              f"{tuple(t.shape)}; expected ({rows.size}, {vocab.n_songs}) and ({rows.size}, {vocab.n_tags})")
        s = s.to(device=device, dtype=torch.float32)  # _pick works on a copy (nan_to_num)
        t = t.to(device=device, dtype=torch.float32)
        songs = _pick(s, song_prior, data.song_offsets, data.songs, rows, N_SONGS, "songs").cpu().numpy()
        tags = _pick(t, tag_prior, data.tag_offsets, data.tags, rows, N_TAGS, "tags").cpu().numpy()
        for i, r in enumerate(rows):
            out.append({"id": int(data.ids[r]), "songs": vocab.song_ids[songs[i]].tolist(),
                        "tags": [vocab.tag_texts[c] for c in tags[i]]})
    return out


# --- ensembles -------------------------------------------------------------------------------------

def normalise(scores: torch.Tensor) -> torch.Tensor:
    """Per row, finite scores mapped onto [0, 1] (min -> 0, max -> 1); -inf / NaN become 0 (no opinion
    counts as the lowest opinion once blended), a constant row becomes all 0."""
    finite = torch.isfinite(scores)
    lo = torch.where(finite, scores, torch.inf).amin(dim=1, keepdim=True)
    hi = torch.where(finite, scores, -torch.inf).amax(dim=1, keepdim=True)
    span = (hi - lo).clamp(min=1e-12)
    return torch.where(finite & (hi > lo), (scores - lo) / span, torch.zeros_like(scores))


def blend(parts: Sequence[tuple[torch.Tensor, float | torch.Tensor]]) -> torch.Tensor:
    """``sum_k w_k * normalise(s_k)``; each weight a float or a per-playlist ``(B,)`` tensor. An item on
    which no part with a positive weight has an opinion stays -inf, so :func:`recommend` fills it from
    popularity rather than ranking arbitrary zeros."""
    total, opinion = None, None
    for scores, weight in parts:
        w = torch.as_tensor(weight, dtype=torch.float32, device=scores.device)
        w = w.expand(scores.shape[0])[:, None] if w.ndim <= 1 else w
        term = w * normalise(scores.float())
        has = torch.isfinite(scores) & (w > 0)
        total = term if total is None else total + term
        opinion = has if opinion is None else opinion | has
    if total is None:
        raise ValueError("blend needs at least one part")
    return torch.where(opinion, total, -torch.inf)


Weight = float | Callable[[str, np.ndarray], np.ndarray]


class BlendScorer:
    """A weighted ensemble of scorers: ``weights[k] = (song weight, tag weight)``, each a float or a
    function ``(split, rows) -> (len(rows),)`` array (e.g. title importance for playlists with few items)."""

    def __init__(self, scorers: Sequence[Scorer], weights: Sequence[tuple[Weight, Weight]]):
        if len(scorers) != len(weights) or not scorers:
            raise ValueError(f"{len(scorers)} scorers but {len(weights)} weight pairs")
        self.scorers, self.weights = list(scorers), list(weights)

    def scores(self, split: str, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        def value(w: Weight) -> float | torch.Tensor:
            return torch.as_tensor(np.asarray(w(split, rows), dtype=np.float32)) if callable(w) else float(w)

        song_parts, tag_parts = [], []
        for scorer, (ws, wt) in zip(self.scorers, self.weights, strict=True):
            s, t = scorer.scores(split, rows)
            song_parts.append((s, _on(value(ws), s)))
            tag_parts.append((t, _on(value(wt), t)))
        return blend(song_parts), blend(tag_parts)


def title_ensemble(store: Store, main: Scorer, title: Scorer, importance: float = 0.85, tag_weight: float = 0.8,
                   few: int = 5, base: float = 0.0) -> BlendScorer:
    """``main`` (e.g. the autoencoder, or co-occurrence) with the title model where the question says
    little: for a playlist whose question holds at most ``few`` songs and tags together, songs blend
    ``importance`` x title + (1 - importance) x main, tags ``tag_weight`` x title + (1 - tag_weight) x
    main (seed: 0.85 and 0.8); other playlists weigh the title ``base`` (seed: 0, ``main`` alone). A title-only question gets the title
    model's scores (``main`` has no opinion there), an empty one the popular fill."""
    return BlendScorer([main, title], list(title_weights(store, importance, tag_weight, few, base)))


def title_weights(store: Store, importance: float = 0.85, tag_weight: float = 0.8, few: int = 5, base: float = 0.0
                  ) -> tuple[tuple[Weight, Weight], tuple[Weight, Weight]]:
    """:func:`title_ensemble`'s per-playlist weights: ((main songs, main tags), (title songs, title tags))."""
    def weight_of(title_w: float, for_title: bool) -> Callable[[str, np.ndarray], np.ndarray]:
        def weights(split: str, rows: np.ndarray) -> np.ndarray:
            data = load_split(store, split)
            r = np.asarray(rows)
            size = (data.song_offsets[r + 1] - data.song_offsets[r]) + (data.tag_offsets[r + 1] - data.tag_offsets[r])
            w = np.where(size <= few, title_w, base)
            return w if for_title else 1.0 - w
        return weights

    return ((weight_of(importance, False), weight_of(tag_weight, False)),
            (weight_of(importance, True), weight_of(tag_weight, True)))


def _on(w: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    return w.to(like.device) if isinstance(w, torch.Tensor) else w


# --- the official file -----------------------------------------------------------------------------

def write_results(path: str | Path, recs: list[dict]) -> Path:
    """The official ``results.json`` (a JSON array of ``{"id", "songs", "tags"}``), written atomically."""
    path = Path(path)
    data = json.dumps(recs, ensure_ascii=False).encode("utf-8")
    atomic_write_bytes(path, data)
    return path


def read_results(path: str | Path) -> list[dict]:
    """A ``results.json``; a malformed file is one FstoreError naming the file and playlist."""
    path = Path(path)
    if not path.is_file():
        raise FstoreError(f"{path}: results file not found")
    try:
        recs = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise FstoreError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise FstoreError(f"{path}, line {e.lineno}, column {e.colno}: invalid JSON ({e.msg})") from None
    if not isinstance(recs, list):
        raise FstoreError(f"{path}: expected a JSON array of playlists, got {type(recs).__name__}")
    for i, r in enumerate(recs):
        where = f"{path}: playlist {i}"
        if not isinstance(r, dict) or set(r) < {"id", "songs", "tags"}:
            raise FstoreError(f"{where}: expected an object with fields id, songs, tags")
        if isinstance(r["id"], bool) or not isinstance(r["id"], int):
            raise FstoreError(f"{where}: field 'id' must be an integer, got {r['id']!r}")
        where = f"{path}: playlist {r['id']} (#{i})"
        for key, kind, n in (("songs", int, N_SONGS), ("tags", str, N_TAGS)):
            items = r[key]
            if not isinstance(items, list) or any(isinstance(x, bool) or not isinstance(x, kind) for x in items):
                raise FstoreError(f"{where}: field {key!r} must be a list of {kind.__name__}")
            if len(items) != n or len(set(items)) != n:
                raise FstoreError(f"{where}: field {key!r} must hold {n} unique items, "
                                  f"got {len(items)} ({len(set(items))} unique)")
    return recs


def answers(store: Store, split: str) -> list[dict]:
    """The split's answers as official ground truth (raw song ids, tag texts), in file order."""
    data, vocab = load_split(store, split), load_vocab(store)
    if data.answers is None:
        raise StoreError(f"{store.path}: split {split!r} has no answers (ingest answers/{split}.json or make "
                         "an offline split with `fstore split melon`)")
    so, s, to, t = data.answers
    return [{"id": int(data.ids[r]), "songs": vocab.song_ids[s[so[r]:so[r + 1]]].tolist(),
             "tags": [vocab.tag_texts[c] for c in t[to[r]:to[r + 1]]]} for r in range(len(data))]


def score_split(store: Store, split: str, recs: list[dict], rows: np.ndarray | None = None) -> dict:
    """The official metric of ``recs`` against the split's answers (``rows``: a subset of playlists).

    The official evaluator divides by zero on a playlist whose answer has no songs or no tags; such
    playlists are left out and counted (``skipped_empty_answers``)."""
    gt = answers(store, split)
    if rows is not None:
        gt = [gt[r] for r in rows]
    keep = [g for g in gt if g["songs"] and g["tags"]]
    ids = {g["id"] for g in keep}
    by_id = {r["id"]: r for r in recs}
    missing = [g["id"] for g in keep if g["id"] not in by_id]
    if missing:
        raise FstoreError(f"recommendations lack {len(missing)} playlists of split {split!r} (e.g. {missing[:3]})")
    extra = len({r["id"] for r in recs} - {g["id"] for g in gt})
    if rows is None and extra:
        raise FstoreError(f"recommendations hold {extra} playlists that split {split!r} does not have")
    scored = [by_id[g["id"]] for g in keep]
    if not scored:
        raise FstoreError(f"split {split!r}: no playlist with both answer songs and answer tags to score")
    try:
        result = melon_score(keep, [r for r in scored if r["id"] in ids])
    except ValueError as e:
        raise FstoreError(f"split {split!r}: {e}") from None
    return {**result, "playlists": len(keep), "skipped_empty_answers": len(gt) - len(keep)}
