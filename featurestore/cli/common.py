"""What every command shares: the error policy, and the options several families' commands take identically,
one decorator per group (``synth_options``, ``ingest_options``, ``clip_ingest_options``,
``distributed_options``, ``train_options``, ``evaluate_options``; ``clip_ingest_command``: a whole clip
ingest command)."""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..store.errors import FstoreError

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Bad input, user mistakes and file-system failures (a full disk, a missing or unwritable file)
    print one line and exit 1; bugs still show a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FstoreError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            if e.errno == errno.ENOSPC:
                raise click.ClickException(f"{where}no space left on device; free some space and run again") from None
            if e.filename is None:
                raise
            raise click.ClickException(f"{where}{e.strerror or e}") from None

    return wrapper  # type: ignore[return-value]


def echo_lines(lines: list[str], indent: str = "") -> None:
    for line in lines:
        click.echo(indent + line)


def print_ingest_summary(raw_dir: Path, store: Path, summary: Any) -> None:
    click.echo(f"ingested {raw_dir} -> {store}")
    echo_lines(summary.lines(), "  ")


# --- shared options --------------------------------------------------------------------------------
# One decorator per group of options that several commands take identically, stacked between
# ``@click.command`` and ``@user_errors`` where the group's options stand in the command's --help; a
# command's own options go between the groups.

def option_group(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """One decorator applying ``decorators`` as if stacked in this order (their options in this order)."""
    def apply(fn: F) -> F:
        for d in reversed(decorators):
            fn = d(fn)
        return fn

    return apply


# writing a raw-format folder (synth, split): OUT first, then the command's own options, then synth_options
SYNTH_OUT = click.argument("out", type=click.Path(file_okay=False, path_type=Path))
SEED = click.option("--seed", default=0, show_default=True, help="Random seed (same seed, same output).")
OVERWRITE_SYNTH = click.option("--overwrite", is_flag=True, help="Clear a non-empty OUT first.")
synth_options = option_group(SEED, OVERWRITE_SYNTH)

# every ingest: RAW_DIR STORE --overwrite first, then the family's own options
ingest_options = option_group(
    click.argument("raw_dir", type=click.Path(path_type=Path)),
    click.argument("store", type=click.Path(path_type=Path)),
    click.option("--overwrite", is_flag=True, help="Replace an existing store at STORE."),
)
# a clip ingest's frame-set quantizers and --append (after its own options)
clip_ingest_options = option_group(
    click.option("--quantizer", "kind", default="affine", show_default=True,
                 type=click.Choice(["affine", "quantile", "auto"]), help="Per-bin 8-bit quantizer."),
    click.option("--sample-frames", type=int, default=None,
                 help="Frames the quantizers are fitted on (default: 64 MB of float32)."),
    click.option("--append", is_flag=True,
                 help="Add RAW_DIR's new clips to STORE as a new version (its quantizers are kept: quantizer "
                      "options are ignored)."),
)
# an ingest whose per-file work can run on Dask (last)
distributed_options = option_group(
    click.option("--workers", "dask_workers", default=0, type=click.IntRange(min=0), show_default=True,
                 help="Do the per-file work (read, validate, encode; audio: load, transform) on a local Dask "
                      "cluster of this many worker processes (0: in this process)."),
    click.option("--scheduler", default=None, metavar="ADDRESS",
                 help="Do the per-file work on an existing Dask cluster (e.g. tcp://host:8786); its workers "
                      "must see RAW_DIR at the same path, and a local STORE too (an s3:// STORE needs "
                      "nothing shared: the workers write to it)."),
)


def _device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from models.training import parse_device  # torch: imported only when a command runs

    try:
        return str(parse_device(value))
    except FstoreError as e:
        raise click.ClickException(f"--device: {e}") from None


def _train_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """--device of a training command: under torchrun also starts the process group (gloo on the CPU, NCCL
    on CUDA, this process on cuda:LOCAL_RANK); ranks other than 0 print nothing but errors."""
    from models.training import distributed, parse_device  # torch: imported only when a command runs

    try:
        device = str(parse_device(distributed.init_from_env(parse_device(value))))
    except FstoreError as e:
        raise click.ClickException(f"--device: {e}") from None
    if not distributed.is_main():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the rest of the process)
    return device


VAL_SAMPLE = 2000  # loaders.splits.VAL_SAMPLE, repeated: building the options imports no torch

