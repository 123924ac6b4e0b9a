"""``fstore``: the command line, thin over the library API that training scripts call directly."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from .store.errors import FstoreError


def user_errors(fn):
    """Bad input and user mistakes print one line and exit 1; bugs still show a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FstoreError as e:
            raise click.ClickException(str(e)) from None
        except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
            raise click.ClickException(f"{e.filename}: {e.strerror}") from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fstore")
def main() -> None:
    """fstore: an 8-bit quantized feature store and GPU-ready loaders for music and audio ML."""


# --- synth -----------------------------------------------------------------------------------

@main.group()
def synth() -> None:
    """Write synthetic raw data in the exact public formats (with planted, learnable signal)."""


@synth.command("spotify")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--sessions", default=20000, type=click.IntRange(min=1), show_default=True, help="Sessions in all (train + test).")
@click.option("--tracks", default=5000, type=click.IntRange(min=1), show_default=True, help="Tracks in track_features.")
@click.option("--seed", default=0, show_default=True)
@click.option("--train-files", default=4, type=click.IntRange(min=1), show_default=True, help="Number of training_set/log_* files.")
@click.option("--gzip", "gz", is_flag=True, help="Write .csv.gz files.")
@user_errors
def synth_spotify_cmd(out: Path, sessions: int, tracks: int, seed: int, train_files: int, gz: bool) -> None:
    """MSSD layout: training_set/, track_features/, test_set/ (with ground truth) under OUT."""
    from .synth.spotify import synth_spotify

    s = synth_spotify(out, sessions=sessions, tracks=tracks, seed=seed, train_files=train_files, gzip=gz)
    click.echo(f"wrote {len(s.files)} files to {out}: {s.n_events} events, {s.n_tracks} tracks")


# --- ingest ----------------------------------------------------------------------------------

@main.group()
def ingest() -> None:
    """Stream raw public-format files into a store (write aside, commit by rename)."""


@ingest.command("spotify")
@click.argument("raw_dir", type=click.Path(path_type=Path))
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace an existing store at STORE.")
@click.option("--no-source-checksums", is_flag=True, help="Skip sha256 of the raw files in the manifest.")
@user_errors
def ingest_spotify_cmd(raw_dir: Path, store: Path, overwrite: bool, no_source_checksums: bool) -> None:
    """MSSD training_set/, track_features/ and test_set/ under RAW_DIR (plain or .csv.gz) into STORE."""
    from .ingest.spotify import ingest_spotify

    summary = ingest_spotify(raw_dir, store, overwrite=overwrite, source_checksums=not no_source_checksums)
    click.echo(f"ingested {raw_dir} -> {store}")
    for line in summary.lines():
        click.echo("  " + line)


# --- audio frame sets: synth + ingest for yandex, fsd, speakers ------------------------------

_QUANTIZER = click.option("--quantizer", "kind", default="affine", show_default=True,
                          type=click.Choice(["affine", "quantile", "auto"]), help="Per-bin 8-bit quantizer.")
_SAMPLE = click.option("--sample-frames", type=int, default=None,
                       help="Frames the quantizers are fitted on (default: 64 MB of float32).")


@synth.command("yandex")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--tracks", default=2000, type=click.IntRange(min=1), show_default=True, help="Train tracks.")
@click.option("--artists", default=200, type=click.IntRange(min=1), show_default=True, help="Train artists.")
@click.option("--test-tracks", default=300, type=click.IntRange(min=0), show_default=True)
@click.option("--seed", default=0, show_default=True)
@user_errors
def synth_yandex_cmd(out: Path, tracks: int, artists: int, test_tracks: int, seed: int) -> None:
    """Yandex Cup 2022 layout: train_meta.tsv, test_meta.tsv, {fold}/{trackid}.npy (512 x T) under OUT."""
    from .synth.yandex import synth_yandex

    s = synth_yandex(out, tracks=tracks, artists=artists, test_tracks=test_tracks, seed=seed)
    click.echo(f"wrote {s.files} files to {out}: {s.clips} tracks, {s.classes} train artists, {s.bytes / 1e6:.1f} MB")


