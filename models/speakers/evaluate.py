"""Validation accuracy beside baselines (and an oracle ceiling), and the homework's ``Id,Category``
predictions for ``testdata.json``.

* :func:`evaluate_speakers` scores a checkpoint on the held-out validation utterances it was trained
  beside (the split is rebuilt from the checkpoint's ``holdout`` and ``seed``) and, when the store's test
  split is labelled (synthetic data), on the test utterances; each beside the baselines of
  :mod:`.baselines`, fitted on the fit utterances (``logistic_regression`` on standardized mean + std
  pooled mels, ``nearest_mean``) and ``random`` (seeded uniform speaker ids), all with the same metric code
  (:func:`models.metrics.speakers.accuracy`); with ``raw_dir`` (a ``fstore synth speakers`` folder) also
  the ``oracle`` of :mod:`.oracle`, which knows the planted truth.
* :func:`write_predictions` writes one ``Id,Category`` row per test utterance in testdata.json order:
  Id = the utterance's feature_path, Category = the speaker id string of mapping.json.

Memory does not grow with the split: utterances are scored ``QUERY_BATCH`` at a time, each batch with
its own loader (whole utterances, batched by length: ``SegmentBatches(mode="whole")``) and its own
mapping of the frame file, dropped after the batch, so the pages read never pile up in this process;
and large blocks go back to the system when freed
(:func:`models.training.runtime.release_large_blocks`), so batches of
changing length do not grow the heap.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from featurestore.store import Store
from featurestore.store.atomic import atomic_write_bytes
from featurestore.store.errors import FstoreError
from loaders import SegmentBatches
from models.metrics.speakers import accuracy
from models.training import parse_device, read_checkpoint
from models.training.runtime import release_large_blocks

from .baselines import QUERY_BATCH, fit_logistic_regression, nearest_mean, pooled_batches
from .data import LABEL, TEST, TRAIN, open_speakers, speaker_labels, validation_split
from .model import SpeakerNet
from .oracle import Planted, oracle_predict
from .train import predict_clips

__all__ = ["BASELINES", "SpeakerEvaluation", "evaluate_speakers", "load_checkpoint", "nearest_mean",
           "write_predictions"]

CSV_HEADER = ("Id", "Category")
BASELINES = ("logistic_regression", "nearest_mean", "random")


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[SpeakerNet, dict]:
    """The model of a ``best.pt`` / ``checkpoint.pt`` (weights loaded, eval mode) and the checkpoint dict."""
    path = Path(path)
    ckpt = read_checkpoint(path, device, "speaker-model")
    missing = [k for k in ("config", "model", "holdout", "seed", "speakers") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise FstoreError(f"{path}: not a speaker-model checkpoint (no {', '.join(missing)})")
    try:
        model = SpeakerNet(**ckpt["config"])
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError) as e:  # unknown config keys, or weights of another shape
        raise FstoreError(f"{path}: checkpoint does not fit this SpeakerNet ({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), ckpt


@dataclass
class SpeakerEvaluation:
    """Accuracies by split (``validation``, and ``test`` when labelled) and predictor."""

    scores: dict[str, dict[str, float]]
    test_predictions: np.ndarray | None  # speaker codes in testdata.json order (None: no test split)
    validation_utterances: int


def _check_store(store: Store, model: SpeakerNet, ckpt: dict, checkpoint: Path) -> None:
    fs = store.frames(TRAIN)
    names = list(store.dictionary(LABEL).values)
    if fs.bins != model.config["n_mels"] or names != list(ckpt["speakers"]):
        raise FstoreError(f"{checkpoint}: trained on another data set ({model.config['n_mels']} mel bands, "
                          f"{len(ckpt['speakers'])} speakers), store {store.path} has {fs.bins} bands, "
                          f"{len(names)} speakers")


class _Predictors:
    """Every predictor of a split's utterances, batch by batch: the model and the fitted baselines."""

    def __init__(self, store: Store, model: SpeakerNet, fit_ids: np.ndarray, labels: np.ndarray, seed: int,
                 device: torch.device, batch_size: int, planted: Planted | None):
        self.store, self.model, self.device, self.batch_size, self.planted = store, model, device, batch_size, planted
        self.classes = model.config["n_speakers"]
        fit = np.concatenate(list(pooled_batches(store, TRAIN, fit_ids, QUERY_BATCH)))  # (fit utterances, 2 * bins)
        self.bins = fit.shape[1] // 2
        self.logistic = fit_logistic_regression(fit, labels[fit_ids], seed)
        self.fit_means, self.fit_labels = fit[:, : self.bins], labels[fit_ids]
        self.rng = np.random.default_rng([seed, 14])

    def predict(self, split: str, clips: np.ndarray, desc: str, progress: bool = True) -> dict[str, np.ndarray]:
        out: dict[str, list[np.ndarray]] = {"model": [], "logistic_regression": [], "nearest_mean": []}
        if self.planted is not None:
            out["oracle"] = []
        bar = tqdm(total=clips.size, unit="utterance", desc=desc, disable=not progress)
        for start, pooled in zip(range(0, clips.size, QUERY_BATCH), pooled_batches(self.store, split, clips, QUERY_BATCH),
                                 strict=True):
            part = clips[start : start + QUERY_BATCH]
            loader = SegmentBatches(self.store, split, batch_size=self.batch_size, mode="whole", device=self.device,
                                    threads=1, clips=part)
            order = np.argsort(part, kind="stable")  # predict_clips answers in sorted clip order
            pred = np.empty(part.size, dtype=np.int64)
            pred[order] = predict_clips(self.model, loader)
            del loader  # its mapping of the frame file goes with it
            out["model"].append(pred)
            out["logistic_regression"].append(self.logistic.predict(pooled))
            out["nearest_mean"].append(nearest_mean(self.fit_means, self.fit_labels, pooled[:, : self.bins],
                                                    self.classes))
            if self.planted is not None:
                out["oracle"].append(oracle_predict(self.store, split, part, self.planted))
            bar.update(part.size)
        bar.close()
        preds = {k: np.concatenate(v) if v else np.zeros(0, dtype=np.int64) for k, v in out.items()}
        preds["random"] = self.rng.integers(0, self.classes, clips.size)
        return preds


