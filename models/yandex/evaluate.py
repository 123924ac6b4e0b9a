"""Scores on the held-out artists and the test submission, for one or several checkpoints.

:func:`evaluate_yandex` embeds the artist-disjoint holdout of the checkpoints' training split (all
checkpoints must share it: scoring a model on artists it trained on would flatter it) and scores, with
the official nDCG@100, every model with and without re-ranking, their ensemble (mean of cosines) with
and without re-ranking, and the baselines: random rankings, and cosine similarity of mean-pooled
features (raw, as the issue defines it, and standardised per feature: the strongest simple
baseline). Given the raw folder of a ``fstore synth yandex`` store, the ``oracle`` ceiling row ranks
the same tracks by :func:`featurestore.synth.yandex.oracle_profiles` (the generator's truth applied to
the stored frames). The submission for the test split uses every checkpoint (the ensemble when there
are several), re-ranked with ``rerank``; its holdout score is the ``model`` row.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from featurestore.store import Store
from featurestore.store.errors import FstoreError
from loaders import SegmentBatches
from models.metrics.yandex_ndcg import write_submission
from models.training import parse_device, read_checkpoint

from .data import ARTIST, artist_split, feature_stats, open_store, track_ids
from .embed import embed_clips
from .model import ArtistEncoder
from .rerank import ensemble, rerank, top_k
from .train import retrieval_ndcg

__all__ = ["baseline_rankings", "evaluate_yandex", "load_model", "oracle_ranking"]

TOP = 100


def load_model(checkpoint: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[ArtistEncoder, dict]:
    """The :class:`ArtistEncoder` of a ``best.pt`` / ``checkpoint.pt`` and the checkpoint's training config."""
    path = Path(checkpoint)
    ckpt = read_checkpoint(path, device, "Yandex artist-encoder")
    config = ckpt.get("config")
    if not isinstance(config, dict) or "model" not in config or "model" not in ckpt:
        raise FstoreError(f"{path}: not a Yandex artist-encoder checkpoint (no model config)")
    try:
        model = ArtistEncoder(**config["model"])
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise FstoreError(f"{path}: checkpoint does not fit ArtistEncoder ({e})") from None
    return model.to(device).eval(), config


def _k(n: int, where: str) -> int:
    if n < 2:
        raise FstoreError(f"{where}: {n} track(s), need at least 2 to rank")
    return min(TOP, n - 1)


@torch.no_grad()
def _mean_pooled(store: Store, split: str, clips: np.ndarray | None, device: torch.device) -> torch.Tensor:
    loader = SegmentBatches(store, split, batch_size=256, mode="whole", clips=clips, device=device, threads=1)
    ids = np.sort(loader.items)
    row = {int(c): i for i, c in enumerate(ids)}
    out = torch.empty((ids.size, loader.fs.bins), dtype=torch.float32, device=device)
    for batch in loader:
        mask = batch["mask"][..., None].float()
        pooled = (batch["frames"].float() * mask).sum(1) / mask.sum(1).clamp(min=1)
        out[torch.as_tensor([row[int(c)] for c in batch["clip"].tolist()], device=device)] = pooled
    return out


@torch.no_grad()
def baseline_rankings(store: Store, clips: np.ndarray, fit_clips: np.ndarray, device: torch.device,
                      seed: int = 0) -> dict[str, torch.Tensor]:
    """(n, k) rankings of the ``clips`` of train by each baseline: ``random`` (seeded),
    ``mean_pooled`` (cosine of time-averaged features) and ``mean_pooled_standardized`` (the same after
    per-feature standardisation with the ``fit_clips`` statistics)."""
    n = len(clips)
    k = _k(n, "holdout")
    pooled = _mean_pooled(store, "train", clips, device)
    mean, std = feature_stats(store, fit_clips, seed)
    standardized = (pooled - mean.to(device)) / torch.where(std > 0, std, torch.ones_like(std)).to(device)
    g = torch.Generator(device="cpu").manual_seed(seed)
    random = torch.empty((n, k), dtype=torch.long)
    for start in range(0, n, 1024):  # random keys a block of queries at a time, never (n x n)
        stop = min(start + 1024, n)
        keys = torch.rand((stop - start, n), generator=g)
        keys[torch.arange(stop - start), torch.arange(start, stop)] = -1.0  # never the query itself
        random[start:stop] = keys.topk(k, dim=1).indices
    return {"random": random.to(device), "mean_pooled": top_k(pooled, k),
            "mean_pooled_standardized": top_k(standardized, k)}


