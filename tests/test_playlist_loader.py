"""PlaylistBatches: shapes, masks and targets against a pure-python reference; denoising; the
min-count remap; ranks; mid-epoch resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featurestore.ingest.melon import ingest_melon
from featurestore.synth.melon import synth_melon
from loaders.playlists import PlaylistBatches, build_vocab, multi_hot
from models.melon.recommend import load_split


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("melon")
    synth_melon(root / "raw", playlists=300, songs=400, seed=3)
    ingest_melon(root / "raw", root / "store", progress=False)
    from featurestore.store import Store

    return Store(root / "store")


def _reference(store, split, rows, vocab, answers, max_songs):
    """Per playlist: input song ids, tag ids, target song ids, target tag ids (model vocabulary), by hand."""
    data = load_split(store, split)
    song_of = {int(c): i for i, c in enumerate(vocab["song_codes"])}
    tag_of = {int(c): i for i, c in enumerate(vocab["tag_codes"])}
    out = []
    for r in rows:
        songs = [song_of[int(c)] for c in data.row_songs(r) if int(c) in song_of]
        tags = [tag_of[int(c)] for c in data.row_tags(r) if int(c) in tag_of]
        if answers:
            so, s, to, t = data.answers
            ts = [song_of[int(c)] for c in s[so[r]:so[r + 1]] if int(c) in song_of]
            tt = [tag_of[int(c)] for c in t[to[r]:to[r + 1]] if int(c) in tag_of]
        else:
            ts, tt = songs, tags
        out.append((songs[:max_songs], tags, ts, tt))
    return out


def _real(x: torch.Tensor) -> list[int]:
    return [int(v) for v in x if v >= 0]


@pytest.mark.parametrize("split,answers", [("train", False), ("val", True)])
def test_batches_match_reference(store, split, answers):
    vocab = build_vocab(store, min_count=2)
    loader = PlaylistBatches(store, split, 32, vocab=vocab, answers=answers, order="sequential", max_songs=20,
                             max_artists=8)
    rows_seen = []
    table = vocab["song_artists"]
    for b in loader:
        rows = b["row"].numpy()
        rows_seen.extend(rows.tolist())
        ref = _reference(store, split, rows, vocab, answers, 20)
        for i, (songs, tags, ts, tt) in enumerate(ref):
            assert _real(b["songs"][i]) == songs
            assert b["song_mask"][i].tolist() == [j < len(songs) for j in range(b["songs"].shape[1])]
            assert _real(b["tags"][i]) == tags and b["tag_mask"][i].sum() == len(tags)
            assert _real(b["tgt_songs"][i]) == ts and int(b["tgt_song_len"][i]) == len(ts)
            assert _real(b["tgt_tags"][i]) == tt and int(b["tgt_tag_len"][i]) == len(tt)
            artists = [int(a) for s in songs for a in table[s] if a >= 0]
            assert _real(b["artists"][i]) == artists[:8]
            assert b["artist_mask"][i].sum() == min(8, len(artists))
            assert _real(b["tgt_artists"][i]) == [int(a) for s in ts for a in table[s] if a >= 0]
        hot = multi_hot(b["tgt_songs"], vocab.n_songs)
        assert hot.shape == (rows.size, vocab.n_songs) and hot.sum().item() == sum(len(r[2]) for r in ref)
    assert rows_seen == list(range(len(load_split(store, split))))
    if split == "val":
        assert loader.dropped["val_answer_songs"] > 0  # songs below min_count: counted, not silent


def test_min_count_remap(store):
    data = load_split(store, "train")
    counts = np.bincount(data.songs, minlength=400)
    vocab = build_vocab(store, min_count=3)
    assert vocab["song_codes"].tolist() == np.flatnonzero(counts >= 3).tolist()
    remap = vocab.remap("song", 400)
    assert (remap[counts < 3] == -1).all() and remap[vocab["song_codes"]].tolist() == list(range(vocab.n_songs))
    with pytest.raises(ValueError, match="min_count"):
        build_vocab(store, min_count=0)


def test_denoise_keeps_targets_and_never_empties(store):
    clean = PlaylistBatches(store, "train", 64, order="sequential", max_songs=400)
    noisy = PlaylistBatches(store, "train", 64, denoise=0.9, vocab=clean.vocab, order="sequential", max_songs=400)
    dropped = kept = 0
    for a, b in zip(clean, noisy, strict=True):
        assert torch.equal(a["tgt_songs"], b["tgt_songs"]) and torch.equal(a["tgt_tags"], b["tgt_tags"])
        for i in range(a["songs"].shape[0]):
            full = set(_real(a["songs"][i])) | {-2 - t for t in _real(a["tags"][i])}
            left = set(_real(b["songs"][i])) | {-2 - t for t in _real(b["tags"][i])}
            assert left <= full
            if full:
                assert left  # never every item
            dropped += len(full - left)
            kept += len(left)
    assert dropped > 4 * kept  # rate 0.9 did drop most items


@pytest.mark.parametrize("mix", [(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)])
def test_question_mix_drops_whole_kinds(store, mix):
    clean = PlaylistBatches(store, "train", 64, order="sequential", max_songs=400)
    noisy = PlaylistBatches(store, "train", 64, denoise=0.2, question_mix=mix, vocab=clean.vocab,
                            order="sequential", max_songs=400)
    kinds = {"no_tags": 0, "no_songs": 0}
    for a, b in zip(clean, noisy, strict=True):
        assert torch.equal(a["tgt_songs"], b["tgt_songs"]) and torch.equal(a["tgt_tags"], b["tgt_tags"])
        for i in range(a["songs"].shape[0]):
            songs, tags = set(_real(a["songs"][i])), set(_real(a["tags"][i]))
            left_songs, left_tags = set(_real(b["songs"][i])), set(_real(b["tags"][i]))
            assert left_songs <= songs and left_tags <= tags and (left_songs or left_tags or not (songs or tags))
            if songs and tags:
                assert not (left_songs and left_tags)  # every playlist with both lost one whole kind
                kinds["no_tags" if left_songs else "no_songs"] += 1
    if mix[0] == 1.0:
        assert kinds["no_songs"] == 0 and kinds["no_tags"] > 0
    elif mix[1] == 1.0:
        assert kinds["no_tags"] == 0 and kinds["no_songs"] > 0
    else:
        assert kinds["no_tags"] > 0 and kinds["no_songs"] > 0
    with pytest.raises(ValueError, match="question_mix"):
        PlaylistBatches(store, "train", 8, denoise=0.2, question_mix=(0.7, 0.5))


def test_ranks_disjoint_equal_counts(store):
    loaders = [PlaylistBatches(store, "train", 16, rank=r, world_size=3, seed=1) for r in range(3)]
    rows = [np.concatenate([b["row"].numpy() for b in L]) for L in loaders]
    assert len({len(L) for L in loaders}) == 1
    assert sum(r.size for r in rows) == len(np.unique(np.concatenate(rows)))


def test_mid_epoch_resume_identical(store):
    def make():
        L = PlaylistBatches(store, "train", 32, denoise=0.5, seed=5, order="random")
        L.set_epoch(1)
        return L

    full = [b for b in make()]
    first = make()
    it = iter(first)
    for _ in range(3):
        next(it)
    state = first.state_dict()
    it.close()
    again = make()
    again.load_state_dict(state)
    rest = list(again)
    assert len(rest) == len(full) - 3
    for a, b in zip(full[3:], rest, strict=True):
        for k in a:
            assert torch.equal(a[k], b[k]), k
    bad = dict(state, denoise=0.1)
    with pytest.raises(ValueError, match="denoise"):
        make().load_state_dict(bad)
