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

Memory at the real sizes: what grows with a split is its (n, d) embeddings (and n x 512 pooled features
for the baselines) and (n, 100) int64 rankings, a few KB a track. Similarities are computed a block of
queries at a time, the block sized so it never exceeds :data:`SIMILARITY_BLOCK_BYTES` whatever n; the
nDCG is computed from the rankings a block at a time (:func:`holdout_ndcg`, equal bit for bit to the
official scorer, which needs a dict of Python lists: ~50x the bytes of the rankings) and the submission
is written a block of lines at a time. Each pass shows a labelled progress bar.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from tqdm import tqdm

from featurestore.store import Store
from featurestore.store.atomic import atomic_write
from featurestore.store.errors import FstoreError
from loaders import SegmentBatches
from models.training import parse_device, read_checkpoint

from .data import ARTIST, artist_split, feature_stats, open_store, track_ids
from .embed import embed_clips
from .model import ArtistEncoder
from .rerank import ensemble, rerank, top_k

__all__ = ["baseline_rankings", "evaluate_yandex", "holdout_ndcg", "load_model", "oracle_ranking",
           "query_batch", "write_ranked_submission"]

TOP = 100
SIMILARITY_BLOCK_BYTES = 64 << 20  # a (queries x n) float32 block of similarities, at most
ROW_BLOCK = 4096  # queries scored, or submission lines written, at a time


