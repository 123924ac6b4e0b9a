"""The Melon autoencoder: the model learns a planted pattern; a tiny end-to-end train + evaluate
through the CLI writes an official results.json whose score matches the printed one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from contract import assert_evaluate_contract

from featurestore.cli import main
from featurestore.ingest.melon import ingest_melon
from featurestore.store import Store
from featurestore.synth.melon import synth_melon
from loaders.playlists import PlaylistBatches
from models.melon.model import PlaylistDAE, dae_loss
from models.melon.recommend import read_results, score_split


@pytest.fixture(scope="module")
def raw_and_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("melon")
    synth_melon(root / "raw", playlists=300, songs=400, seed=4)
    ingest_melon(root / "raw", root / "store", progress=False)
    return root / "raw", root / "store"


def test_dae_shapes_padding_and_learning(raw_and_store):
    torch.manual_seed(0)
    loader = PlaylistBatches(raw_and_store[1], "train", 64, denoise=0.5, order="sequential")
    v = loader.vocab
    model = PlaylistDAE(v.n_songs, v.n_tags, v.n_artists, d_model=32, layers=1, heads=2, ff=64, dropout=0.0)
    batch = next(iter(loader))
    s, t, a = model(batch["songs"], batch["tags"], batch["artists"])
    assert s.shape == (64, v.n_songs) and t.shape == (64, v.n_tags) and a.shape == (64, v.n_artists)
    # padding is masked out: extra padded columns change nothing
    pad = torch.full((64, 7), -1, dtype=torch.long)
    model.eval()
    s2, _, _ = model(torch.cat([batch["songs"], pad], 1), batch["tags"], batch["artists"])
    s1, _, _ = model(batch["songs"], batch["tags"], batch["artists"])
    assert torch.allclose(s1, s2, atol=1e-5)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = float(dae_loss(model, batch).detach())
    for _ in range(30):
        opt.zero_grad()
        loss = dae_loss(model, batch)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first


def test_songs_share_their_artists_embeddings(raw_and_store, tmp_path):
    """A song's embedding is its own plus its artists' mean, in the input and the tied output: a song's
    target teaches its artist, so a song seen rarely is scored where its artist's songs are. The table
    travels in the checkpoint; a checkpoint from before (no ``share_artists``) loads without it."""
    from models.melon.data import DAEScorer, vocab_to_save
    from models.training import save

    torch.manual_seed(1)
    loader = PlaylistBatches(raw_and_store[1], "train", 32, order="sequential")
    v = loader.vocab
    table = np.asarray(v["song_artists"])
    model = PlaylistDAE(v.n_songs, v.n_tags, v.n_artists, d_model=16, layers=1, heads=2, ff=32, dropout=0.0,
                        song_artists=table)
    songs, _, artists = model.tables()
    for i in range(0, v.n_songs, 37):
        real = table[i][table[i] >= 0]
        expected = model.emb[0].weight[i] + (artists[real].mean(0) if real.size else 0.0)
        assert torch.allclose(songs[i], expected, atol=1e-6)
    # only a song's output (no artist head, no input) still moves its artist's embedding
    song = int(np.flatnonzero((table >= 0).any(1))[0])
    artist = int(table[song][table[song] >= 0][0])
    batch = next(iter(loader))
    logits = model(batch["songs"], batch["tags"], batch["artists"], heads=1)[0]
    logits[:, song].sum().backward()
    assert model.emb[2].weight.grad[artist].abs().sum() > 0
    with pytest.raises(ValueError, match="song_artists"):
        PlaylistDAE(v.n_songs + 1, v.n_tags, v.n_artists, song_artists=table)
    # checkpoints: with the table, and an older one without ``share_artists``
    store = Store(raw_and_store[1])
    config = {"d_model": 16, "layers": 1, "heads": 2, "ff": 32, "dropout": 0.0}
    for shared in (True, False):
        net = model if shared else PlaylistDAE(v.n_songs, v.n_tags, v.n_artists, **config)
        path = tmp_path / f"shared{shared}.pt"
        save({"model": net.state_dict(), "config": {**config, **({"share_artists": True} if shared else {})},
              "vocab": vocab_to_save(v)}, path)
        loaded = DAEScorer.load(path, store).model
        assert (loaded.song_artists is not None) == shared
        assert torch.equal(loaded.tables()[0], net.tables()[0])


def test_train_and_evaluate_cli(raw_and_store, tmp_path):
    raw, store = raw_and_store
    out = tmp_path / "run"
    runner = CliRunner()
    r = runner.invoke(main, ["train", "melon", str(store), str(out), "--epochs", "2", "--batch-size", "64",
                             "--title-share", "0.5", "--max-minutes", "1"])
    assert r.exit_code == 0, r.output
    assert "playlists/s" in r.output and "data wait" in r.output
    assert (out / "best.pt").is_file() and (out / "history.csv").is_file() and (out / "title" / "title_model.pt").is_file()
    results, metrics = tmp_path / "results.json", tmp_path / "m.json"
    r = runner.invoke(main, ["evaluate", "melon", str(store), str(out / "best.pt"), "--out", str(results),
                             "--metrics-json", str(metrics), "--raw-dir", str(raw)])
    assert r.exit_code == 0, r.output
    doc = json.loads(metrics.read_text())
    # the submitted blend and the baselines; blend parts as components; the planted oracle as the ceiling
    assert_evaluate_contract(doc, metric="score", split="val", baselines={"most_popular", "cooccurrence"},
                             components={"autoencoder", "autoencoder+cooccurrence", "title", "ensemble"},
                             ceiling={"oracle"})
    recs = read_results(results)
    assert len(recs) == len(Store(store).parquet("val_playlists"))
    assert score_split(Store(store), "val", recs)["score"] == pytest.approx(doc["scores"]["model"], abs=1e-12)
    values = [*doc["scores"].values(), *doc["components"].values(), *doc["ceiling"].values()]
    assert all(0 <= v <= 1 for v in values)
    assert doc["ceiling"]["oracle"] > doc["scores"]["most_popular"]
    r = runner.invoke(main, ["evaluate", "melon", str(store), str(tmp_path / "nope.pt")])
    assert r.exit_code != 0 and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    r = runner.invoke(main, ["train", "melon", str(store), str(tmp_path / "x"), "--question-mix", "0.8", "0.5"])
    assert r.exit_code == 2 and "--question-mix" in r.output and "Traceback" not in r.output
    np.testing.assert_equal(len(recs[0]["songs"]), 100)


def test_max_minutes_bounds_the_whole_command(raw_and_store, tmp_path, monkeypatch):
    """Set-up and the autoencoder share ``1 - title_share`` of ``--max-minutes``; the title model gets what
    is left, not a fixed share on top (a fake clock: 1 minute of set-up, the autoencoder uses its budget)."""
    import types

    import models.melon.train as melon_train

    clock = {"now": 1000.0}
    monkeypatch.setattr(melon_train, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    got: dict[str, float] = {}

    def fake_fit(task, loader, out_dir, *, max_minutes, **kwargs):
        got["autoencoder"] = max_minutes
        clock["now"] += max_minutes * 60.0 + 30.0  # its budget, then a validation that overruns 30 s
        return types.SimpleNamespace()

    def fake_title(store, out_dir, *, max_minutes, **kwargs):
        got["title"] = max_minutes
        return out_dir / "title_model.pt"

    real_loader = melon_train.PlaylistBatches

    def slow_loader(*args, **kwargs):
        clock["now"] += 60.0  # one minute of set-up (vocabulary, loaders)
        return real_loader(*args, **kwargs)

    monkeypatch.setattr(melon_train, "fit", fake_fit)
    monkeypatch.setattr(melon_train, "train_title_model", fake_title)
    monkeypatch.setattr(melon_train, "PlaylistBatches", slow_loader)
    melon_train.train_melon(raw_and_store[1], tmp_path / "run", max_minutes=10, title_share=0.4, progress=False)
    assert got["autoencoder"] == pytest.approx(6.0 - 1.0)  # its 6 minutes less the set-up
    assert got["title"] == pytest.approx(10.0 - 6.5)  # what is left of 10 after 6 minutes and the overrun
