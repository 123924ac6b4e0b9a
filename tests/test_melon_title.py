"""Melon title model: tokenizer, masking, multi-hot targets, and a tiny store where titles carry the
planted theme: trained for seconds, the title model must beat most-popular on title-only questions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_melon_recommend import make_store

from featurestore.store import FstoreError
from models.melon.baselines import MostPopular
from models.melon.recommend import recommend, score_split
from models.melon.title import TITLE_MODEL, TitleScorer, TitleTokenizer, tokenize, train_title_model
from models.melon.title_model import mask_tokens, multi_hot

THEMES = [("신나는 댄스", range(0, 60), [0, 1]), ("잔잔한 발라드", range(60, 120), [2, 3]),
          ("비오는 날 재즈", range(120, 180), [4, 5]), ("운동할 때 힙합", range(180, 240), [6, 7])]
N_SONGS = 300  # 240..259 popular everywhere, 260..299 never in a playlist
FILLERS = ["모음", "플레이리스트", "노래", "추천", "듣기 좋은"]


@pytest.fixture(scope="module")
def themed_store(tmp_path_factory):
    """Train playlists: a theme's words in the title, songs mostly from the theme, plus popular songs 240..259
    everywhere (so most-popular is a real baseline). Val: title-only questions, answers from the theme."""
    rng = np.random.default_rng(1)

    def playlist(theme):
        words, songs, tags = THEMES[theme]
        own = rng.choice(list(songs), 8, replace=False)
        popular = rng.choice(np.arange(240, 260), 4, replace=False)
        title = f"{words} {rng.choice(FILLERS)}"
        return title, sorted({*own.tolist(), *popular.tolist()}), [int(rng.choice(tags))]

    train = [playlist(i % 4) for i in range(320)]
    val = [playlist(i % 4) for i in range(24)]
    store = make_store(tmp_path_factory.mktemp("themed") / "store", [p[1] for p in train], [p[2] for p in train],
                       [[] for _ in val], [[] for _ in val], [p[1] for p in val], [p[2] for p in val],
                       n_songs=N_SONGS, n_tags=12, val_titles=[p[0] for p in val], train_titles=[p[0] for p in train])
    return store


def test_tokenizer_caps_vocabulary_and_pads():
    titles = ["신나는 댄스 모음", "잔잔한 발라드", "비오는 날 재즈"] * 5
    tok = TitleTokenizer.train(titles, vocab_size=6000, max_tokens=4)
    assert 10 < tok.pieces < 6000  # the corpus supports far fewer pieces than asked: capped, not an error
    ids, cut = tok.tokenize(["신나는 댄스 모음", "", "신나는 댄스 모음 신나는 댄스 모음"])
    assert ids.shape == (3, 4) and ids.dtype == np.int32
    assert (ids[0] > 1).any() and (ids[1] == 0).all() and cut == 1
    assert np.array_equal(tokenize(["잔잔한 발라드"], tok), tok.tokenize(["잔잔한 발라드"])[0])
    again = TitleTokenizer(tok.model_bytes, 4)
    assert np.array_equal(again.tokenize(titles)[0], tok.tokenize(titles)[0])
    with pytest.raises(FstoreError, match="no non-empty playlist title"):
        TitleTokenizer.train(["", "  "])


def test_multi_hot_and_masking():
    idx = torch.tensor([[2, 0, -1], [-1, -1, -1]])
    assert multi_hot(idx, 4).tolist() == [[1, 0, 1, 0], [0, 0, 0, 0]]
    tokens = torch.tensor([[5, 6, 0, 0], [0, 0, 0, 0], [7, 8, 9, 3]])
    masked, picked = mask_tokens(tokens, mask_id=99, rate=0.0)
    assert picked.sum(dim=1).tolist() == [1, 0, 1]  # one forced pick per non-empty title, none on pads
    assert (masked[picked] == 99).all() and (masked[~picked] == tokens[~picked]).all()


def test_title_model_learns_planted_titles(themed_store, tmp_path):
    path = train_title_model(themed_store, tmp_path / "title", max_minutes=None, seed=0, dim=32, layers=1, heads=2,
                             batch_size=32, pretrain_epochs=2, epochs=12, lr=1e-2, progress=False)
    assert path.name == TITLE_MODEL
    scorer = TitleScorer.load(path, themed_store)
    assert scorer.info["titles_cut"] == 0
    title = score_split(themed_store, "val", recommend(themed_store, "val", scorer, progress=False))
    popular = score_split(themed_store, "val", recommend(themed_store, "val", MostPopular(themed_store),
                                                         progress=False))
    assert title["score"] > popular["score"] + 0.1, (title, popular)
    # deterministic scoring; an empty title is no opinion
    s1, t1 = scorer.scores("val", np.arange(4))
    s2, _ = scorer.scores("val", np.arange(4))
    assert torch.equal(s1, s2) and s1.shape == (4, N_SONGS) and t1.shape == (4, 12)
    assert torch.isneginf(s1[:, 260:]).all()  # never seen in train: outside the model's vocabulary


def test_title_model_one_step_and_bad_checkpoint(themed_store, tmp_path):
    path = train_title_model(themed_store, tmp_path / "t", max_minutes=0, dim=16, layers=1, heads=2, batch_size=64,
                             pretrain_epochs=1, epochs=1, progress=False)
    scorer = TitleScorer.load(path, themed_store)
    assert scorer.scores("val", np.arange(3))[0].shape == (3, N_SONGS)
    tok = TitleTokenizer.from_checkpoint(path)
    assert np.array_equal(tokenize(["신나는 댄스"], tok), tokenize(["신나는 댄스"], scorer.tokenizer))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(FstoreError, match="bad.pt: not a readable melon title-model checkpoint"):
        TitleScorer.load(bad, themed_store)
