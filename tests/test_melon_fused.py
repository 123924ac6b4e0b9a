"""The fused Melon pass and the blend choice: the streamed selection gives torch.topk's codes (ties
included), every predictor recommends what ``recommend()`` does with the equivalent dense scorer (large
vocabularies through the heap kernel, small ones through torch), and a blend part that does not help
on val gets weight 0."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from featurestore.ingest.melon import ingest_melon
from featurestore.store import Store
from featurestore.store.errors import FstoreError
from featurestore.synth.melon import synth_melon
from loaders.playlists import build_vocab
from models.melon import evaluate as ev
from models.melon.baselines import ItemCooccurrence, MostPopular
from models.melon.data import DAEScorer, vocab_to_save
from models.melon.fused import FusedPass, to_results
from models.melon.model import PlaylistDAE
from models.melon.recommend import (
    BlendScorer,
    _pick,
    _pick_torch,
    load_split,
    load_vocab,
    popularity_rank_scores,
    recommend,
    score_split,
    title_ensemble,
)
from models.melon.title import TitleScorer, TitleTokenizer, song_vocabulary
from models.melon.title_model import TitleEncoder
from models.training import save


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A store with few songs (600: torch.topk's nth_element regime, so the dense path) and one with
    7,000 (>= 64 x 100: the streamed heap); both have few tags (< 640: dense)."""
    root = tmp_path_factory.mktemp("fused")
    out = {}
    for name, songs in (("small", 600), ("large", 7_000)):
        synth_melon(root / f"raw_{name}", playlists=400, songs=songs, seed=5, progress=False)
        ingest_melon(root / f"raw_{name}", root / name, progress=False)
        out[name] = Store(root / name)
    return out


def _models(store: Store, seed: int = 0) -> tuple[DAEScorer, TitleScorer]:
    """Untrained models with random weights: near-uniform scores, so near-ties everywhere."""
    torch.manual_seed(seed)
    vocab = build_vocab(store, min_count=1)
    dae = PlaylistDAE(vocab.n_songs, vocab.n_tags, vocab.n_artists, d_model=16, layers=1, heads=2, ff=32, dropout=0.0)
    tokenizer = TitleTokenizer.train(load_split(store, "train").titles, vocab_size=300)
    codes = song_vocabulary(store, 1, 500)
    title = TitleEncoder(tokenizer.pieces, codes.size, load_vocab(store).n_tags, dim=16, layers=1, heads=2)
    return (DAEScorer(dae, vocab, store, "cpu"),
            TitleScorer(title, tokenizer, codes, store, torch.device("cpu")))


def _dense_scorers(store: Store, cooc: ItemCooccurrence, dae: DAEScorer, title: TitleScorer) -> dict:
    """The dense scorer of every key of ``evaluate._candidates``."""
    blends = {key: BlendScorer([dae, cooc], [(ws, wt), (1 - ws, 1 - wt)])
              for key, ws, wt in zip(ev._grid_keys(), *ev.BLEND_GRID, strict=True)}
    out = {"most_popular": MostPopular(store), ev.COOC: cooc, ev.AE: dae, ev.TITLE: title, **blends,
           f"{ev.ENSEMBLE}:blend": title_ensemble(store, dae, title)}
    for main, scorer in (*blends.items(), (ev.AE, dae), (ev.COOC, cooc)):
        out[f"{ev.ENSEMBLE_COOC}:blend@{main}"] = title_ensemble(store, scorer, title, *ev.TITLE_FEW,
                                                               base=ev.TITLE_BASE)
    return out


@pytest.mark.parametrize("name", ["small", "large"])
def test_every_predictor_equals_the_dense_path(stores, name):
    store = stores[name]
    cooc = ItemCooccurrence(store)
    dae, title = _models(store)
    specs = ev._candidates(store, has_title=True)
    picks = FusedPass(store, cooc, dae, title).run("val", specs["songs"], specs["tags"], batch=64, progress=False)
    dense = _dense_scorers(store, cooc, dae, title)
    assert set(dense) == set(specs["songs"])
    for key, scorer in dense.items():
        expected = recommend(store, "val", scorer, batch=64, progress=False)
        assert to_results(store, "val", picks["songs"][key], picks["tags"][key]) == expected, key


