"""Ingest on a Dask cluster: one task per raw file, each writing its own part of the new version.

``--workers N`` starts a ``distributed.LocalCluster`` of N worker processes; ``--scheduler ADDRESS``
uses an existing cluster, whose workers must see the raw files at the same paths (a shared file
system) and the store: a local store's staging tree at the same path, or an ``s3://`` store, which
needs nothing shared. Data never passes through the scheduler or the driver: tasks read their own
files and write their own parts and chunks; only counts, vocabularies, file names and checksums travel.

The content is identical whatever the number of workers (same codes, same row order, same
dictionaries, the same chunk files byte for byte) because every global decision is taken by the
driver, in file order:

1. the track dictionary and quantizers (before any task runs, as in the serial path);
2. phase A, one task per train log file and one per test date (prehistory and second half, merged
   as the serial path merges them): parse, validate, encode into a part (one array per column,
   categoricals as codes of the file's own vocabulary in first-appearance order, session lengths,
   session-id hashes and an id-list part). The driver merges the per-file vocabularies in file order
   (train, then test), which gives exactly the serial path's dictionaries (values added in
   first-appearance order), fixes each file's event and session offsets by a prefix sum of the counts,
   and moves each id-list part aside (``IdListWriter.add_part``: streamed into one file at commit);
3. phase B, one task per range of whole chunks (all columns), submitted as soon as the parts merged so
   far fill them (phase B runs while later files are still parsed: no barrier): gather the range's
   values from the parts that cover it, map the categorical codes to the merged
   dictionaries, encode the chunks (``store.chunks.ChunkFile``: the bytes zarr writes). Every chunk
   is written whole by exactly one task; the driver writes only the small files (array metadata,
   dictionaries, id lists, the track table).

Where parts and chunks go (``parts.Parts``, ``write_chunk_range``):

- parts: in ``<staging tree>/_fstore/parts/<file>/`` (raw ``.npy``, memory-mapped by phase B;
  blosc-compressed when they cross a network, ``--scheduler``); for an ``s3://`` store with
  ``--scheduler``, objects under the store's ``_fstore/staging/<token>/parts/<file>/`` (blosc: the
  workers share nothing but the raw files); with ``--workers`` (one machine) they stay on local disk,
  4x faster than a round trip through S3 (moto, measured here);
- chunks: into the local staging tree; for an ``s3://`` store each chunk is uploaded by the task that
  encodes it, as the content-addressed object ``_fstore/objects/<sha256>`` the commit would have
  made; the task returns only ``{path in the version: {"bytes", "sha256"}}``, which the manifest
  lists, and the commit uploads only the driver's small files.

The parts are removed before the commit, and on every failure. Tasks are idempotent (whole files,
whole chunks, content-addressed objects), so Dask may rerun a task whose worker died: a part or a
chunk is replaced by the same bytes. A file failing validation fails the ingest with the same
one-line error as the serial path: the driver raises errors in file order, after telling the
remaining tasks to stop (an abort flag) and waiting for the running ones, so nothing writes parts
once they are removed. Chunk objects uploaded by an ingest that failed are referenced by no version:
``fstore vacuum`` removes them (and the staging objects of a driver that was killed) after its grace
period.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..schemas import mssd as S
from ..store import InputError, RaggedWriter
from ..store.arrays import EVENT_CHUNK
from ..store.chunks import LocalGroup
from ..store.errors import FstoreError
from ..store.manifest import sha256_file
from .parts import Parts
from .sessions import FULL, SessionIdRegistry, session_runs
from .table import HashAside, read_typed_csv


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
    import dask

    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536 (against long-lived workers' unmanaged memory);
    # setting it fixes glibc's mmap threshold at 128 KiB, so every column array of a parse is mmapped,
    # faulted in and unmapped again. An ingest's workers live for one command: glibc's own adaptive
    # defaults there cut 1.2 s of system time and 8% of the wall time of a 12M-row --workers 2 ingest.
    environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items()
               if k != "MALLOC_TRIM_THRESHOLD_"}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                         silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client


def warm_up(client) -> list:
    """Have every worker import the tasks' modules now, while the driver reads the track features
    (a fresh worker process spends about a second on imports before its first file)."""
    workers = list(client.scheduler_info()["workers"])
    return [client.submit(_import_ingest, workers=[w], allow_other_workers=False, pure=False) for w in workers]


def _import_ingest() -> None:
    # what the tasks import (polars, the encoder and its dictionaries; the S3 client module of phase B),
    # loaded once per process
    from ..store import remote  # noqa: F401
    from . import spotify_encode  # noqa: F401


# --- in the tasks ------------------------------------------------------------------------------

_TRACK_CODES: dict[str, pl.DataFrame] = {}  # per worker process: the track id -> code table of one ingest


def _track_codes(parts: Parts) -> pl.DataFrame:
    if parts.root not in _TRACK_CODES:  # the root names one ingest's staging: unique
        _TRACK_CODES.clear()
        _TRACK_CODES[parts.root] = pl.read_parquet(io.BytesIO(parts.get("track_codes.parquet")))
    return _TRACK_CODES[parts.root]


def encode_file(job: list[str], parts: Parts, index: int, checksum: bool) -> dict | None:
    """Phase A for one job: a train log file (``[path]``) or a test date (``[prehistory, input, ground
    truth or ""]``): parse, validate and encode it into part ``index`` of ``parts``.

    Returns the counts, the job's vocabularies (first-appearance order) and the sha256 of each of its
    files; or ``{"error": ...}`` for bad input (returned, not raised: an expected outcome, not a task
    failure for Dask to log); or None when the ingest was aborted before this task started."""
    from .spotify_encode import SessionEncoder, read_test_date  # the serial path's own code: one definition

    if parts.aborted():
        return None
    paths = [Path(x) if x else None for x in job]
    parsed = paths if len(paths) == 1 else [paths[0], paths[2] or paths[1]]  # an input file beside its
    digests = {q: HashAside() for q in parsed} if checksum else {}  # ground truth is not parsed
    try:
        enc = SessionEncoder(_track_codes(parts))
        if len(paths) == 1:
            df = read_typed_csv(paths[0], S.LOG_CSV, digest=digests.get(paths[0]))
            runs = session_runs(df, paths[0], FULL)
            lengths, session_ids, cols = runs.lengths, runs.session_ids, enc.columns(df, paths[0])
        else:
            df, lengths, lines, session_ids = read_test_date(*paths, digests=digests)
            cols = enc.columns(df, paths[0], lines)
    except InputError as e:
        return {"error": (str(e), str(e.path), e.line, e.column)}
    part = f"{index:06d}"
    for c, v in cols.items():
        parts.put_array(f"{part}/{c}", v)
    parts.put_array(f"{part}/lengths", np.asarray(lengths, dtype=np.int64))
    parts.put_array(f"{part}/hashes", session_ids.hash(seed=0).to_numpy().astype(np.uint64))
    ids = io.BytesIO()  # an id-list part (``IdListWriter.add_part``)
    pl.DataFrame({"value": session_ids}).write_ipc(ids, compression="zstd" if parts.compress else "uncompressed")
    parts.put(f"{part}/ids.arrow", ids.getvalue())
    return {"events": df.height, "sessions": len(lengths),
            "vocab": {c: enc.dicts[c].values for c in S.CATEGORICAL_COLUMNS},
            "sha256": {str(q): digests[q].hexdigest() if q in digests else sha256_file(q)
                       for q in paths if q is not None and checksum}}


def _slices(parts: Parts, covering: list[tuple[int, int]], name: str, dtype: np.dtype, lo: int,
            hi: int) -> Iterator:
    """(k, values) of column ``name`` of the parts ``covering`` ((part index, first global index)) that
    fall in [lo, hi), in order: raw parts are memory-mapped (only the range is read); a compressed part,
    which spans about one range, is decompressed by one or two tasks."""
    for k, (index, start) in enumerate(covering):
        v = parts.array(f"{index:06d}/{name}", dtype)
        a, b = max(lo, start) - start, min(hi, start + len(v)) - start
        if b > a:
            yield k, v[a:b]


def write_chunk_range(stage: str, url: str | None, rel: str, meta: dict, lo: int, values: np.ndarray) -> dict:
    """Write ``values`` as the whole chunks of the array ``rel`` (its ``zarr.json`` content: ``meta``)
    starting at row ``lo`` (a chunk boundary): into the local staging tree ``stage``, or, for an S3
    store ``url``, as content-addressed objects; returns the uploaded files' manifest entries."""
    from ..store.chunks import ChunkFile

    if url is None:
        chunks = ChunkFile(Path(stage) / rel, meta)
        for k in range(0, len(values), chunks.chunk):
            chunks.write((lo + k) // chunks.chunk, values[k : k + chunks.chunk])
        return {}
    from ..store.remote import S3Store

    s3 = S3Store.shared(url)
    chunks = ChunkFile(rel, meta)  # only to name and encode the chunks: nothing local
    out = {}
    for k in range(0, len(values), chunks.chunk):
        index = (lo + k) // chunks.chunk
        data = chunks.encode(values[k : k + chunks.chunk])
        if data is not None:  # a chunk of fill values only has no file, as zarr writes it
            out[str(chunks.path(index))] = s3.put_object_bytes(data)
    return out


def write_chunks(parts: Parts, stage: str, url: str | None, table: str, metas: dict[str, dict], lo: int, hi: int,
                 covering: list[tuple[int, int]], luts: dict[str, list[list[int]]]) -> dict | None:
    """Phase B: rows [lo, hi) of every event column (whole chunks, the last one possibly short), gathered
    from the parts that cover them, categorical codes mapped through each part's ``luts[column]``. Each
    chunk of the version is written by exactly one task, whole: no chunk is shared between processes.
    One task writes all the columns of its range: 23x fewer tasks for the scheduler than one a column
    (about 47,000 fewer on the full MSSD), and as many tasks as chunks is parallel enough."""
    if parts.aborted():
        return None
    written: dict = {}
    for column, meta in metas.items():
        dtype = np.dtype(S.EVENT_COLUMNS[column]["dtype"])
        lut = luts.get(column)
        pieces = [np.asarray(lut[k], dtype=np.uint8)[v] if lut else np.asarray(v)
                  for k, v in _slices(parts, covering, column, dtype, lo, hi)]
        written |= write_chunk_range(stage, url, f"{table}/events/{column}", meta, lo, np.concatenate(pieces))
    return written


def write_offsets(parts: Parts, stage: str, url: str | None, table: str, meta: dict, lo: int, hi: int,
                  covering: list[tuple[int, int]], event_starts: list[int]) -> dict | None:
    """Phase B: ``offsets[lo:hi]``; ``offsets[j]`` = events before session j (part k's sessions start
    at session ``covering[k][1]`` and event ``event_starts[k]``)."""
    if parts.aborted():
        return None
    pieces = [np.zeros(1, dtype=np.int64)] if lo == 0 else []
    for (index, first), event_start in zip(covering, event_starts, strict=True):
        lengths = parts.array(f"{index:06d}/lengths", np.dtype(np.int64))
        a, b = max(lo, first + 1) - first - 1, min(hi, first + 1 + len(lengths)) - first - 1
        if b > a:  # offsets[first + 1 + i] = event_start + cumsum[i]
            pieces.append(event_start + np.cumsum(lengths)[a:b])
    return write_chunk_range(stage, url, f"{table}/offsets", meta, lo, np.concatenate(pieces))


def _ordered(futures: list) -> Iterator:
    """Results in submission order: errors surface in file order, as the serial path meets them."""
    for fut in futures:
        result = fut.result()
        if isinstance(result, dict) and "error" in result:
            raise RemoteInputError(*result["error"])
        yield result


def ingest_sessions_distributed(client, train: list[Path], test: list[tuple], builder, enc,
                                registry: SessionIdRegistry, bar, digests: dict[Path, str] | None, chunk: int,
                                networked: bool = False) -> dict[str, dict]:
    """The train set (and the test set, when ``test`` lists dates) of ``ingest_spotify`` on the cluster;
    returns each table's metadata.

    ``enc``'s dictionaries grow in file order (train, then test) as in the serial path; ``digests``
    (when not None) receives the sha256 of each file, computed by the task that parsed it; ``chunk``:
    events per chunk of the train set; ``networked``: the workers may be other machines
    (``--scheduler``): parts are compressed, and put on S3 for an S3 store."""
    from distributed import wait
    from distributed.scheduler import KilledWorker

    from .spotify_encode import check_test_labels

    labelled = check_test_labels(test) if test else False
    parts = Parts.for_builder(builder, networked)
    submitted: list = []
    try:
        try:
            codes = io.BytesIO()
            enc.track_codes.write_parquet(codes)
            parts.put("track_codes.parquet", codes.getvalue())
            jobs = [[str(p.resolve())] for p in train] + [[str(q.resolve()) if q else "" for q in t] for t in test]
            submitted += [client.submit(encode_file, job, parts, i, digests is not None, pure=False)
                          for i, job in enumerate(jobs)]
            phase_a = _ordered(submitted[: len(jobs)])  # one iterator: train results, then test results
            tables = {"train": _merge_parts(client, phase_a, train, 0, "train", chunk, builder, enc, registry, bar,
                                            digests, parts, submitted)}
            if test:
                tables["test"] = _merge_parts(client, phase_a, test, len(train), "test", EVENT_CHUNK, builder, enc,
                                              registry, bar, digests, parts, submitted)
                tables["test"]["second_half_labels"] = labelled
            for written in _ordered(submitted[len(jobs):]):  # phase B, both tables
                if written:
                    builder.uploaded(written)
        except BaseException as e:
            parts.abort()  # tasks not yet started return at once; then wait for the running ones
            wait(submitted)
            if isinstance(e, KilledWorker):
                raise FstoreError(f"a Dask worker died on every try of one task ({e}); nothing was committed") from None
            raise
    finally:
        parts.clear()
    for name, meta in tables.items():
        LocalGroup(builder.stage / name).attrs.update(meta)
    return tables


def _merge_parts(client, results: Iterator, jobs: list, first: int, table: str, chunk: int, builder, enc,
                 registry: SessionIdRegistry, bar, digests: dict | None, parts: Parts, submitted: list) -> dict:
    """The driver's share of one table: take the phase A results of ``jobs`` (parts ``first``...) in
    order, merging vocabularies, session-id hashes and id parts, and submit the phase B tasks of every
    chunk as soon as the parts that fill it are merged (appended to ``submitted``): phase B runs while
    later files are still being parsed, with no barrier between the phases. Returns the table's metadata."""
    from ..store.chunks import set_length

    group = RaggedWriter(builder.tree, table, S.EVENT_COLUMNS, chunk=chunk).group  # creates the arrays (empty)
    plan = _PhaseB(client, parts, builder, table, group.dir, chunk, submitted)
    ids = builder.ids(table)
    for i, job in enumerate(jobs, start=first):
        info = next(results)
        files = job if isinstance(job, tuple) else (job,)
        lut = {}
        for c in S.CATEGORICAL_COLUMNS:  # the serial path's dictionaries: values in first-appearance order
            lut[c] = [enc.dicts[c].add(v) for v in info["vocab"][c]]
            if len(enc.dicts[c]) > 256:
                raise InputError(files[0], f"more than 256 distinct values in {c} (stored as uint8 codes)", column=c)
        if digests is not None:
            digests.update({q: info["sha256"][str(q.resolve())] for q in files if q is not None})
        # the session-id check (a hash a session) and the ids part, moved (or downloaded) aside: the
        # commit streams the parts into one file
        registry.add_hashes(files[0], np.asarray(parts.array(f"{i:06d}/hashes", np.dtype(np.uint64))))
        ids.add_part(parts.file(f"{i:06d}/ids.arrow") or parts.get(f"{i:06d}/ids.arrow"), info["sessions"])
        plan.add(i, info["events"], info["sessions"], lut)
        bar.update(sum(q.stat().st_size for q in files if q is not None))
    plan.finish()
    for c in S.EVENT_COLUMNS:
        set_length(group.dir / "events" / c, plan.events)
    set_length(group.dir / "offsets", plan.sessions + 1)
    return {**dict(group.attrs), "kind": "ragged", "rows": plan.sessions, "events": plan.events,
            "columns": S.EVENT_COLUMNS, "split": table}


class _PhaseB:
    """Submits the phase B tasks of one table as its parts arrive, in order: each time the events (or
    sessions) merged so far complete one or more chunks, one task writes them in every column (the chunk
    grid is the final one, so every chunk is still written whole by exactly one task); ``finish``
    submits the rest, the last chunk possibly short."""

    def __init__(self, client, parts: Parts, builder, table: str, group_dir: Path, chunk: int, submitted: list):
        from ..store.chunks import read_meta

        self.client, self.parts, self.table, self.submitted = client, parts, table, submitted
        self.url = builder.remote.url if builder.remote is not None else None
        self.stage = str(builder.stage)
        self.meta = {c: read_meta(group_dir / "events" / c) for c in S.EVENT_COLUMNS}
        self.offsets_meta = read_meta(group_dir / "offsets")
        self.chunk = chunk
        self.offsets_chunk = self.offsets_meta["chunk_grid"]["configuration"]["chunk_shape"][0]
        self.index: list[int] = []  # part index of each merged part
        self.event_starts: list[int] = []
        self.session_starts: list[int] = []
        self.luts: list[dict] = []
        self.events = self.sessions = 0
        self.events_done = self.offsets_done = 0  # rows below these have their tasks submitted

    def add(self, index: int, events: int, sessions: int, lut: dict) -> None:
        self.index.append(index)
        self.event_starts.append(self.events)
        self.session_starts.append(self.sessions)
        self.luts.append(lut)
        self.events += events
        self.sessions += sessions
        self._submit(self.events // self.chunk * self.chunk, (self.sessions + 1) // self.offsets_chunk * self.offsets_chunk)

    def finish(self) -> None:
        self._submit(self.events, self.sessions + 1)

    def _submit(self, events_to: int, offsets_to: int) -> None:
        if events_to > self.events_done:
            lo, hi = self.events_done, events_to
            ks = [k for k, s in enumerate(self.event_starts) if s < hi and (self._end(k) > lo)]
            covering = [(self.index[k], self.event_starts[k]) for k in ks]
            luts = {c: [self.luts[k][c] for k in ks] for c in S.CATEGORICAL_COLUMNS}
            self.submitted.append(self.client.submit(write_chunks, self.parts, self.stage, self.url, self.table,
                                                     self.meta, lo, hi, covering, luts, pure=False))
            self.events_done = hi
        if offsets_to > self.offsets_done:
            lo, hi = self.offsets_done, offsets_to
            n = len(self.index)
            ks = [k for k in range(n) if self.session_starts[k] + 1 < hi
                  and self.session_starts[k] + 1 + self._sessions(k) > lo]
            covering = [(self.index[k], self.session_starts[k]) for k in ks]
            self.submitted.append(self.client.submit(write_offsets, self.parts, self.stage, self.url, self.table,
                                                     self.offsets_meta, lo, hi, covering,
                                                     [self.event_starts[k] for k in ks], pure=False))
            self.offsets_done = hi

    def _end(self, k: int) -> int:
        return self.event_starts[k + 1] if k + 1 < len(self.event_starts) else self.events

    def _sessions(self, k: int) -> int:
        return (self.session_starts[k + 1] if k + 1 < len(self.session_starts) else self.sessions) - self.session_starts[k]
