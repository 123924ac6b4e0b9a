"""FSDKaggle2019 (multi-label audio tagging): ``synth fsd``, ``ingest fsd``."""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    OVERWRITE_STORE,
    OVERWRITE_SYNTH,
    QUANTIZER,
    RAW_AND_STORE,
    SAMPLE,
    SEED,
    SYNTH_OUT,
    print_ingest_summary,
    user_errors,
)


@click.command("fsd")
@SYNTH_OUT
@click.option("--curated", default=200, type=click.IntRange(min=1), show_default=True,
              help="Clips in train_curated (clean labels).")
@click.option("--noisy", default=300, type=click.IntRange(min=0), show_default=True,
              help="Clips in train_noisy (noisy labels).")
@click.option("--classes", default=80, type=click.IntRange(min=1), show_default=True, help="Label vocabulary size.")
@click.option("--test-clips", default=20, type=click.IntRange(min=0), show_default=True, help="Unlabelled test clips.")
@click.option("--max-seconds", default=4.0, show_default=True, help="Longest clip, in seconds.")
@SEED
@OVERWRITE_SYNTH
@user_errors
def synth_cmd(out: Path, curated: int, noisy: int, classes: int, test_clips: int, max_seconds: float, seed: int,
              overwrite: bool) -> None:
    """FSDKaggle2019 layout: train_curated/noisy CSVs and wavs, test/, sample_submission.csv under OUT."""
    from ..synth.fsd import synth_fsd

    s = synth_fsd(out, curated=curated, noisy=noisy, classes=classes, test_clips=test_clips,
                  max_seconds=max_seconds, seed=seed, overwrite=overwrite)
    click.echo(f"wrote {s.files} files to {out}: {s.clips} clips, {s.classes} classes, {s.bytes / 1e6:.1f} MB")


@click.command("fsd")
@RAW_AND_STORE
@OVERWRITE_STORE
@click.option("--sample-rate", default=44100, show_default=True, help="Required wav sample rate (Hz).")
@click.option("--n-fft", default=1764, show_default=True, help="STFT window length in samples.")
@click.option("--hop", default=220, show_default=True, help="STFT hop in samples (frames per second = rate / hop).")
@click.option("--n-mels", default=64, show_default=True, help="Mel bins a frame.")
@click.option("--two-pass", is_flag=True, help="Exact per-bin range from a first pass (computes the mel twice).")
@click.option("--workers", type=int, default=None, help="Decode/mel threads (default: CPU count, max 16).")
@QUANTIZER
@SAMPLE
@user_errors
def ingest_cmd(raw_dir: Path, store: Path, overwrite: bool, sample_rate: int, n_fft: int, hop: int, n_mels: int,
               two_pass: bool, workers: int | None, kind: str, sample_frames: int | None) -> None:
    """train_curated/noisy CSVs + wavs (and test/ via sample_submission.csv) under RAW_DIR -> log-mel frames."""
    from ..ingest.fsd import ingest_fsd

    print_ingest_summary(raw_dir, store, ingest_fsd(
        raw_dir, store, overwrite=overwrite, sample_rate=sample_rate, n_fft=n_fft, hop=hop, n_mels=n_mels,
        two_pass=two_pass, workers=workers, kind=kind, sample_frames=sample_frames))


COMMANDS = {"synth": synth_cmd, "ingest": ingest_cmd}
