"""End-to-end skip-prediction demo on the CPU: synth -> ingest -> train -> evaluate, in a few minutes.

``run_demo(workdir)`` writes a synthetic MSSD release with a planted skip signal
(:mod:`featurestore.synth.spotify`), ingests it, trains :class:`~models.skip.model.SkipModel` for a
few epochs (capped at ``minutes``), writes the test submission and prints the model's mean average
accuracy beside the random, all-skip, copy-last and logistic-regression baselines and the planted
Bayes-optimal predictor.
Run it as ``python -m models.skip.demo [--workdir DIR]``.

Under ``workdir`` it (re)creates ``demo_raw/``, ``demo.fstore``, ``demo_train/`` (checkpoints, ``history.csv``,
TensorBoard events) and ``submission.txt``, and prints where each is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from featurestore.ingest.spotify import ingest_spotify
from featurestore.store import Store
from featurestore.synth.spotify import synth_spotify

from .evaluate import baselines, bayes_score, predict_test, score_submission
from .train import train_skip

__all__ = ["run_demo"]

# Defaults measured on a shared 2-core CPU: ~4 s of synth + ingest, ~25 s an epoch (~2,100 sessions/s),
# ~110 s in all; the model then beats copy-last by ~0.14 mean AA (planted Bayes gap ~0.145).
DEMO_SESSIONS = 60_000
DEMO_TRACKS = 5_000
DEMO_EPOCHS = 4
DEMO_MINUTES = 3.0
DEMO_BATCH = 512


def run_demo(workdir: str | os.PathLike[str] | None = None, sessions: int = DEMO_SESSIONS,
             minutes: float = DEMO_MINUTES, epochs: int = DEMO_EPOCHS, tracks: int = DEMO_TRACKS,
             batch_size: int = DEMO_BATCH, seed: int = 0, progress: bool = True,
             torch_threads: int | None = 1) -> dict:
    """Run the demo; print and return its numbers.

    Returns a dict with ``sessions`` (train / test / events), ``seconds`` per phase, the training
    throughput (``sessions_per_s``, ``data_wait_share``), the validation AA, the ``paths`` written and, for ``model``,
    ``random``, ``all_skip``, ``copy_last``, ``logreg`` and ``bayes``, the test ``mean_aa`` and ``first_acc``.
    ``torch_threads=1`` (the default) trains single-threaded: for this small model on a small shared
    CPU, intra-op threads cost more than they bring (measured 3x slower with 2 threads under load).
    """
    t0 = time.perf_counter()
    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="skip-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    raw, store_path, train_dir = workdir / "demo_raw", workdir / "demo.fstore", workdir / "demo_train"
    for old in (raw, train_dir):
        shutil.rmtree(old, ignore_errors=True)

    synth = synth_spotify(raw, sessions=sessions, tracks=tracks, seed=seed)
    summary = ingest_spotify(raw, store_path, overwrite=True, progress=False, source_checksums=False)
    t_data = time.perf_counter()
    store = Store(store_path)

    result = train_skip(store, train_dir, epochs=epochs, batch_size=batch_size, seed=seed,
                        max_minutes=minutes, resume=False, progress=progress, torch_threads=torch_threads)
    t_train = time.perf_counter()

    submission = workdir / "submission.txt"
    predict_test(store, result.best_checkpoint or result.checkpoint, submission)
    scores = {"model": score_submission(store, submission), **baselines(store, seed=seed),
              "bayes": bayes_score(raw, store)}
    t_end = time.perf_counter()

    out = {
        "workdir": str(workdir),
        "sessions": {"train": summary.sessions["train"], "test": summary.sessions.get("test", 0),
                     "events": synth.n_events, "tracks": synth.n_tracks},
        "seconds": {"data": t_data - t0, "train": t_train - t_data, "train_steps": result.train_seconds,
                    "evaluate": t_end - t_train, "total": t_end - t0},
        "epochs": result.epochs_completed, "stopped": result.stopped,
        "sessions_per_s": result.sessions_per_s, "data_wait_share": result.data_wait_share,
        "val_aa": result.best_val_aa,
        "paths": {"raw data": str(raw), "store": str(store_path),
                  "checkpoint": str(result.best_checkpoint or result.checkpoint),
                  "history": f"{result.history_csv} (TensorBoard: tensorboard --logdir {train_dir})",
                  "submission": str(submission)},
        "scores": {k: {"mean_aa": s.mean_average_accuracy, "first_acc": s.first_prediction_accuracy}
                   for k, s in scores.items()},
    }
    for line in report_lines(out):
        print(line)
    return out


def report_lines(out: dict) -> list[str]:
    """The demo's printed summary."""
    s, sec = out["sessions"], out["seconds"]
    lines = [
        f"data      {s['train']} train + {s['test']} test sessions, {s['events']} events, {s['tracks']} tracks "
        f"(synth + ingest {sec['data']:.1f} s)",
        f"training  {out['epochs']} epochs ({out['stopped']}) in {sec['train']:.1f} s: "
        f"{out['sessions_per_s']:,.0f} sessions/s, data wait {100 * out['data_wait_share']:.1f} % of step time, "
        f"best validation AA {out['val_aa']:.4f}",
        f"total     {sec['total']:.1f} s",
        f"{'test':<10} {'mean AA':>8} {'first acc':>9}",
    ]
    for name, v in out["scores"].items():
        lines.append(f"{name:<10} {v['mean_aa']:>8.4f} {v['first_acc']:>9.4f}")
    for base in ("copy_last", "logreg"):
        gap = out["scores"]["model"]["mean_aa"] - out["scores"][base]["mean_aa"]
        lines.append(f"model - {base} = {gap:+.4f} mean AA")
    lines += [f"{'files' if i == 0 else '':<10}{name:<11}{path}" for i, (name, path) in enumerate(out["paths"].items())]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m models.skip.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="Where to write (default: a new temp dir).")
    parser.add_argument("--sessions", type=int, default=DEMO_SESSIONS)
    parser.add_argument("--minutes", type=float, default=DEMO_MINUTES, help="Training time cap.")
    parser.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run_demo(args.workdir, sessions=args.sessions, minutes=args.minutes, epochs=args.epochs, seed=args.seed)


if __name__ == "__main__":
    main()
