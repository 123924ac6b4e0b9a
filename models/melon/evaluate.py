"""``evaluate_melon``: every Melon predictor scored side by side on one split, and ``results.json``.

Rows: most popular, item co-occurrence, the autoencoder (CHECKPOINT), the autoencoder blended with
co-occurrence, the title model (next to it in ``title/`` unless given), the ensemble of the autoencoder
and the title model (the seed's rule, :func:`~models.melon.recommend.title_ensemble`), the same rule over
the autoencoder+co-occurrence blend, and, for a synthetic store whose raw folder is given, the planted-truth oracle. The submitted file is
``submit``'s (default: the title rule over the autoencoder+co-occurrence blend, the best row on the
synthetic store; that blend without a title model); it is re-read from disk and scored again, and
the two scores must agree.

**A blend never scores below its best part on validation.** Each blend's weights are chosen on the val
split (when it has answers; on a fixed sample of ``choice_sample`` of its playlists when it has more),
songs by song nDCG and tags by tag nDCG (each side's picks depend on that side's scores alone): the
best of the weights of :data:`BLEND_GRID` and each part alone (the other part's weight 0). So an
autoencoder that has barely trained cannot drag the ensemble below co-occurrence. For
``split="test"`` the val playlists are scored first to choose, and their table is printed.

All predictors of a split come from one :class:`~models.melon.fused.FusedPass` (each model run once per
batch, co-occurrence and every blend per playlist in a numba kernel); their recommendations are those of
:func:`~models.melon.recommend.recommend` with the equivalent dense scorers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from featurestore.store import Store
from featurestore.store.errors import FstoreError
from loaders.splits import VAL_SAMPLE, bounded_sample

from .baselines import ItemCooccurrence
from .data import DAEScorer
from .fused import Blend, FusedPass, Source, to_results
from .recommend import load_split, read_results, score_split, title_weights, write_results
from .title import TITLE_MODEL, TitleScorer
from .train import TITLE_DIR

__all__ = ["evaluate_melon"]

# Tuned on the default synthetic store's val split (a 3 x 2 x 3 grid; test untouched): the autoencoder's
# weight against co-occurrence for songs and for tags, and the title model's weight for playlists the
# seed's few-items rule leaves to the main scorer. Val 0.5026 -> 0.5047; test 0.4979 -> 0.4987.
BLEND_AUTOENCODER = (0.6, 0.3)
TITLE_BASE = 0.1
# The title model's weight (songs, tags) for playlists of at most 5 items in the submitted ensemble (the
# seed's rule, kept for the ``ensemble`` row, gives it 0.85 and 0.8: its title model is stronger than
# ours). Tuned on the default synthetic store's val split with a 5-minute checkpoint (test untouched):
# 0.85/0.8 val 0.5072, 0.6/0.8 0.5113, 0.5/0.8 0.5119, 0.4/0.8 0.5116, 0.5/0.5 0.5122, 0.5/0.95 0.5109;
# base 0.1 against 0.2 and 0.3: 0.5072, 0.5070, 0.5063.
TITLE_FEW = (0.5, 0.5)
# The autoencoder weights val chooses among, per side (songs, tags), the tuned one first (ties go to it).
# How much the autoencoder adds depends on how long it trained, so one fixed weight is right for one
# budget only; a 3-point grid costs 4 more predictors a side in the val pass.
BLEND_GRID = ((BLEND_AUTOENCODER[0], 0.45, 0.75), (BLEND_AUTOENCODER[1], 0.15, 0.45))

# The weights are chosen on at most this many val playlists (a fixed sample; all of them when val is smaller,
# as on the default store: 1,906). At the full size (19,463 val playlists, 707,989 songs) the choice's 13
# predictors a side over the whole of val made most of an evaluation's time; the chosen ones then score
# the whole split.
CHOICE_SAMPLE = VAL_SAMPLE

SIDES = ("songs", "tags")
AE, COOC, TITLE = "autoencoder", "cooccurrence", "title"
AE_COOC, ENSEMBLE, ENSEMBLE_COOC = "autoencoder+cooccurrence", "ensemble", "ensemble+cooccurrence"


def evaluate_melon(store: str | Path | Store, checkpoint: str | Path, out: str | Path, *, split: str = "val",
                   title_model: str | Path | None = None, raw_dir: str | Path | None = None,
                   submit: str | None = None, device: str | torch.device = "cpu",
                   progress: bool = True, echo: Callable[[str], None] | None = None,
                   choice_sample: int = CHOICE_SAMPLE) -> tuple[dict[str, dict], str]:
    """Scores per predictor (``{"score", "song_ndcg", "tag_ndcg"}``) and the name of the one written to
    ``out``. Without answers for ``split`` the file is written and no score is given. ``echo`` receives
    one line per blend saying which weights val chose and, for another split, val's score table (the
    choice scored every row there: ``split="test"`` is val and test in one run)."""
    store = store if isinstance(store, Store) else Store(store)
    checkpoint = Path(checkpoint)
    dae = DAEScorer.load(checkpoint, store, str(device))
    title_path = Path(title_model) if title_model else checkpoint.parent / TITLE_DIR / TITLE_MODEL
    if title_model and not title_path.is_file():
        raise FstoreError(f"{title_path}: title model not found")
    title = TitleScorer.load(title_path, store, str(device)) if title_path.is_file() else None
    rows = [AE_COOC] + ([ENSEMBLE, ENSEMBLE_COOC] if title is not None else [])
    predictors = ["most_popular", COOC, AE, AE_COOC] + ([TITLE, ENSEMBLE, ENSEMBLE_COOC] if title is not None else [])
    submit = submit or (ENSEMBLE_COOC if title is not None else AE_COOC)
    if submit not in predictors:
        raise FstoreError(f"cannot submit {submit!r}: the predictors are {', '.join(predictors)}"
                          + ("" if title is not None else f" (no title model at {title_path})"))
    fused = FusedPass(store, ItemCooccurrence(store, device="cpu"), dae, title)
    candidates = _candidates(store, title is not None)
    # each blend's predictor per side: chosen on val, or the tuned blend when val has no answers
    tuned = {AE_COOC: f"{AE_COOC}:blend", ENSEMBLE: f"{ENSEMBLE}:blend",
             ENSEMBLE_COOC: f"{ENSEMBLE_COOC}:blend@{AE_COOC}:blend"}
    chosen = {side: {name: tuned[name] for name in rows} for side in SIDES}
    say = echo or (lambda _: None)
    picks_val = None  # every val playlist's picks, when the choice scored them all
    if "val_answer_songs" in store.tables:
        n_val = len(load_split(store, "val"))
        sample = bounded_sample(np.arange(n_val), choice_sample)
        part = None if sample.size == n_val else sample
        where = "val" if part is None else f"a val sample of {sample.size} of {n_val} playlists"
        picks_choice = fused.run("val", candidates["songs"], candidates["tags"], progress=progress, rows=part,
                                 desc=f"val: {len(candidates['songs'])} predictors a side, choosing blend weights")
        chosen = _choose(store, picks_choice, title is not None, rows=part)
        for name in rows:
            say(f"blend {name} (chosen on {where}): "
                + "; ".join(f"{side} {_describe(name, chosen[side][name], s)}" for s, side in enumerate(SIDES)))
        if part is None:
            picks_val = picks_choice
    else:
        say("blend weights: the tuned ones (the val split has no answers to choose them on)")
    final = {side: {name: (chosen[side][name] if name in rows else name) for name in predictors} for side in SIDES}
    need = {side: {key: candidates[side][key] for key in dict.fromkeys(final[side].values())} for side in SIDES}
    if split == "val":
        picks = picks_val if picks_val is not None else fused.run(
            split, need["songs"], need["tags"], progress=progress, desc=f"{split}: {len(predictors)} predictors")
    else:
        if "val_answer_songs" in store.tables:  # the table of what the choice scored comes free
            for line in _table({name: _score(store, "val", picks_choice, final, name, part) for name in predictors},
                               where):
                say(line)
        picks = fused.run(split, need["songs"], need["tags"], progress=progress,
                          desc=f"{split}: {len(predictors)} predictors")
    write_results(out, _records(store, split, picks, final, submit))
    scores: dict[str, dict] = {}
    if f"{split}_answer_songs" in store.tables:
        scores = {name: _score(store, split, picks, final, name) for name in predictors}
        if raw_dir is not None:
            from featurestore.synth.melon import oracle_results

            scores["oracle"] = _row(score_split(store, split, oracle_results(raw_dir, split)))
        # the file on disk scores what was scored in memory
        again = _row(score_split(store, split, read_results(out)))
        if not all(math.isclose(again[k], scores[submit][k], rel_tol=0, abs_tol=1e-12) for k in again):
            raise FstoreError(f"{out}: scores {again} on re-reading, {scores[submit]} in memory")
    return scores, submit


def _records(store: Store, split: str, picks: dict[str, dict], final: dict[str, dict[str, str]],
             name: str) -> list[dict]:
    """Table row ``name``'s ``results.json`` records: its songs' and its tags' predictors' picks. One row
    at a time: the records are Python lists (~4 KB a playlist), so all rows at once would grow with the
    split times the rows (~0.6 GB for Melon's val at full size)."""
    return to_results(store, split, picks["songs"][final["songs"][name]], picks["tags"][final["tags"][name]])


def _score(store: Store, split: str, picks: dict[str, dict], final: dict[str, dict[str, str]], name: str,
           rows: np.ndarray | None = None) -> dict:
    """Row ``name``'s scores on ``split`` (``rows``: the playlists ``picks`` hold, when not all)."""
    records = to_results(store, split, picks["songs"][final["songs"][name]], picks["tags"][final["tags"][name]], rows)
    return _row(score_split(store, split, records, rows=rows))


def _table(scores: dict[str, dict], where: str) -> list[str]:
    """The score table of the playlists the blend weights were chosen on (``report_scores``' layout)."""
    width = max(10, *(len(n) for n in scores))
    head = f"{'val':<{width}} " + " ".join(f"{c:>9}" for c in next(iter(scores.values())))
    return ([f"{where}{' split' if where == 'val' else ''}, where the blend weights were chosen:", head]
            + [f"{name:<{width}} " + " ".join(f"{v:>9.4f}" for v in row.values()) for name, row in scores.items()])


def _candidates(store: Store, has_title: bool) -> dict[str, dict[str, Source]]:
    """Per side, every predictor a choice may need, by key: the components by name, each blend with its
    tuned weights as ``"<blend>:blend"`` (the autoencoder + co-occurrence blend at every weight of
    :data:`BLEND_GRID`, :func:`_grid_keys`), and the title rule over each possible main part as
    ``"ensemble+cooccurrence:blend@<main key>"``."""
    out: dict[str, dict[str, Source]] = {}
    rule = title_weights(store) if has_title else None
    rule_base = title_weights(store, importance=TITLE_FEW[0], tag_weight=TITLE_FEW[1], base=TITLE_BASE) if has_title else None
    for s, side in enumerate(SIDES):
        c: dict[str, Source] = {"most_popular": "most_popular", COOC: COOC, AE: AE}
        for key, w in zip(_grid_keys(), BLEND_GRID[s], strict=True):
            c[key] = Blend(((AE, w), (COOC, 1 - w)))
        if has_title:
            c[TITLE] = TITLE
            c[f"{ENSEMBLE}:blend"] = Blend(((AE, rule[0][s]), (TITLE, rule[1][s])))
            for main in (*_grid_keys(), AE, COOC):
                c[f"{ENSEMBLE_COOC}:blend@{main}"] = Blend(((c[main], rule_base[0][s]), (TITLE, rule_base[1][s])))
        out[side] = c
    return out


def _grid_keys() -> list[str]:
    """Keys of the autoencoder + co-occurrence blends of :data:`BLEND_GRID` (the same keys on both sides:
    ``"<blend>:blend"`` for the tuned weight, ``"<blend>:blend<i>"`` for the i-th of the grid)."""
    return [f"{AE_COOC}:blend" + (str(i) if i else "") for i in range(len(BLEND_GRID[0]))]


def _choose(store: Store, picks: dict[str, dict], has_title: bool, rows: np.ndarray | None = None
            ) -> dict[str, dict[str, str]]:
    """Per side and blend, the key of the best of {the blend at each weight of the grid, each part alone}
    on val (ties: the tuned blend, the rest of the grid, then the parts in order)."""
    keys = list(picks["songs"])
    ndcg = {}
    for key in keys:
        score = score_split(store, "val", to_results(store, "val", picks["songs"][key], picks["tags"][key], rows),
                            rows=rows)
        ndcg[key] = {"songs": score["song_ndcg"], "tags": score["tag_ndcg"]}
    chosen: dict[str, dict[str, str]] = {}
    for side in SIDES:
        def best(options: list[str], side: str = side) -> str:
            return max(options, key=lambda k: (ndcg[k][side], -options.index(k)))

        c = {AE_COOC: best([*_grid_keys(), AE, COOC])}
        if has_title:
            c[ENSEMBLE] = best([f"{ENSEMBLE}:blend", AE, TITLE])
            c[ENSEMBLE_COOC] = best([f"{ENSEMBLE_COOC}:blend@{c[AE_COOC]}", c[AE_COOC], TITLE])
        chosen[side] = c
    return chosen


def _describe(name: str, key: str, side: int) -> str:
    """What the choice ``key`` for the blend row ``name`` means, in words."""
    if not key.startswith(f"{name}:blend"):
        return f"{_part(key, side)} alone (weight 0 for the other part)"
    return _part(key, side)


def _part(key: str, side: int) -> str:
    if key in _grid_keys():
        w = BLEND_GRID[side][_grid_keys().index(key)]
        return f"autoencoder {w:g} + cooccurrence {1 - w:g}"
    if key == f"{ENSEMBLE}:blend":
        return "the title rule over the autoencoder"
    if key.startswith(f"{ENSEMBLE_COOC}:blend@"):
        return (f"the title rule (title {TITLE_FEW[side]:g} at <= 5 items, base {TITLE_BASE:g}) over "
                f"{_part(key.partition('@')[2], side)}")
    return key


def _row(result: dict) -> dict:
    return {"score": result["score"], "song_ndcg": result["song_ndcg"], "tag_ndcg": result["tag_ndcg"]}
