"""Speaker-model ablations: each row trained over several seeds, one ``fstore train`` process at a time.

    python -m models.speakers.ablation STORE OUT [--minutes M | --epochs E] [--seeds 0,1,2]

Rows: the default model (attention pooling, 2 Conformer layers, 128-frame crops) and one change each:
attention + max pooling, 3 layers, 64-frame crops. Every row gets the same budget (``--minutes`` of wall
time, or ``--epochs``: the same utterances seen, which a busy shared machine cannot change) and the same
seeds; each run is evaluated on its own validation part and on the labelled test split. The table prints
mean +- standard deviation over seeds and the difference from the default row, flagged ``within spread``
when it is smaller than the larger of the two rows' seed standard deviations.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROWS: dict[str, list[str]] = {
    "attention, 2 layers, crop 128 (default)": [],
    "attention+max pooling": ["--pooling", "attention+max"],
    "3 layers": ["--layers", "3"],
    "crop 64": ["--crop", "64"],
}


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"Error: {' '.join(cmd[:4])} ... exited {done.returncode}: {tail[0]}")


def run_row(store: Path, out: Path, args: list[str], seed: int, budget: list[str]) -> dict[str, float]:
    """Train one (row, seed) in its own process, then score it in another; the accuracies by split."""
    fstore = str(Path(sys.executable).with_name("fstore"))
    _run([fstore, "train", "speakers", str(store), str(out), "--seed", str(seed), "--no-resume", *budget, *args])
    scores = out / "scores.json"
    _run([sys.executable, "-m", "models.speakers.ablation", "--score", str(store), str(out), str(scores)])
    return json.loads(scores.read_text())


def score(store: str, run_dir: str, out: str) -> None:
    """Model accuracy of a run's best.pt on validation and test, as JSON (the ``--score`` step)."""
    import torch

    from models.speakers import evaluate_speakers

    torch.set_num_threads(1)  # as `fstore evaluate speakers` on the CPU
    ev = evaluate_speakers(store, Path(run_dir) / "best.pt", progress=False)
    Path(out).write_text(json.dumps({split: row["model"] for split, row in ev.scores.items()}))


def table(results: dict[str, list[dict[str, float]]]) -> list[str]:
    """Markdown rows: mean +- std over seeds per split, and each row's test difference from the first."""
    lines = ["| row | validation | test | test difference |", "|---|---|---|---|"]
    base = np.array([r["test"] for r in next(iter(results.values()))])
    for name, runs in results.items():
        cells = []
        for split in ("validation", "test"):
            v = np.array([r[split] for r in runs])
            cells.append(f"{v.mean():.3f} +- {v.std(ddof=1) if v.size > 1 else 0.0:.3f}")
        t = np.array([r["test"] for r in runs])
        diff = t.mean() - base.mean()
        spread = max(t.std(ddof=1), base.std(ddof=1)) if t.size > 1 else 0.0
        note = f"{diff:+.3f}" + (" (within seed spread)" if abs(diff) <= spread else "")
        if name == next(iter(results)):
            note = "(reference)"
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {note} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store", type=Path)
    p.add_argument("out", type=Path)
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None, help="wall-time budget of every run")
    budget.add_argument("--epochs", type=int, default=None, help="epoch budget of every run")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rows", default=None, help="comma-separated row numbers (default: all)")
    a = p.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    budget_args = ["--epochs", str(a.epochs)] if a.epochs else ["--max-minutes", str(a.minutes or 2.0)]
    names = list(ROWS)
    chosen = [names[int(i)] for i in a.rows.split(",")] if a.rows else names
    results: dict[str, list[dict[str, float]]] = {}
    for name in chosen:
        for seed in seeds:
            out = a.out / f"row{names.index(name)}-seed{seed}"
            res = out / "scores.json"
            r = json.loads(res.read_text()) if res.is_file() else run_row(a.store, out, ROWS[name], seed, budget_args)
            results.setdefault(name, []).append(r)
            print(f"{name} seed {seed}: validation {r['validation']:.3f} test {r['test']:.3f} "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    print(f"budget {' '.join(budget_args)}, seeds {a.seeds}")
    print("\n".join(table(results)))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--score":
        score(*sys.argv[2:5])
    else:
        main()
