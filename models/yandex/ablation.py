"""Ablations of the Yandex model, several seeds each, printed as a table:
``python -m models.yandex.ablation STORE OUT_DIR [--raw-dir RAW --seeds 0,1,2 --epochs 6 --max-minutes M]``.

Per seed (the seed sets the artist holdout, the initialisation and the batches), one training run per
training row, one after another in this process, each with the same budget: ``--epochs`` (the same
work whatever the machine's load; the curriculum ramps over half of them) and optionally ``--max-minutes``:
the full model (transformer, the seed's loss sum, length curriculum), a conformer (for the ensemble), no
curriculum, and each loss alone (the triplet term alone is training's default since this table). Evaluation-only rows reuse the full model's checkpoint: re-ranking and
rolling windows (the seed's 10-step windows, hop 5). Every row is scored with nDCG@100 on the seed's
held-out artists beside the standardised mean-pooled cosine and, with ``--raw-dir``, the oracle.
The table shows mean ± std over seeds and each row's paired difference from the full model; a
difference whose magnitude is not above the std of the paired differences is marked "within spread".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Callable
from pathlib import Path

import torch

from .evaluate import evaluate_yandex
from .losses import TERMS
from .train import train_yandex

__all__ = ["TRAINED", "ablation_table", "run_seed"]

# training rows: name -> train_yandex overrides
SUM = {"loss": {"terms": list(TERMS)}}  # the seed's loss sum, whatever training's default is
TRAINED: dict[str, dict] = {
    "full": SUM,
    "conformer": {**SUM, "arch": "conformer"},
    "no_curriculum": {**SUM, "curriculum": None},
    **{f"{t}_only": {"loss": {"terms": [t]}} for t in TERMS},
}
FULL = "full"


def run_seed(store: str | os.PathLike[str], out_dir: Path, seed: int, epochs: int, max_minutes: float | None,
             raw_dir: str | os.PathLike[str] | None, echo: Callable[[str], None] = print) -> dict[str, float]:
    """nDCG@100 of every row for one seed (training runs under ``out_dir/seed<seed>/<row>``)."""
    runs = {}
    for name, overrides in TRAINED.items():
        runs[name] = out_dir / f"seed{seed}" / name
        train_yandex(store, runs[name], seed=seed, epochs=epochs, max_minutes=max_minutes, progress=False,
                     torch_threads=1, **overrides)
        echo(f"seed {seed}: trained {name}")
    best = {name: d / "best.pt" for name, d in runs.items()}
    full, _ = evaluate_yandex(store, [best[FULL]], raw_dir=raw_dir)
    rows = {FULL: full["model"], "full+rerank": full["transformer+rerank"],
            "mean_pooled_standardized": full["mean_pooled_standardized"]}
    if "oracle" in full:
        rows["oracle"] = full["oracle"]
    rows["rolling_windows"] = evaluate_yandex(store, [best[FULL]], window=10, hop=5)[0]["model"]
    both, _ = evaluate_yandex(store, [best[FULL], best["conformer"]])
    rows["ensemble"], rows["conformer"] = both["model"], both["conformer"]
    rest = [name for name in TRAINED if name not in rows]  # all transformers: one call scores them all
    scored, _ = evaluate_yandex(store, [best[name] for name in rest])
    for i, name in enumerate(rest):
        rows[name] = scored[f"transformer_{i + 1}"] if len(rest) > 1 else scored["model"]
    return rows


def ablation_table(per_seed: dict[int, dict[str, float]]) -> list[str]:
    """Markdown rows: mean ± std over seeds and the paired difference from the full model."""
    seeds = sorted(per_seed)
    names = list(per_seed[seeds[0]])

    def spread(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} ± {sd:.3f}"

    lines = [f"| row ({len(seeds)} seeds) | nDCG@100 | minus full (paired) | |", "|---|---|---|---|"]
    for name in names:
        values = [per_seed[s][name] for s in seeds]
        diffs = [per_seed[s][name] - per_seed[s][FULL] for s in seeds]
        mean_diff = statistics.mean(diffs)
        sd_diff = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        verdict = "" if name == FULL else ("within spread" if abs(mean_diff) <= sd_diff else "separates")
        lines.append(f"| {name} | {spread(values)} | {mean_diff:+.3f} ± {sd_diff:.3f} | {verdict} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--raw-dir", default=None, help="The store's `fstore synth yandex` folder: adds the oracle row.")
    p.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds.")
    p.add_argument("--epochs", type=int, default=6, help="Epochs of every training row.")
    p.add_argument("--max-minutes", type=float, default=None, help="Also stop every training row after this long.")
    a = p.parse_args()
    torch.set_num_threads(1)
    per_seed: dict[int, dict[str, float]] = {}
    for seed in (int(s) for s in a.seeds.split(",")):
        per_seed[seed] = run_seed(a.store, a.out_dir, seed, a.epochs, a.max_minutes, a.raw_dir)
        print(f"seed {seed}: " + json.dumps({k: round(v, 4) for k, v in per_seed[seed].items()}), flush=True)
    (a.out_dir / "ablation.json").write_text(json.dumps(per_seed, indent=1) + "\n")
    print(f"budget per training row: {a.epochs} epochs, --max-minutes {a.max_minutes}; CPU, torch threads 1")
    print("\n".join(ablation_table(per_seed)))


if __name__ == "__main__":
    main()
