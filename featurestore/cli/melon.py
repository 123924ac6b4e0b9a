"""Melon Playlist Continuation (Kakao Arena 2020): ``synth melon``, ``ingest melon``, ``split melon``."""

from __future__ import annotations

from pathlib import Path

import click

from ..schemas import melon as schema
from .common import (
    SYNTH_OUT,
    cpu_torch_threads,
    echo_lines,
    evaluate_options,
    freeze_imports,
    ingest_options,
    print_ingest_summary,
    report_scores,
    synth_options,
    train_options,
    user_errors,
)


@click.command("melon")
@SYNTH_OUT
@click.option("--playlists", default=15_000, type=click.IntRange(min=20), show_default=True,
              help="Playlists over train/val/test (80/13/7 %; real release: 148826).")
@click.option("--songs", default=30_000, type=click.IntRange(min=300), show_default=True,
              help="Songs in song_meta.json (real release: 707989).")
@synth_options
@user_errors
def synth_cmd(out: Path, playlists: int, songs: int, seed: int, overwrite: bool) -> None:
    """Melon layout under OUT: train/val/test.json, song_meta.json, genre_gn_all.json, answers/{val,test}.json,
    with planted themes (truth in OUT/_planted/, read by the oracle)."""
    from ..synth.melon import synth_melon

    click.echo(synth_melon(out, playlists=playlists, songs=songs, seed=seed, overwrite=overwrite).line(out))


@click.command("melon")
@ingest_options
@user_errors
def ingest_cmd(raw_dir: Path, store: Path, overwrite: bool) -> None:
    """song_meta.json, genre_gn_all.json, train.json [val.json, test.json, answers/*.json] under RAW_DIR into STORE."""
    from ..ingest.melon import ingest_melon

    freeze_imports()
    print_ingest_summary(raw_dir, store, ingest_melon(raw_dir, store, overwrite=overwrite))


@click.command("melon")
@click.argument("raw_dir", type=click.Path(path_type=Path))
@SYNTH_OUT
@click.option("--fraction", default=0.1, type=click.FloatRange(0, 1, min_open=True, max_open=True), show_default=True,
              help="Share of RAW_DIR's train playlists (with a song and a tag) that become val questions.")
@synth_options
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


@click.command("melon")
@train_options(epochs=12)
@click.option("--batch-size", default=256, type=click.IntRange(min=1), show_default=True, help="Playlists per batch.")
@click.option("--lr", default=1e-2, type=click.FloatRange(min=0, min_open=True), show_default=True,
              help="Peak learning rate (warmup, then cosine).")
@click.option("--denoise", default=0.7, type=click.FloatRange(0, 1, max_open=True), show_default=True,
              help="Share of each playlist's songs and tags dropped from the autoencoder's input (never all).")
@click.option("--min-count", default=2, type=click.IntRange(min=1), show_default=True,
              help="Songs and tags in fewer train playlists are left out of the model's vocabulary.")
@click.option("--question-mix", nargs=2, default=(0.3, 0.15), type=click.FloatRange(0, 1), show_default=True,
              help="Shares of training inputs that lose all their tags / all their songs, as the official "
                   "songs-only and tags-only questions do.")
@click.option("--title-share", default=0.3, type=click.FloatRange(0, 1, max_open=True), show_default=True,
              help="Share of --max-minutes for the title model (0: do not train it).")
@user_errors
def train_cmd(store: Path, out_dir: Path, epochs: int, max_minutes: float | None, device: str, seed: int,
              no_resume: bool, batch_size: int, lr: float, denoise: float, min_count: int, question_mix: tuple[float, float],
              title_share: float, val_sample: int) -> None:
    """Denoising autoencoder (validated on the val split with the official score each epoch) and title model
    on STORE's playlists; checkpoints (resumable), best.pt, history and title/ under OUT_DIR."""
    import torch

    from models.melon.train import train_melon

    if sum(question_mix) > 1:
        raise click.BadParameter(f"the two shares sum to {sum(question_mix):g}, more than 1",
                                 param_hint="'--question-mix'")
    if threads := cpu_torch_threads(device, 0):
        torch.set_num_threads(threads)
    result = train_melon(store, out_dir, epochs=epochs, max_minutes=max_minutes, title_share=title_share,
                         device=device, batch_size=batch_size, lr=lr, denoise=denoise, question_mix=question_mix,
                         min_count=min_count,
                         seed=seed, resume=not no_resume, val_sample=val_sample)
    echo_lines(result.lines())


@click.command("melon")
@evaluate_options(schema.RESULTS)
@click.option("--split", default="val", show_default=True, help="Split to recommend for (scored when it has answers).")
@click.option("--title-model", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Title model file (default: title/title_model.pt next to CHECKPOINT, used when present).")
@click.option("--raw-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Raw folder of a `fstore synth melon` store: adds the planted-truth oracle row.")
@click.option("--submit", default=None,
              type=click.Choice(["autoencoder", "autoencoder+cooccurrence", "ensemble", "ensemble+cooccurrence",
                                 "cooccurrence", "title", "most_popular"]),
              help="Predictor written to --out (default: ensemble+cooccurrence, or autoencoder+cooccurrence "
                   "without a title model; ensembles need the title model).")
@click.option("--choice-sample", default=2000, type=click.IntRange(min=0), show_default=True,
              help="Val playlists the blend weights are chosen on (a fixed sample; 0: all of them).")
@user_errors
def evaluate_cmd(store: Path, checkpoint: Path, out: Path, metrics_json: Path | None, device: str, split: str,
                 title_model: Path | None, raw_dir: Path | None, submit: str | None, choice_sample: int) -> None:
    """Recommend 100 songs and 10 tags per playlist of a split with the autoencoder CHECKPOINT, its blends and
    the title model, scored beside most popular, item co-occurrence (and the oracle); writes --submit's file.
    Blend weights are chosen on the val split (the tuned ones, or a part alone where it scores higher)."""
    import torch

    from featurestore.store import Store
    from models.melon.evaluate import evaluate_melon

    if threads := cpu_torch_threads(device, 0):
        torch.set_num_threads(threads)
    scores, submitted = evaluate_melon(Store(store), checkpoint, out, split=split, title_model=title_model,
                                       raw_dir=raw_dir, submit=submit, device=device, echo=click.echo,
                                       choice_sample=choice_sample)
    click.echo(f"wrote {out} ({split} split, {submitted})")
    if scores:
        report_scores(scores, metric="score", split=split, metrics_json=metrics_json, model=submitted,
                      baselines=("most_popular", "cooccurrence"), ceiling=("oracle",))
    else:
        click.echo(f"split {split!r} has no answers: not scored")


COMMANDS |= {"train": train_cmd, "evaluate": evaluate_cmd}