DEVICE = click.option("--device", default="cpu", show_default=True, callback=_device,
                      help="cpu, cuda or cuda:N (on CUDA: mixed precision; training also compiles the model).")


def train_options(epochs: int = 10) -> Callable[[F], F]:
    """``fstore train <family> STORE OUT_DIR`` and the options every family's training takes."""
    return option_group(
        click.argument("store", type=click.Path(path_type=Path)),
        click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path)),
        click.option("--epochs", default=epochs, type=click.IntRange(min=1), show_default=True,
                     help="Train up to this many epochs (fewer with early stopping)."),
        click.option("--max-minutes", type=click.FloatRange(min=0), default=None,
                     help="Stop after this many minutes with a resumable (mid-epoch) checkpoint."),
        click.option("--device", default="cpu", show_default=True, callback=_train_device,
                     help="cpu, cuda or cuda:N (on CUDA: mixed precision and a compiled model). Under torchrun: "
                          "gloo on cpu, NCCL on cuda (each process on cuda:LOCAL_RANK)."),
        SEED,
        click.option("--no-resume", is_flag=True, help="Ignore OUT_DIR/checkpoint.pt and start afresh."),
        click.option("--val-sample", default=VAL_SAMPLE, type=click.IntRange(min=0), show_default=True,
                     help="Validation during training scores this many held-out items (sessions, playlists, "
                          "clips, tracks or utterances), the same ones each time (0: all; evaluate scores all)."),
    )


def checkpoint_files(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """CHECKPOINT argument(s): a training folder stands for its best.pt (else its checkpoint.pt), with a
    note of which; a folder with neither is one error line."""
    from models.training import find_checkpoint  # torch: imported only when a command runs

    if isinstance(value, tuple):
        return tuple(checkpoint_files(ctx, param, v) for v in value)
    try:
        path, note = find_checkpoint(value)
    except FstoreError as e:
        raise click.ClickException(str(e)) from None
    if note:
        click.echo(note)
    return path


def evaluate_options(default_out: str) -> Callable[[F], F]:
    """``fstore evaluate <family> STORE CHECKPOINT --out SUBMISSION --metrics-json FILE [--device]``
    (CHECKPOINT: a file or a training folder); ``default_out`` is the family's submission file name in
    its official format."""
    return option_group(
        click.argument("store", type=click.Path(path_type=Path)),
        click.argument("checkpoint", type=click.Path(path_type=Path), callback=checkpoint_files),
        click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path(default_out),
                     show_default=True, help="Submission file to write."),
        click.option("--metrics-json", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help='Also write {"metric", "split", "scores": {"model", <baselines>...}, "components", '
                          '"ceiling"} to this file.'),
        DEVICE,
    )


def report_scores(scores: dict[str, dict[str, float]], metric: str, split: str, metrics_json: Path | None, *,
                  model: str = "model", baselines: tuple[str, ...] | None = None,
                  ceiling: tuple[str, ...] = ()) -> None:
    """Print the score table (one row per predictor, ``metric`` first) and write the evaluate contract:

        {"metric", "split", "scores": {"model": X, <baseline>: Y, ...}, "components": {...}, "ceiling": {...}}

    ``model`` names the submitted predictor's row (stored as ``"model"``); ``baselines`` the simple
    baselines it is judged against (None: every other row that is not ``ceiling``); ``ceiling`` oracle or
    Bayes rows. Every other row (blend parts, model variants) goes under ``components``."""
    from ..store.atomic import atomic_write_bytes

    if model not in scores:
        raise ValueError(f"no {model!r} row among {sorted(scores)}")
    rest = [n for n in scores if n != model and n not in ceiling]
    baselines = tuple(rest) if baselines is None else baselines
    groups = {"scores": [model, *[n for n in rest if n in baselines]],
              "components": [n for n in rest if n not in baselines], "ceiling": [n for n in scores if n in ceiling]}
    columns = [metric, *[c for c in next(iter(scores.values())) if c != metric]]
    name_width = max(10, *(len(n) for n in scores))
    click.echo(f"{split:<{name_width}} " + " ".join(f"{c:>8}" for c in columns))
    for group, names in groups.items():
        for name in names:
            label = {"scores": "model" if name == model else "baseline", "components": "component",
                     "ceiling": "ceiling"}[group]
            values = " ".join(f"{scores[name][c]:>{max(8, len(c))}.4f}" for c in columns)
            click.echo(f"{name:<{name_width}} {values}  {label}")
    if metrics_json is not None:
        doc: dict[str, object] = {"metric": metric, "split": split}
        for group, names in groups.items():
            doc[group] = {("model" if n == model else n): scores[n][metric] for n in names}
        atomic_write_bytes(metrics_json, (json.dumps(doc, indent=1) + "\n").encode())
        click.echo(f"wrote {metrics_json}")


