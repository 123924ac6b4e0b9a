"""``evaluate_melon``: every Melon predictor scored side by side on one split, and ``results.json``.

Rows: most popular, item co-occurrence, the autoencoder (CHECKPOINT), the autoencoder blended with
co-occurrence, the title model (next to it in ``title/`` unless given), the ensemble of the autoencoder
and the title model (the seed's rule, :func:`~models.melon.recommend.title_ensemble`), the same rule over
the autoencoder+co-occurrence blend, and, for a synthetic store whose raw folder is given, the planted-truth oracle. The submitted file is
``submit``'s (default: the title rule over the autoencoder+co-occurrence blend, the best row on the
synthetic store; that blend without a title model); it is re-read from disk and scored again, and
the two scores must agree.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from featurestore.store import Store
from featurestore.store.errors import FstoreError

from .baselines import ItemCooccurrence, MostPopular
from .data import DAEScorer
from .recommend import BlendScorer, read_results, recommend, score_split, title_ensemble, write_results
from .title import TITLE_MODEL, TitleScorer
from .train import TITLE_DIR

__all__ = ["evaluate_melon"]

# Tuned on the default synthetic store's val split (a 3 x 2 x 3 grid; test untouched): the autoencoder's
# weight against co-occurrence for songs and for tags, and the title model's weight for playlists the
# seed's few-items rule leaves to the main scorer. Val 0.5026 -> 0.5047; test 0.4979 -> 0.4987.
BLEND_AUTOENCODER = (0.6, 0.3)
TITLE_BASE = 0.1


def evaluate_melon(store: str | Path | Store, checkpoint: str | Path, out: str | Path, *, split: str = "val",
                   title_model: str | Path | None = None, raw_dir: str | Path | None = None,
                   submit: str | None = None, device: str | torch.device = "cpu",
                   progress: bool = True) -> tuple[dict[str, dict], str]:
    """Scores per predictor (``{"score", "song_ndcg", "tag_ndcg"}``) and the name of the one written to
    ``out``. Without answers for ``split`` the file is written and no score is given."""
    store = store if isinstance(store, Store) else Store(store)
    checkpoint = Path(checkpoint)
    dae = DAEScorer.load(checkpoint, store, str(device))
    title_path = Path(title_model) if title_model else checkpoint.parent / TITLE_DIR / TITLE_MODEL
    if title_model and not title_path.is_file():
        raise FstoreError(f"{title_path}: title model not found")
    title = TitleScorer.load(title_path, store, str(device)) if title_path.is_file() else None
    cooc = ItemCooccurrence(store, device=device)
    scorers = {"most_popular": MostPopular(store), "cooccurrence": cooc, "autoencoder": dae}
    # the autoencoder and co-occurrence on normalised scores (both see the whole question)
    both = BlendScorer([dae, cooc], [BLEND_AUTOENCODER, tuple(1 - w for w in BLEND_AUTOENCODER)])
    scorers["autoencoder+cooccurrence"] = both
    if title is not None:
        scorers["title"] = title
        scorers["ensemble"] = title_ensemble(store, dae, title)
        scorers["ensemble+cooccurrence"] = title_ensemble(store, both, title, base=TITLE_BASE)
    submit = submit or ("ensemble+cooccurrence" if title is not None else "autoencoder+cooccurrence")
    if submit not in scorers:
        raise FstoreError(f"cannot submit {submit!r}: the predictors are {', '.join(scorers)}"
                          + ("" if title is not None else f" (no title model at {title_path})"))
    submitted = submit
    scored = f"{split}_answer_songs" in store.tables
    scores: dict[str, dict] = {}
    for name, scorer in scorers.items():
        recs = recommend(store, split, scorer, device=device, progress=progress)
        if name == submitted:
            write_results(out, recs)
        if scored:
            scores[name] = _row(score_split(store, split, recs))
    if raw_dir is not None and scored:
        from featurestore.synth.melon import oracle_results

        scores["oracle"] = _row(score_split(store, split, oracle_results(raw_dir, split)))
    if scored:  # the file on disk scores what was scored in memory
        again = _row(score_split(store, split, read_results(out)))
        if not all(math.isclose(again[k], scores[submitted][k], rel_tol=0, abs_tol=1e-12) for k in again):
            raise FstoreError(f"{out}: scores {again} on re-reading, {scores[submitted]} in memory")
    return scores, submitted


def _row(result: dict) -> dict:
    return {"score": result["score"], "song_ndcg": result["song_ndcg"], "tag_ndcg": result["tag_ndcg"]}
