"""Test-split predictions, submission scoring and reference baselines for skip prediction.

* :func:`predict_test` writes a submission in the challenge's shape: one line of ``0``/``1`` per
  test session (second-half length), in store order.
* :func:`score_submission` scores a submission against the test split's ground truth with the
  official metric (:func:`models.metrics.evaluate_skip`).
* :func:`baselines` scores random (seeded), all-skip, copy-the-last-first-half-skip_2 and the
  logistic regression of :mod:`models.skip.logreg` (the strongest simple baseline) with the same
  metric code.
* :func:`bayes_score` scores the planted Bayes-optimal predictor of a synthetic release (the ceiling),
  from the probabilities ``fstore synth spotify`` writes to ``_planted/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import torch

from featurestore.schemas.mssd import TARGET, first_half_length
from featurestore.store import Store
from featurestore.store.errors import FstoreError
from featurestore.synth.planted import planted_file
from loaders import SessionBatches
from models.metrics import SkipScore, evaluate_skip, read_skip_submission, write_skip_submission
from models.training import autocast, parse_device, read_checkpoint

from .logreg import fit_logreg, predict_logreg
from .model import SkipModel

PLANTED_TEST_PROBABILITY = "_planted/test_skip_2_probability.parquet"  # written by featurestore.synth.spotify

__all__ = ["baselines", "bayes_score", "ground_truth", "load_model", "planted_path", "predict_loader", "predict_test",
           "score_submission"]


def _open(store: str | os.PathLike[str] | Store) -> Store:
    return store if isinstance(store, Store) else Store(store)


@torch.no_grad()
def predict_loader(model: torch.nn.Module, loader: SessionBatches) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """0/1 predictions (logit > 0) of every session of ``loader``, indexed by position in the split.

    Returns ``(predictions, truth)``: lists over the loader's sessions in storage order (sessions the
    loader does not visit are absent), ``truth`` None for an unlabelled split.
    """
    was_training = model.training
    model.eval()
    order = np.sort(loader.items)
    where = {int(s): i for i, s in enumerate(order)}
    preds: list[np.ndarray | None] = [None] * order.size
    truth: list[np.ndarray | None] | None = [None] * order.size if loader.labelled else None
    try:
        for batch in loader:
            with autocast(loader.device):
                logits = model.batch_logits(batch)
            p = (logits > 0).to(torch.int8).cpu().numpy()
            n = batch["tgt_mask"].sum(1).cpu().numpy()
            sessions = batch["session"].cpu().numpy()
            t = batch["tgt_skip"].to(torch.int8).cpu().numpy() if truth is not None else None
            for j, s in enumerate(sessions):
                i = where[int(s)]
                preds[i] = p[j, : n[j]]
                if truth is not None:
                    truth[i] = t[j, : n[j]]
    finally:
        model.train(was_training)
    return preds, truth  # type: ignore[return-value]


def load_model(checkpoint: str | os.PathLike[str], device: str | torch.device = "cpu") -> SkipModel:
    """A :class:`SkipModel` built from a checkpoint's ``config`` with its weights loaded."""
    path = Path(checkpoint)
    ckpt = read_checkpoint(path, device, "skip-model")
    if "config" not in ckpt or "model" not in ckpt:
        raise FstoreError(f"{path}: not a skip-model checkpoint (no 'config' / 'model')")
    try:
        model = SkipModel(**ckpt["config"])
        model.load_state_dict(ckpt["model"])
    except (TypeError, RuntimeError) as e:  # unknown config keys, or weights of another shape
        raise FstoreError(f"{path}: checkpoint does not fit this SkipModel ({e})") from None
    return model.to(device)


def _test_meta(store: Store) -> dict:
    meta = store.tables.get("test")
    if meta is None or meta.get("kind") != "ragged":
        raise FstoreError(f"{store.path}: no test split")
    return meta


def predict_test(store: str | os.PathLike[str] | Store, checkpoint: str | os.PathLike[str],
                 out_path: str | os.PathLike[str], device: str | torch.device = "cpu",
                 batch_size: int = 1024) -> Path:
    """Write the submission of ``checkpoint``'s model for the test split to ``out_path`` (atomically)."""
    store = _open(store)
    _test_meta(store)
    device = parse_device(device)
    model = load_model(checkpoint, device)
    loader = SessionBatches(store, "test", batch_size=batch_size, order="sequential", device=device,
                            half=model.config["half"])
    if len(loader.feature_columns) != model.config["n_features"]:
        raise FstoreError(f"{checkpoint}: model expects {model.config['n_features']} track features, "
                          f"store {store.path} has {len(loader.feature_columns)}")
    preds, _ = predict_loader(model, loader)
    out_path = Path(out_path)
    write_skip_submission(out_path, preds)
    return out_path


