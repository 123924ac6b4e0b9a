"""FSD ablations: ``python -m models.fsd.ablation STORE WORK [--minutes 2 --seeds 0 1 2]``.

Runs each row of :data:`ROWS` for each seed, one training at a time in this process (``train_fsd``,
what ``fstore train fsd`` runs, on one torch thread as it does, without a new interpreter and torch
import per run: minutes each on a loaded host), with the same time budget and epoch cap per row and no resume, takes each run's best
validation lwlrap (the checkpoint ``evaluate`` scores: same clips, same windows), fits the logistic
regression baseline of :mod:`.baseline` once per seed (each seed draws its own validation split, the
same for every row of that seed), and prints a Markdown table: mean +- std over seeds, and each row's
difference from the default paired by seed, flagged when it lies inside the seed spread.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

__all__ = ["ROWS", "main"]

ROWS: dict[str, dict] = {  # name -> train_fsd arguments that differ from the default
    "default (mixup 0.4, SpecAugment, noisy weighted 0.5, crop 128)": {},
    "mixup off": {"mixup_alpha": 0.0},
    "SpecAugment off": {"spec_augment_masks": False},
    "noisy clips left out (curated)": {"noisy": "curated"},
    "noisy clips like curated (mixed)": {"noisy": "mixed"},
    "crop 64": {"crop": 64},
    "crop 256": {"crop": 256},
}


def _logistic(store: Path, seed: int) -> float:
    """The baseline's validation lwlrap for the default training clips and the split of ``seed``."""
    from featurestore.store import Store
    from models.metrics import lwlrap

    from .baseline import LogisticBaseline, pooled_features
    from .data import class_names, clip_weights, curated_split, multi_hot, train_frames
    from .train import DEFAULT_NOISY

    s = Store(store)
    fs = train_frames(s)
    k = len(class_names(s, fs))
    fit, val = curated_split(fs, k, 0.2, seed)
    train, w = clip_weights(fs, fit, DEFAULT_NOISY, 0.5)
    model, _ = LogisticBaseline.tuned(pooled_features(fs, train), multi_hot(fs, train, k), w[train],
                                      fs.column("curated")[train].astype(bool), seed)
    return lwlrap(multi_hot(fs, val, k), model.predict(pooled_features(fs, val)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store", type=Path)
    p.add_argument("work", type=Path, help="folder for the runs (one sub-folder per row and seed)")
    p.add_argument("--minutes", type=float, default=2.0, help="training budget of every run")
    p.add_argument("--epochs", type=int, default=20, help="epoch cap of every run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", default=None, help="row names to run (default: all)")
    args = p.parse_args(argv)
    if len(args.seeds) < 2:
        p.error("need at least two seeds for a spread")
    rows = {k: v for k, v in ROWS.items() if args.rows is None or k in args.rows}
    from .train import train_fsd

    results: dict[str, list[float]] = {}
    epochs: dict[str, list[float]] = {}
    for i, (name, extra) in enumerate(rows.items()):
        for seed in args.seeds:
            r = train_fsd(args.store, args.work / f"row{i}-seed{seed}", epochs=args.epochs, seed=seed,
                          max_minutes=args.minutes, resume=False, progress=False, torch_threads=1, **extra)
            score, n = float(r.best_metric), float(r.history[-1]["epoch"]) if r.history else 0.0
            results.setdefault(name, []).append(score)
            epochs.setdefault(name, []).append(n)
            print(f"{name} seed {seed}: {score:.4f} ({n} epochs)", flush=True)
    logistic = [_logistic(args.store, seed) for seed in args.seeds]
    base = np.array(next(iter(results.values())))
    print(f"\n| row ({args.minutes:g} min, at most {args.epochs} epochs, seeds {' '.join(map(str, args.seeds))}) "
          "| lwlrap mean +- std | epochs reached | difference from default (paired) |")
    print("|---|---|---|---|")
    for name, values in results.items():
        v = np.array(values)
        diff = v - base
        spread = max(v.std(ddof=1), base.std(ddof=1))
        note = ("" if name == next(iter(results)) else
                f"{diff.mean():+.3f} +- {diff.std(ddof=1):.3f}"
                + (" (inside the seed spread)" if abs(diff.mean()) <= spread else ""))
        print(f"| {name} | {v.mean():.3f} +- {v.std(ddof=1):.3f} | {np.mean(epochs[name]):.1f} | {note} |")
    lg = np.array(logistic)
    print(f"| logistic regression on pooled log-mel (same splits) | {lg.mean():.3f} +- {lg.std(ddof=1):.3f} | | "
          f"model margin {np.mean(base - lg):+.3f} +- {np.std(base - lg, ddof=1):.3f} |")


if __name__ == "__main__":
    main()
