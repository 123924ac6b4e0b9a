"""Speaker identification mels: ``synth speakers``, ``ingest speakers``."""

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


@click.command("speakers")
@SYNTH_OUT
@click.option("--speakers", default=40, type=click.IntRange(min=1), show_default=True, help="Speakers (classes).")
@click.option("--utterances", default=20, type=click.IntRange(min=1), show_default=True,
              help="Labelled utterances per speaker.")
@click.option("--test-utterances", default=100, type=click.IntRange(min=0), show_default=True,
              help="Test utterances (labels in test_labels.json).")
@SEED
@OVERWRITE_SYNTH
@user_errors
def synth_cmd(out: Path, speakers: int, utterances: int, test_utterances: int, seed: int, overwrite: bool) -> None:
    """Speaker homework layout: Dataset/{mapping,metadata,testdata,test_labels}.json + uttr-*.pt under OUT."""
    from ..synth.speakers import synth_speakers

    s = synth_speakers(out, speakers=speakers, utterances_per_speaker=utterances,
                       test_utterances=test_utterances, seed=seed, overwrite=overwrite)
    click.echo(f"wrote {s.files} files to {out}: {s.clips} utterances, {s.classes} speakers, {s.bytes / 1e6:.1f} MB")


@click.command("speakers")
@RAW_AND_STORE
@OVERWRITE_STORE
@ONE_PASS
@QUANTIZER
@SAMPLE
@user_errors
def ingest_cmd(raw_dir: Path, store: Path, overwrite: bool, one_pass: bool, kind: str,
               sample_frames: int | None) -> None:
    """Dataset/ mapping, metadata, testdata JSON + uttr-*.pt mel tensors under RAW_DIR into STORE."""
    from ..ingest.speakers import ingest_speakers

    print_ingest_summary(raw_dir, store, ingest_speakers(raw_dir, store, overwrite=overwrite, two_pass=not one_pass,
                                                         kind=kind, sample_frames=sample_frames))


COMMANDS = {"synth": synth_cmd, "ingest": ingest_cmd}