def query_batch(n: int, most: int = 1024) -> int:
    """Queries a block against ``n`` gallery rows, so the float32 block stays under
    :data:`SIMILARITY_BLOCK_BYTES` (at most ``most``; at least 1)."""
    return max(1, min(most, SIMILARITY_BLOCK_BYTES // (4 * max(n, 1))))


def holdout_ndcg(ranking: torch.Tensor, artists: np.ndarray, top: int = TOP, block: int = ROW_BLOCK) -> float:
    """Mean nDCG@``top`` of (n, k) rankings (row indices, never the query's own) of tracks by ``artists``,
    equal bit for bit to :func:`models.metrics.yandex_ndcg.ndcg_at_100` of the same rankings (the same
    sums in the same order), computed a block of queries at a time from the arrays."""
    n, k = ranking.shape
    discounts = 1.0 / np.log2(np.arange(1, top + 1, dtype=np.float64) + 1)
    _, artist_row, tracks = np.unique(artists, return_inverse=True, return_counts=True)
    ideal = np.concatenate(([0.0], np.cumsum(discounts)))[np.minimum(top, tracks[artist_row] - 1)]
    if not (ideal > 0).any():
        raise FstoreError("no scorable queries (every artist has a single track)")
    values = np.zeros(n)
    for start in tqdm(range(0, n, block), unit="block", desc=f"nDCG@{top} of {n} queries", leave=False):
        rows = ranking[start : start + block].cpu().numpy()[:, :top]
        queries = np.arange(start, start + rows.shape[0])
        if (rows == queries[:, None]).any():
            raise ValueError("a ranking holds its own query")
        relevant = artist_row[rows] == artist_row[queries, None]
        dcg = np.zeros(rows.shape[0])
        for pos in range(rows.shape[1]):  # position by position, as the reference adds them
            dcg += np.where(relevant[:, pos], discounts[pos], 0.0)
        scorable = ideal[queries] > 0
        values[queries[scorable]] = dcg[scorable] / ideal[queries[scorable]]
    return float(np.mean(values[ideal > 0]))


def write_ranked_submission(path: str | os.PathLike[str], ids: np.ndarray, ranking: torch.Tensor,
                            block: int = ROW_BLOCK) -> None:
    """The Yandex Cup submission of (n, k) rankings (row indices into ``ids``), ``query<TAB>id1 id2 ...``,
    written atomically a block of lines at a time (the same bytes as
    :func:`models.metrics.yandex_ndcg.write_submission`)."""
    def write(f: BinaryIO) -> None:
        for start in range(0, ids.size, block):
            neighbours = ids[ranking[start : start + block].cpu().numpy()].tolist()
            queries = ids[start : start + block].tolist()
            f.write("".join(f"{q}\t{' '.join(map(str, row))}\n" for q, row in zip(queries, neighbours, strict=True))
                    .encode())

    atomic_write(path, write)


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
    with tqdm(total=ids.size, unit="clip", desc="baselines: mean-pooled features") as bar:
        for batch in loader:
            mask = batch["mask"][..., None].float()
            pooled = (batch["frames"].float() * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[torch.as_tensor([row[int(c)] for c in batch["clip"].tolist()], device=device)] = pooled
            bar.update(len(pooled))
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
    step = query_batch(n)
    for start in tqdm(range(0, n, step), unit="block", desc="baselines: random rankings"):
        stop = min(start + step, n)  # random keys a block of queries at a time, never (n x n)
        keys = torch.rand((stop - start, n), generator=g)
        keys[torch.arange(stop - start), torch.arange(start, stop)] = -1.0  # never the query itself
        random[start:stop] = keys.topk(k, dim=1).indices
    return {"random": random.to(device),
            "mean_pooled": top_k(pooled, k, query_batch(n), progress="baselines: mean_pooled top-k"),
            "mean_pooled_standardized": top_k(standardized, k, query_batch(n),
                                              progress="baselines: mean_pooled_standardized top-k")}


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
    if raw_dir is not None:  # a folder without planted truth fails here, in one line, before any scoring
        from featurestore.synth.yandex import planted_path

        planted_path(raw_dir)
    fit_clips, held = artist_split(store, fraction, seed)
    artists = store.frames("train").column(ARTIST)[held]
    _k(held.size, "holdout")
    names = _names([c for _, c in loaded])

    def windows(config: dict) -> tuple[int | None, int | None]:
        if window is None:
            return config["inference"]["window"], config["inference"]["hop"]
        return (window or None), hop

    def embeddings(split: str, clips: np.ndarray | None) -> list[torch.Tensor]:
        return [embed_clips(m, store, split, clips, *windows(c), device=device,
                            progress=f"{split if clips is None else 'holdout'}: embed with {name}")[1]
                for name, (m, c) in zip(names, loaded, strict=True)]

    def rank(emb: torch.Tensor, reranked: bool, label: str) -> torch.Tensor:
        n = emb.shape[0]
        kk, step = min(TOP, n - 1), query_batch(n, batch_size)
        if reranked:
            return rerank(emb, kk, threshold, step, progress=f"{label}: re-ranked top-{kk}")
        return top_k(emb, kk, step, progress=f"{label}: top-{kk}")

    held_emb = embeddings("train", held)
    rows: dict[str, float] = {}
    predictors = [(name, e) for name, e in zip(names, held_emb, strict=True)]
    if len(loaded) > 1:
        predictors.append(("ensemble", ensemble(held_emb)))
    for name, emb in predictors:
        for reranked in (False, True):
            rows[name + ("+rerank" if reranked else "")] = holdout_ndcg(rank(emb, reranked, f"holdout {name}"),
                                                                        artists)
    submitted = ("ensemble" if len(loaded) > 1 else names[0]) + ("+rerank" if rerank_submission else "")
    for name, ranking in baseline_rankings(store, held, fit_clips, device, seed).items():
        rows[name] = holdout_ndcg(ranking, artists)
    if raw_dir is not None:
        rows["oracle"] = holdout_ndcg(oracle_ranking(store, held, raw_dir), artists)
    scores = {"model": rows.pop(submitted), **rows}

    if out is not None:
        test_ids = track_ids(store, "test")
        _k(test_ids.size, "test split")
        test_emb = embeddings("test", None)
        emb = ensemble(test_emb) if len(test_emb) > 1 else test_emb[0]
        write_ranked_submission(out, test_ids, rank(emb, rerank_submission, "test"))
    return scores, submitted