def evaluate_speakers(store: str | os.PathLike[str] | Store, checkpoint: str | os.PathLike[str],
                      device: str | torch.device = "cpu", batch_size: int = 64,
                      raw_dir: str | os.PathLike[str] | None = None, progress: bool = True) -> SpeakerEvaluation:
    """Score ``checkpoint``, the baselines and (with ``raw_dir``) the oracle; see the module docstring."""
    release_large_blocks()
    store = open_speakers(store)
    device = parse_device(device)
    model, ckpt = load_checkpoint(checkpoint, device)
    _check_store(store, model, ckpt, Path(checkpoint))
    fit_ids, held_ids = validation_split(store, float(ckpt["holdout"]), int(ckpt["seed"]))
    if held_ids.size == 0:
        raise FstoreError(f"{checkpoint}: trained without a held-out split (holdout 0): nothing to score on")
    labels = speaker_labels(store)
    planted = Planted(raw_dir) if raw_dir is not None else None
    predictors = _Predictors(store, model, fit_ids, labels, int(ckpt["seed"]), device, batch_size, planted)

    def row(truth: np.ndarray, preds: dict[str, np.ndarray]) -> dict[str, float]:
        return {name: accuracy(truth, pred) for name, pred in preds.items()}

    scores = {"validation": row(labels[held_ids], predictors.predict(
        TRAIN, held_ids, f"validation: {held_ids.size} utterances, model and baselines", progress))}
    test_pred = None
    if TEST in store.tables:
        tfs = store.frames(TEST)
        preds = predictors.predict(TEST, np.arange(tfs.clips), f"test: {tfs.clips} utterances, model and baselines",
                                   progress)
        test_pred = preds["model"]
        if LABEL in tfs.clip_columns:  # synthetic data ships test_labels.json
            scores["test"] = row(speaker_labels(store, TEST), preds)
    return SpeakerEvaluation(scores=scores, test_predictions=test_pred, validation_utterances=int(held_ids.size))


def write_predictions(store: str | os.PathLike[str] | Store, predictions: np.ndarray,
                      out_path: str | os.PathLike[str]) -> Path:
    """The homework's CSV (atomically): header ``Id,Category``, then feature_path,speaker id per test utterance."""
    store = open_speakers(store)
    ids = store.ids(TEST)
    names = list(store.dictionary(LABEL).values)
    if len(ids) != len(predictions):
        raise FstoreError(f"{len(predictions)} predictions for {len(ids)} test utterances")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    w.writerows((i, names[int(p)]) for i, p in zip(ids, predictions, strict=True))
    out_path = Path(out_path)
    atomic_write_bytes(out_path, buf.getvalue().encode())
    return out_path
