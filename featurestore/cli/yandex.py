"""Yandex Cup 2022 (artist metric learning): ``synth yandex``, ``ingest yandex``, ``train yandex``,
``evaluate yandex``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .common import (
    SYNTH_OUT,
    checkpoint_files,
    clip_ingest_command,
    cpu_torch_threads,
    echo_lines,
    evaluate_options,
    option_group,
    report_scores,
    synth_options,
    train_options,
    user_errors,
)


@click.command("yandex")
@SYNTH_OUT
@click.option("--tracks", default=2000, type=click.IntRange(min=1), show_default=True, help="Train tracks.")
@click.option("--artists", default=200, type=click.IntRange(min=1), show_default=True, help="Train artists.")
@click.option("--test-tracks", default=300, type=click.IntRange(min=0), show_default=True,
              help="Unlabelled test tracks.")
@synth_options
@user_errors
def synth_cmd(out: Path, tracks: int, artists: int, test_tracks: int, seed: int, overwrite: bool) -> None:
    """Yandex Cup 2022 layout: train_meta.tsv, test_meta.tsv, {fold}/{trackid}.npy (512 x T) under OUT."""
    from ..synth.yandex import synth_yandex

    s = synth_yandex(out, tracks=tracks, artists=artists, test_tracks=test_tracks, seed=seed,
                     overwrite=overwrite)
    click.echo(f"wrote {s.files} files to {out}: {s.clips} tracks, {s.classes} train artists, {s.bytes / 1e6:.1f} MB")


@clip_ingest_command("yandex")
def ingest_cmd(raw_dir: Path, store: Path, **options: Any) -> Any:
    """train_meta.tsv / test_meta.tsv + per-track .npy (512 x T) under RAW_DIR into frame sets in STORE."""
    from ..ingest.yandex import ingest_yandex

    return ingest_yandex(raw_dir, store, **options)


def _embedding_options(window_min: int, window_help: str, threads_help: str) -> Callable[[Any], Any]:
    """--window, --hop and --torch-threads, as train and evaluate take them (evaluate's --window 0: whole tracks)."""
    return option_group(
        click.option("--window", type=click.IntRange(min=window_min), default=None, help=window_help),
        click.option("--hop", type=click.IntRange(min=1), default=None, help="Hop between windows (default: window / 2)."),
        click.option("--torch-threads", default=0, type=click.IntRange(min=0), show_default=True, help=threads_help),
    )


@click.command("yandex")
@train_options(epochs=40)
@click.option("--arch", default="transformer", type=click.Choice(["transformer", "conformer"]), show_default=True,
              help="Encoder backbone.")
@click.option("--m", "--tracks-per-artist", "m", default=4, type=click.IntRange(min=2), show_default=True,
              help="Tracks of each artist in a batch (under torchrun write --tracks-per-artist: torchrun's "
                   "parser takes --m for an abbreviation of its own options).")
@click.option("--artists-per-batch", default=16, type=click.IntRange(min=2), show_default=True,
              help="Artists in a batch (no artist twice in an epoch).")
@click.option("--lr", default=1e-3, type=click.FloatRange(min=0, min_open=True), show_default=True,
              help="Peak learning rate (warmup, then cosine).")
@click.option("--holdout", default=0.2, type=click.FloatRange(0, 1, max_open=True), show_default=True,
              help="Fraction of the artists held out (with all their tracks) for `evaluate yandex`; validation "
                   "during training uses another 12.5% of the rest.")
@click.option("--curriculum/--no-curriculum", default=True, show_default=True,
              help="Crop length 10 -> 81 steps over the first half of the epochs (else 81 throughout).")
@click.option("--pooled-branch/--no-pooled-branch", default=True, show_default=True,
              help="Add the gain-weighted, time-averaged standardised features to the embedding.")
@_embedding_options(1, "Embed tracks as the mean over rolling windows of this many steps (default: whole tracks).",
                    "torch CPU threads (0: 1 on the CPU, where the loader thread needs the other core).")
@user_errors
def train_cmd(store: Path, out_dir: Path, epochs: int, max_minutes: float | None, device: str, seed: int,
              no_resume: bool, arch: str, m: int, artists_per_batch: int, lr: float, holdout: float,
              curriculum: bool, pooled_branch: bool, window: int | None, hop: int | None,
              torch_threads: int, val_sample: int) -> None:
    """Artist-embedding encoder on STORE's train tracks; checkpoints (resumable), best.pt and history under OUT_DIR."""
    from models.yandex.train import MAX_CROP, train_yandex

    result = train_yandex(store, out_dir, arch=arch, epochs=epochs, m=m, artists_per_batch=artists_per_batch, lr=lr,
                          holdout=holdout, seed=seed, curriculum=(10, MAX_CROP) if curriculum else None,
                          window=window, hop=hop, device=device, max_minutes=max_minutes, resume=not no_resume,
                          model={"pooled_branch": pooled_branch}, torch_threads=cpu_torch_threads(device, torch_threads),
                          val_sample=val_sample)
    echo_lines(result.lines())


def several_checkpoints(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The shared evaluate options, with CHECKPOINT taking one or more paths (an ensemble)."""
    fn = evaluate_options("submission.tsv")(fn)
    params = fn.__click_params__
    at = next(i for i, p in enumerate(params) if p.name == "checkpoint")
    params[at] = click.Argument(["checkpoints"], nargs=-1, required=True, type=click.Path(path_type=Path),
                                callback=checkpoint_files)
    return fn


@click.command("yandex")
@several_checkpoints
@click.option("--rerank", is_flag=True, help="Re-rank the submission (query expansion over close neighbours).")
@click.option("--threshold", default=0.85, type=click.FloatRange(-1, 1), show_default=True,
              help="Re-ranking: neighbours closer than this cosine are kept and averaged with the query.")
@_embedding_options(0, "Embed as the mean over rolling windows of this many steps (0: whole tracks; default: as "
                       "trained).", "torch CPU threads (0: 1 on the CPU).")
@click.option("--raw-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Raw folder of a `fstore synth yandex` store: adds the planted-truth oracle (ceiling) row.")
@user_errors
def evaluate_cmd(store: Path, checkpoints: tuple[Path, ...], out: Path, metrics_json: Path | None, device: str,
                 rerank: bool, threshold: float, window: int | None, hop: int | None, torch_threads: int,
                 raw_dir: Path | None) -> None:
    """Score CHECKPOINT(s) on their held-out artists (each model and the ensemble, with and without
    re-ranking, beside the random and mean-pooled baselines, and the oracle with --raw-dir) and write the
    test submission (top 100 per track) from all of them."""
    import torch

    from models.yandex.evaluate import evaluate_yandex

    threads = cpu_torch_threads(device, torch_threads)
    if threads:
        torch.set_num_threads(threads)
    scores, submitted = evaluate_yandex(store, list(checkpoints), out=out, rerank_submission=rerank,
                                        threshold=threshold, device=device, window=window, hop=hop,
                                        raw_dir=raw_dir)
    click.echo(f"wrote {out} (test split, top 100 per track)")
    click.echo(f"model = {submitted}")
    report_scores({name: {"ndcg@100": v} for name, v in scores.items()}, metric="ndcg@100",
                  split="holdout artists", metrics_json=metrics_json,
                  baselines=("random", "mean_pooled", "mean_pooled_standardized"),
                  ceiling=("oracle",) if raw_dir is not None else ())


COMMANDS = {"synth": synth_cmd, "ingest": ingest_cmd, "train": train_cmd, "evaluate": evaluate_cmd}
