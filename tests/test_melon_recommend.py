"""Melon recommendation layer and baselines: invariants of recommend(), the results.json round trip,
co-occurrence against a hand-computed example."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from featurestore.ingest.builder import StoreBuilder
from featurestore.ingest.melon import ingest_melon
from featurestore.schemas import melon as schema
from featurestore.store import FstoreError, RaggedWriter, Store
from featurestore.synth.melon import synth_melon
from models.melon.baselines import ItemCooccurrence, MostPopular
from models.melon.recommend import (
    BlendScorer,
    blend,
    load_split,
    question_kinds,
    read_results,
    recommend,
    score_split,
    title_ensemble,
    write_results,
)


def _ragged(b: StoreBuilder, name: str, column: str, rows: list[list[int]], dtype: str = "int32") -> None:
    w = RaggedWriter(b.root, name, {column: {"dtype": dtype}})
    w.append(np.array([len(r) for r in rows]), {column: np.array([x for r in rows for x in r], dtype=dtype)})
    b.table(name, w.close())


def make_store(path, train_songs, train_tags, val_q_songs, val_q_tags, val_a_songs, val_a_tags, n_songs, n_tags,
               val_titles=None, train_titles=None):
    """A melon store in the schema's layout, built directly (song code c has raw id 1000 + c)."""
    with StoreBuilder(path, "melon", progress=False) as b:
        b.write_ids(schema.SONG_IDS, [str(1000 + c) for c in range(n_songs)])
        b.dictionary(schema.DICT_TAG, [f"태그{c}" for c in range(n_tags)])
        splits = {"train": (train_songs, train_tags, None), "val": (val_q_songs, val_q_tags, (val_a_songs, val_a_tags))}
        (b.stage / "tables").mkdir()
        for split, (songs, tags, ans) in splits.items():
            _ragged(b, schema.songs_table(split), "song", songs)
            _ragged(b, schema.tags_table(split), "tag", tags)
            if ans is not None:
                _ragged(b, schema.answer_songs_table(split), "song", ans[0])
                _ragged(b, schema.answer_tags_table(split), "tag", ans[1])
            n = len(songs)
            given = val_titles if split == "val" else train_titles
            titles = given if given is not None else [f"{split} 제목 {i}" for i in range(n)]
            rel = f"tables/{schema.playlists_table(split)}.parquet"
            pq.write_table(pa.table({"id": np.arange(n, dtype=np.int64) + (0 if split == "train" else 10_000),
                                     "title": titles}), b.stage / rel)
            b.table(schema.playlists_table(split), {"kind": "parquet", "rows": n, "path": rel, "split": split})
        b.finish([])
    return Store(path)


@pytest.fixture
def random_store(tmp_path):
    rng = np.random.default_rng(0)
    n_songs, n_tags = 400, 30

    def rows(n, hi, lo_len, hi_len):
        return [sorted(rng.choice(hi, rng.integers(lo_len, hi_len + 1), replace=False).tolist()) for _ in range(n)]

    vq_s, vq_t = rows(40, n_songs, 0, 20), rows(40, n_tags, 0, 3)
    vq_s[0], vq_t[0] = [], []  # an empty question and a title-only one
    vq_s[1], vq_t[1] = [], []
    titles = ["" if i == 0 else f"val 제목 {i}" for i in range(40)]
    return make_store(tmp_path / "store", rows(200, n_songs, 1, 30), rows(200, n_tags, 0, 4), vq_s, vq_t,
                      rows(40, n_songs, 1, 15), rows(40, n_tags, 1, 3), n_songs, n_tags, val_titles=titles)


def _check_invariants(store, recs):
    data = load_split(store, "val")
    assert [r["id"] for r in recs] == data.ids.tolist()
    for row, r in enumerate(recs):
        assert len(r["songs"]) == len(set(r["songs"])) == 100
        assert len(r["tags"]) == len(set(r["tags"])) == 10
        assert all(isinstance(s, int) for s in r["songs"]) and all(isinstance(t, str) for t in r["tags"])
        assert not set(r["songs"]) & set((1000 + data.row_songs(row)).tolist())
        assert not set(r["tags"]) & {f"태그{c}" for c in data.row_tags(row)}


class NoOpinion:
    def __init__(self, store):
        self.n_songs, self.n_tags = 400, 30

    def scores(self, split, rows):
        return torch.full((len(rows), self.n_songs), -torch.inf), torch.full((len(rows), self.n_tags), torch.nan)


class Favours:
    """Scores the question's own items highest: recommend must still never return them."""

    def __init__(self, store):
        self.data = load_split(store, "val")

    def scores(self, split, rows):
        s, t = torch.zeros(len(rows), 400), torch.zeros(len(rows), 30)
        for i, r in enumerate(rows):
            s[i, self.data.row_songs(r)] = 10.0
            t[i, self.data.row_tags(r)] = 10.0
        s[:, :5] = -torch.inf
        return s, t


