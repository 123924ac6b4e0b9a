"""Spotify MSSD: ``synth spotify``, ``ingest spotify``, ``train skip``, ``evaluate skip``."""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    OVERWRITE_SYNTH,
    SEED,
    SYNTH_OUT,
    cpu_torch_threads,
    distributed_options,
    echo_lines,
    evaluate_options,
    freeze_imports,
    ingest_options,
    print_ingest_summary,
    report_scores,
    train_options,
    user_errors,
)


@click.command("spotify")
@SYNTH_OUT  # not synth_options: --seed stands among this command's own options
@click.option("--sessions", default=20000, type=click.IntRange(min=1), show_default=True,
              help="Sessions in all (train + test).")
@click.option("--tracks", default=5000, type=click.IntRange(min=1), show_default=True,
              help="Tracks in track_features.")
@SEED
@click.option("--train-files", default=4, type=click.IntRange(min=1), show_default=True,
              help="Number of training_set/log_* files.")
@click.option("--gzip", "gz", is_flag=True, help="Write .csv.gz files.")
@OVERWRITE_SYNTH
@user_errors
def synth_cmd(out: Path, sessions: int, tracks: int, seed: int, train_files: int, gz: bool, overwrite: bool) -> None:
    """MSSD layout: training_set/, track_features/, test_set/ (with ground truth) under OUT."""
    from ..synth.spotify import synth_spotify

    s = synth_spotify(out, sessions=sessions, tracks=tracks, seed=seed, train_files=train_files, gzip=gz,
                      overwrite=overwrite)
    click.echo(f"wrote {len(s.files)} files to {out}: {s.n_events} events, {s.n_tracks} tracks")


@click.command("spotify")
@ingest_options
@click.option("--no-source-checksums", is_flag=True, help="Skip sha256 of the raw files in the manifest.")
@click.option("--append", is_flag=True,
              help="Add RAW_DIR's new training_set/log_* and track_features/tf_* to STORE as a new version.")
@click.option("--refit", is_flag=True,
              help="With --append: refit the track quantizers on old + new tracks (rewrites the track table only).")
@distributed_options
@user_errors
def ingest_cmd(raw_dir: Path, store: Path, overwrite: bool, no_source_checksums: bool, append: bool,
               refit: bool, dask_workers: int, scheduler: str | None) -> None:
    """MSSD training_set/, track_features/ and test_set/ under RAW_DIR (plain or .csv.gz) into STORE."""
    from ..ingest.sources import ParseAhead, SourceHashes, all_files, discover
    from ..store.errors import FstoreError

    hashes = ahead = None
    if not (append or dask_workers or scheduler):  # hashed and parsed while the imports below run
        files = discover(raw_dir)
        hashes = None if no_source_checksums else SourceHashes(all_files(files))
        ahead = ParseAhead(files["tracks"], files["train"])
    from ..ingest.spotify import ingest_spotify

    freeze_imports()

    if append:
        from ..ingest.spotify_append import append_spotify

        if overwrite:
            raise FstoreError("--append and --overwrite exclude each other")
        if dask_workers or scheduler:
            raise FstoreError("--append runs in this process: --workers/--scheduler apply to a full ingest only")
        summary = append_spotify(raw_dir, store, source_checksums=not no_source_checksums, refit=refit)
    else:
        if refit:
            raise FstoreError("--refit needs --append (a full ingest fits its quantizers anyway)")
        summary = ingest_spotify(raw_dir, store, overwrite=overwrite, source_checksums=not no_source_checksums,
                                 workers=dask_workers, scheduler=scheduler, hashes=hashes, ahead=ahead)
    print_ingest_summary(raw_dir, store, summary)


@click.command("skip")
@train_options(epochs=40)
@click.option("--batch-size", default=256, type=click.IntRange(min=1), show_default=True, help="Sessions a step.")
@click.option("--lr", default=3e-3, show_default=True, help="Peak learning rate (warmup, then cosine).")
@user_errors
def train_cmd(store: Path, out_dir: Path, epochs: int, max_minutes: float | None, device: str, seed: int,
              no_resume: bool, batch_size: int, lr: float, val_sample: int) -> None:
    """Skip-prediction model on STORE's train split; checkpoints (resumable), best.pt and history under OUT_DIR."""
    from models.skip.train import train_skip

    # one torch thread on the CPU (as the demo): two spin against the loader thread on a busy host
    result = train_skip(store, out_dir, epochs=epochs, batch_size=batch_size, lr=lr, device=device,
                        max_minutes=max_minutes, seed=seed, resume=not no_resume, val_sample=val_sample,
                        torch_threads=cpu_torch_threads(device, 0))
    echo_lines(result.lines())


@click.command("skip")
@evaluate_options("submission.txt")
@click.option("--raw-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Raw folder of a `fstore synth spotify` release: adds the planted Bayes-optimal row.")
@user_errors
def evaluate_cmd(store: Path, checkpoint: Path, out: Path, metrics_json: Path | None, device: str,
                 raw_dir: Path | None) -> None:
    """Write CHECKPOINT's test submission, then score it beside the random / all-skip / copy-last /
    logistic-regression baselines (and the planted Bayes-optimal ceiling with --raw-dir)."""
    from models.skip.evaluate import baselines, bayes_score, planted_path, predict_test, score_submission

    from ..store import Store
    from ..store.errors import FstoreError

    if raw_dir is not None:
        planted_path(raw_dir)  # a folder without the planted truth fails before any work
    if threads := cpu_torch_threads(device, 0):
        import torch

        torch.set_num_threads(threads)
    predict_test(store, checkpoint, out, device=device)
    click.echo(f"wrote {out}")
    if not Store(store).tables["test"].get("second_half_labels"):
        message = f"{store}: store has no test ground truth; submission not scored"
        if metrics_json is not None:
            raise FstoreError(f"{message}, {metrics_json} not written")
        click.echo(message)
        return
    scores = {"model": score_submission(store, out), **baselines(store)}
    if raw_dir is not None:
        scores["bayes"] = bayes_score(raw_dir, store)
    report_scores({name: {"mean_average_accuracy": s.mean_average_accuracy,
                          "first_prediction_accuracy": s.first_prediction_accuracy} for name, s in scores.items()},
                  metric="mean_average_accuracy", split="test", metrics_json=metrics_json,
                  baselines=("random", "all_skip", "copy_last", "logreg"), ceiling=("bayes",))


COMMANDS = {"synth": synth_cmd, "ingest": ingest_cmd, "train": train_cmd, "evaluate": evaluate_cmd}
