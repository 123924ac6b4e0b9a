"""Ingest on a Dask cluster: one task per raw file, each writing its own part of the new version.

``--workers N`` starts a ``distributed.LocalCluster`` of N worker processes; ``--scheduler ADDRESS``
uses an existing cluster (whose workers must see the raw files and the store's staging tree at the
same paths: a shared file system). Data never passes through the scheduler: tasks read their own
files and write their own parts; only counts, vocabularies and file names travel.

The content is identical whatever the number of workers (same codes, same row order, same
dictionaries) because every global decision is taken by the driver, in file order:

1. the track dictionary and quantizers (before any task runs, as in the serial path);
2. phase A, one task per log file: parse, validate, encode into a part folder (one ``.npy`` per
   column, categoricals as codes of the file's own vocabulary in first-appearance order, session
   lengths, session-id hashes and ids). The driver merges the per-file vocabularies in file order,
   which gives exactly the serial path's dictionaries (values added in first-appearance order), and
   fixes each file's event and session offsets by a prefix sum of the counts;
3. phase B, one task per file: remap the categorical codes, write every chunk wholly inside the
   file's region of the one zarr array per column, and save the partial chunks at its two edges
   aside; the driver assembles each shared edge chunk from those pieces (at most one chunk per file
   edge and column), so no chunk is ever written by two processes.

The parts live in ``<staging tree>/_fstore/parts`` (not part of a version's data: the manifest skips
``_fstore``) and are removed before the commit. Tasks are idempotent (they write whole files and whole
chunks), so Dask may rerun a task whose worker died. A file failing validation fails the ingest with
the same one-line error as the serial path: the driver raises errors in file order, after telling the
remaining tasks to stop (an abort flag file) and waiting for the running ones, so nothing writes into
the staging tree once the builder removes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import zarr

from ..schemas import mssd as S
from ..store import InputError, RaggedWriter
from ..store.errors import FstoreError
from .sessions import FULL, SessionIdRegistry, session_runs
from .table import read_typed_csv

ABORT = "abort"


class RemoteInputError(InputError):
    """An ``InputError`` met in a task, raised on the driver with the same one-line message."""

    def __init__(self, text: str, path: object = None, line: int | None = None, column: str | None = None):
        FstoreError.__init__(self, text)
        self.path, self.line, self.column = path, line, column


@contextlib.contextmanager
def dask_client(workers: int = 0, scheduler: str | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: on ``scheduler`` when given, else on a LocalCluster of ``workers``
    worker processes (one thread each: a task is one whole file); None when neither (serial path)."""
    if not scheduler and workers <= 0:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as e:
            raise FstoreError(f"--scheduler {scheduler}: cannot connect ({e})") from None
        with client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client


# --- in the tasks ------------------------------------------------------------------------------

_TRACK_CODES: dict[tuple, pl.DataFrame] = {}  # per worker process: the track id -> code table


def _track_codes(path: str) -> pl.DataFrame:
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _TRACK_CODES:
        _TRACK_CODES.clear()
        _TRACK_CODES[key] = pl.read_parquet(path)
    return _TRACK_CODES[key]


def encode_file(path: str, part: str, codes_path: str, checksum: bool) -> dict | None:
    """Phase A for one log file: parse, validate and encode it into the folder ``part``.

    Returns the counts, the file's vocabularies (first-appearance order) and its sha256; or
    ``{"error": ...}`` for bad input (returned, not raised: an expected outcome, not a task failure for
    Dask to log); or None when the ingest was aborted before this task started."""
    from .spotify import _SessionEncoder  # the serial path's encoder: one definition of the columns

    out = Path(part)
    if (out.parent / ABORT).exists():
        return None
    p = Path(path)
    digest = hashlib.sha256() if checksum else None
    try:
        df = read_typed_csv(p, S.LOG_CSV, digest=digest)
        runs = session_runs(df, p, FULL)
        enc = _SessionEncoder(_track_codes(codes_path))
        cols = enc.columns(df, p, np.arange(df.height) + 2)
    except InputError as e:
        return {"error": (str(e), str(e.path), e.line, e.column)}
    out.mkdir(parents=True, exist_ok=True)
    for c, v in cols.items():
        np.save(out / f"{c}.npy", v)
    np.save(out / "lengths.npy", runs.lengths)
    np.save(out / "hashes.npy", runs.session_ids.hash(seed=0).to_numpy())
    pl.DataFrame({"value": runs.session_ids}).write_parquet(out / "ids.parquet")
    return {"events": df.height, "sessions": len(runs.lengths),
            "vocab": {c: enc.dicts[c].values for c in S.CATEGORICAL_COLUMNS},
            "sha256": digest.hexdigest() if digest is not None else None}


