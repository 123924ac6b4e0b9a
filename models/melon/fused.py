"""Every Melon predictor of a split in one pass: components computed once per playlist, shared by all.

:func:`~models.melon.recommend.recommend` asks a :class:`~models.melon.recommend.Scorer` for a dense
(batch x 708K songs) matrix per predictor; an ensemble asks its parts again, so a table of seven
predictors computed co-occurrence four times and the autoencoder three, and every blend made several
dense copies. Here a :class:`FusedPass` runs each model once per batch (the autoencoder and the title
model over their own vocabularies) and one numba kernel per side (``kernels.fused_topk``) then takes each
playlist in turn: its co-occurrence row (sparse products through the train playlists, in scratch), the
per-row ranges the blends normalise with, and one streamed top-k per predictor. Nothing of size
(playlists x songs) or (batch x songs) exists; memory is the models' (batch x vocabulary) outputs plus a
few item-sized scratch rows per thread.

The arithmetic and the selection are the dense path's (``recommend.blend`` in float32, torch.topk's tie
order), so each predictor recommends exactly what ``recommend`` does with the equivalent scorer
(``tests/test_melon_fused.py`` checks it).

A predictor is given per side (songs, tags) as a :data:`Source`: a component name (``"cooccurrence"``,
``"autoencoder"``, ``"title"``, ``"most_popular"``: no opinion, popularity alone) or a :class:`Blend` of
sources with weights (a float, or ``(split, rows) -> per-playlist array``), at most one level of blend
inside a blend.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
import torch
from tqdm import tqdm

from featurestore.schemas import melon as schema
from featurestore.store import Store
from featurestore.store.errors import FstoreError
from models.training.runtime import keep_torch_threads

from . import kernels
from .baselines import ItemCooccurrence
from .data import DAEScorer
from .recommend import Weight, _pick, load_split, load_vocab, popularity_rank_scores
from .title import TitleScorer

__all__ = ["Blend", "FusedPass", "Source", "to_results"]

COMPONENTS = {"cooccurrence": kernels.COOC, "autoencoder": kernels.DAE, "title": kernels.TITLE,
              "most_popular": kernels.NONE}


@dataclass(frozen=True)
class Blend:
    """``recommend.blend`` of its parts: ``((source, weight), ...)``, summed in this order."""

    parts: tuple[tuple[Source, Weight], ...]

    def sources(self) -> set[str]:
        return set().union(*({s} if isinstance(s, str) else s.sources() for s, _ in self.parts))


Source = str | Blend


def _sources(spec: Source) -> set[str]:
    return {spec} if isinstance(spec, str) else spec.sources()


class FusedPass:
    """The components of a store's predictors: co-occurrence always, the autoencoder and the title
    model when given. :meth:`run` gives every predictor's picks for a split."""

    def __init__(self, store: Store, cooc: ItemCooccurrence, dae: DAEScorer | None = None,
                 title: TitleScorer | None = None):
        self.store, self.cooc, self.dae, self.title = store, cooc, dae, title
        vocab = load_vocab(store)
        self.n = {"songs": vocab.n_songs, "tags": vocab.n_tags}
        train = load_split(store, "train")
        i64 = np.int64
        self.train = {"songs": (train.song_offsets.astype(i64), train.songs.astype(i64)),
                      "tags": (train.tag_offsets.astype(i64), train.tags.astype(i64))}
        self.n_play = len(train)
        self.song_play = (cooc.xs_t.indptr.astype(i64), cooc.xs_t.indices.astype(i64))
        self.tag_play = (cooc.xt_t.indptr.astype(i64), cooc.xt_t.indices.astype(i64))
        self.norm = {"songs": cooc.song_norm, "tags": cooc.tag_norm}
        self.tag_q_weight = cooc.tag_weight * cooc.tag_norm  # ItemCooccurrence._question's weights (float32)
        self.pop = {"songs": vocab.song_pop, "tags": vocab.tag_pop}
        self.prior = {side: np.lexsort((np.arange(pop.size), -pop)).astype(i64)  # popularity_rank_scores' order
                      for side, pop in self.pop.items()}
        none = {side: np.full(n, -1, dtype=np.int32) for side, n in self.n.items()}  # no model: no opinion
        self.maps: dict[str, dict[str, np.ndarray]] = {"autoencoder": none, "title": none}
        if dae is not None:
            self.maps["autoencoder"] = {side: _col_map(self.n[side], dae.vocab[f"{side[:-1]}_codes"])
                                        for side in ("songs", "tags")}
        if title is not None:
            self.maps["title"] = {"songs": _col_map(self.n["songs"], title.song_codes.cpu().numpy()),
                                  "tags": np.arange(self.n["tags"], dtype=np.int32)}

    def run(self, split: str, songs: Mapping[str, Source], tags: Mapping[str, Source], batch: int = 256,
            progress: bool = True, desc: str | None = None, rows: np.ndarray | None = None
            ) -> dict[str, dict[str, np.ndarray]]:
        """``{"songs": {name: (playlists, 100) codes}, "tags": {name: (playlists, 10) codes}}`` for every
        playlist of ``split`` in file order (``rows``: only these, sorted), each predictor's picks as
        :func:`recommend` makes them. ``batch``: playlists per model call (256, as ``recommend``: the
        models' outputs are then the same to the last bit)."""
        if batch < 1:
            raise FstoreError(f"batch must be >= 1, got {batch}")
        specs = {"songs": dict(songs), "tags": dict(tags)}
        used = set().union(*(_sources(s) for side in specs.values() for s in side.values()))
        missing = {"autoencoder": self.dae, "title": self.title}
        for name in used:
            if name not in COMPONENTS:
                raise FstoreError(f"unknown predictor part {name!r} (known: {', '.join(COMPONENTS)})")
            if name in missing and missing[name] is None:
                raise FstoreError(f"a predictor needs the {name} model, which was not given")
        data = load_split(self.store, split)
        k = {"songs": schema.N_SONGS, "tags": schema.N_TAGS}
        for side in ("songs", "tags"):
            if self.n[side] < k[side]:
                raise FstoreError(f"only {self.n[side]} {side} in the store: cannot recommend {k[side]} per playlist")
        q = {"songs": (data.song_offsets.astype(np.int64), data.songs.astype(np.int64)),
             "tags": (data.tag_offsets.astype(np.int64), data.tags.astype(np.int64))}
        selected = np.arange(len(data), dtype=np.int64) if rows is None else np.unique(np.asarray(rows, dtype=np.int64))
        if selected.size and (selected[0] < 0 or selected[-1] >= len(data)):
            raise FstoreError(f"rows outside {split}'s {len(data)} playlists")
        out = {side: {name: np.empty((selected.size, k[side]), dtype=np.int64) for name in specs[side]}
               for side in specs}
        compiled = {side: _compile(specs[side]) for side in specs}
        need_cooc = {side: "cooccurrence" in set().union(*(_sources(s) for s in specs[side].values()), set())
                     for side in specs}
        need_dae, need_title = "autoencoder" in used, "title" in used
        label = desc or f"{split}: {len(specs['songs'])} song and {len(specs['tags'])} tag predictors"
        batches = [selected[start:start + batch] for start in range(0, selected.size, batch)]
        # the models' next batch (torch, one thread) runs while the kernel (numba threads) takes this one
        with tqdm(total=selected.size, unit="playlist", desc=label, disable=not progress) as bar, \
                ThreadPoolExecutor(1, thread_name_prefix="melon-models") as pool:
            ahead = pool.submit(self._model_scores, split, batches[0], need_dae, need_title) if batches else None
            for i, batch_rows in enumerate(batches):
                models = ahead.result()
                if i + 1 < len(batches):
                    ahead = pool.submit(self._model_scores, split, batches[i + 1], need_dae, need_title)
                for side in ("songs", "tags"):
                    names = list(specs[side])
                    if names:
                        picks = self._side(split, side, batch_rows, names, compiled[side], models[side], q, need_cooc[side])
                        for p, name in enumerate(names):
                            out[side][name][i * batch:i * batch + batch_rows.size] = picks[p]
                bar.update(batch_rows.size)
        return out

    def _side(self, split: str, side: str, rows: np.ndarray, names: list[str], compiled: _Compiled,
              models: tuple[np.ndarray, np.ndarray], q: dict, need_cooc: bool) -> np.ndarray:
        """(P, B, k) picks of one side's predictors for a batch."""
        k = schema.N_SONGS if side == "songs" else schema.N_TAGS
        n = self.n[side]
        raw, parts, inner_parts, weights, inner_weights = compiled.arrays(split, rows)
        picks = np.empty((len(names), rows.size, k), dtype=np.int64)
        # torch.topk sorts a row of fewer than 64 k items another way (nth_element): there, the scores
        dense = np.empty((len(names), rows.size, n) if 64 * k > n else (0, 0, 0), dtype=np.float32)
        with keep_torch_threads():
            bad = kernels.fused_topk(
                rows, k, n, *q[side], *q["songs"], *q["tags"], self.norm["songs"], self.tag_q_weight,
                *self.song_play, *self.tag_play, *self.train[side], self.norm[side], self.n_play, need_cooc,
                models[0], self.maps["autoencoder"][side], models[1], self.maps["title"][side], raw, parts, weights,
                inner_parts, inner_weights, self.prior[side], picks, dense,
                max(1, min(rows.size, numba.get_num_threads())))
        if dense.size:  # ... go through recommend's own selection
            prior = popularity_rank_scores(self.pop[side])[None]
            for p in range(len(names)):
                picks[p] = _pick(torch.from_numpy(dense[p]), prior, *q[side], rows, k, side).numpy()
        elif bad >= 0:
            b, p = divmod(int(bad), len(names))
            data = load_split(self.store, split)
            raise FstoreError(f"not enough {side} outside the question of playlist {data.ids[rows[b]]} "
                              f"to recommend {k} ({names[p]})")
        return picks

    def _model_scores(self, split: str, rows: np.ndarray, need_dae: bool, need_title: bool
                      ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per side, the autoencoder's and the title model's (B, V) scores (a model not needed: (B, 1) of
        -inf, never read); a playlist without a title has no title opinion (a row of -inf)."""
        none = np.full((rows.size, 1), -np.inf, dtype=np.float32)
        dae = (none, none)
        if need_dae:
            dae = tuple(_host(t) for t in self.dae.vocab_scores(split, rows))
        title = (none, none)
        if need_title:
            s, t, no_title = self.title.vocab_scores(split, rows)
            title = (_host(s), _host(t))
            empty = no_title.cpu().numpy()
            for m in title:
                m[empty] = -np.inf
        return {"songs": (dae[0], title[0]), "tags": (dae[1], title[1])}


def to_results(store: Store, split: str, songs: np.ndarray, tags: np.ndarray, rows: np.ndarray | None = None
               ) -> list[dict]:
    """``results.json`` records (raw song ids, tag texts) from (playlists, 100) and (playlists, 10) codes
    of every playlist of ``split`` (``rows``: of these sorted rows, as :meth:`FusedPass.run` gave them)."""
    data, vocab = load_split(store, split), load_vocab(store)
    ids = data.ids if rows is None else data.ids[np.unique(np.asarray(rows, dtype=np.int64))]
    song_ids = vocab.song_ids[songs]
    texts = vocab.tag_texts
    return [{"id": int(ids[r]), "songs": song_ids[r].tolist(), "tags": [texts[c] for c in tags[r]]}
            for r in range(len(ids))]


def _host(t: torch.Tensor) -> np.ndarray:
    """(B, V) float32 scores on the host (no copy when they are there already)."""
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)


def _col_map(n: int, codes: np.ndarray) -> np.ndarray:
    """Store code -> column of a model's output, -1 outside the model's vocabulary."""
    out = np.full(n, -1, dtype=np.int32)
    out[np.asarray(codes, dtype=np.int64)] = np.arange(len(codes), dtype=np.int32)
    return out


@dataclass
class _Compiled:
    """One side's predictors as the kernel's arrays (weights evaluated per batch)."""

    raw: np.ndarray
    parts: np.ndarray
    inner_parts: np.ndarray
    part_weights: list[list[Weight]]
    inner_part_weights: list[list[Weight]]

    def arrays(self, split: str, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        def evaluate(table: list[list[Weight]]) -> np.ndarray:
            out = np.zeros((len(table), self.parts.shape[1], rows.size), dtype=np.float32)
            for p, weights in enumerate(table):
                for m, w in enumerate(weights):
                    # BlendScorer's conversions: a callable's array, else a Python float, to float32
                    out[p, m] = np.asarray(w(split, rows), dtype=np.float32) if callable(w) else np.float32(float(w))
            return out

        return (self.raw, self.parts, self.inner_parts, evaluate(self.part_weights),
                evaluate(self.inner_part_weights))


def _compile(specs: Mapping[str, Source]) -> _Compiled:
    n = len(specs)
    width = max([1] + [len(s.parts) for s in specs.values() if isinstance(s, Blend)]
                + [len(p.parts) for s in specs.values() if isinstance(s, Blend) for p, _ in s.parts
                   if isinstance(p, Blend)])
    raw = np.full(n, -1, dtype=np.int8)
    parts = np.full((n, width), -1, dtype=np.int8)
    inner = np.full((n, width), -1, dtype=np.int8)
    part_w: list[list[Weight]] = [[] for _ in range(n)]
    inner_w: list[list[Weight]] = [[] for _ in range(n)]
    for p, spec in enumerate(specs.values()):
        if isinstance(spec, str):
            raw[p] = COMPONENTS[spec]
            continue
        nested = [s for s, _ in spec.parts if isinstance(s, Blend)]
        if len(nested) > 1:
            raise FstoreError("a blend may hold at most one blend among its parts")
        for m, (source, w) in enumerate(spec.parts):
            if isinstance(source, Blend):
                parts[p, m] = kernels.INNER
                for mm, (s, ww) in enumerate(source.parts):
                    if not isinstance(s, str):
                        raise FstoreError("blends nest one level deep at most")
                    inner[p, mm] = COMPONENTS[s]
                    inner_w[p].append(ww)
            else:
                parts[p, m] = COMPONENTS[source]
            part_w[p].append(w)
    return _Compiled(raw, parts, inner, part_w, inner_w)
