"""Skip-prediction model: shapes, masking, train/resume/reject, submissions, baselines, CLI (fast)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from contract import assert_evaluate_contract

from featurestore.cli import main
from featurestore.ingest.spotify import ingest_spotify
from featurestore.schemas.mssd import BATCH_LOG_COLUMNS, MAX_HALF
from featurestore.store import Store
from featurestore.store.errors import FstoreError
from loaders import SessionBatches
from loaders.sessions import holdout_mask
from models.skip import SkipModel, baselines, predict_test, score_submission, train_skip
from models.skip.evaluate import bayes_score, ground_truth
from models.skip.logreg import fit_logreg, predict_logreg, session_design
from models.skip.train import validation_scores

H, C, F = MAX_HALF, 29, len(BATCH_LOG_COLUMNS)


def _variant(raw: Path, tmp: Path, drop: str) -> Store:
    """A copy of ``raw`` without the files matching ``drop`` (under test_set/), ingested."""
    copy = tmp / "raw"
    shutil.copytree(raw, copy)
    for p in (copy / "test_set").glob(drop):
        p.unlink()
    ingest_spotify(copy, tmp / "s.fstore", progress=False, source_checksums=False)
    return Store(tmp / "s.fstore")


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("skip_train")
    result = train_skip(store, out, epochs=1, batch_size=64, progress=False, model={"d_model": 16, "blocks": 2})
    return out, result


def _batch(b: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    length = torch.tensor([20, 19, 11, 10, 2, 14][:b])
    first = length // 2
    pos = torch.arange(H)
    return {"ctx_features": torch.randn(b, H, C, generator=g),
            "ctx_log": torch.randint(0, 2, (b, H, F), generator=g, dtype=torch.uint8),
            "ctx_mask": pos[None] < first[:, None],
            "tgt_features": torch.randn(b, H, C, generator=g),
            "tgt_mask": pos[None] < (length - first)[:, None]}


# --- model -----------------------------------------------------------------------------------

def test_forward_shapes_and_config():
    model = SkipModel(C, d_model=24, blocks=2).eval()
    x = _batch()
    logits = model.batch_logits(x)
    assert logits.shape == (6, H) and logits.dtype == torch.float32
    assert (logits[~x["tgt_mask"]] == 0).all()
    assert model.config == {"n_features": C, "half": H, "d_model": 24, "blocks": 2, "kernel_size": 3,
                            "emb_dim": 8, "highway": 2, "dropout": 0.1}
    assert SkipModel(**model.config).parameter_count == model.parameter_count


def test_padding_never_leaks():
    model = SkipModel(C, d_model=16, blocks=3).eval()
    x = _batch()
    with torch.no_grad():
        ref = model.batch_logits(x)
        y = {k: v.clone() for k, v in x.items()}
        cpad, tpad = ~x["ctx_mask"], ~x["tgt_mask"]
        y["ctx_features"][cpad] = 1e3 * torch.randn(int(cpad.sum()), C)
        y["ctx_log"][cpad] = torch.randint(0, 256, (int(cpad.sum()), F), dtype=torch.uint8)
        y["tgt_features"][tpad] = -1e3 * torch.randn(int(tpad.sum()), C)
        assert torch.equal(model.batch_logits(y), ref)
        # and the first half does matter: flip a valid skip
        z = {k: v.clone() for k, v in x.items()}
        z["ctx_log"][0, 4, BATCH_LOG_COLUMNS.index("skip_2")] ^= 1
        assert not torch.equal(model.batch_logits(z)[0], ref[0])
        assert torch.equal(model.batch_logits(z)[1:], ref[1:])  # sessions stay independent


# --- training --------------------------------------------------------------------------------

def test_train_writes_checkpoints(trained):
    out, r = trained
    assert (out / "checkpoint.pt").is_file() and r.best_checkpoint == out / "best.pt"
    assert r.epochs_completed == 1 and r.stopped == "completed" and len(r.history) == 1
    assert 0.0 <= r.best_val_aa <= 1.0 and r.best_epoch == 1
    assert r.sessions_per_s > 0 and 0.0 <= r.data_wait_share <= 1.0
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "loader", "epoch", "best_metric", "config"} <= set(ckpt)
    assert ckpt["epoch"] == 1 and ckpt["config"]["d_model"] == 16
    assert not list(out.glob(".*tmp*"))  # atomic writes leave nothing behind


def test_resume_next_epoch_and_mid_epoch(store, trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained[0], out)
    more = train_skip(store, out, epochs=2, batch_size=64, progress=False, model={"d_model": 16, "blocks": 2})
    assert more.resumed_from == {"epoch": 1, "batch": 0}
    assert more.epochs_completed == 2 and [h["epoch"] for h in more.history] == [1, 2]
    fit_sessions = more.sessions_trained

    mid = tmp_path / "mid"  # max_minutes=0: stops after the first step with a mid-epoch checkpoint
    cut = train_skip(store, mid, epochs=1, batch_size=64, progress=False, max_minutes=0,
                     model={"d_model": 16, "blocks": 2})
    assert cut.stopped == "time_limit" and cut.epochs_completed == 0 and cut.sessions_trained == 64
    assert torch.load(mid / "checkpoint.pt", weights_only=True)["loader"]["batch"] == 1
    rest = train_skip(store, mid, epochs=1, batch_size=64, progress=False, model={"d_model": 16, "blocks": 2})
    assert rest.resumed_from == {"epoch": 0, "batch": 1}
    assert rest.sessions_trained == fit_sessions - 64 and rest.epochs_completed == 1


def test_validation_scores_a_fixed_bounded_sample(store, tmp_path, monkeypatch):
    import models.skip.train as skip_train

    seen: list[np.ndarray] = []

    def spy(model, loader):
        seen.append(loader.items.copy())
        return validation_scores(model, loader)

    monkeypatch.setattr(skip_train, "validation_scores", spy)
    train_skip(store, tmp_path, epochs=2, batch_size=64, holdout=0.3, val_sample=40, progress=False,
               model={"d_model": 16, "blocks": 2})
    held = np.flatnonzero(holdout_mask(store.tables["train"]["rows"], 0.3, 0))
    assert len(seen) == 2 and seen[0].size == 40 < held.size and np.isin(seen[0], held).all()
    assert np.array_equal(seen[0], seen[1])  # the same sessions every epoch


def test_checkpoint_of_other_shape_rejected(store, trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained[0], out)
    with pytest.raises(FstoreError, match=r"d_model \(checkpoint 16, requested 32\)"):
        train_skip(store, out, epochs=2, batch_size=64, progress=False, model={"d_model": 32, "blocks": 2})


# --- evaluation ------------------------------------------------------------------------------

def test_predict_test_writes_submission(store, trained, tmp_path):
    sub = predict_test(store, trained[1].best_checkpoint, tmp_path / "sub.txt")
    lines = sub.read_text().splitlines()
    lengths = store.ragged("test").lengths()
    assert len(lines) == store.tables["test"]["rows"] == len(lengths)
    assert [len(line) for line in lines] == list(lengths - lengths // 2)
    assert set("".join(lines)) <= {"0", "1"}
    s = score_submission(store, sub)
    assert 0.0 <= s.mean_average_accuracy <= 1.0 and 0.0 <= s.first_prediction_accuracy <= 1.0


def test_bad_submissions_rejected(store, tmp_path):
    truth = ground_truth(store)
    short = tmp_path / "short.txt"
    short.write_text("".join("1" * (t.size - 1) + "\n" for t in truth))
    with pytest.raises(FstoreError, match="invalid submission.*expected"):
        score_submission(store, short)
    bad = tmp_path / "bad.txt"
    bad.write_text("".join("2" * t.size + "\n" for t in truth))
    with pytest.raises(FstoreError, match="invalid character '2'"):
        score_submission(store, bad)


def test_baselines_and_perfect_submission(store, tmp_path):
    b = baselines(store)
    assert set(b) == {"random", "all_skip", "copy_last", "logreg"}
    assert b["copy_last"].mean_average_accuracy > b["random"].mean_average_accuracy
    # the planted signal is partly linear per row: the regression beats copying the last skip
    assert b["logreg"].mean_average_accuracy > b["copy_last"].mean_average_accuracy
    assert baselines(store)["random"].mean_average_accuracy == b["random"].mean_average_accuracy  # seeded
    perfect = tmp_path / "perfect.txt"
    perfect.write_text("".join("".join(map(str, t)) + "\n" for t in ground_truth(store)))
    assert score_submission(store, perfect).mean_average_accuracy == 1.0


def test_logreg_design_reads_each_session_first_half_only(store):
    batch = next(iter(SessionBatches(store, "test", batch_size=32, order="sequential", threads=1)))
    x, sessions, positions = session_design(batch)
    assert x.shape[0] == int(batch["tgt_mask"].sum()) and np.isfinite(x).all()
    assert np.array_equal(np.unique(sessions), np.sort(batch["session"].numpy()))
    changed = {k: v.clone() for k, v in batch.items()}
    changed["ctx_log"][0, 0, BATCH_LOG_COLUMNS.index("skip_2")] ^= 1  # one first-half skip of session 0
    y, _, _ = session_design(changed)
    differs = (x != y).any(1)
    assert differs.any() and (sessions[differs] == int(batch["session"][0])).all()


def test_logreg_predictions_fit_the_test_split(store):
    preds = predict_logreg(fit_logreg(store, max_sessions=200), store)
    assert [p.size for p in preds] == [t.size for t in ground_truth(store)]
    assert all(set(np.unique(p)) <= {0, 1} for p in preds)


def test_bayes_score_reads_the_planted_truth(raw, store, tmp_path):
    bayes = bayes_score(raw, store)
    assert bayes.mean_average_accuracy > baselines(store, logreg=False)["copy_last"].mean_average_accuracy
    with pytest.raises(FstoreError, match="no planted truth"):
        bayes_score(tmp_path, store)
    other = tmp_path / "other"
    from featurestore.synth.spotify import synth_spotify

    synth_spotify(other, sessions=100, tracks=50, seed=9, train_files=1)
    with pytest.raises(FstoreError, match="planted truth of another release"):
        bayes_score(other, store)


def test_store_without_test_split_or_ground_truth(raw, trained, tmp_path):
    no_test = _variant(raw, tmp_path / "a", "*")
    with pytest.raises(FstoreError, match="no test split"):
        baselines(no_test)
    with pytest.raises(FstoreError, match="no test split"):
        predict_test(no_test, trained[1].best_checkpoint, tmp_path / "x.txt")
    no_truth = _variant(raw, tmp_path / "b", "ground_truth_*")
    with pytest.raises(FstoreError, match="store has no test ground truth"):
        baselines(no_truth)
    sub = predict_test(no_truth, trained[1].best_checkpoint, tmp_path / "y.txt")  # predicting still works
    with pytest.raises(FstoreError, match="store has no test ground truth"):
        score_submission(no_truth, sub)
    metrics = tmp_path / "m.json"  # asked for scores it cannot compute: one line, exit 1, no file
    r = CliRunner().invoke(main, ["evaluate", "skip", str(no_truth.path), str(trained[1].best_checkpoint),
                                  "--out", str(tmp_path / "z.txt"), "--metrics-json", str(metrics)])
    assert r.exit_code == 1 and r.output.endswith(f"no test ground truth; submission not scored, {metrics} not written\n")
    assert not metrics.exists()


# --- CLI -------------------------------------------------------------------------------------

def test_cli_train_and_evaluate(raw, store, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    r = runner.invoke(main, ["train", "skip", str(store.path), str(out), "--epochs", "1", "--batch-size", "128"])
    assert r.exit_code == 0, r.output
    assert "sessions/s" in r.output
    assert (out / "history.csv").is_file() and list(out.glob("events.out.tfevents.*"))
    r = runner.invoke(main, ["train", "skip", str(store.path), str(out), "--epochs", "1", "--batch-size", "128"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"already trained: 1/1 epochs completed; best model {out / 'best.pt'} (epoch 1)")
    sub, metrics = tmp_path / "sub.txt", tmp_path / "metrics.json"
    r = runner.invoke(main, ["evaluate", "skip", str(store.path), str(out / "best.pt"), "--out", str(sub),
                             "--metrics-json", str(metrics), "--raw-dir", str(raw)])
    assert r.exit_code == 0, r.output
    for name in ("model", "random", "all_skip", "copy_last", "logreg", "bayes"):
        assert name in r.output
    doc = json.loads(metrics.read_text())
    assert_evaluate_contract(doc, metric="mean_average_accuracy", split="test",
                             baselines={"random", "all_skip", "copy_last", "logreg"}, ceiling={"bayes"})
    assert doc["ceiling"]["bayes"] == bayes_score(raw, store).mean_average_accuracy
    assert doc["scores"]["model"] == score_submission(store, sub).mean_average_accuracy
    assert doc["scores"]["copy_last"] == baselines(store)["copy_last"].mean_average_accuracy
    assert len(sub.read_text().splitlines()) == store.tables["test"]["rows"]
    r = runner.invoke(main, ["evaluate", "skip", str(store.path), str(tmp_path / "missing.pt")])
    assert r.exit_code == 1 and "checkpoint not found" in r.output
    r = runner.invoke(main, ["evaluate", "skip", str(store.path), str(out / "best.pt"), "--out", str(sub),
                             "--raw-dir", str(tmp_path)])  # not a synthetic release: one line, exit 1
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "no planted truth" in r.output


def test_evaluate_takes_a_training_folder(store, trained, tmp_path):
    runner = CliRunner()
    out, result = trained
    sub = tmp_path / "sub.txt"
    r = runner.invoke(main, ["evaluate", "skip", str(store.path), str(out), "--out", str(sub)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == f"using {out / 'best.pt'}"
    assert sub.read_text() == predict_test(store, result.best_checkpoint, tmp_path / "ref.txt").read_text()

    latest = tmp_path / "latest"  # a run without best.pt (e.g. from before any validation): its latest weights
    latest.mkdir()
    shutil.copy(out / "checkpoint.pt", latest)
    r = runner.invoke(main, ["evaluate", "skip", str(store.path), str(latest), "--out", str(sub)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == f"using {latest / 'checkpoint.pt'} (no best.pt: the latest weights)"

    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(main, ["evaluate", "skip", str(store.path), str(empty), "--out", str(sub)])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "Traceback" not in r.output
    assert r.output.startswith(f"Error: {empty}: folder has no best.pt or checkpoint.pt")


def test_train_without_holdout_uses_the_whole_split(store, tmp_path):
    result = train_skip(store, tmp_path / "nohold", epochs=1, batch_size=64, holdout=0.0, progress=False,
                        model={"d_model": 16, "blocks": 2})
    assert result.sessions_trained == store.tables["train"]["rows"]
    # no validation split: the latest epoch is the best model (best.pt exists for evaluation), AA unknown
    assert result.best_epoch == 1 and math.isnan(result.best_val_aa)
    assert (tmp_path / "nohold" / "best.pt").is_file()
