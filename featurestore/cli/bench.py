"""``fstore bench ingest|loader``: ratios against baselines run side by side in the same process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from .common import echo_lines, user_errors


@click.group()
def bench() -> None:
    """Benchmarks that print ratios against baselines run side by side in the same process."""


@bench.command("ingest")
@click.option("--raw", "raw_dir", type=click.Path(path_type=Path), default=None,
              help="MSSD directory without test_set/ (default: synthesize one).")
@click.option("--sessions", default=200_000, type=click.IntRange(min=1), show_default=True,
              help="Synthetic sessions when --raw is not given.")
@click.option("--tracks", default=50_000, type=click.IntRange(min=1), show_default=True,
              help="Synthetic tracks when --raw is not given.")
@click.option("--repeats", default=3, type=click.IntRange(min=1), show_default=True, help="Best of N runs of each.")
@click.option("--workers", "dask_workers", multiple=True, type=click.IntRange(min=1), default=(1, 2),
              show_default=True, help="Also run fstore with --workers N (repeat the option for several N).")
@user_errors
def bench_ingest_cmd(raw_dir: Path | None, sessions: int, tracks: int, repeats: int, dask_workers: tuple[int, ...]) -> None:
    """fstore ingest (serial and on local Dask workers) vs the seed's pandas, polars scan_csv->sink_parquet and
    duckdb COPY->parquet on the same files, each a whole process."""
    from bench.ingest import run

    echo_lines(run(raw_dir, sessions=sessions, tracks=tracks, repeats=repeats, workers=dask_workers))


@bench.command("loader")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--batch-size", default=None, type=click.IntRange(min=1),
              help="Default 1024 sessions, 64 clips for frame stores, 256 playlists for Melon stores.")
@click.option("--order", default="random", show_default=True, type=click.Choice(["sequential", "random", "quasi_random"]),
              help="Session stores: the epoch order benched.")
@click.option("--epochs", default=3, type=click.IntRange(min=1), show_default=True,
              help="Epochs timed for fstore and the limit.")
@click.option("--baseline-sessions", default=50_000, type=click.IntRange(min=1), show_default=True,
              help="Sessions timed for the baseline.")
@click.option("--raw", "raw_dir", type=click.Path(path_type=Path), default=None,
              help="Frame stores: the Yandex raw directory the per-clip baseline loads .npy files from.")
@click.option("--crop", default=64, type=click.IntRange(min=1), show_default=True,
              help="Frame stores: crop length in frames.")
@user_errors
def bench_loader_cmd(store: Path, batch_size: int | None, order: str, epochs: int, baseline_sessions: int,
                     raw_dir: Path | None, crop: int) -> None:
    """fstore batches vs a per-item Dataset+DataLoader vs a bare numba gather (same store, same order).

    Session stores (Spotify) bench SessionBatches; frame stores (Yandex) bench SegmentBatches; Melon stores
    bench PlaylistBatches against a per-item multi-hot Dataset (default batch 256)."""
    from ..store import Store

    opened = Store(store)
    kinds = {m["kind"] for m in opened.tables.values()}
    if opened.manifest.get("dataset") == "melon":
        from bench.playlists import run as run_playlists

        lines = run_playlists(store, batch_size=batch_size or 256, epochs=epochs)
    elif "frames" in kinds:
        from bench.segments import run as run_segments

        lines = run_segments(store, raw_dir, batch_size=batch_size or 64, crop=crop, epochs=epochs)
    else:
        from bench.loader import run

        lines = run(store, batch_size=batch_size or 1024, order=order, epochs=epochs,
                    baseline_sessions=baseline_sessions)
    echo_lines(lines)


@bench.command("remote")
@click.option("--sessions", default=100_000, type=click.IntRange(min=1), show_default=True,
              help="Synthetic sessions ingested to the local S3 server and to a local folder.")
@click.option("--tracks", default=20_000, type=click.IntRange(min=1), show_default=True, help="Synthetic tracks.")
@click.option("--batch-size", default=1024, type=click.IntRange(min=1), show_default=True, help="Sessions a batch.")
@click.option("--cache-limit", default=None, type=click.IntRange(min=0),
              help="Bytes of S3 objects the loader's local cache may hold (default: unbounded).")
@click.option("--epochs", default=5, type=click.IntRange(min=1), show_default=True,
              help="Warm epochs timed after the first (cold) one.")
@user_errors
def bench_remote_cmd(sessions: int, tracks: int, batch_size: int, cache_limit: int | None, epochs: int) -> None:
    """SessionBatches from a local moto S3 server (cold, then warm cache) vs the same store on local disk."""
    from bench.remote import run

    echo_lines(run(sessions=sessions, tracks=tracks, batch_size=batch_size, cache_limit=cache_limit,
                   epochs=epochs))


@bench.command("epoch")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--split", default="train", show_default=True, help="Split the loader reads.")
@click.option("--batch-size", default=None, type=click.IntRange(min=1),
              help="Default 1024 sessions, 64 clips for frame stores, 256 playlists for Melon stores.")
@click.option("--order", default="quasi_random", show_default=True,
              type=click.Choice(["sequential", "random", "quasi_random"]),
              help="Epoch order (quasi_random: the training default; random needs the data in memory).")
@click.option("--threads", default=1, type=click.IntRange(min=1), show_default=True, help="Loader fill threads.")
@user_errors
def bench_epoch_cmd(store: Path, split: str, batch_size: int | None, order: str, threads: int) -> None:
    """One epoch of STORE's loader (sessions, frame crops or playlists), checked whole: every item of the
    split delivered exactly once (exit 1 otherwise). Prints items/s, memory-mapped bytes and peak RSS."""
    from bench.epoch import lines, run_epoch

    r = run_epoch(store, split=split, batch_size=batch_size, order=order, threads=threads)
    echo_lines(lines(r))
    if not (r["seen"] == r["items"] and r["repeated"] == 0 and r["stray"] == 0):
        raise click.ClickException("the epoch did not deliver every item exactly once")


def _csv(kind: type) -> Callable[[click.Context, click.Parameter, str | None], list | None]:
    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> list | None:
        if value is None:
            return None
        try:
            items = [kind(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"expected comma-separated {kind.__name__}s, got {value!r}") from None
        if not items or min(items) <= 0:
            raise click.BadParameter(f"expected positive {kind.__name__}s, got {value!r}")
        return items
    return parse


@bench.command("scale")
@click.argument("family", type=click.Choice(["spotify", "melon", "yandex", "fsd", "speakers"]))
@click.option("--work", type=click.Path(path_type=Path), default=Path("/tmp/fstore-scale"), show_default=True,
              help="Folder for the data, step logs, scale.json and scale.png (WORK/FAMILY/).")
@click.option("--fractions", callback=_csv(float), default=None,
              help="Comma-separated fractions of the real release, e.g. 0.01,0.1,0.33,1 (default: per family, "
                   "as disk and time allow on a 2-core machine).")
@click.option("--sizes", callback=_csv(int), default=None,
              help="Comma-separated sizes in the family's unit (sessions, playlists, tracks, clips, utterances), "
                   "instead of --fractions.")
@click.option("--max-minutes", default=2.0, type=click.FloatRange(min=0), show_default=True,
              help="Training time limit at every size.")
@click.option("--epochs", default=None, type=click.IntRange(min=1), help="Training epochs (default: the model's).")
@click.option("--steps", default=",".join(("synth", "ingest", "epoch", "train", "evaluate")), show_default=True,
              help="Steps to run (comma-separated).")
@click.option("--memory-limit", default=None,
              help="Run --limit-steps in a child memory cgroup with this limit (e.g. 2G): whole process, torch included.")
@click.option("--limit-steps", default="epoch", show_default=True, help="Steps run under --memory-limit.")
@click.option("--step-timeout", default=60.0, type=click.FloatRange(min=0, min_open=True), show_default=True,
              help="Minutes after which a step is killed (and the size's later steps skipped).")
@click.option("--keep", is_flag=True, help="Keep each size's raw files, store and training run.")
@click.option("--keep-store", is_flag=True,
              help="Keep each size's store and training run, not its raw files (removed after the ingest).")
@click.option("--resume", is_flag=True,
              help="Keep the sizes of WORK/FAMILY/scale.json whose steps all succeeded; run only the others.")
@click.option("--tiny", is_flag=True,
              help="A smoke test of the whole pipeline: the family's tiny size, 1 epoch, --max-minutes 0.05.")
@click.option("--dry-run", is_flag=True, help="Print each size's step commands, run nothing.")
@click.option("--markdown", is_flag=True, help="Print WORK/FAMILY/scale.json as a Markdown table, run nothing.")
@user_errors
def bench_scale_cmd(family: str, work: Path, fractions: list[float] | None, sizes: list[int] | None,
                    max_minutes: float, epochs: int | None, steps: str, memory_limit: str | None, limit_steps: str,
                    step_timeout: float, keep: bool, keep_store: bool, resume: bool, tiny: bool,
                    dry_run: bool, markdown: bool) -> None:
    """Cost against size: synthesize FAMILY at fractions of its real release, then ingest, one loader epoch,
    train (--max-minutes) and evaluate, each a separate `fstore` process measured alone (wall time, peak RSS).
    Prints the table and each step's exponent of time and memory against size; writes WORK/FAMILY/scale.json
    and scale.png."""
    from bench.memlimit import CgroupError, parse_bytes
    from bench.scale import FAMILIES, run

    if markdown:
        import json

        path = work / family / "scale.json"
        if not path.is_file():
            raise click.ClickException(f"{path}: no bench scale result (run the sweep first)")
        from bench.scale import markdown as to_markdown

        try:
            echo_lines(to_markdown(json.loads(path.read_text())))
        except (ValueError, KeyError, TypeError) as e:
            raise click.ClickException(f"{path}: not a bench scale result ({type(e).__name__}: {e})") from None
        return

    if tiny:
        sizes, epochs, max_minutes = sizes or [FAMILIES[family].tiny], epochs or 1, 0.05
    try:
        limit = parse_bytes(memory_limit) if memory_limit is not None else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--memory-limit") from None
    try:
        run(family, work, fractions=fractions, sizes=sizes, max_minutes=max_minutes, epochs=epochs,
            steps=[s.strip() for s in steps.split(",") if s.strip()], memory_limit=limit,
            limit_steps=[s.strip() for s in limit_steps.split(",") if s.strip()], step_timeout_s=step_timeout * 60,
            keep=keep, keep_store=keep_store, resume=resume, dry_run=dry_run, echo=click.echo)
    except (CgroupError, ValueError) as e:
        raise click.ClickException(str(e)) from None
