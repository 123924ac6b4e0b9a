"""Speaker classifier: padding invariance, masked pooling, margin in training only, train -> evaluate -> CSV,
the validation split, baselines, CLI contract and one-line errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from featurestore.cli import main
from featurestore.ingest.speakers import ingest_speakers
from featurestore.store import Store
from featurestore.store.errors import FstoreError
from featurestore.synth.speakers import synth_speakers
from models.speakers import (
    AMSoftmax,
    AttentionPooling,
    SpeakerNet,
    evaluate_speakers,
    load_checkpoint,
    nearest_mean,
    train_speakers,
)
from models.speakers import oracle as speaker_oracle
from models.speakers.baselines import pooled_mels
from models.speakers.data import validation_split
from tests.contract import assert_evaluate_contract

TINY = {"d_model": 16, "ffn": 32, "heads": 2, "layers": 2, "kernel": 31, "dropout": 0.0}


@pytest.fixture(scope="module")
def spk_raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("spk_raw")
    synth_speakers(raw, speakers=4, utterances_per_speaker=5, test_utterances=6, seed=3)
    return raw


@pytest.fixture(scope="module")
def spk_store(spk_raw, tmp_path_factory) -> Store:
    path = tmp_path_factory.mktemp("spk_store") / "s.fstore"
    ingest_speakers(spk_raw, path, progress=False)
    return Store(path)


@pytest.fixture(scope="module")
def trained(spk_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("spk_train")
    result = train_speakers(spk_store, out, epochs=2, batch_size=8, crop=48, holdout=0.25, progress=False,
                            model=TINY)
    return out, result


def _padded_batch(lengths: list[int], bins: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    x = torch.randn(len(lengths), T, bins, generator=g)
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    x[~mask] = 1e4 * torch.randn(int((~mask).sum()), bins, generator=g)  # padding is garbage, not zeros
    return x, mask


def _trained_a_little(model: SpeakerNet) -> SpeakerNet:
    """A few steps so that batch-norm running statistics and weights are not at their initial values."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for s in range(3):
        x, mask = _padded_batch([60, 60, 60, 60], seed=10 + s)
        y = torch.tensor([0, 1, 2, 3])
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x, mask, y), y).backward()
        opt.step()
    return model.eval()


# --- model ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pooling", ["attention", "attention+max"])
def test_an_utterance_alone_and_in_a_padded_batch_give_the_same_logits(pooling):
    torch.manual_seed(0)
    model = _trained_a_little(SpeakerNet(40, 4, **{**TINY, "layers": 3}, pooling=pooling))
    lengths = [90, 57, 12, 33]  # padding spans more than the depthwise kernel's reach (15 frames)
    x, mask = _padded_batch(lengths)
    with torch.no_grad():
        batch = model(x, mask)
        for i, n in enumerate(lengths):
            alone = model(x[i : i + 1, :n], mask[i : i + 1, :n])
            torch.testing.assert_close(alone, batch[i : i + 1], rtol=1e-4, atol=1e-4)
        # a window longer than every utterance (a crop batch of short clips) is padding too
        wider = torch.cat([x, 1e4 * torch.ones(4, 20, 40)], dim=1)
        torch.testing.assert_close(model(wider, torch.cat([mask, torch.zeros(4, 20, dtype=torch.bool)], 1)), batch,
                                   rtol=1e-4, atol=1e-4)
        # and the frames do matter: changing a real frame of utterance 1 changes its logits
        y = x.clone()
        y[1, 3] += 5.0
        assert not torch.allclose(model(y, mask)[1], batch[1], atol=1e-3)


def test_the_depthwise_hook_is_what_keeps_padding_out():
    torch.manual_seed(1)
    model = _trained_a_little(SpeakerNet(40, 4, **TINY))
    x, mask = _padded_batch([80, 30])
    with torch.no_grad():
        alone = model(x[1:, :30], mask[1:, :30])
        # without the pre-hooks on the depthwise convolutions, padded frames reach the last real ones
        hooks = [layer.conv_module.sequential[2]._forward_pre_hooks for layer in model.conformer.conformer_layers]
        saved = [dict(h) for h in hooks]
        for h in hooks:
            h.clear()
        try:
            leaky = model(x, mask)[1:]
        finally:
            for h, s in zip(hooks, saved, strict=True):
                h.update(s)
        assert not torch.allclose(leaky, alone, atol=1e-3)
        torch.testing.assert_close(model(x, mask)[1:], alone, rtol=1e-4, atol=1e-4)