def ground_truth(store: str | os.PathLike[str] | Store) -> list[np.ndarray]:
    """Second-half skip_2 of every test session, in store order (needs ``second_half_labels``)."""
    store = _open(store)
    if not _test_meta(store).get("second_half_labels"):
        raise FstoreError(f"{store.path}: store has no test ground truth (the test split was ingested "
                          "without ground_truth_* files)")
    r = store.ragged("test")
    offsets = np.asarray(r.offsets, dtype=np.int64)
    skip = r.read(TARGET).astype(np.int8)
    lengths = np.diff(offsets)
    starts = offsets[:-1] + first_half_length(lengths)
    return [skip[a:b] for a, b in zip(starts, offsets[1:], strict=True)]


def score_submission(store: str | os.PathLike[str] | Store, submission_path: str | os.PathLike[str]) -> SkipScore:
    """Mean average accuracy and first-prediction accuracy of a submission file on the test split."""
    truth = ground_truth(store)
    try:
        preds = read_skip_submission(submission_path, [t.size for t in truth])
    except ValueError as e:
        raise FstoreError(f"invalid submission: {e}") from None
    return evaluate_skip(truth, preds)


def baselines(store: str | os.PathLike[str] | Store, seed: int = 0, logreg: bool = True) -> dict[str, SkipScore]:
    """Scores of ``random`` (seeded coin flips), ``all_skip``, ``copy_last`` (the last first-half
    skip_2, repeated) and, with ``logreg``, ``logreg`` (fitted on a sample of the train split) on the
    test split."""
    store = _open(store)
    truth = ground_truth(store)
    r = store.ragged("test")
    offsets = np.asarray(r.offsets, dtype=np.int64)
    skip = r.read(TARGET).astype(np.int8)
    lengths = np.diff(offsets)
    first = first_half_length(lengths)
    last = np.where(first > 0, skip[offsets[:-1] + np.maximum(first - 1, 0)], 1)  # no first half: guess skip
    rng = np.random.default_rng([seed, 2019])
    return {
        "random": evaluate_skip(truth, [rng.integers(0, 2, t.size, dtype=np.int8) for t in truth]),
        "all_skip": evaluate_skip(truth, [np.ones(t.size, dtype=np.int8) for t in truth]),
        "copy_last": evaluate_skip(truth, [np.full(t.size, v, dtype=np.int8) for t, v in zip(truth, last, strict=True)]),
        **({"logreg": evaluate_skip(truth, predict_logreg(fit_logreg(store, seed=seed), store))} if logreg else {}),
    }


def planted_path(raw_dir: str | os.PathLike[str]) -> Path:
    """The planted probabilities of a synthetic release's raw folder; one-line error when there are none."""
    return planted_file(raw_dir, PLANTED_TEST_PROBABILITY, "spotify")


def bayes_score(raw_dir: str | os.PathLike[str], store: str | os.PathLike[str] | Store) -> SkipScore:
    """Score of the planted Bayes-optimal predictor (``p > 0.5``) on the test split of a synthetic release
    whose raw folder is ``raw_dir`` (the probabilities ``fstore synth spotify`` left in its ``_planted/``)."""
    store = _open(store)
    path = planted_path(raw_dir)
    by_session = (pl.read_parquet(path).sort("session_id", "session_position")
                  .group_by("session_id", maintain_order=True).agg(pl.col("p_skip_2")))
    pred = {sid: (np.asarray(ps) > 0.5).astype(np.int8) for sid, ps in by_session.iter_rows()}
    truth = ground_truth(store)
    ids = store.ids("test")
    missing = [s for s in ids if s not in pred]
    if missing or len(pred) != len(ids):
        raise FstoreError(f"{path}: planted truth of another release ({len(missing)} of the store's "
                          f"{len(ids)} test sessions missing, {len(pred)} in the file)")
    try:
        return evaluate_skip(truth, [pred[s] for s in ids])
    except ValueError as e:  # a session of another length: the planted file belongs to other data
        raise FstoreError(f"{path}: planted truth of another release ({e})") from None