def test_streamed_selection_is_torch_topk():
    """``_pick``'s numba selection against torch's, on rows full of exact ties, -inf, NaN and +inf,
    with questions masked and rows short of valid candidates filled from the prior."""
    rng = np.random.default_rng(0)
    n, k, b = 6_500, 100, 24
    offsets = np.concatenate(([0], np.cumsum(rng.integers(0, 30, b)))).astype(np.int64)
    values = np.concatenate([rng.choice(n, offsets[i + 1] - offsets[i], replace=False) for i in range(b)])
    prior = popularity_rank_scores(rng.integers(0, 50, n))[None]
    for trial in range(6):
        x = rng.integers(0, [3, 30, 1000, 10**6, 5, 2][trial], size=(b, n)).astype(np.float32)
        x[rng.random((b, n)) < 0.3] = -np.inf
        x[rng.random((b, n)) < 0.01] = np.nan
        x[rng.random((b, n)) < 0.001] = np.inf
        x[: b // 3] = -np.inf  # a third of the rows: a few valid items, then popular fill
        x[: b // 3, rng.choice(n, 40, replace=False)] = 1.0
        rows = np.arange(b)
        scores = torch.from_numpy(x)
        fast = _pick(scores, prior, offsets, values, rows, k, "songs")
        reference = _pick_torch(scores.clone(), prior, offsets, values, rows, k, "songs")
        assert torch.equal(fast, reference), trial


def _useless_autoencoder(store: Store, path) -> None:
    """An autoencoder checkpoint that ranks songs and tags by *least* train popularity, the same for
    every question (zero embeddings, output bias = -popularity): it only hurts a blend."""
    vocab = build_vocab(store, min_count=1)
    config = {"d_model": 16, "layers": 1, "heads": 2, "ff": 32, "dropout": 0.0}
    model = PlaylistDAE(vocab.n_songs, vocab.n_tags, vocab.n_artists, **config)
    v = load_vocab(store)
    with torch.no_grad():
        for e in model.emb:
            e.weight.zero_()
        model.bias[0].copy_(torch.from_numpy(-v.song_pop[vocab["song_codes"]].astype(np.float32)))
        model.bias[1].copy_(torch.from_numpy(-v.tag_pop[vocab["tag_codes"]].astype(np.float32)))
    save({"model": model.state_dict(), "config": config, "vocab": vocab_to_save(vocab)}, path)


def test_a_part_that_does_not_help_gets_weight_zero(stores, tmp_path):
    store = stores["small"]
    ckpt = tmp_path / "useless.pt"
    _useless_autoencoder(store, ckpt)
    # with the tuned weights, the useless autoencoder drags the blend far below co-occurrence
    dae, cooc = DAEScorer.load(ckpt, store), ItemCooccurrence(store)
    tuned = BlendScorer([dae, cooc], [ev.BLEND_AUTOENCODER, tuple(1 - w for w in ev.BLEND_AUTOENCODER)])
    tuned_score = score_split(store, "val", recommend(store, "val", tuned, progress=False))
    alone = score_split(store, "val", recommend(store, "val", cooc, progress=False))
    assert tuned_score["song_ndcg"] < alone["song_ndcg"] and tuned_score["tag_ndcg"] < alone["tag_ndcg"]
    said: list[str] = []
    scores, submitted = ev.evaluate_melon(store, ckpt, tmp_path / "val.json", progress=False, echo=said.append)
    assert submitted == ev.AE_COOC  # no title model next to the checkpoint
    assert scores[ev.AE_COOC] == scores[ev.COOC] == {k: alone[k] for k in ("score", "song_ndcg", "tag_ndcg")}
    assert said == [f"blend {ev.AE_COOC} (chosen on val): songs cooccurrence alone (weight 0 for the other part); "
                    "tags cooccurrence alone (weight 0 for the other part)"]
    # test: the weights chosen on val, applied there
    scores, _ = ev.evaluate_melon(store, ckpt, tmp_path / "test.json", split="test", progress=False)
    assert scores[ev.AE_COOC] == scores[ev.COOC]


def test_recommending_leaves_torch_threads_alone(stores):
    """numba's parallel kernels share torch's libgomp: a launch used to set the caller's OpenMP threads
    to numba's count, so a one-thread training ran its torch ops on every core after its first
    validation (the title model 13x slower on a busy 2-core host)."""
    store = stores["large"]
    dae, title = _models(store)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = np.arange(20)
        recommend(store, "val", dae, progress=False, rows=rows)  # the dense kernel
        FusedPass(store, ItemCooccurrence(store, device="cpu"), dae, title).run(
            "val", {ev.COOC: ev.COOC}, {ev.COOC: ev.COOC}, progress=False)  # the fused kernel
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_val_chooses_the_best_blend_weight_of_the_grid(stores):
    """The autoencoder + co-occurrence weight is chosen per side among BLEND_GRID and the parts alone:
    the choice scores at least every other option on val."""
    store = stores["large"]
    dae, title = _models(store, seed=3)
    specs = ev._candidates(store, has_title=False)
    picks = FusedPass(store, ItemCooccurrence(store), dae, None).run("val", specs["songs"], specs["tags"],
                                                                    progress=False)
    chosen = ev._choose(store, picks, has_title=False)
    options = [*ev._grid_keys(), ev.AE, ev.COOC]
    assert len(ev._grid_keys()) == len(ev.BLEND_GRID[0]) == len(ev.BLEND_GRID[1]) >= 3
    for side, metric in (("songs", "song_ndcg"), ("tags", "tag_ndcg")):
        ndcg = {k: score_split(store, "val", to_results(store, "val", picks["songs"][k], picks["tags"][k]))[metric]
                for k in options}
        assert ndcg[chosen[side][ev.AE_COOC]] == max(ndcg.values())


def test_a_pass_over_some_rows_is_recommend_over_those_rows(stores):
    store = stores["large"]
    cooc = ItemCooccurrence(store)
    dae, title = _models(store, seed=2)
    n = len(load_split(store, "val"))
    rows = np.array([3, 17, 18, n // 2, n // 2 + 1, n // 2 + 2, n - 1])
    specs = {ev.COOC: ev.COOC, ev.AE: ev.AE, f"{ev.AE_COOC}:blend": ev._candidates(store, False)["songs"][f"{ev.AE_COOC}:blend"]}
    tag_specs = {k: ev._candidates(store, False)["tags"][k] for k in specs}
    picks = FusedPass(store, cooc, dae, None).run("val", specs, tag_specs, batch=4, progress=False, rows=rows[::-1])
    dense = _dense_scorers(store, cooc, dae, title)
    for key in specs:
        got = to_results(store, "val", picks["songs"][key], picks["tags"][key], rows)
        assert got == recommend(store, "val", dense[key], batch=4, progress=False, rows=rows), key
    with pytest.raises(FstoreError, match="rows outside"):
        FusedPass(store, cooc, dae, None).run("val", specs, tag_specs, progress=False, rows=np.array([10**6]))


def test_blend_weights_chosen_on_a_val_sample(stores, tmp_path):
    """Past ``choice_sample`` val playlists the weights are chosen on a fixed sample of them; the chosen
    predictors then score the whole split asked for, so ``--split val`` still scores every playlist."""
    store = stores["small"]
    ckpt = tmp_path / "useless.pt"
    _useless_autoencoder(store, ckpt)
    n_val = len(load_split(store, "val"))
    said: list[str] = []
    scores, _ = ev.evaluate_melon(store, ckpt, tmp_path / "val.json", progress=False, echo=said.append,
                                  choice_sample=20)
    assert said[0].startswith(f"blend {ev.AE_COOC} (chosen on a val sample of 20 of {n_val} playlists):")
    whole = score_split(store, "val", json.loads((tmp_path / "val.json").read_text()))
    assert scores[ev.AE_COOC] == {k: whole[k] for k in ("score", "song_ndcg", "tag_ndcg")}
    said.clear()
    ev.evaluate_melon(store, ckpt, tmp_path / "test.json", split="test", progress=False, echo=said.append,
                      choice_sample=20)
    assert f"a val sample of 20 of {n_val} playlists, where the blend weights were chosen:" in said
