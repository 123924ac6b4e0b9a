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
   lengths, session-id hashes and ids; columns blosc-compressed). The driver merges the per-file vocabularies in file order,
   which gives exactly the serial path's dictionaries (values added in first-appearance order), and
   fixes each file's event and session offsets by a prefix sum of the counts;
3. phase B, one task per column and range of whole chunks (about as many ranges as files): gather
   the range's values from the parts that cover it, map the categorical codes to the merged dictionaries, write the chunks. Every chunk of the
   one zarr array per column is written whole by exactly one task: no chunk is shared between
   processes, none is assembled by the driver (the driver only writes the small session-id list).

The parts live in ``<staging tree>/_fstore/parts`` (not part of a version's data: the manifest skips
``_fstore``) and are removed before the commit. Tasks are idempotent (they write whole files and whole
chunks), so Dask may rerun a task whose worker died: a part or a chunk is replaced whole. A file failing validation fails the ingest with
the same one-line error as the serial path: the driver raises errors in file order, after telling the
remaining tasks to stop (an abort flag file) and waiting for the running ones, so nothing writes into
the staging tree once the builder removes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import zarr
from numcodecs import Blosc

from ..schemas import mssd as S
from ..store import InputError, RaggedWriter
from ..store.errors import FstoreError
from .sessions import FULL, SessionIdRegistry, session_runs
from .table import HashAside, read_typed_csv

ABORT = "abort"
# Parts crossing a network (``--scheduler``) are compressed like the store's chunks (zstd level 1 after a
# byte shuffle): 4.3 instead of 26 bytes an event written to and read back from the shared storage, for
# about 120 ns of CPU an event (measured here); on one machine (LocalCluster) they stay raw ``.npy``.
_PART_CODEC = Blosc(cname="zstd", clevel=1, shuffle=Blosc.SHUFFLE)


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


def warm_up(client) -> list:
    """Have every worker import the ingest modules now, while the driver reads the track features
    (a fresh worker process spends about a second on imports before its first file)."""
    workers = list(client.scheduler_info()["workers"])
    return [client.submit(_import_ingest, workers=[w], allow_other_workers=False, pure=False) for w in workers]


def _import_ingest() -> None:
    from . import spotify  # noqa: F401 - polars, zarr, numba and the encoder, loaded once per process


# --- in the tasks ------------------------------------------------------------------------------

_TRACK_CODES: dict[tuple, pl.DataFrame] = {}  # per worker process: the track id -> code table


def _track_codes(path: str) -> pl.DataFrame:
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _TRACK_CODES:
        _TRACK_CODES.clear()
        _TRACK_CODES[key] = pl.read_parquet(path)
    return _TRACK_CODES[key]


def encode_file(path: str, part: str, codes_path: str, checksum: bool, compress: bool = False) -> dict | None:
    """Phase A for one log file: parse, validate and encode it into the folder ``part``.

    Returns the counts, the file's vocabularies (first-appearance order) and its sha256; or
    ``{"error": ...}`` for bad input (returned, not raised: an expected outcome, not a task failure for
    Dask to log); or None when the ingest was aborted before this task started."""
    from .spotify import _SessionEncoder  # the serial path's encoder: one definition of the columns

    out = Path(part)
    if (out.parent / ABORT).exists():
        return None
    p = Path(path)
    digest = HashAside() if checksum else None
    try:
        df = read_typed_csv(p, S.LOG_CSV, digest=digest)
        runs = session_runs(df, p, FULL)
        enc = _SessionEncoder(_track_codes(codes_path))
        cols = enc.columns(df, p)
    except InputError as e:
        return {"error": (str(e), str(e.path), e.line, e.column)}
    out.mkdir(parents=True, exist_ok=True)
    for c, v in cols.items():
        if compress:
            (out / f"{c}.blosc").write_bytes(_PART_CODEC.encode(np.ascontiguousarray(v)))
        else:
            np.save(out / f"{c}.npy", v)
    np.save(out / "lengths.npy", runs.lengths)
    np.save(out / "hashes.npy", runs.session_ids.hash(seed=0).to_numpy())
    pl.DataFrame({"value": runs.session_ids}).write_parquet(out / "ids.parquet")
    return {"events": df.height, "sessions": len(runs.lengths),
            "vocab": {c: enc.dicts[c].values for c in S.CATEGORICAL_COLUMNS},
            "sha256": digest.hexdigest() if digest is not None else None}