def test_attention_pooling_is_masked():
    torch.manual_seed(2)
    pool = AttentionPooling(8)
    x = torch.randn(2, 10, 8)
    mask = torch.arange(10)[None] < torch.tensor([10, 4])[:, None]
    ref = pool(x, mask)
    y = x.clone()
    y[1, 4:] = float("inf")  # even non-finite padding cannot leak
    out = pool(y, mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out[1:], pool(x[1:, :4], mask[1:, :4]))


def test_margin_only_in_training():
    torch.manual_seed(3)
    head = AMSoftmax(6, 5, scale=30.0, margin=0.35)
    e = torch.randn(4, 6)
    y = torch.tensor([0, 3, 4, 3])
    head.train()
    plain, margined = head(e), head(e, y)
    diff = plain - margined
    expected = torch.zeros_like(diff)
    expected[torch.arange(4), y] = 30.0 * 0.35
    torch.testing.assert_close(diff, expected)
    assert plain.abs().max() <= 30.0 + 1e-4  # scaled cosines
    head.eval()
    torch.testing.assert_close(head(e, y), head(e))
    model = SpeakerNet(40, 5, **TINY).eval()
    x, mask = _padded_batch([40, 25, 30, 10])
    with torch.no_grad():
        torch.testing.assert_close(model(x, mask, y), model(x, mask))


def test_bad_model_settings_are_refused():
    with pytest.raises(ValueError, match="pooling"):
        SpeakerNet(40, 3, pooling="mean")
    with pytest.raises(ValueError, match="multiple of heads"):
        SpeakerNet(40, 3, d_model=30, heads=4)


def test_nearest_mean_picks_the_closest_centroid_of_present_classes():
    means = np.array([[0.0, 0], [0, 2], [10, 10], [10, 12]])
    labels = np.array([0, 0, 2, 2])  # class 1 has no fit utterance: never predicted
    q = np.array([[0.0, 1], [9, 11], [5, 6.5], [5, 5.5]])
    assert nearest_mean(means, labels, q, classes=3).tolist() == [0, 2, 2, 0]


# --- split, training, evaluation ---------------------------------------------------------------------

def test_validation_split_is_stratified_by_speaker_and_deterministic(spk_store):
    fit, held = validation_split(spk_store, 0.25, seed=0)
    labels = spk_store.frames("train").column("speaker")
    assert np.intersect1d(fit, held).size == 0 and fit.size + held.size == labels.size
    assert sorted(set(labels[held].tolist())) == sorted(set(labels.tolist()))  # every speaker held out once+
    again = validation_split(spk_store, 0.25, seed=0)
    assert np.array_equal(held, again[1])
    assert not np.array_equal(held, validation_split(spk_store, 0.25, seed=1)[1])


def test_train_writes_checkpoints_and_history(trained):
    out, result = trained
    assert result.epochs_completed == 2 and result.metric == "val_acc" and result.item_name == "utterances"
    assert (out / "checkpoint.pt").is_file() and (out / "best.pt").is_file() and (out / "history.csv").is_file()
    assert 0.0 <= result.best_metric <= 1.0 and result.items_trained == 2 * 16  # 16 fit utterances an epoch
    model, ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["holdout"] == 0.25 and ckpt["seed"] == 0 and len(ckpt["speakers"]) == 4
    assert model.config["d_model"] == 16 and model.config["n_mels"] == 40 and not model.training
    assert not torch.equal(model.mel_std, torch.ones(40))  # input statistics come from the store


def test_evaluate_scores_the_training_holdout_beside_baselines(spk_store, trained):
    out, result = trained
    ev = evaluate_speakers(spk_store, out / "best.pt")
    assert set(ev.scores) == {"validation", "test"}
    assert set(ev.scores["validation"]) == {"model", "logistic_regression", "nearest_mean", "random"}
    assert ev.validation_utterances == 4  # one of five per speaker
    # the validation accuracy of best.pt is the one training measured on the same utterances
    assert ev.scores["validation"]["model"] == pytest.approx(result.best_metric)
    assert ev.test_predictions.shape == (6,) and set(ev.test_predictions.tolist()) <= set(range(4))