@synth.command("fsd")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--curated", default=200, type=click.IntRange(min=1), show_default=True)
@click.option("--noisy", default=300, type=click.IntRange(min=0), show_default=True)
@click.option("--classes", default=80, type=click.IntRange(min=1), show_default=True)
@click.option("--test-clips", default=20, type=click.IntRange(min=0), show_default=True)
@click.option("--max-seconds", default=4.0, show_default=True)
@click.option("--seed", default=0, show_default=True)
@user_errors
def synth_fsd_cmd(out: Path, curated: int, noisy: int, classes: int, test_clips: int, max_seconds: float,
                  seed: int) -> None:
    """FSDKaggle2019 layout: train_curated/noisy CSVs and wavs, test/, sample_submission.csv under OUT."""
    from .synth.fsd import synth_fsd

    s = synth_fsd(out, curated=curated, noisy=noisy, classes=classes, test_clips=test_clips,
                  max_seconds=max_seconds, seed=seed)
    click.echo(f"wrote {s.files} files to {out}: {s.clips} clips, {s.classes} classes, {s.bytes / 1e6:.1f} MB")


@synth.command("speakers")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--speakers", default=40, type=click.IntRange(min=1), show_default=True)
@click.option("--utterances", default=20, type=click.IntRange(min=1), show_default=True, help="Labelled utterances per speaker.")
@click.option("--test-utterances", default=100, type=click.IntRange(min=0), show_default=True)
@click.option("--seed", default=0, show_default=True)
@user_errors
def synth_speakers_cmd(out: Path, speakers: int, utterances: int, test_utterances: int, seed: int) -> None:
    """Speaker homework layout: Dataset/{mapping,metadata,testdata,test_labels}.json + uttr-*.pt under OUT."""
    from .synth.speakers import synth_speakers

    s = synth_speakers(out, speakers=speakers, utterances_per_speaker=utterances,
                       test_utterances=test_utterances, seed=seed)
    click.echo(f"wrote {s.files} files to {out}: {s.clips} utterances, {s.classes} speakers, {s.bytes / 1e6:.1f} MB")


def _print_summary(raw_dir: Path, store: Path, summary) -> None:
    click.echo(f"ingested {raw_dir} -> {store}")
    for line in summary.lines():
        click.echo("  " + line)


@ingest.command("yandex")
@click.argument("raw_dir", type=click.Path(path_type=Path))
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace an existing store at STORE.")
@click.option("--one-pass", is_flag=True, help="Fit on the sample only (no exact-range pre-pass; may clip).")
@_QUANTIZER
@_SAMPLE
@user_errors
def ingest_yandex_cmd(raw_dir: Path, store: Path, overwrite: bool, one_pass: bool, kind: str,
                      sample_frames: int | None) -> None:
    """train_meta.tsv / test_meta.tsv + per-track .npy (512 x T) under RAW_DIR into frame sets in STORE."""
    from .ingest.yandex import ingest_yandex

    _print_summary(raw_dir, store, ingest_yandex(raw_dir, store, overwrite=overwrite, two_pass=not one_pass,
                                                 kind=kind, sample_frames=sample_frames))


