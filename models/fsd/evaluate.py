"""Scores and submissions of a trained FSD tagger.

* :func:`load_model` rebuilds :class:`FsdCNN` from ``best.pt`` / ``checkpoint.pt`` (config + weights +
  the class list and validation clips recorded at training time);
* :func:`evaluate_fsd` scores the model by lwlrap on the held-out curated clips (the only labelled clips
  it never trained on: the FSDKaggle2019 test split has no labels) beside the baselines (the logistic
  regression on pooled log-mel of :mod:`.baseline`, class priors, random) and, for a synthetic release
  (``raw_dir``), the ceiling of :mod:`.ceiling`; and writes the test split's submission;
* :func:`baselines`: class priors (every clip gets the training label frequencies) and seeded random scores;
* :func:`write_submission`: ``sample_submission.csv``'s format, ``fname`` then one probability column per
  class, in the class order of that file (the store's class dictionary is in that order; with
  ``sample_submission`` given, its own column and row order are used and checked against the store).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from featurestore.ingest.fsd import read_submission
from featurestore.store import Store
from featurestore.store.atomic import atomic_write
from featurestore.store.errors import FstoreError
from loaders.base import store_identity
from models.metrics import lwlrap
from models.training import parse_device, read_checkpoint
from models.training.runtime import release_large_blocks

from .baseline import LogisticBaseline, pooled_features
from .data import class_names, clip_weights, multi_hot, train_frames
from .inference import predict_clips
from .model import FsdCNN

__all__ = ["DETECTOR", "LOGISTIC", "FsdScores", "baselines", "evaluate_fsd", "load_model", "write_submission"]

LOGISTIC = "logistic_mean_std"  # the baseline rows' names in the score table and the evaluate contract
DETECTOR = "template_detector"

SUBMISSION_BLOCK = 4096  # submission rows formatted at a time


def load_model(checkpoint: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[FsdCNN, dict]:
    """(model in eval mode on ``device``, the checkpoint's record: ``config``, ``classes``,
    ``validation_clips``, ``store_train``)."""
    path = Path(checkpoint)
    ckpt = read_checkpoint(path, device, "FSD")
    keys = ("model", "config", "classes", "validation_clips", "store_train")
    if any(k not in ckpt for k in keys) or "model" not in ckpt["config"]:
        raise FstoreError(f"{path}: not an FSD-model checkpoint (it needs {', '.join(keys)})")
    try:
        model = FsdCNN(**ckpt["config"]["model"])
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError) as e:  # unknown config keys, or weights of another shape
        raise FstoreError(f"{path}: checkpoint does not fit FsdCNN ({e})") from None
    record = {k: ckpt[k] for k in keys[1:]}
    return model.to(device).eval(), record


def baselines(truth: np.ndarray, prior: np.ndarray, seed: int = 0) -> dict[str, float]:
    """lwlrap of ``class_prior`` (every clip scored by ``prior``, the training label frequencies) and of
    ``random`` (uniform scores from a generator seeded by ``seed``) on the label matrix ``truth``."""
    rng = np.random.default_rng([seed, 2019])
    return {"class_prior": lwlrap(truth, np.broadcast_to(prior, truth.shape).copy()),
            "random": lwlrap(truth, rng.random(truth.shape))}


def write_submission(path: str | os.PathLike[str], fnames: list[str], classes: list[str], scores: np.ndarray,
                     sample_submission: str | os.PathLike[str] | None = None) -> Path:
    """Write ``fname`` + one column per class (atomically). With ``sample_submission``, rows and columns
    follow that file and every one of its fnames and classes must be in ``fnames`` / ``classes``."""
    rows, cols = np.arange(len(fnames)), np.arange(len(classes))
    header = list(classes)
    if sample_submission is not None:
        sample = Path(sample_submission)
        if not sample.is_file():
            raise FstoreError(f"{sample}: file not found")
        header, sample_rows = read_submission(sample)
        where = {c: i for i, c in enumerate(classes)}
        missing = [c for c in header if c not in where]
        if missing or len(header) != len(classes):
            raise FstoreError(f"{sample}: its classes differ from the model's ({len(header)} vs {len(classes)}"
                              f"{'; not in the model: ' + ', '.join(missing[:3]) if missing else ''})")
        cols = np.array([where[c] for c in header])
        at = {f: i for i, f in enumerate(fnames)}
        absent = [(line, f) for line, f in sample_rows if f not in at]
        if absent:
            raise FstoreError(f"{sample}, line {absent[0][0]}: fname {absent[0][1]!r} is not a clip of the test split")
        rows = np.array([at[f] for _, f in sample_rows], dtype=np.int64)
        fnames = [f for _, f in sample_rows]
    def write(f: BinaryIO) -> None:
        # a block of rows at a time: the file is never held whole in memory (14 bytes a score)
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        w = csv.writer(text, lineterminator="\n")
        w.writerow(["fname", *header])
        for start in range(0, len(fnames), SUBMISSION_BLOCK):
            stop = start + SUBMISSION_BLOCK
            table = scores[rows[start:stop]][:, cols]
            w.writerows([name, *(f"{v:.6f}" for v in values)] for name, values in zip(fnames[start:stop], table, strict=True))
        text.flush()
        text.detach()  # leave ``f`` open: atomic_write fsyncs and closes it

    path = Path(path)
    atomic_write(path, write)
    return path


@dataclass
class FsdScores:
    """lwlrap on the validation clips: the model's and the baselines' (``scores``), the ceiling's (empty
    without the planted truth); ``baseline_c``: the logistic regression's chosen C."""

    scores: dict[str, float]
    ceiling: dict[str, float]
    validation_clips: int
    submission: Path | None
    baseline_c: float