def test_cli_train_and_evaluate_write_the_contract_and_the_homework_csv(spk_raw, spk_store, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    r = runner.invoke(main, ["train", "speakers", str(spk_store.path), str(out), "--epochs", "1", "--batch-size", "8",
                             "--crop", "40", "--d-model", "16", "--ffn", "32", "--holdout", "0.25"])
    assert r.exit_code == 0, r.output
    assert "utterances/s" in r.output and "data wait" in r.output
    csv_path, js = tmp_path / "output.csv", tmp_path / "m.json"
    r = runner.invoke(main, ["evaluate", "speakers", str(spk_store.path), str(out / "best.pt"), "--out", str(csv_path),
                             "--metrics-json", str(js), "--raw-dir", str(spk_raw)])
    assert r.exit_code == 0, r.output
    doc = json.loads(js.read_text())
    assert_evaluate_contract(doc, metric="accuracy", split="validation",
                             baselines={"logistic_regression", "nearest_mean", "random"}, ceiling={"oracle"})
    assert all(0.0 <= v <= 1.0 for v in [*doc["scores"].values(), *doc["ceiling"].values()])
    assert "oracle" in r.output and "ceiling" in r.output and r.output.count("logistic_regression") == 2  # test, val
    rows = list(csv.reader(csv_path.open()))
    root = spk_raw / "Dataset"
    test_order = [u["feature_path"] for u in json.loads((root / "testdata.json").read_text())["utterances"]]
    speakers = set(json.loads((root / "mapping.json").read_text())["speaker2id"])
    assert rows[0] == ["Id", "Category"]
    assert [r[0] for r in rows[1:]] == test_order and all(r[1] in speakers for r in rows[1:])


def test_the_oracle_knows_the_planted_speakers_and_tops_the_pooled_baselines(spk_raw, spk_store, trained):
    ev = evaluate_speakers(spk_store, trained[0] / "best.pt", raw_dir=spk_raw)
    for split in ("validation", "test"):
        row = ev.scores[split]
        assert set(row) == {"model", "logistic_regression", "nearest_mean", "random", "oracle"}
        assert row["oracle"] == 1.0  # 4 speakers, whole utterances, the planted truth
        assert row["oracle"] >= max(row["logistic_regression"], row["nearest_mean"])


def test_pooled_mels_are_each_utterances_mean_and_std(spk_store):
    fs = spk_store.frames("train")
    clips = np.array([3, 0, 7])
    got = pooled_mels(fs, clips)
    for i, c in enumerate(clips):
        x = fs.dequantize(fs.clip(int(c))).astype(np.float64)
        np.testing.assert_allclose(got[i], np.concatenate([x.mean(0), x.std(0)]), rtol=1e-9, atol=1e-9)


def test_evaluation_in_small_batches_gives_the_same_predictions(spk_raw, spk_store, trained, monkeypatch):
    whole = evaluate_speakers(spk_store, trained[0] / "best.pt", raw_dir=spk_raw)
    import models.speakers.evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "QUERY_BATCH", 3)  # 4 held-out and 6 test utterances: several batches
    monkeypatch.setattr(speaker_oracle, "_BATCH", 2)
    batched = evaluate_speakers(spk_store, trained[0] / "best.pt", raw_dir=spk_raw)
    assert batched.scores == whole.scores
    assert np.array_equal(batched.test_predictions, whole.test_predictions)