def _write_region(array: zarr.Array, start: int, values: np.ndarray, pieces: Path, name: str) -> list:
    """Write the chunks of ``array`` wholly inside [start, start + len(values)); save the partial chunks
    at the two edges as ``.npy`` pieces (returned as (array path, global start, file) for the driver)."""
    c, stop = array.chunks[0], start + len(values)
    a, b = -(-start // c) * c, stop // c * c  # first and last chunk boundary inside the region
    out = []
    if a >= b:  # no whole chunk inside: the region lies in one chunk, or straddles one boundary
        cuts = [start, *([a] if start < a < stop else []), stop]
    else:
        array[a:b] = values[a - start : b - start]
        cuts = [start, a, b, stop]
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        if hi > lo and not (a < b and lo == a and hi == b):
            f = pieces / f"{name.replace('/', '.')}-{lo}.npy"
            np.save(f, values[lo - start : hi - start])
            out.append((name, lo, str(f)))
    return out


def write_part(part: str, stage: str, table: str, event_start: int, session_start: int,
               luts: dict[str, list[int]]) -> list | None:
    """Phase B for one file: its columns (categoricals remapped to the global codes) and offsets into
    the version's arrays, whole chunks only; returns the edge pieces."""
    src = Path(part)
    if (src.parent / ABORT).exists():
        return None
    group = Path(stage) / table
    pieces = src / "pieces"
    pieces.mkdir(exist_ok=True)
    out = []
    for c in S.EVENT_COLUMNS:
        v = np.load(src / f"{c}.npy")
        if c in luts:
            v = np.asarray(luts[c], dtype=np.uint8)[v]
        out += _write_region(zarr.open_array(group / "events" / c, mode="r+"), event_start, v, pieces, f"events/{c}")
    offsets = event_start + np.cumsum(np.load(src / "lengths.npy"))
    out += _write_region(zarr.open_array(group / "offsets", mode="r+"), session_start + 1, offsets, pieces, "offsets")
    return out


# --- on the driver -------------------------------------------------------------------------------

def _assemble(group: zarr.Group, pieces: list) -> None:
    """Write every chunk shared by several files (or by a file and the offsets' leading 0) from its pieces."""
    by_chunk: dict[tuple[str, int], list] = defaultdict(list)
    for name, lo, f in pieces:
        by_chunk[name, lo // group[name].chunks[0]].append((lo, f))
    for (name, k), ps in sorted(by_chunk.items()):
        array = group[name]
        ps.sort()
        values = np.concatenate([np.load(f) for _, f in ps])
        lo, c = ps[0][0], array.chunks[0]
        if lo != k * c or lo + len(values) != min((k + 1) * c, array.shape[0]):  # a bug, never bad input
            raise RuntimeError(f"{name}: pieces of chunk {k} cover [{lo}, {lo + len(values)})")
        array[lo : lo + len(values)] = values


def _ordered(futures: list) -> Iterator:
    """Results in submission order: errors surface in file order, as the serial path meets them."""
    for fut in futures:
        result = fut.result()
        if isinstance(result, dict) and "error" in result:
            raise RemoteInputError(*result["error"])
        yield result


def ingest_train_distributed(client, paths: list[Path], builder, enc, registry: SessionIdRegistry, bar,
                             digests: dict[Path, str] | None, chunk: int) -> dict:
    """The train set of ``ingest_spotify`` on the cluster; returns the table's metadata.

    ``enc``'s dictionaries grow in file order as in the serial path; ``digests`` (when not None)
    receives the sha256 of each file, computed by the task that parsed it."""
    from distributed import wait
    from distributed.scheduler import KilledWorker

    parts = builder.stage / "_fstore" / "parts"
    parts.mkdir(parents=True)
    submitted: list = []
    try:
        meta = _run(client, paths, builder, enc, registry, bar, digests, chunk, parts, submitted)
    except BaseException as e:
        (parts / ABORT).touch()  # tasks not yet started return at once; then wait for the running ones
        wait(submitted)
        if isinstance(e, KilledWorker):
            raise FstoreError(f"a Dask worker died on every try of one task ({e}); nothing was committed") from None
        raise
    shutil.rmtree(parts.parent)
    return meta


def _run(client, paths, builder, enc, registry, bar, digests, chunk, parts: Path, submitted: list) -> dict:
    codes_path = parts / "track_codes.parquet"
    enc.track_codes.write_parquet(codes_path)
    folders = [str(parts / f"{i:06d}") for i in range(len(paths))]
    futures = [client.submit(encode_file, str(p.resolve()), f, str(codes_path), digests is not None, pure=False)
               for p, f in zip(paths, folders, strict=True)]
    submitted += futures
    infos, luts = [], []
    for p, info in zip(paths, _ordered(futures), strict=True):
        lut = {}
        for c in S.CATEGORICAL_COLUMNS:  # the serial path's dictionaries: values in first-appearance order
            lut[c] = [enc.dicts[c].add(v) for v in info["vocab"][c]]
            if len(enc.dicts[c]) > 256:
                raise InputError(p, f"more than 256 distinct values in {c} (stored as uint8 codes)", column=c)
        luts.append(lut)
        infos.append(info)
        if digests is not None:
            digests[p] = info["sha256"]
        bar.update(p.stat().st_size)
    events = np.cumsum([0] + [i["events"] for i in infos])
    sessions = np.cumsum([0] + [i["sessions"] for i in infos])
    group = RaggedWriter(builder.root, "train", S.EVENT_COLUMNS, chunk=chunk).group  # creates the arrays
    for c in S.EVENT_COLUMNS:
        group["events"][c].resize((int(events[-1]),))
    group["offsets"].resize((int(sessions[-1]) + 1,))
    futures = [client.submit(write_part, f, str(builder.stage), "train", int(events[i]), int(sessions[i]),
                             luts[i], pure=False) for i, f in enumerate(folders)]
    submitted += futures
    np.save(parts / "offsets-0.npy", np.zeros(1, dtype=np.int64))
    pieces = [("offsets", 0, str(parts / "offsets-0.npy"))]
    ids = builder.ids("train")
    for p, got, folder in zip(paths, _ordered(futures), folders, strict=True):
        pieces += got
        registry.add_hashes(p, np.load(Path(folder) / "hashes.npy"))
        ids.append(pl.read_parquet(Path(folder) / "ids.parquet")["value"])
    _assemble(group, pieces)
    meta = {**dict(group.attrs), "kind": "ragged", "rows": int(sessions[-1]), "events": int(events[-1]),
            "columns": S.EVENT_COLUMNS, "split": "train"}
    group.attrs.update(meta)
    return meta