def _slices(parts: list[tuple[str, int]], name: str, lo: int, hi: int) -> Iterator:
    """(part index, values) of column ``name`` of ``parts`` ((folder, first global index)) that fall in
    [lo, hi), in order: raw parts are memory-mapped (only the range is read); a compressed part, which
    spans about one range, is decompressed by one or two tasks."""
    dtype = np.dtype(S.EVENT_COLUMNS[name]["dtype"])
    for k, (folder, start) in enumerate(parts):
        packed = Path(folder) / f"{name}.blosc"
        if packed.exists():
            v = np.frombuffer(_PART_CODEC.decode(packed.read_bytes()), dtype=dtype)
        else:
            v = np.load(Path(folder) / f"{name}.npy", mmap_mode="r")
        a, b = max(lo, start) - start, min(hi, start + len(v)) - start
        if b > a:
            yield k, v[a:b]


def write_chunks(stage: str, table: str, column: str, lo: int, hi: int, parts: list[tuple[str, int]],
                 luts: list[list[int]] | None) -> bool:
    """Phase B: values [lo, hi) of one event column (whole chunks, the last one possibly short), gathered
    from the parts that cover it, categorical codes mapped through each part's ``luts``. Each chunk of
    the version is written by exactly one task, whole: no chunk is shared between processes."""
    if (Path(parts[0][0]).parent / ABORT).exists():
        return False
    pieces = [np.asarray(luts[k], dtype=np.uint8)[v] if luts else np.asarray(v)
              for k, v in _slices(parts, column, lo, hi)]
    zarr.open_array(Path(stage) / table / "events" / column, mode="r+")[lo:hi] = np.concatenate(pieces)
    return True


def write_offsets(stage: str, table: str, lo: int, hi: int, parts: list[tuple[str, int]],
                  event_starts: list[int]) -> bool:
    """Phase B: ``offsets[lo:hi]``; ``offsets[j]`` = events before session j (part k's sessions start
    at session ``parts[k][1]`` and event ``event_starts[k]``)."""
    if (Path(parts[0][0]).parent / ABORT).exists():
        return False
    pieces = [np.zeros(1, dtype=np.int64)] if lo == 0 else []
    for (folder, first), event_start in zip(parts, event_starts, strict=True):
        lengths = np.load(Path(folder) / "lengths.npy")  # offsets[first + 1 + i] = event_start + cumsum[i]
        a, b = max(lo, first + 1) - first - 1, min(hi, first + 1 + len(lengths)) - first - 1
        if b > a:
            pieces.append(event_start + np.cumsum(lengths)[a:b])
    zarr.open_array(Path(stage) / table / "offsets", mode="r+")[lo:hi] = np.concatenate(pieces)
    return True


