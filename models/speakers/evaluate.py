"""Validation accuracy beside baselines, and the homework's ``Id,Category`` predictions for ``testdata.json``.

* :func:`evaluate_speakers` scores a checkpoint on the held-out validation utterances it was trained
  beside (the split is rebuilt from the checkpoint's ``holdout`` and ``seed``) and, when the store's test
  split is labelled (synthetic data), on the test utterances; each beside two baselines with the same
  metric code (:func:`models.metrics.speakers.accuracy`): ``nearest_mean`` (nearest class mean, in
  Euclidean distance, of the mean-pooled mels of the fit utterances) and ``random`` (seeded uniform
  speaker ids).
* :func:`write_predictions` writes one ``Id,Category`` row per test utterance in testdata.json order:
  Id = the utterance's feature_path, Category = the speaker id string of mapping.json.
Inference runs on whole utterances, batched by length (``SegmentBatches(mode="whole")``).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from featurestore.store import Store
from featurestore.store.atomic import atomic_write_bytes
from featurestore.store.errors import FstoreError
from loaders import SegmentBatches
from models.metrics.speakers import accuracy
from models.training import parse_device, read_checkpoint

from .data import LABEL, TEST, TRAIN, clip_stats, open_speakers, speaker_labels, validation_split
from .model import SpeakerNet
from .train import predict_clips

__all__ = ["SpeakerEvaluation", "evaluate_speakers", "load_checkpoint", "nearest_mean", "write_predictions"]

CSV_HEADER = ("Id", "Category")


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


def nearest_mean(train_means: np.ndarray, train_labels: np.ndarray, query_means: np.ndarray,
                 classes: int) -> np.ndarray:
    """Class of the nearest (Euclidean) class centroid of the mean-pooled mels; a class without fit
    utterances is never predicted."""
    centroids = np.full((classes, train_means.shape[1]), np.inf)
    present = np.unique(train_labels)
    for c in present:
        centroids[c] = train_means[train_labels == c].mean(0)
    d = ((query_means[:, None, :] - centroids[None, present, :]) ** 2).sum(-1)
    return present[d.argmin(1)]


@dataclass
class SpeakerEvaluation:
    """Accuracies by split (``validation``, and ``test`` when labelled) and predictor."""

    scores: dict[str, dict[str, float]]
    test_predictions: np.ndarray | None  # speaker codes in testdata.json order (None: no test split)
    validation_utterances: int


def _predict(model: SpeakerNet, store: Store, split: str, clips: np.ndarray, device: torch.device,
             batch_size: int) -> np.ndarray:
    loader = SegmentBatches(store, split, batch_size=batch_size, mode="whole", device=device, threads=1, clips=clips)
    return predict_clips(model, loader)


def _check_store(store: Store, model: SpeakerNet, ckpt: dict, checkpoint: Path) -> None:
    fs = store.frames(TRAIN)
    names = list(store.dictionary(LABEL).values)
    if fs.bins != model.config["n_mels"] or names != list(ckpt["speakers"]):
        raise FstoreError(f"{checkpoint}: trained on another data set ({model.config['n_mels']} mel bands, "
                          f"{len(ckpt['speakers'])} speakers), store {store.path} has {fs.bins} bands, "
                          f"{len(names)} speakers")


def evaluate_speakers(store: str | os.PathLike[str] | Store, checkpoint: str | os.PathLike[str],
                      device: str | torch.device = "cpu", batch_size: int = 64) -> SpeakerEvaluation:
    """Score ``checkpoint`` and the baselines; see the module docstring."""
    store = open_speakers(store)
    device = parse_device(device)
    model, ckpt = load_checkpoint(checkpoint, device)
    _check_store(store, model, ckpt, Path(checkpoint))
    fit_ids, held_ids = validation_split(store, float(ckpt["holdout"]), int(ckpt["seed"]))
    if held_ids.size == 0:
        raise FstoreError(f"{checkpoint}: trained without a held-out split (holdout 0): nothing to score on")
    labels = speaker_labels(store)
    classes = model.config["n_speakers"]
    fs = store.frames(TRAIN)
    fit_means, _, _ = clip_stats(fs, fit_ids)
    rng = np.random.default_rng([int(ckpt["seed"]), 14])

    def row(truth: np.ndarray, pred: np.ndarray, means: np.ndarray) -> dict[str, float]:
        return {"model": accuracy(truth, pred),
                "nearest_mean": accuracy(truth, nearest_mean(fit_means, labels[fit_ids], means, classes)),
                "random": accuracy(truth, rng.integers(0, classes, truth.size))}

    held_pred = _predict(model, store, TRAIN, held_ids, device, batch_size)
    scores = {"validation": row(labels[held_ids], held_pred, clip_stats(fs, held_ids)[0])}
    test_pred = None
    if TEST in store.tables:
        tfs = store.frames(TEST)
        all_test = np.arange(tfs.clips)
        test_pred = _predict(model, store, TEST, all_test, device, batch_size)
        if LABEL in tfs.clip_columns:  # synthetic data ships test_labels.json
            scores["test"] = row(speaker_labels(store, TEST), test_pred, clip_stats(tfs, all_test)[0])
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
