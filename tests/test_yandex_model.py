"""Yandex artist retrieval: encoders, loss, augmentations, windows, search and re-ranking, training,
evaluation, submission and CLI (small store, tiny models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from contract import assert_evaluate_contract

from featurestore.cli import main
from featurestore.ingest.yandex import ingest_yandex
from featurestore.store import Store
from featurestore.store.errors import FstoreError
from featurestore.synth.yandex import synth_yandex
from models.metrics.retrieval import top_k_cosine, top_k_cosine_queries
from models.metrics.yandex_ndcg import read_submission
from models.yandex import (
    ArtistEncoder,
    MetricLoss,
    augment_frames,
    ensemble,
    evaluate_yandex,
    load_model,
    rerank,
    top_k,
    train_yandex,
)
from models.yandex.ablation import ablation_table
from models.yandex.data import artist_split, track_ids, validation_split
from models.yandex.embed import embed_windows
from models.yandex.train import retrieval_ndcg

TINY = {"d_model": 16, "layers": 1, "heads": 2, "ff": 32, "emb_dim": 16}


@pytest.fixture(scope="module")
def ystore(tmp_path_factory) -> Store:
    root = tmp_path_factory.mktemp("yandex")
    synth_yandex(root / "raw", tracks=240, artists=24, test_tracks=40, seed=3)
    ingest_yandex(root / "raw", root / "y.fstore", progress=False)
    return Store(root / "y.fstore")


@pytest.fixture(scope="module")
def trained(ystore, tmp_path_factory):
    out = {}
    for arch in ("transformer", "conformer"):
        d = tmp_path_factory.mktemp(arch)
        out[arch] = (d, train_yandex(ystore, d, arch=arch, epochs=2, m=2, artists_per_batch=4, holdout=0.25,
                                     progress=False, model=TINY, torch_threads=1))
    return out


def _clips(b: int = 5, T: int = 12, F_: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    length = torch.tensor([12, 7, 3, 12, 1][:b])
    mask = torch.arange(T)[None] < length[:, None]
    return torch.randn(b, T, F_, generator=g) * mask[..., None], mask


# --- model, loss, augmentations ----------------------------------------------------------------

@pytest.mark.parametrize("arch,pooling", [("transformer", "mean"), ("conformer", "mean"),
                                          ("transformer", "mean+std"), ("conformer", "mean+std")])
def test_encoder_shapes_norm_and_padding_content(arch, pooling):
    model = ArtistEncoder(arch, n_features=8, **TINY, pooling=pooling).eval()
    x, mask = _clips()
    with torch.no_grad():
        emb = model(x, mask)
        assert emb.shape == (5, 16)
        assert torch.allclose(emb.norm(dim=1), torch.ones(5), atol=1e-5)
        y = x.clone()
        y[~mask] = 1e3 * torch.randn(int((~mask).sum()), 8)  # whatever the padding holds
        assert torch.allclose(model(y, mask), emb, atol=1e-5)
        z = x.clone()
        z[1, 0] += 5.0  # a real frame does matter
        assert not torch.allclose(model(z, mask)[1], emb[1], atol=1e-4)
    assert ArtistEncoder(**model.config).parameter_count == model.parameter_count
    with pytest.raises(ValueError, match="arch must be one of"):
        ArtistEncoder("lstm")
    with pytest.raises(ValueError, match="pooling must be one of"):
        ArtistEncoder(pooling="max")


def test_std_pooling_sees_what_the_mean_of_frames_cannot():
    """The pooled vector is the masked mean and the masked std over time of the normalised backbone
    features: the std half varies with how frames spread around their mean, which a mean cannot see."""
    model = ArtistEncoder("transformer", n_features=8, **TINY, pooling="mean+std").eval()
    x, mask = _clips()
    seen = {}
    model.head.register_forward_hook(lambda mod, args, out: seen.update(pooled=args[0]))
    features = {}
    model.norm.register_forward_hook(lambda mod, args, out: features.update(x=out))
    with torch.no_grad():
        model(x, mask)
    h = features["x"] * mask[..., None]
    n = mask.sum(1, keepdim=True)
    mean = h.sum(1) / n
    std = (((h - mean[:, None]) * mask[..., None]) ** 2).sum(1).div(n).add(1e-5).sqrt()
    assert model.head.in_features == 2 * TINY["d_model"]
    assert torch.allclose(seen["pooled"], torch.cat([mean, std], 1), atol=1e-5)


@pytest.mark.parametrize("arch", ["transformer", "conformer"])
def test_pooled_branch_is_the_gain_weighted_standardised_average(arch):
    model = ArtistEncoder(arch, n_features=8, **TINY, pooled_branch=True).eval()
    x, mask = _clips()
    with torch.no_grad():
        model.set_feature_stats(torch.randn(8), torch.rand(8) + 0.5)
        model.gain.copy_(torch.rand(8))
        model.gain[3] = 0.0
        emb = model(x, mask)
        assert emb.shape == (5, 16 + 8) and torch.allclose(emb.norm(dim=1), torch.ones(5), atol=1e-5)
        z = (x - model.mean) / model.std * mask[..., None]
        average = z.sum(1) / mask.sum(1, keepdim=True)
        assert torch.allclose(emb[:, 16:] * 2**0.5, F.normalize(average * model.gain, dim=1), atol=1e-5)
        y = x.clone()
        y[:, :, 3] += 10 * mask  # a silenced feature moves only the backbone's half
        moved = model(y, mask)
        assert torch.allclose(moved[:, 16:], emb[:, 16:], atol=1e-5)
        assert not torch.allclose(moved[:, :16], emb[:, :16], atol=1e-4)


def test_feature_standardisation_is_part_of_the_model():
    model = ArtistEncoder("transformer", n_features=8, **TINY).eval()
    x, mask = _clips()
    mean, std = torch.randn(8), torch.rand(8) + 0.5
    model.set_feature_stats(mean, std)
    ref = ArtistEncoder("transformer", n_features=8, **TINY).eval()
    ref.load_state_dict(model.state_dict())  # the statistics travel in the state dict
    with torch.no_grad():
        assert torch.equal(ref(x, mask), model(x, mask))
        ref.set_feature_stats(torch.zeros(8), torch.ones(8))
        assert torch.allclose(ref((x - mean) / std * mask[..., None], mask), model(x, mask), atol=1e-5)


def test_metric_loss_sums_three_pml_losses_and_prefers_separated_embeddings():
    labels = torch.arange(4).repeat_interleave(4)
    loss = MetricLoss()
    centres = F.normalize(torch.randn(4, 16), dim=1)
    separated = F.normalize(centres[labels] + 0.01 * torch.randn(16, 16), dim=1).requires_grad_()
    random = F.normalize(torch.randn(16, 16), dim=1).requires_grad_()
    good, bad = loss(separated, labels), loss(random, labels)
    assert set(loss.parts) == {"multi_similarity", "circle", "triplet"}
    assert torch.allclose(bad, sum(loss.parts.values()))
    assert good < bad
    bad.backward()
    assert random.grad is not None and random.grad.abs().sum() > 0
    parts = dict(loss.parts)
    for term in parts:  # one term alone (the ablation) is that term of the sum
        alone = MetricLoss(terms=[term])
        assert torch.allclose(alone(random, labels), parts[term]) and set(alone.parts) == {term}
    with pytest.raises(ValueError, match="loss terms"):
        MetricLoss(terms=["contrastive"])
    with pytest.raises(ValueError, match="loss terms"):
        MetricLoss(terms=[])


def test_augment_keeps_padding_and_permutes_real_frames_only():
    x, mask = _clips(F_=40)
    same = augment_frames(x, mask, zero_p=0, channel_swap_p=0, time_shuffle_p=0)
    assert torch.equal(same, x)
    torch.manual_seed(1)
    shuffled = augment_frames(x, mask, zero_p=0, channel_swap_p=0, time_shuffle_p=1.0)
    assert (shuffled[~mask] == 0).all()
    for b in range(5):  # each clip's real frames, reordered
        n = int(mask[b].sum())
        a = sorted(map(tuple, x[b, :n].tolist()))
        assert sorted(map(tuple, shuffled[b, :n].tolist())) == a
    assert not torch.equal(shuffled, x)
    swapped = augment_frames(x, mask, zero_p=0, channel_swap_p=0.25, time_shuffle_p=0)
    moved = (swapped != x).any(dim=(0, 1))
    assert 2 <= int(moved.sum()) <= 10  # only the chosen quarter of the 40 channels can move
    assert torch.equal(swapped.sort(dim=2).values, x.sort(dim=2).values)
    zeroed = augment_frames(x, mask, zero_p=1.0, channel_swap_p=0, time_shuffle_p=0)
    assert (zeroed == 0).all()
    mean = torch.arange(40.0)
    filled = augment_frames(x, mask, zero_p=1.0, channel_swap_p=0, time_shuffle_p=0, fill=mean)
    assert torch.equal(filled[mask], mean.expand(int(mask.sum()), 40)) and (filled[~mask] == 0).all()


def test_rolling_windows_average_the_windows_inside_each_clip():
    model = ArtistEncoder("transformer", n_features=8, **TINY).eval()
    x, mask = _clips()
    length = mask.sum(1)
    with torch.no_grad():
        whole = embed_windows(model, x, length, None)
        assert torch.allclose(whole, model(x, mask))
        win = embed_windows(model, x, length, 4, 2)
        # clip 1 has 7 frames: windows at 0 and 2 lie inside it (4 would run past its end)
        parts = model(torch.stack([x[1, 0:4], x[1, 2:6]]), torch.ones(2, 4, dtype=torch.bool))
        assert torch.allclose(win[1], F.normalize(parts.mean(0), dim=0), atol=1e-5)
        # clip 2 has 3 frames, shorter than the window: one window of its own length
        assert torch.allclose(win[2], model(x[2:3, :3], torch.ones(1, 3, dtype=torch.bool))[0], atol=1e-5)


# --- search, re-ranking, ensembles -------------------------------------------------------------

def test_query_search_matches_brute_force_with_exclusions():
    g = torch.Generator().manual_seed(0)
    gallery, queries = torch.randn(50, 6, generator=g), torch.randn(9, 6, generator=g)
    exclude = torch.full((9, 3), -1, dtype=torch.long)
    exclude[:, 0] = torch.arange(9)
    exclude[2, 1:] = torch.tensor([7, 8])
    idx, scores = top_k_cosine_queries(queries, gallery, 10, exclude=exclude, batch_size=4)
    sims = F.normalize(queries, dim=1) @ F.normalize(gallery, dim=1).T
    for q in range(9):
        banned = {int(e) for e in exclude[q] if e >= 0}
        ref = [j for j in sims[q].argsort(descending=True).tolist() if j not in banned][:10]
        assert idx[q].tolist() == ref
        assert torch.allclose(scores[q], sims[q, ref])
    assert torch.equal(top_k(gallery, 10, batch_size=7), top_k_cosine(gallery, 10)[0])
    with pytest.raises(ValueError, match="share d"):
        top_k_cosine_queries(queries[:, :5], gallery)


def _rerank_reference(e: torch.Tensor, k: int, threshold: float) -> list[list[int]]:
    e = F.normalize(e, dim=1)
    sims = e @ e.T
    sims.fill_diagonal_(-2)
    out = []
    for q in range(e.shape[0]):
        first = sims[q].argsort(descending=True)[:k].tolist()
        kept = [j for j in first if sims[q, j] > threshold]
        expanded = e[q] + e[kept].sum(0)
        second = (e @ F.normalize(expanded, dim=0)).argsort(descending=True).tolist()
        rest = [j for j in second if j != q and j not in kept]
        out.append((kept + rest)[:k])
    return out


def test_rerank_matches_the_seed_procedure():
    g = torch.Generator().manual_seed(2)
    centres = torch.randn(6, 8, generator=g)
    e = centres[torch.arange(60) % 6] + 0.6 * torch.randn(60, 8, generator=g)
    for threshold in (0.6, 0.85):
        got = rerank(e, k=12, threshold=threshold, batch_size=16)
        assert got.tolist() == _rerank_reference(e, 12, threshold)
    assert torch.equal(rerank(e, k=12, threshold=1.5), top_k(e, 12))  # nothing kept: plain search
    r = rerank(e, k=12, threshold=0.3)
    assert all(len(set(row)) == 12 and i not in row for i, row in enumerate(r.tolist()))


def test_ensemble_cosine_is_the_mean_of_the_models_cosines():
    a, b = torch.randn(7, 5), torch.randn(7, 3)
    e = ensemble([a, b])
    cos = lambda x: F.normalize(x, dim=1) @ F.normalize(x, dim=1).T  # noqa: E731
    assert torch.allclose(e @ e.T, (cos(a) + cos(b)) / 2, atol=1e-6)


def test_retrieval_ndcg_is_one_for_a_perfect_ranking_and_low_for_a_bad_one():
    ids = np.array([10, 11, 12, 13, 14, 15])
    artists = np.array([1, 1, 1, 2, 2, 2])
    perfect = torch.tensor([[1, 2, 3], [0, 2, 3], [0, 1, 3], [4, 5, 0], [3, 5, 0], [3, 4, 0]])
    assert retrieval_ndcg(perfect, ids, artists) == pytest.approx(1.0)
    worst = torch.tensor([[3, 4, 1], [3, 4, 0], [3, 4, 0], [0, 1, 4], [0, 1, 3], [0, 1, 3]])
    assert retrieval_ndcg(worst, ids, artists) < 0.5


# --- split, training, evaluation, CLI ---------------------------------------------------------

def test_artist_split_is_disjoint_and_deterministic(ystore):
    fit, held = artist_split(ystore, 0.25, 0)
    artists = ystore.frames("train").column("artist")
    assert set(artists[fit]).isdisjoint(artists[held]) and fit.size + held.size == artists.size
    again = artist_split(ystore, 0.25, 0)
    assert np.array_equal(again[1], held)
    assert not np.array_equal(artist_split(ystore, 0.25, 1)[1], held)


def test_training_writes_checkpoints_history_and_validation(trained):
    for arch, (out, result) in trained.items():
        assert result.epochs_completed == 2 and result.best_checkpoint is not None
        assert 0 < result.best_metric <= 1 and result.metric == "val_ndcg"
        assert [h["epoch"] for h in result.history] == [1, 2] and "val_ndcg" in result.history[0]
        model, config = load_model(out / "best.pt")
        assert model.arch == arch and config["holdout"] == {"fraction": 0.25, "seed": 0}
        assert config["validation"] == {"fraction": 0.125} and config["loss"]["terms"] == ["triplet"]
        assert config["batches"]["curriculum"] == [10, 81, 1]


def test_training_stopped_mid_epoch_resumes_there(ystore, tmp_path):
    settings = dict(epochs=1, m=2, artists_per_batch=4, holdout=0.25, progress=False, model=TINY, torch_threads=1)
    first = train_yandex(ystore, tmp_path, max_minutes=0, **settings)
    assert first.stopped == "time_limit" and first.items_trained == 8  # one batch of 2 x 4 clips
    second = train_yandex(ystore, tmp_path, **settings)
    assert second.resumed_from == {"epoch": 0, "batch": 1} and second.epochs_completed == 1
    assert second.items_trained == second.history[0]["clips"] - 8  # only the batches it had left


def test_training_resume_rejects_another_config(ystore, trained):
    out, _ = trained["transformer"]
    with pytest.raises(FstoreError, match="different model shape"):
        train_yandex(ystore, out, epochs=3, m=2, artists_per_batch=4, holdout=0.25, progress=False,
                     model={**TINY, "d_model": 32})


def test_training_rejects_bad_settings(ystore, tmp_path):
    with pytest.raises(FstoreError, match="unknown model settings"):
        train_yandex(ystore, tmp_path, model={"depth": 3})
    with pytest.raises(FstoreError, match="artist-balanced batches"):
        train_yandex(ystore, tmp_path, artists_per_batch=500, progress=False)


def test_validation_artists_are_neither_evaluated_nor_trained_on(ystore):
    fit, held = artist_split(ystore, 0.25, 0)
    rest, val = validation_split(ystore, fit, 0.125, 0)
    artists = ystore.frames("train").column("artist")
    assert val.size and set(artists[val]).isdisjoint(artists[held]) and set(artists[val]).isdisjoint(artists[rest])
    assert np.array_equal(np.sort(np.concatenate([rest, val])), fit)
    assert validation_split(ystore, fit, 0.0, 0)[1].size == 0


def test_evaluate_scores_models_ensemble_baselines_and_writes_the_submission(ystore, trained, tmp_path):
    ckpts = [trained[a][0] / "best.pt" for a in ("transformer", "conformer")]
    sub = tmp_path / "submission.tsv"
    raw = ystore.path.parent / "raw"
    scores, submitted = evaluate_yandex(ystore, ckpts, out=sub, rerank_submission=True, raw_dir=raw)
    assert submitted == "ensemble+rerank" and next(iter(scores)) == "model"
    assert set(scores) == {"model", "transformer", "transformer+rerank", "conformer", "conformer+rerank",
                           "ensemble", "random", "mean_pooled", "mean_pooled_standardized", "oracle"}
    assert all(0 <= v <= 1 for v in scores.values())
    assert scores["model"] > scores["random"]
    # the oracle knows the planted dynamics: it ranks the held-out artists above the mean-pooled cosine
    assert scores["oracle"] > 0.9 and scores["oracle"] > scores["mean_pooled_standardized"] + 0.1
    rankings = read_submission(sub)
    test_ids = track_ids(ystore, "test")
    assert sorted(rankings) == sorted(test_ids.tolist())
    for q, row in rankings.items():  # every other test track, the query never among them
        assert q not in row and len(set(row)) == len(row) == test_ids.size - 1
        assert set(row) <= set(test_ids.tolist())
    single, name = evaluate_yandex(ystore, ckpts[:1])
    assert name == "transformer" and single["model"] == pytest.approx(scores["transformer"])
    assert single["random"] == scores["random"] and "oracle" not in single  # seeded; oracle only with raw_dir
    windowed, _ = evaluate_yandex(ystore, ckpts[:1], window=10, hop=5)  # the seed's 10-step windows
    assert windowed["mean_pooled"] == single["mean_pooled"] and windowed["model"] != single["model"]


def test_evaluate_refuses_mixed_holdouts_and_bad_checkpoints(ystore, trained, tmp_path):
    other = tmp_path / "other"
    train_yandex(ystore, other, epochs=1, m=2, artists_per_batch=4, holdout=0.3, progress=False, model=TINY,
                 torch_threads=1)
    with pytest.raises(FstoreError, match="different artist holdouts"):
        evaluate_yandex(ystore, [trained["transformer"][0] / "best.pt", other / "best.pt"])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(FstoreError, match="not a readable Yandex artist-encoder checkpoint"):
        evaluate_yandex(ystore, [junk])


def test_cli_train_and_evaluate(ystore, trained, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    r = runner.invoke(main, ["train", "yandex", str(ystore.path), str(out), "--epochs", "1", "--m", "2",
                             "--artists-per-batch", "4", "--holdout", "0.25", "--no-curriculum",
                             "--no-pooled-branch"])
    assert r.exit_code == 0, r.output
    assert "best val_ndcg" in r.output and (out / "best.pt").is_file()
    _, config = load_model(out / "best.pt")
    assert config["batches"]["curriculum"] is None and config["model"]["pooled_branch"] is False
    metrics, sub = tmp_path / "m.json", tmp_path / "s.tsv"
    args = ["evaluate", "yandex", str(ystore.path), str(out / "best.pt"), str(trained["conformer"][0] / "best.pt"),
            "--rerank", "--out", str(sub), "--metrics-json", str(metrics), "--raw-dir", str(ystore.path.parent / "raw")]
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(metrics.read_text())
    assert_evaluate_contract(doc, metric="ndcg@100", split="holdout artists",
                             baselines={"random", "mean_pooled", "mean_pooled_standardized"},
                             components={"transformer", "transformer+rerank", "conformer", "conformer+rerank",
                                         "ensemble"},  # ensemble+rerank is "model"
                             ceiling={"oracle"})
    assert doc["ceiling"]["oracle"] > doc["scores"]["mean_pooled_standardized"]
    assert "model = ensemble+rerank" in r.output and sub.is_file()
    r = runner.invoke(main, args[:-2] + ["--raw-dir", str(tmp_path)])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "no planted truth" in r.output
    r = runner.invoke(main, ["evaluate", "yandex", str(ystore.path), str(tmp_path / "missing.pt")])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "checkpoint not found" in r.output
    r = runner.invoke(main, ["evaluate", "yandex", str(ystore.path)])
    assert r.exit_code == 2  # CHECKPOINTS is required


def test_cli_train_on_a_store_without_artists_is_one_line(tmp_path):
    r = CliRunner().invoke(main, ["train", "yandex", str(tmp_path / "nothing"), str(tmp_path / "o")])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "Traceback" not in r.output



def test_ablation_table_marks_differences_inside_the_seed_spread():
    per_seed = {0: {"full": 0.50, "a": 0.40, "b": 0.52}, 1: {"full": 0.60, "a": 0.49, "b": 0.58},
                2: {"full": 0.55, "a": 0.46, "b": 0.56}}
    lines = ablation_table(per_seed)
    assert lines[0].startswith("| row (3 seeds) |") and len(lines) == 2 + 3
    full, a, b = lines[2:]
    assert full == "| full | 0.550 ± 0.050 | +0.000 ± 0.000 |  |"
    assert a.startswith("| a | 0.450 ± 0.046 | -0.100 ± 0.010 |") and a.endswith("| separates |")
    assert b.startswith("| b | 0.553 ± 0.031 | +0.003 ± 0.021 |") and b.endswith("| within spread |")