def chunk_ranges(total: int, chunk: int, tasks: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges of whole chunks covering [0, total), about ``tasks`` of them."""
    chunks = -(-total // chunk)
    per = max(1, -(-chunks // max(tasks, 1)))
    return [(k * chunk, min((k + per) * chunk, total)) for k in range(0, chunks, per)]


def _covering(starts: np.ndarray, counts: np.ndarray, lo: int, hi: int, base: int = 0) -> list[int]:
    """Indices of the parts whose [start + base, start + base + count) meets [lo, hi)."""
    return [k for k in range(len(starts)) if starts[k] + base < hi and starts[k] + base + counts[k] > lo]


def _ordered(futures: list) -> Iterator:
    """Results in submission order: errors surface in file order, as the serial path meets them."""
    for fut in futures:
        result = fut.result()
        if isinstance(result, dict) and "error" in result:
            raise RemoteInputError(*result["error"])
        yield result


def ingest_train_distributed(client, paths: list[Path], builder, enc, registry: SessionIdRegistry, bar,
                             digests: dict[Path, str] | None, chunk: int, compress: bool = False) -> dict:
    """The train set of ``ingest_spotify`` on the cluster; returns the table's metadata.

    ``enc``'s dictionaries grow in file order as in the serial path; ``digests`` (when not None)
    receives the sha256 of each file, computed by the task that parsed it; ``compress``: blosc parts
    (for a cluster whose parts cross a network)."""
    from distributed import wait
    from distributed.scheduler import KilledWorker

    parts = builder.stage / "_fstore" / "parts"
    parts.mkdir(parents=True)
    submitted: list = []
    try:
        meta = _run(client, paths, builder, enc, registry, bar, digests, chunk, parts, submitted, compress)
    except BaseException as e:
        (parts / ABORT).touch()  # tasks not yet started return at once; then wait for the running ones
        wait(submitted)
        if isinstance(e, KilledWorker):
            raise FstoreError(f"a Dask worker died on every try of one task ({e}); nothing was committed") from None
        raise
    shutil.rmtree(parts.parent)
    return meta


def _run(client, paths, builder, enc, registry, bar, digests, chunk, parts: Path, submitted: list,
         compress: bool) -> dict:
    codes_path = parts / "track_codes.parquet"
    enc.track_codes.write_parquet(codes_path)
    folders = [str(parts / f"{i:06d}") for i in range(len(paths))]
    futures = [client.submit(encode_file, str(p.resolve()), f, str(codes_path), digests is not None, compress,
                             pure=False)
               for p, f in zip(paths, folders, strict=True)]
    submitted += futures
    infos, luts = [], []
    ids = builder.ids("train")
    for p, info, folder in zip(paths, _ordered(futures), folders, strict=True):
        lut = {}
        for c in S.CATEGORICAL_COLUMNS:  # the serial path's dictionaries: values in first-appearance order
            lut[c] = [enc.dicts[c].add(v) for v in info["vocab"][c]]
            if len(enc.dicts[c]) > 256:
                raise InputError(p, f"more than 256 distinct values in {c} (stored as uint8 codes)", column=c)
        luts.append(lut)
        infos.append(info)
        if digests is not None:
            digests[p] = info["sha256"]
        # the driver's share, O(sessions), done while later files are still encoding
        registry.add_hashes(p, np.load(Path(folder) / "hashes.npy"))
        ids.append(pl.read_parquet(Path(folder) / "ids.parquet")["value"])
        bar.update(p.stat().st_size)
    counts = {"events": np.array([i["events"] for i in infos]), "sessions": np.array([i["sessions"] for i in infos])}
    starts = {k: np.concatenate([[0], np.cumsum(v)[:-1]]) for k, v in counts.items()}
    n_events, n_sessions = int(counts["events"].sum()), int(counts["sessions"].sum())
    group = RaggedWriter(builder.root, "train", S.EVENT_COLUMNS, chunk=chunk).group  # creates the arrays
    for c in S.EVENT_COLUMNS:
        group["events"][c].resize((n_events,))
    group["offsets"].resize((n_sessions + 1,))
    # phase B: one task per column and range of whole chunks (about one range per file)
    for lo, hi in chunk_ranges(n_events, chunk, len(paths)):
        ks = _covering(starts["events"], counts["events"], lo, hi)
        parts_here = [(folders[k], int(starts["events"][k])) for k in ks]
        for c in S.EVENT_COLUMNS:
            lut = [luts[k][c] for k in ks] if c in S.CATEGORICAL_COLUMNS else None
            submitted.append(client.submit(write_chunks, str(builder.stage), "train", c, lo, hi, parts_here, lut,
                                           pure=False))
    offsets_chunk = group["offsets"].chunks[0]
    for lo, hi in chunk_ranges(n_sessions + 1, offsets_chunk, len(paths)):
        ks = _covering(starts["sessions"], counts["sessions"], lo, hi, base=1)
        parts_here = [(folders[k], int(starts["sessions"][k])) for k in ks]
        submitted.append(client.submit(write_offsets, str(builder.stage), "train", lo, hi, parts_here,
                                       [int(starts["events"][k]) for k in ks], pure=False))
    for _ in _ordered(submitted[len(paths):]):
        pass
    meta = {**dict(group.attrs), "kind": "ragged", "rows": n_sessions, "events": n_events,
            "columns": S.EVENT_COLUMNS, "split": "train"}
    group.attrs.update(meta)
    return meta