@pytest.mark.parametrize("scorer_cls", [MostPopular, ItemCooccurrence, NoOpinion, Favours])
def test_recommend_invariants(random_store, scorer_cls):
    recs = recommend(random_store, "val", scorer_cls(random_store), batch=16, progress=False)
    _check_invariants(random_store, recs)
    again = recommend(random_store, "val", scorer_cls(random_store), batch=7, progress=False)
    assert again == recs  # deterministic, whatever the batch size
    rows = np.array([31, 2, 17, 5])  # a validation sample: only these playlists, in file order, the same lists
    some = recommend(random_store, "val", scorer_cls(random_store), batch=3, progress=False, rows=rows)
    assert some == [recs[r] for r in sorted(rows)]


def test_no_opinion_fills_from_popular(random_store):
    """A scorer with no valid candidate gives exactly the most popular list minus the question."""
    pop = recommend(random_store, "val", MostPopular(random_store), batch=16, progress=False)
    none = recommend(random_store, "val", NoOpinion(random_store), batch=16, progress=False)
    assert none == pop
    data = load_split(random_store, "val")
    counts = np.bincount(load_split(random_store, "train").songs, minlength=400)
    order = np.lexsort((np.arange(400), -counts))
    expected = [1000 + c for c in order if c not in set(data.row_songs(5).tolist())][:100]
    assert pop[5]["songs"] == expected


def test_partial_opinion_then_fill(random_store):
    """Two valid candidates come first, in score order; the rest is popular fill, without repeats."""
    class Two:
        def scores(self, split, rows):
            s = torch.full((len(rows), 400), -torch.inf)
            s[:, 399], s[:, 398] = 2.0, 1.0
            return s, torch.full((len(rows), 30), -torch.inf)

    recs = recommend(random_store, "val", Two(), batch=16, progress=False)
    data = load_split(random_store, "val")
    pop = recommend(random_store, "val", MostPopular(random_store), batch=16, progress=False)
    for row, r in enumerate(recs):
        q = set(data.row_songs(row).tolist())
        head = [1000 + c for c in (399, 398) if c not in q]
        assert r["songs"][: len(head)] == head
        rest = [s for s in pop[row]["songs"] + [1000 + c for c in range(400)] if s not in head]
        assert r["songs"][len(head):] == list(dict.fromkeys(rest))[: 100 - len(head)]


def test_results_round_trip_and_score(random_store, tmp_path):
    recs = recommend(random_store, "val", ItemCooccurrence(random_store), batch=16, progress=False)
    path = write_results(tmp_path / schema.RESULTS, recs)
    assert read_results(path) == recs
    in_process = score_split(random_store, "val", recs)
    from_file = score_split(random_store, "val", read_results(path))
    assert from_file == in_process
    assert 0.0 < in_process["score"] < 1.0 and in_process["playlists"] == 40
    kinds = question_kinds(load_split(random_store, "val"))
    assert kinds[0] == 4 and kinds[1] == 3
    sub = score_split(random_store, "val", recs, rows=np.flatnonzero(kinds == 0))
    assert sub["playlists"] == int((kinds == 0).sum())


def test_on_synth_store(tmp_path):
    """The layer on what `fstore synth melon` + `fstore ingest melon` write: raw ids, tag texts, answers."""
    synth_melon(tmp_path / "raw", playlists=300, songs=600, seed=3, progress=False)
    ingest_melon(tmp_path / "raw", tmp_path / "store", progress=False)
    store = Store(tmp_path / "store")
    pop = score_split(store, "val", recommend(store, "val", MostPopular(store), progress=False))
    cooc_recs = recommend(store, "val", ItemCooccurrence(store), progress=False)
    cooc = score_split(store, "val", cooc_recs)
    assert cooc["playlists"] + cooc["skipped_empty_answers"] == len(load_split(store, "val"))
    assert cooc["score"] > pop["score"]  # planted themes: neighbours beat popularity
    raw = {p["id"]: p for p in json.loads((tmp_path / "raw" / "val.json").read_text(encoding="utf-8"))}
    for r in cooc_recs:
        assert not set(r["songs"]) & set(raw[r["id"]]["songs"]) and not set(r["tags"]) & set(raw[r["id"]]["tags"])