@ingest.command("fsd")
@click.argument("raw_dir", type=click.Path(path_type=Path))
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace an existing store at STORE.")
@click.option("--sample-rate", default=44100, show_default=True, help="Required wav sample rate.")
@click.option("--n-fft", default=1764, show_default=True)
@click.option("--hop", default=220, show_default=True)
@click.option("--n-mels", default=64, show_default=True)
@click.option("--two-pass", is_flag=True, help="Exact per-bin range from a first pass (computes the mel twice).")
@click.option("--workers", type=int, default=None, help="Decode/mel threads (default: CPU count, max 16).")
@_QUANTIZER
@_SAMPLE
@user_errors
def ingest_fsd_cmd(raw_dir: Path, store: Path, overwrite: bool, sample_rate: int, n_fft: int, hop: int,
                   n_mels: int, two_pass: bool, workers: int | None, kind: str, sample_frames: int | None) -> None:
    """train_curated/noisy CSVs + wavs (and test/ via sample_submission.csv) under RAW_DIR -> log-mel frames."""
    from .ingest.fsd import ingest_fsd

    _print_summary(raw_dir, store, ingest_fsd(
        raw_dir, store, overwrite=overwrite, sample_rate=sample_rate, n_fft=n_fft, hop=hop, n_mels=n_mels,
        two_pass=two_pass, workers=workers, kind=kind, sample_frames=sample_frames))


@ingest.command("speakers")
@click.argument("raw_dir", type=click.Path(path_type=Path))
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace an existing store at STORE.")
@click.option("--one-pass", is_flag=True, help="Fit on the sample only (no exact-range pre-pass; may clip).")
@_QUANTIZER
@_SAMPLE
@user_errors
def ingest_speakers_cmd(raw_dir: Path, store: Path, overwrite: bool, one_pass: bool, kind: str,
                        sample_frames: int | None) -> None:
    """Dataset/ mapping, metadata, testdata JSON + uttr-*.pt mel tensors under RAW_DIR into STORE."""
    from .ingest.speakers import ingest_speakers

    _print_summary(raw_dir, store, ingest_speakers(raw_dir, store, overwrite=overwrite, two_pass=not one_pass,
                                                   kind=kind, sample_frames=sample_frames))


# --- inspect ---------------------------------------------------------------------------------

@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest's tables as JSON.")
@user_errors
def info(store: Path, as_json: bool) -> None:
    """Schema, sizes and per-column quantization errors of STORE."""
    from .store import Store
    from .store.info import describe

    s = Store(store)
    if as_json:
        click.echo(json.dumps(s.tables, indent=1))
        return
    for line in describe(s):
        click.echo(line)


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--no-checksums", is_flag=True, help="Check structure only (faster).")
@user_errors
def validate(store: Path, no_checksums: bool) -> None:
    """Verify checksums and structural invariants of STORE (exit 1 on any problem)."""
    from .store import Store

    problems = Store(store).validate(checksums=not no_checksums)
    if problems:
        for p in problems[:50]:
            click.echo(f"{store}: {p}", err=True)
        raise click.ClickException(f"{store}: {len(problems)} problem(s)")
    click.echo(f"{store}: valid")


# --- train / evaluate: skip prediction --------------------------------------------------------

@main.group()
def train() -> None:
    """Train models straight from a store."""


@train.command("skip")
@click.argument("store", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--epochs", default=10, type=click.IntRange(min=1), show_default=True)
@click.option("--batch-size", default=256, type=click.IntRange(min=1), show_default=True)
@click.option("--lr", default=3e-3, show_default=True, help="Peak learning rate (warmup, then cosine).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda (cuda: bf16 autocast + compile).")
@click.option("--max-minutes", type=float, default=None, help="Stop (with a resumable checkpoint) after this.")
@click.option("--seed", default=0, show_default=True)
@click.option("--no-resume", is_flag=True, help="Ignore OUT_DIR/checkpoint.pt and start afresh.")
@user_errors
def train_skip_cmd(store: Path, out_dir: Path, epochs: int, batch_size: int, lr: float, device: str,
                   max_minutes: float | None, seed: int, no_resume: bool) -> None:
    """Skip-prediction model on STORE's train split; checkpoints (resumable) under OUT_DIR."""
    from models.skip.train import train_skip

    result = train_skip(store, out_dir, epochs=epochs, batch_size=batch_size, lr=lr, device=device,
                        max_minutes=max_minutes, seed=seed, resume=not no_resume)
    for line in result.lines():
        click.echo(line)


@main.group()
def evaluate() -> None:
    """Score trained models on a store's test split."""


@evaluate.command("skip")
@click.argument("store", type=click.Path(path_type=Path))
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("submission.txt"),
              show_default=True, help="Submission file to write.")
