"""FSDKaggle2019 (multi-label audio tagging): ``synth fsd``, ``ingest fsd``, ``train fsd``, ``evaluate fsd``."""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    SYNTH_OUT,
    clip_ingest_options,
    cpu_torch_threads,
    distributed_options,
    echo_lines,
    evaluate_options,
    ingest_options,
    report_scores,
    run_clip_ingest,
    synth_options,
    train_options,
    user_errors,
)


@click.command("fsd")
@SYNTH_OUT
@click.option("--curated", default=400, type=click.IntRange(min=1), show_default=True,
              help="Clips in train_curated (clean labels).")
@click.option("--noisy", default=600, type=click.IntRange(min=0), show_default=True,
              help="Clips in train_noisy (noisy labels).")
@click.option("--classes", default=80, type=click.IntRange(min=1), show_default=True, help="Label vocabulary size.")
@click.option("--test-clips", default=20, type=click.IntRange(min=0), show_default=True, help="Unlabelled test clips.")
@click.option("--max-seconds", default=4.0, show_default=True, help="Longest clip, in seconds.")
@synth_options
@user_errors
def synth_cmd(out: Path, curated: int, noisy: int, classes: int, test_clips: int, max_seconds: float, seed: int,
              overwrite: bool) -> None:
    """FSDKaggle2019 layout: train_curated/noisy CSVs and wavs, test/, sample_submission.csv under OUT."""
    from ..synth.fsd import synth_fsd

    s = synth_fsd(out, curated=curated, noisy=noisy, classes=classes, test_clips=test_clips,
                  max_seconds=max_seconds, seed=seed, overwrite=overwrite)
    click.echo(f"wrote {s.files} files to {out}: {s.clips} clips, {s.classes} classes, {s.bytes / 1e6:.1f} MB")


@click.command("fsd")
@ingest_options
@click.option("--sample-rate", default=44100, show_default=True, help="Required wav sample rate (Hz).")
@click.option("--n-fft", default=1764, show_default=True, help="STFT window length in samples.")
@click.option("--hop", default=220, show_default=True, help="STFT hop in samples (frames per second = rate / hop).")
@click.option("--n-mels", default=64, show_default=True, help="Mel bins a frame.")
@click.option("--two-pass", is_flag=True, help="Exact per-bin range from a first pass (computes the mel twice).")
@click.option("--threads", "workers", type=int, default=None,
              help="Decode/mel threads in this process (default: CPU count, max 16).")
@clip_ingest_options
@distributed_options
@user_errors
def ingest_cmd(raw_dir: Path, store: Path, overwrite: bool, sample_rate: int, n_fft: int, hop: int, n_mels: int,
               two_pass: bool, workers: int | None, kind: str, sample_frames: int | None, append: bool,
               dask_workers: int, scheduler: str | None) -> None:
    """train_curated/noisy CSVs + wavs (and test/ via sample_submission.csv) under RAW_DIR -> log-mel frames."""
    from ..ingest.fsd import ingest_fsd

    run_clip_ingest(ingest_fsd, raw_dir, store, dask_workers, scheduler, overwrite=overwrite, append=append,
                    sample_rate=sample_rate, n_fft=n_fft, hop=hop, n_mels=n_mels, two_pass=two_pass, workers=workers,
                    kind=kind, sample_frames=sample_frames)


@click.command("fsd")
@train_options(epochs=60)
@click.option("--batch-size", default=32, type=click.IntRange(min=1), show_default=True, help="Crops a step.")
@click.option("--lr", default=3e-3, show_default=True, help="Peak learning rate (warmup, then cosine annealing).")
@click.option("--crop", default=128, type=click.IntRange(min=8), show_default=True,
              help="Training crop in frames (5 ms each); inference averages windows of this length, half overlapping.")
@click.option("--noisy", default="weighted", show_default=True, type=click.Choice(["curated", "mixed", "weighted"]),
              help="Noisy clips: left out, trained like curated ones, or trained with --noisy-weight.")
