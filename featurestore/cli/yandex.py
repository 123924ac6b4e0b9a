"""Yandex Cup 2022 (artist metric learning): ``synth yandex``, ``ingest yandex``."""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    ONE_PASS,
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


@click.command("yandex")
@SYNTH_OUT
@click.option("--tracks", default=2000, type=click.IntRange(min=1), show_default=True, help="Train tracks.")
@click.option("--artists", default=200, type=click.IntRange(min=1), show_default=True, help="Train artists.")
@click.option("--test-tracks", default=300, type=click.IntRange(min=0), show_default=True,
              help="Unlabelled test tracks.")
@SEED
@OVERWRITE_SYNTH
@user_errors
def synth_cmd(out: Path, tracks: int, artists: int, test_tracks: int, seed: int, overwrite: bool) -> None:
    """Yandex Cup 2022 layout: train_meta.tsv, test_meta.tsv, {fold}/{trackid}.npy (512 x T) under OUT."""
    from ..synth.yandex import synth_yandex

    s = synth_yandex(out, tracks=tracks, artists=artists, test_tracks=test_tracks, seed=seed,
                     overwrite=overwrite)
    click.echo(f"wrote {s.files} files to {out}: {s.clips} tracks, {s.classes} train artists, {s.bytes / 1e6:.1f} MB")


@click.command("yandex")
@RAW_AND_STORE
@OVERWRITE_STORE
@ONE_PASS
@QUANTIZER
@SAMPLE
@user_errors
def ingest_cmd(raw_dir: Path, store: Path, overwrite: bool, one_pass: bool, kind: str,
               sample_frames: int | None) -> None:
    """train_meta.tsv / test_meta.tsv + per-track .npy (512 x T) under RAW_DIR into frame sets in STORE."""
    from ..ingest.yandex import ingest_yandex

    print_ingest_summary(raw_dir, store, ingest_yandex(raw_dir, store, overwrite=overwrite, two_pass=not one_pass,
                                                       kind=kind, sample_frames=sample_frames))


COMMANDS = {"synth": synth_cmd, "ingest": ingest_cmd}