@click.option("--device", default="cpu", show_default=True)
@user_errors
def evaluate_skip_cmd(store: Path, checkpoint: Path, out: Path, device: str) -> None:
    """Write CHECKPOINT's test submission, then score it beside the random / all-skip / copy-last baselines."""
    from models.skip.evaluate import baselines, predict_test, score_submission

    from .store import Store

    predict_test(store, checkpoint, out, device=device)
    click.echo(f"wrote {out}")
    if not Store(store).tables["test"].get("second_half_labels"):
        click.echo(f"{store}: store has no test ground truth; submission not scored")
        return
    scores = {"model": score_submission(store, out), **baselines(store)}
    click.echo(f"{'':<10} {'mean AA':>8} {'first acc':>9}")
    for name, s in scores.items():
        click.echo(f"{name:<10} {s.mean_average_accuracy:>8.4f} {s.first_prediction_accuracy:>9.4f}")


# --- bench -----------------------------------------------------------------------------------

@main.group()
def bench() -> None:
    """Benchmarks that print ratios against baselines run side by side in the same process."""


@bench.command("ingest")
@click.option("--raw", "raw_dir", type=click.Path(path_type=Path), default=None,
              help="MSSD directory without test_set/ (default: synthesize one).")
@click.option("--sessions", default=200_000, type=click.IntRange(min=1), show_default=True, help="Synthetic sessions when --raw is not given.")
@click.option("--tracks", default=50_000, type=click.IntRange(min=1), show_default=True)
@click.option("--repeats", default=3, type=click.IntRange(min=1), show_default=True, help="Best of N runs of each.")
@user_errors
def bench_ingest_cmd(raw_dir: Path | None, sessions: int, tracks: int, repeats: int) -> None:
    """fstore ingest vs per-file pandas + dict mapping vs a bare polars parse of the same files."""
    from bench.ingest import run

    for line in run(raw_dir, sessions=sessions, tracks=tracks, repeats=repeats):
        click.echo(line)


@bench.command("loader")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--batch-size", default=None, type=click.IntRange(min=1), help="Default 1024 sessions, or 64 clips for frame stores.")
@click.option("--order", default="random", show_default=True, type=click.Choice(["sequential", "random", "quasi_random"]))
@click.option("--epochs", default=3, type=click.IntRange(min=1), show_default=True, help="Epochs timed for fstore and the limit.")
@click.option("--baseline-sessions", default=50_000, type=click.IntRange(min=1), show_default=True, help="Sessions timed for the baseline.")
@click.option("--raw", "raw_dir", type=click.Path(path_type=Path), default=None,
              help="Frame stores: the Yandex raw directory the per-clip baseline loads .npy files from.")
@click.option("--crop", default=64, type=click.IntRange(min=1), show_default=True, help="Frame stores: crop length in frames.")
@user_errors
def bench_loader_cmd(store: Path, batch_size: int | None, order: str, epochs: int, baseline_sessions: int,
                     raw_dir: Path | None, crop: int) -> None:
    """fstore batches vs a per-item Dataset+DataLoader vs a bare numba gather (same store, same order).

    Session stores (Spotify) bench SessionBatches; frame stores (Yandex) bench SegmentBatches."""
    from .store import Store

    kinds = {m["kind"] for m in Store(store).tables.values()}
    if "frames" in kinds:
        from bench.segments import run as run_segments

        lines = run_segments(store, raw_dir, batch_size=batch_size or 64, crop=crop, epochs=epochs)
    else:
        from bench.loader import run

        lines = run(store, batch_size=batch_size or 1024, order=order, epochs=epochs,
                    baseline_sessions=baseline_sessions)
    for line in lines:
        click.echo(line)


if __name__ == "__main__":
    main()
