"""Speaker identification mels: ``synth speakers``, ``ingest speakers``, ``train speakers``, ``evaluate speakers``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import (
    SYNTH_OUT,
    clip_ingest_command,
    cpu_torch_threads,
    echo_lines,
    evaluate_options,
    report_scores,
    synth_options,
    train_options,
    user_errors,
)


@click.command("speakers")
@SYNTH_OUT
@click.option("--speakers", default=40, type=click.IntRange(min=1), show_default=True, help="Speakers (classes).")
@click.option("--utterances", default=20, type=click.IntRange(min=1), show_default=True,
              help="Labelled utterances per speaker.")
@click.option("--test-utterances", default=100, type=click.IntRange(min=0), show_default=True,
              help="Test utterances (labels in test_labels.json).")
@synth_options
@user_errors
def synth_cmd(out: Path, speakers: int, utterances: int, test_utterances: int, seed: int, overwrite: bool) -> None:
    """Speaker homework layout: Dataset/{mapping,metadata,testdata,test_labels}.json + uttr-*.pt under OUT."""
    from ..synth.speakers import synth_speakers

    s = synth_speakers(out, speakers=speakers, utterances_per_speaker=utterances,
                       test_utterances=test_utterances, seed=seed, overwrite=overwrite)
    click.echo(f"wrote {s.files} files to {out}: {s.clips} utterances, {s.classes} speakers, {s.bytes / 1e6:.1f} MB")


@clip_ingest_command("speakers")
def ingest_cmd(raw_dir: Path, store: Path, **options: Any) -> Any:
    """Dataset/ mapping, metadata, testdata JSON + uttr-*.pt mel tensors under RAW_DIR into STORE."""
    from ..ingest.speakers import ingest_speakers

    return ingest_speakers(raw_dir, store, **options)


@click.command("speakers")
@train_options(epochs=30)
@click.option("--batch-size", default=32, type=click.IntRange(min=1), show_default=True,
              help="Utterance crops a step.")
@click.option("--crop", default=128, type=click.IntRange(min=1), show_default=True,
              help="Frames of the random training crop (inference uses whole utterances).")
@click.option("--lr", default=1e-3, show_default=True, help="Peak learning rate (warmup, then cosine).")
@click.option("--holdout", default=0.1, type=click.FloatRange(0.0, 1.0, max_open=True), show_default=True,
              help="Share of each speaker's utterances held out for validation (0: none).")
@click.option("--layers", default=None, type=click.IntRange(min=1), help="Conformer layers (default 2).")
@click.option("--d-model", default=None, type=click.IntRange(min=4), help="Conformer width (default 128).")
@click.option("--ffn", default=None, type=click.IntRange(min=1), help="Conformer feed-forward width (default 256).")
@click.option("--pooling", default=None, type=click.Choice(["attention", "attention+max"]),
              help="Utterance pooling (default attention).")
@user_errors
def train_cmd(store: Path, out_dir: Path, epochs: int, max_minutes: float | None, device: str, seed: int,
              no_resume: bool, batch_size: int, crop: int, lr: float, holdout: float, layers: int | None,
              d_model: int | None, ffn: int | None, pooling: str | None, val_sample: int) -> None:
    """Speaker classifier (Conformer + attention pooling + AM-softmax) on STORE's train split; checkpoints
    (resumable), best.pt and history under OUT_DIR."""
    import torch

    from models.speakers import train_speakers

    if threads := cpu_torch_threads(device, 0):
        torch.set_num_threads(threads)
    model = {k: v for k, v in {"layers": layers, "d_model": d_model, "ffn": ffn, "pooling": pooling}.items()
             if v is not None}
    result = train_speakers(store, out_dir, epochs=epochs, batch_size=batch_size, crop=crop, lr=lr, holdout=holdout,
                            seed=seed, device=device, max_minutes=max_minutes, resume=not no_resume, model=model,
                            val_sample=val_sample)
    echo_lines(result.lines())


@click.command("speakers")
@evaluate_options("output.csv")
@click.option("--raw-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Raw folder of a `fstore synth speakers` store: adds the planted-truth oracle (ceiling) row.")
@user_errors
def evaluate_cmd(store: Path, checkpoint: Path, out: Path, metrics_json: Path | None, device: str,
                 raw_dir: Path | None) -> None:
    """Accuracy of CHECKPOINT on the held-out validation utterances beside a logistic regression on pooled
    mels, nearest class mean and random (also on test when labelled; with --raw-dir the oracle too);
    writes the Id,Category predictions for testdata.json to --out."""
    import torch

    from models.speakers import BASELINES, evaluate_speakers, write_predictions

    from ..store.errors import FstoreError

    if threads := cpu_torch_threads(device, 0):
        torch.set_num_threads(threads)

    from models.speakers.data import TEST, open_speakers

    # before any pass: a store without test utterances gets its one line, not a progress bar first
    if TEST not in open_speakers(store).tables:
        raise FstoreError(f"{store}: no test split (testdata.json was not ingested): nothing to predict")
    result = evaluate_speakers(store, checkpoint, device=device, raw_dir=raw_dir)
    write_predictions(store, result.test_predictions, out)
    click.echo(f"wrote {out} ({len(result.test_predictions)} test utterances)")
    for split in ("test", "validation"):
        if split in result.scores:
            report_scores({n: {"accuracy": v} for n, v in result.scores[split].items()}, metric="accuracy",
                          split=split, metrics_json=metrics_json if split == "validation" else None,
                          baselines=BASELINES, ceiling=("oracle",))


COMMANDS = {"synth": synth_cmd, "ingest": ingest_cmd, "train": train_cmd, "evaluate": evaluate_cmd}