@pytest.mark.parametrize(("content", "message"), [
    (b"[{\"id\": 1, ", "line 1, column"),
    (b"{}", "expected a JSON array"),
    (b"[{\"id\": \"a\", \"songs\": [], \"tags\": []}]", "field 'id' must be an integer"),
    (b"[{\"id\": 1, \"songs\": [1, 1], \"tags\": []}]", "field 'songs' must hold 100 unique items"),
    (b"[{\"id\": 1, \"songs\": [\"x\"], \"tags\": []}]", "field 'songs' must be a list of int"),
    (b"[{\"id\": 1}]", "expected an object with fields id, songs, tags"),
])
def test_read_results_errors(tmp_path, content, message):
    path = tmp_path / "results.json"
    path.write_bytes(content)
    with pytest.raises(FstoreError, match=message) as e:
        read_results(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_score_split_rejects_missing_playlists(random_store):
    recs = recommend(random_store, "val", MostPopular(random_store), progress=False)
    with pytest.raises(FstoreError, match="lack 1 playlists"):
        score_split(random_store, "val", recs[1:])


def test_cooccurrence_hand_computed(tmp_path):
    """Train: p0 = {s0, s1} + {t0}, p1 = {s1, s2} + {t1}, p2 = {s0, s1, s2}. Counts n(s0)=2, n(s1)=3,
    n(s2)=2, n(t0)=n(t1)=1. Question {s0}: C(s0, s1)=2, C(s0, s2)=1, C(s0, s0)=2 (masked later);
    song score of s1 = 2 / sqrt(2 * 3), of s2 = 1 / sqrt(2 * 2); tag t0 co-occurs once: 1 / sqrt(2 * 1)."""
    store = make_store(tmp_path / "s", [[0, 1], [1, 2], [0, 1, 2]], [[0], [1], []], [[0], [], [2]], [[], [1], []],
                       [[1], [0], [0]], [[0], [0], [1]], n_songs=3, n_tags=2)
    scorer = ItemCooccurrence(store, tag_weight=0.5)
    s, t = scorer.scores("val", np.array([0, 1, 2]))
    s, t = s.double(), t.double()
    assert torch.allclose(s[0], torch.tensor([2 / 2, 2 / np.sqrt(6), 1 / 2], dtype=torch.float64))
    assert torch.allclose(t[0], torch.tensor([1 / np.sqrt(2), -np.inf], dtype=torch.float64))
    # question {t1} (weight 0.5): t1 is in p1 only -> s1, s2 get 0.5 / sqrt(1 * n)
    assert torch.allclose(s[1], torch.tensor([-np.inf, 0.5 / np.sqrt(3), 0.5 / np.sqrt(2)], dtype=torch.float64))
    assert torch.allclose(t[1], torch.tensor([-np.inf, 0.5], dtype=torch.float64))
    # question {s2}: p1 and p2 -> s0 1/sqrt(4), s1 2/sqrt(6), s2 2/2; t1 1/sqrt(2)
    assert torch.allclose(s[2], torch.tensor([1 / 2, 2 / np.sqrt(6), 1.0], dtype=torch.float64))
    assert torch.allclose(t[2], torch.tensor([-np.inf, 1 / np.sqrt(2)], dtype=torch.float64))


def test_blend_weights_and_no_opinion():
    a = torch.tensor([[0.0, 1.0, 2.0], [-np.inf, -np.inf, -np.inf]])
    b = torch.tensor([[4.0, 2.0, 0.0], [-np.inf, -np.inf, -np.inf]])
    out = blend([(a, torch.tensor([1.0, 1.0])), (b, 0.5)])
    assert torch.allclose(out[0], torch.tensor([0.5, 0.75, 1.0]))
    assert torch.isneginf(out[1]).all()

    class Const:
        def __init__(self, s):
            self.s = s

        def scores(self, split, rows):
            return self.s[rows], self.s[rows]

    scorer = BlendScorer([Const(a), Const(b)], [(lambda split, rows: np.ones(len(rows)), 1.0), (0.5, 0.5)])
    s, t = scorer.scores("val", np.array([0]))
    assert torch.allclose(s, out[:1]) and torch.allclose(t, out[:1])


def test_results_file_is_official_json(random_store, tmp_path):
    recs = recommend(random_store, "val", MostPopular(random_store), progress=False)
    path = write_results(tmp_path / "r.json", recs)
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw[0].keys() == {"id", "songs", "tags"} and raw == recs


def test_blend_ignores_parts_without_weight():
    a = torch.tensor([[1.0, -np.inf, 3.0]])
    b = torch.tensor([[5.0, 6.0, 7.0]])
    out = blend([(a, 1.0), (b, 0.0)])
    assert out.tolist() == [[0.0, -np.inf, 1.0]]


def test_title_ensemble_weights_by_question_size(random_store):
    """Main has no opinion anywhere; the title part (most popular here) counts only on small questions."""
    data = load_split(random_store, "val")
    rows = np.arange(len(data))
    size = np.diff(data.song_offsets) + np.diff(data.tag_offsets)
    s, t = title_ensemble(random_store, NoOpinion(random_store), MostPopular(random_store), few=5).scores("val", rows)
    small = torch.from_numpy(size <= 5)
    assert small.any() and (~small).any()
    assert torch.isfinite(s[small]).all() and torch.isneginf(s[~small]).all()
    assert torch.isfinite(t[small]).all() and torch.isneginf(t[~small]).all()