def test_the_oracle_filter_is_the_exact_gaussian_likelihood():
    # a few frames (fewer than the filter's settling steps, so it is exact): the state-space likelihood
    # against the joint Gaussian of all frames, built from the AR(1) covariances directly
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(0)
    speakers, k, bins, t = 3, 2, 6, 7
    p = {"speaker_mean": rng.normal(size=(speakers, bins)), "patterns": rng.normal(size=(speakers, k, bins)),
         "smoothness": rng.uniform(0.3, 0.9, size=(speakers, k)), "offset": rng.normal(size=(2, bins)),
         "source": rng.normal(size=(2, bins)), "source_smoothness": np.array([0.5, 0.8]),
         "noise": np.array([0.7, 1.1])}
    frames = [rng.normal(size=(t, bins)), rng.normal(size=(t - 3, bins))]
    got = speaker_oracle._log_likelihoods(frames, np.array([0, 1]), p)
    for u, x in enumerate(frames):
        n = x.shape[0]
        lag = np.abs(np.arange(n)[:, None] - np.arange(n)[None])
        for s in range(speakers):
            cov = np.kron(np.eye(n), p["noise"][u] ** 2 * np.eye(bins))
            cov += np.kron(speaker_oracle.ENERGY_VAR * (lag == 0), np.ones((bins, bins)))
            cov += np.kron(p["source_smoothness"][u] ** lag, np.outer(p["source"][u], p["source"][u]))
            for j in range(k):
                cov += np.kron(p["smoothness"][s, j] ** lag, np.outer(p["patterns"][s, j], p["patterns"][s, j]))
            centre = p["speaker_mean"][s] + p["offset"][u] + speaker_oracle.ENERGY_MEAN
            want = multivariate_normal(np.tile(centre, n), cov).logpdf(x.ravel())
            assert got[u, s] == pytest.approx(want, rel=1e-9, abs=1e-6)


def test_the_oracle_needs_the_planted_truth(spk_raw, spk_store, trained, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(spk_raw, raw, ignore=shutil.ignore_patterns("_planted"))
    r = CliRunner().invoke(main, ["evaluate", "speakers", str(spk_store.path), str(trained[0] / "best.pt"),
                                  "--out", str(tmp_path / "o.csv"), "--raw-dir", str(raw)])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "no planted truth" in r.output
    assert r.output.count("\n") == 1 and not (tmp_path / "o.csv").exists()


# --- errors: one line, nothing written -----------------------------------------------------------------

def test_errors_are_one_line(spk_store, trained, tmp_path):
    runner = CliRunner()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    csv_path = tmp_path / "o.csv"
    cases = [
        (["evaluate", "speakers", str(spk_store.path), str(junk), "--out", str(csv_path)], "not a readable"),
        (["evaluate", "speakers", str(spk_store.path), str(tmp_path / "none.pt"), "--out", str(csv_path)],
         "checkpoint not found"),
        (["train", "speakers", str(tmp_path / "nostore"), str(tmp_path / "o")], "nostore"),
        (["train", "speakers", str(spk_store.path), str(tmp_path / "o2"), "--d-model", "18", "--max-minutes", "0"],
         "multiple of heads"),
    ]
    for args, needle in cases:
        r = runner.invoke(main, args)
        assert r.exit_code == 1, r.output
        assert r.output.startswith("Error: ") and needle in r.output and "Traceback" not in r.output
        assert r.output.count("\n") == 1
    assert not csv_path.exists()


def test_a_checkpoint_of_another_data_set_is_refused(spk_raw, trained, tmp_path):
    raw = tmp_path / "raw"
    synth_speakers(raw, speakers=3, utterances_per_speaker=4, test_utterances=2, seed=9)
    ingest_speakers(raw, tmp_path / "other", progress=False)
    with pytest.raises(FstoreError, match="trained on another data set"):
        evaluate_speakers(tmp_path / "other", trained[0] / "best.pt")


def test_a_store_without_test_split_trains_and_evaluate_says_why(spk_raw, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(spk_raw, raw)
    (raw / "Dataset" / "testdata.json").unlink()
    ingest_speakers(raw, tmp_path / "s", progress=False)
    train_speakers(tmp_path / "s", tmp_path / "run", epochs=1, batch_size=8, crop=32, holdout=0.25, progress=False,
                   model=TINY)
    r = CliRunner().invoke(main, ["evaluate", "speakers", str(tmp_path / "s"), str(tmp_path / "run" / "best.pt"),
                                  "--out", str(tmp_path / "o.csv")])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "no test split" in r.output
    assert not (tmp_path / "o.csv").exists()