def evaluate_fsd(store: str | os.PathLike[str] | Store, checkpoint: str | os.PathLike[str],
                 out: str | os.PathLike[str] | None, device: str | torch.device = "cpu",
                 sample_submission: str | os.PathLike[str] | None = None, batch_size: int = 32,
                 raw_dir: str | os.PathLike[str] | None = None, progress: bool = True) -> FsdScores:
    """Score ``checkpoint`` on its validation clips beside the baselines (and the ceiling, from
    ``raw_dir``'s planted truth when given); write the test submission to ``out`` (None, or a store
    without a test split: no submission). ``progress``: a labelled bar a pass. Memory grows with the
    splits only by a (clips, classes) float32 score matrix each (320 bytes a clip) and the baseline's
    (clips, 128) pooled features."""
    # whole-clip batches of changing length fragment the heap: default store, alternating processes,
    # 1,022 MB peak against 1,067-1,099 MB, 7.5-9.4 s against 6.3-7.0 s, the same scores (1/4 size: growth
    # with the split, exponent 0.21, from the same cause)
    release_large_blocks()
    store = store if isinstance(store, Store) else Store(store)
    device = parse_device(device)
    model, record = load_model(checkpoint, device)
    fs = train_frames(store)
    names = class_names(store, fs)
    if store_identity(store, ["train"]) != record["store_train"] or names != list(record["classes"]):
        raise FstoreError(f"{checkpoint}: trained on another store than {store.path} (its train frames or class "
                          "list differ), so its validation clips mean nothing here")
    planted = None
    if raw_dir is not None:  # a wrong folder fails here, in one line, before any scoring
        from featurestore.synth.fsd import read_planted

        planted = read_planted(raw_dir)
        if planted.classes != names:
            raise FstoreError(f"{raw_dir}: its planted classes differ from the store's class list")
    data = record["config"]["data"]
    val = np.asarray(record["validation_clips"], dtype=np.int64)
    truth = multi_hot(fs, val, len(names))
    probs = predict_clips(model, store, "train", val, data["crop"], data["hop"], device, batch_size,
                          progress=f"validation: {val.size} curated clips" if progress else None)
    held = np.zeros(fs.clips, dtype=bool)
    held[val] = True
    prior = multi_hot(fs, np.flatnonzero(~held), len(names)).mean(0)
    fit = np.setdiff1d(np.flatnonzero(fs.column("curated")), val)
    train, weights = clip_weights(fs, fit, data["noisy"], data["noisy_weight"] or 1.0)
    logistic, _ = LogisticBaseline.tuned(pooled_features(fs, train), multi_hot(fs, train, len(names)),
                                         weights[train], fs.column("curated")[train].astype(bool), data["seed"])
    scores = {"model": lwlrap(truth, probs), LOGISTIC: lwlrap(truth, logistic.predict(pooled_features(fs, val))),
              **baselines(truth, prior, seed=data["seed"])}
    ceiling = {}
    if planted is not None:
        from .ceiling import template_detector

        ceiling[DETECTOR] = lwlrap(truth, template_detector(store, fs, val, planted))
    written = None
    if out is not None and "test" in store.tables:
        test = predict_clips(model, store, "test", None, data["crop"], data["hop"], device, batch_size,
                             progress="test split: submission" if progress else None)
        written = write_submission(out, store.ids("test"), names, test, sample_submission)
    return FsdScores(scores, ceiling, int(val.size), written, logistic.c)
