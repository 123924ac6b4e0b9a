"""Melon Playlist Continuation (Kakao Arena 2020): ``synth melon``, ``ingest melon``, ``split melon``."""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    OVERWRITE_STORE,
    OVERWRITE_SYNTH,
    RAW_AND_STORE,
    SEED,
    SYNTH_OUT,
    print_ingest_summary,
    user_errors,
)


@click.command("melon")
@SYNTH_OUT
@click.option("--playlists", default=15_000, type=click.IntRange(min=20), show_default=True,
              help="Playlists over train/val/test (80/13/7 %; real release: 148826).")
@click.option("--songs", default=30_000, type=click.IntRange(min=300), show_default=True,
              help="Songs in song_meta.json (real release: 707989).")
@SEED
@OVERWRITE_SYNTH
@user_errors
def synth_cmd(out: Path, playlists: int, songs: int, seed: int, overwrite: bool) -> None:
    """Melon layout under OUT: train/val/test.json, song_meta.json, genre_gn_all.json, answers/{val,test}.json,
    with planted themes (truth in OUT/_planted/, read by the oracle)."""
    from ..synth.melon import synth_melon

    click.echo(synth_melon(out, playlists=playlists, songs=songs, seed=seed, overwrite=overwrite).line(out))


@click.command("melon")
@RAW_AND_STORE
@OVERWRITE_STORE
@user_errors
def ingest_cmd(raw_dir: Path, store: Path, overwrite: bool) -> None:
    """song_meta.json, genre_gn_all.json, train.json [val.json, test.json, answers/*.json] under RAW_DIR into STORE."""
    from ..ingest.melon import ingest_melon

    print_ingest_summary(raw_dir, store, ingest_melon(raw_dir, store, overwrite=overwrite))


@click.command("melon")
@click.argument("raw_dir", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--fraction", default=0.1, type=click.FloatRange(0, 1, min_open=True, max_open=True), show_default=True,
              help="Share of RAW_DIR's train playlists (with a song and a tag) that become val questions.")
@SEED
@OVERWRITE_SYNTH
@user_errors
def split_cmd(raw_dir: Path, out: Path, fraction: float, seed: int, overwrite: bool) -> None:
    """Offline validation split of RAW_DIR/train.json into OUT (train.json, val.json, answers/val.json, song files)
    as the official split script makes it; `fstore ingest melon OUT STORE` reads it."""
    from ..ingest.melon_split import split_melon

    summary = split_melon(raw_dir, out, fraction=fraction, seed=seed, overwrite=overwrite)
    click.echo(f"split {raw_dir} -> {out}")
    for line in summary.lines():
        click.echo("  " + line)


COMMANDS = {"synth": synth_cmd, "ingest": ingest_cmd, "split": split_cmd}

# --- train / evaluate (melonmodel) -----------------------------------------------------------------
