"""Melon ablations: each setting trained and evaluated with several seeds, one process at a time.

``python -m models.melon.ablation STORE WORK [--minutes 2] [--seeds 0 1 2] [--raw-dir RAW]`` runs, for
every row of :data:`ROWS` and every seed, ``fstore train melon STORE WORK/<row>-s<seed> --max-minutes M``
then ``fstore evaluate melon ... --split test --metrics-json``, strictly one after the other (every row
gets the same wall-clock budget, so rows must not compete with each other for the CPU). Finished runs
(their ``scores.json``) are kept and not run again, so the script can be restarted. It prints one
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
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["ROWS", "main", "summarise"]

# row name -> extra ``fstore train melon`` options (the default row: the command's defaults)
ROWS: dict[str, list[str]] = {
    "default": [],
    "no denoising": ["--denoise", "0"],
    "no question mix": ["--question-mix", "0", "0"],
}
COLUMNS = {"submitted": ("scores", "model"), "no title model": ("components", "autoencoder+cooccurrence"),
           "autoencoder": ("components", "autoencoder")}


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True)


def run_one(store: Path, out: Path, options: list[str], seed: int, minutes: float, raw_dir: Path | None) -> dict:
    """Train and evaluate one (row, seed); returns the evaluate contract (cached in ``out/scores.json``)."""
    scores = out / "scores.json"
    if scores.is_file():
        return json.loads(scores.read_text())
    out.mkdir(parents=True, exist_ok=True)
    fstore = [sys.executable, "-m", "featurestore.cli"]
    log = out / "log.txt"
    t0 = time.perf_counter()
    _run([*fstore, "train", "melon", str(store), str(out / "run"), "--max-minutes", str(minutes), "--seed",
          str(seed), "--no-resume", *options], log)
    _run([*fstore, "evaluate", "melon", str(store), str(out / "run" / "best.pt"), "--split", "test",
          "--out", str(out / "results.json"), "--metrics-json", str(out / "scores.part.json"),
          *(["--raw-dir", str(raw_dir)] if raw_dir else [])], log)
    (out / "scores.part.json").rename(scores)
    print(f"{out.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return json.loads(scores.read_text())


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
    results = {row: [run_one(args.store, args.work / f"{row.replace(' ', '_')}-s{seed}", ROWS[row], seed,
                             args.minutes, args.raw_dir) for seed in args.seeds] for row in args.rows}
    cooc = _mean_std([d["scores"]["cooccurrence"] for docs in results.values() for d in docs])[0]
    print(f"test split, {args.minutes:g} min per run, seeds {args.seeds}; co-occurrence {cooc:.4f}")
    for line in summarise(results):
        print(line)


if __name__ == "__main__":
    main()