@click.option("--noisy-weight", default=0.5, type=click.FloatRange(0, 1, min_open=True), show_default=True,
              help="Loss weight of a noisy clip under --noisy weighted (curated clips weigh 1).")
@click.option("--mixup", "mixup_alpha", default=0.4, type=click.FloatRange(min=0), show_default=True,
              help="Mixup Beta(alpha, alpha) parameter; 0 turns mixup off.")
@click.option("--no-spec-augment", is_flag=True, help="Train without SpecAugment frequency/time masks.")
@click.option("--holdout", default=0.2, type=click.FloatRange(0, 1, min_open=True, max_open=True), show_default=True,
              help="Share of the curated clips held out for validation (stratified by rarest label, by --seed).")
@click.option("--width", default=16, type=click.IntRange(min=1), show_default=True,
              help="Channels of the first ResNet stage (doubling each stage).")
@click.option("--depth", default=1, type=click.IntRange(min=1), show_default=True,
              help="Residual blocks per stage (4 stages).")
@click.option("--patience", default=30, type=click.IntRange(min=1), show_default=True,
              help="Stop after this many epochs without a better validation lwlrap.")
@user_errors
def train_cmd(store: Path, out_dir: Path, epochs: int, max_minutes: float | None, device: str, seed: int,
              no_resume: bool, batch_size: int, lr: float, crop: int, noisy: str, noisy_weight: float,
              mixup_alpha: float, no_spec_augment: bool, holdout: float, width: int, depth: int,
              patience: int, val_sample: int) -> None:
    """CNN tagger on STORE's train clips (curated validation held out); checkpoints, best.pt, history in OUT_DIR."""
    from models.fsd.train import train_fsd

    result = train_fsd(store, out_dir, epochs=epochs, batch_size=batch_size, lr=lr, crop=crop, noisy=noisy,
                       noisy_weight=noisy_weight, mixup_alpha=mixup_alpha, spec_augment_masks=not no_spec_augment,
                       holdout=holdout, seed=seed, device=device, max_minutes=max_minutes, resume=not no_resume,
                       patience=patience, model={"width": width, "depth": depth}, val_sample=val_sample,
                       torch_threads=cpu_torch_threads(device, 0))
    echo_lines(result.lines())


@click.command("fsd")
@evaluate_options("submission.csv")
@click.option("--sample-submission", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write rows and class columns in this sample_submission.csv's order (checked against the store).")
@click.option("--raw-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The `fstore synth fsd` folder of STORE: adds the ceiling row from its planted truth.")
@user_errors
def evaluate_cmd(store: Path, checkpoint: Path, out: Path, metrics_json: Path | None, device: str,
                 sample_submission: Path | None, raw_dir: Path | None) -> None:
    """lwlrap of CHECKPOINT on its held-out curated clips beside a logistic regression on pooled log-mel,
    class priors and random scores (and the planted-event ceiling with --raw-dir); test submission."""
    import torch

    from models.fsd.evaluate import DETECTOR, evaluate_fsd

    if threads := cpu_torch_threads(device, 0):
        torch.set_num_threads(threads)
    result = evaluate_fsd(store, checkpoint, out, device=device, sample_submission=sample_submission,
                          raw_dir=raw_dir)
    click.echo(f"wrote {result.submission}" if result.submission else f"{store}: no test split, no submission")
    click.echo(f"validation: {result.validation_clips} held-out curated clips; the logistic regression "
               f"(C {result.baseline_c:g}) was fitted on the model's training clips and weights")
    rows = {**result.scores, **result.ceiling}
    report_scores({name: {"lwlrap": value} for name, value in rows.items()}, metric="lwlrap",
                  split="validation", metrics_json=metrics_json, ceiling=(DETECTOR,) if result.ceiling else ())


COMMANDS = {"synth": synth_cmd, "ingest": ingest_cmd, "train": train_cmd, "evaluate": evaluate_cmd}