def cpu_torch_threads(device: str, threads: int) -> int | None:
    """torch CPU threads for a training or scoring command (``threads`` 0: the default below)."""
    if threads:
        return threads
    # On the CPU one torch thread: the loader's fill thread takes the other core, and on a busy host two
    # OpenMP threads spin against it (measured here: a step 10-20x slower than with one thread).
    return 1 if device == "cpu" else None


def lean_ingest_process() -> None:
    """Settings for a process that ingests, made before numpy is imported (a value the user set wins):
    one OpenBLAS thread. Ingest does no linear algebra, yet numpy's OpenBLAS starts a thread per core
    at import that spin-waits for work: 3% of the Spotify ingest's CPU under perf; 5 alternating
    pairs of whole processes: 0.07 s less CPU (2.7 s in all), the same wall time within noise."""
    import os

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


_SKIP_TEARDOWN = False  # set by commands whose work is all flushed and closed when they return


def lean_exit() -> None:
    """Let ``run`` end this process without the interpreter's teardown (unloading numpy, polars and
    fstore's modules: 0.05 s of the 0.35 s an ingest of a tiny release takes, measured here). For
    commands that close and flush everything they write before returning (the ingests: the store is
    committed, bars closed); not for training, whose event writers may flush at exit."""
    global _SKIP_TEARDOWN
    _SKIP_TEARDOWN = True


def run() -> None:
    """The ``fstore`` console entry point: ``main``, then, after a command that asked for it
    (``lean_exit``), ``os._exit`` with the same status once stdout, stderr and logging are flushed.
    ``main`` itself (as the tests and ``CliRunner`` call it) always returns normally."""
    import logging
    import os

    from . import main

    try:
        main()
        code: object = 0
    except SystemExit as e:
        code = e.code
    if not _SKIP_TEARDOWN:
        sys.exit(code)
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a closed pipe (``| head``): nothing more can be said
            pass
    os._exit(code or 0)


def freeze_imports() -> None:
    """Move everything imported so far (numpy, polars, pyarrow: ~10^5 objects, alive until the process
    exits) out of the cyclic collector's way, so its full passes no longer walk them. A command-line
    process decision, not a library one. Measured on the 3M-event Spotify ingest, 5 alternating pairs
    of whole processes: 0.06-0.17 s less each (in the ingest and at interpreter exit)."""
    import gc

    gc.freeze()


def run_clip_ingest(ingest: Callable[..., Any], raw_dir: Path, store: Path, dask_workers: int, scheduler: str | None,
                    **kwargs: Any) -> None:
    """Run a clip dataset's ingest, its clips loaded by this process's threads or, with ``--workers`` /
    ``--scheduler``, by Dask tasks, and print the summary."""
    from ..ingest.distributed_clips import clip_loader

    freeze_imports()
    with clip_loader(store, dask_workers, scheduler):
        summary = ingest(raw_dir, store, **kwargs)
    print_ingest_summary(raw_dir, store, summary)


def clip_ingest_command(name: str) -> Callable[[Callable[..., Any]], click.Command]:
    """``fstore ingest <name>`` for a clip dataset with no feature options of its own (yandex, speakers):
    RAW_DIR STORE, --overwrite, --one-pass, the clip and Dask options. The decorated function,
    ``(raw_dir, store, **options) -> summary``, runs the family's ingest (imported there, when the
    command runs); its docstring is the command's help."""

    def make(ingest: Callable[..., Any]) -> click.Command:
        @click.command(name, help=ingest.__doc__)
        @ingest_options
        @click.option("--one-pass", is_flag=True, help="Fit on the sample only (no exact-range pre-pass; may clip).")
        @clip_ingest_options
        @distributed_options
        @user_errors
        def ingest_cmd(raw_dir: Path, store: Path, overwrite: bool, one_pass: bool, kind: str,
                       sample_frames: int | None, append: bool, dask_workers: int, scheduler: str | None) -> None:
            run_clip_ingest(ingest, raw_dir, store, dask_workers, scheduler, overwrite=overwrite, append=append,
                            two_pass=not one_pass, kind=kind, sample_frames=sample_frames)

        return ingest_cmd

    return make