def oracle_ranking(store: Store, clips: np.ndarray, raw_dir: str | os.PathLike[str]) -> torch.Tensor:
    """(n, k) ranking of the ``clips`` of train by the cosine of their planted-truth artist profiles."""
    from featurestore.synth.yandex import oracle_profiles

    fs = store.frames("train")
    offsets, codes = fs.offsets.astype(np.int64), fs.memmap()
    frames = (fs.dequantize(codes[offsets[c]:offsets[c + 1]]) for c in clips)  # one track at a time
    profiles = oracle_profiles(raw_dir, frames, track_ids(store, "train")[clips])
    return top_k(torch.as_tensor(profiles, dtype=torch.float32), _k(len(clips), "holdout"))


def _names(configs: list[dict]) -> list[str]:
    archs = [c["model"]["arch"] for c in configs]
    return [a if archs.count(a) == 1 else f"{a}_{i + 1}" for i, a in enumerate(archs)]


def evaluate_yandex(store: str | os.PathLike[str] | Store, checkpoints: list[str | os.PathLike[str]],
                    out: str | os.PathLike[str] | None = None, rerank_submission: bool = False,
                    threshold: float = 0.85, device: str | torch.device = "cpu", batch_size: int = 1024,
                    window: int | None = None, hop: int | None = None,
                    raw_dir: str | os.PathLike[str] | None = None) -> tuple[dict[str, float], str]:
    """``(scores, submitted)``: nDCG@100 on the held-out artists by row name (``model`` first: the
    predictor the submission uses, described by ``submitted``), and the test submission written to
    ``out`` (when given). See the module docstring for the rows. ``window`` overrides the checkpoints'
    rolling windows (0: whole tracks; None: as each was trained). ``raw_dir`` (the store's synthetic raw
    folder) adds the ``oracle`` row."""
    if not checkpoints:
        raise FstoreError("no checkpoint given")
    store = open_store(store)
    device = parse_device(device)
    loaded = [load_model(c, device) for c in checkpoints]
    splits = {(c["holdout"]["fraction"], c["holdout"]["seed"]) for _, c in loaded}
    if len(splits) > 1:
        raise FstoreError(f"checkpoints were trained with different artist holdouts {sorted(splits)}; "
                          "an ensemble must be scored on artists none of its models saw")
    fraction, seed = splits.pop()
    if fraction == 0:
        raise FstoreError(f"{checkpoints[0]}: trained without an artist holdout (holdout 0): nothing to score on")
    fit_clips, held = artist_split(store, fraction, seed)
    ids, artists = track_ids(store, "train")[held], store.frames("train").column(ARTIST)[held]
    _k(held.size, "holdout")
    names = _names([c for _, c in loaded])

    def windows(config: dict) -> tuple[int | None, int | None]:
        if window is None:
            return config["inference"]["window"], config["inference"]["hop"]
        return (window or None), hop

    def embeddings(split: str, clips: np.ndarray | None) -> list[torch.Tensor]:
        return [embed_clips(m, store, split, clips, *windows(c), device=device)[1] for m, c in loaded]

    def rank(emb: torch.Tensor, reranked: bool) -> torch.Tensor:
        kk = min(TOP, emb.shape[0] - 1)
        return rerank(emb, kk, threshold, batch_size) if reranked else top_k(emb, kk, batch_size)

    held_emb = embeddings("train", held)
    rows: dict[str, float] = {}
    predictors = [(name, e) for name, e in zip(names, held_emb, strict=True)]
    if len(loaded) > 1:
        predictors.append(("ensemble", ensemble(held_emb)))
    for name, emb in predictors:
        for reranked in (False, True):
            rows[name + ("+rerank" if reranked else "")] = retrieval_ndcg(rank(emb, reranked), ids, artists)
    submitted = ("ensemble" if len(loaded) > 1 else names[0]) + ("+rerank" if rerank_submission else "")
    for name, ranking in baseline_rankings(store, held, fit_clips, device, seed).items():
        rows[name] = retrieval_ndcg(ranking, ids, artists)
    if raw_dir is not None:
        rows["oracle"] = retrieval_ndcg(oracle_ranking(store, held, raw_dir), ids, artists)
    scores = {"model": rows.pop(submitted), **rows}

    if out is not None:
        test_ids = track_ids(store, "test")
        _k(test_ids.size, "test split")
        test_emb = embeddings("test", None)
        emb = ensemble(test_emb) if len(test_emb) > 1 else test_emb[0]
        ranking = rank(emb, rerank_submission)
        write_submission(out, test_ids.tolist(), test_ids[ranking.cpu().numpy()].tolist())
    return scores, submitted
