"""Melon ablations: each setting trained and evaluated with several seeds, one process at a time.

``python -m models.melon.ablation STORE WORK [--minutes 2] [--seeds 0 1 2] [--raw-dir RAW]`` runs, for
every row of :data:`ROWS` and every seed, what ``fstore train melon STORE WORK/<row>-s<seed>/run
--max-minutes M`` then ``fstore evaluate melon ... --split test --metrics-json`` run, strictly one after
the other in this one process (every row gets the same wall-clock budget, so rows must not compete with
each other for the CPU; one process also loads torch and the numba kernels once, not twice a run).
Finished runs (their ``scores.json``, the evaluate contract) are kept and not run again, so the script
can be restarted. It prints one
table: per row, mean +- std over the seeds of the test score of the submitted predictor, the autoencoder
alone, the ensemble without the title model (autoencoder + co-occurrence) and the margin over
co-occurrence, and says when a row's mean lies inside the default row's seed spread.

The title-model ablation needs no run of its own: every run scores the ensemble with the title model
(the submitted row) and without it (``autoencoder+cooccurrence``) from the same weights.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from featurestore.store.atomic import atomic_write_bytes

__all__ = ["ROWS", "main", "summarise"]

# row name -> ``train_melon`` settings besides the ``fstore train melon`` defaults (the default row: none)
DEFAULTS = {"denoise": 0.7, "question_mix": (0.3, 0.15), "title_share": 0.3}
ROWS: dict[str, dict] = {
    "default": {},
    "no denoising": {"denoise": 0.0},
    "no question mix": {"question_mix": (0.0, 0.0)},
}
COLUMNS = {"submitted": ("scores", "model"), "no title model": ("components", "autoencoder+cooccurrence"),
           "autoencoder": ("components", "autoencoder")}


def run_one(store: Path, out: Path, settings: dict, seed: int, minutes: float, raw_dir: Path | None) -> dict:
    """Train and evaluate one (row, seed); returns the evaluate contract (cached in ``out/scores.json``)."""
    scores_path = out / "scores.json"
    if scores_path.is_file():
        return json.loads(scores_path.read_text())
    from featurestore.store import Store
    from models.melon.evaluate import evaluate_melon
    from models.melon.train import train_melon

    t0 = time.perf_counter()
    result = train_melon(store, out / "run", max_minutes=minutes, seed=seed, resume=False, progress=False,
                         epochs=12, **{**DEFAULTS, **settings})
    best = result.dae.best_checkpoint or result.dae.checkpoint
    scores, submitted = evaluate_melon(Store(store), best, out / "results.json", split="test", raw_dir=raw_dir,
                                       progress=False)
    doc = {"metric": "score", "split": "test",
           "scores": {"model": scores[submitted]["score"], "most_popular": scores["most_popular"]["score"],
                      "cooccurrence": scores["cooccurrence"]["score"]},
           "components": {k: v["score"] for k, v in scores.items()
                          if k not in (submitted, "most_popular", "cooccurrence", "oracle")},
           "ceiling": {k: v["score"] for k, v in scores.items() if k == "oracle"}}
    atomic_write_bytes(scores_path, (json.dumps(doc, indent=1) + "\n").encode())
    print(f"{out.name}: {time.perf_counter() - t0:.0f} s, submitted {doc['scores']['model']:.4f}, "
          f"co-occurrence {doc['scores']['cooccurrence']:.4f}", flush=True)
    return doc


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(results: dict[str, list[dict]]) -> list[str]:
    """The ablation table (markdown) from each row's evaluate contracts, one per seed."""
    lines = ["| row | " + " | ".join(COLUMNS) + " | margin over co-occurrence |", "|---" * (len(COLUMNS) + 2) + "|"]
    spread = None
    for row, docs in results.items():
        cells = []
        for group, key in COLUMNS.values():
            m, s = _mean_std([d[group][key] for d in docs])
            cells.append(f"{m:.4f} ± {s:.4f}")
        margin = [d["scores"]["model"] - d["scores"]["cooccurrence"] for d in docs]
        m, s = _mean_std(margin)
        note = ""
        if spread is None:
            spread = (m - s, m + s)
        elif spread[0] <= m <= spread[1]:
            note = " (inside the default row's seed spread)"
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {m:+.4f} ± {s:.4f}{note} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m models.melon.ablation", description=__doc__.splitlines()[0])
    p.add_argument("store", type=Path)
    p.add_argument("work", type=Path)
    p.add_argument("--minutes", type=float, default=2.0, help="--max-minutes of every run.")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--raw-dir", type=Path, default=None, help="Synthetic raw folder: adds the oracle row.")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # as `fstore train/evaluate melon` on the CPU (featurestore.cli.common)
    results: dict[str, list[dict]] = {row: [] for row in args.rows}
    for seed in args.seeds:  # seed by seed, so an interrupted run still has every row
        for row in args.rows:
            results[row].append(run_one(args.store, args.work / f"{row.replace(' ', '_')}-s{seed}", ROWS[row],
                                        seed, args.minutes, args.raw_dir))
    cooc = _mean_std([d["scores"]["cooccurrence"] for docs in results.values() for d in docs])[0]
    print(f"test split, {args.minutes:g} min per run, seeds {args.seeds}; co-occurrence {cooc:.4f}")
    for line in summarise(results):
        print(line)


if __name__ == "__main__":
    main()
