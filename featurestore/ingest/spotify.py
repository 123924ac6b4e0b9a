"""``fstore ingest spotify``: MSSD raw files -> a store, file by file, bounded in memory.

Tables written:
- ``tracks``: feature table, one 8-bit code per feature (quantizers fitted on a sample plus the
  exact min/max of every column), ids in ``ids/tracks.parquet``.
- ``train``: ragged sessions from ``training_set/log_*``; event columns per ``featurestore.schemas.mssd``.
- ``test``: ragged sessions from ``test_set``: the first half from ``log_prehistory_*`` and the
  second half from ``ground_truth_*`` when present, else from ``log_input_*`` with the log columns
  zero (attribute ``second_half_labels`` says which). Loaders never expose second-half log columns.

Bad-input policy (every case raises InputError naming the file and line/column; nothing is
committed; an existing store at the target is untouched):
- missing column, empty value, unparsable value, empty file, header-only file, truncated gzip;
- a session whose rows are not contiguous or not ordered 1..L, or whose row count disagrees with
  session_length; a session split across two files (or two runs of one file);
- a track id absent from the track features; a duplicate track id; a `mode` other than major/minor;
- flags outside 0/1, hour_of_day outside 0..23.
Open vocabularies: unseen context_type / reason values are added to the dictionary, never rejected.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from tqdm import tqdm

from ..quantize import ExactQuantizer, QuantizerBank, RangeScan
from ..schemas import mssd as S
from ..store import FeatureTableWriter, InputError, RaggedWriter
from ..store.arrays import EVENT_CHUNK
from ..store.chunks import LocalGroup
from ..store.manifest import sha256_file
from .builder import IngestSummary, StoreBuilder, file_sources, refuse_existing
from .log_batches import LinesFrom, read_in_blocks, run_id_batches
from .sessions import FULL, SessionIdRegistry, session_runs
from .sources import ParseAhead, SourceHashes, all_files, discover
from .spotify_encode import SessionEncoder, check_test_labels, test_date_batches

if TYPE_CHECKING:
    import zarr

FIT_SAMPLE_ROWS = 32_768  # quantizer fitting sample in all (plus the exact min/max of every column)
KEEP_TRACK_BYTES = 256 << 20  # track blocks kept in memory between fitting and encoding
TRAIN_CHUNK = EVENT_CHUNK  # events per chunk of the train columns (tests lower it to cover many chunks)


# --- tracks ----------------------------------------------------------------------------------

def _track_block(df: pl.DataFrame, path: Path) -> np.ndarray:
    mode = df["mode"]
    bad = ~mode.is_in(S.MODE_LABELS)
    if bad.any():
        r = int(bad.arg_max())
        raise InputError(path, f"mode {mode[r]!r} is not one of {S.MODE_LABELS}", line=r + 2, column="mode")
    df = df.with_columns((pl.col("mode") == "minor").cast(pl.Float64))
    # polars already gives float64 (the columns' supertype): no second copy of the block
    return df.select(S.TRACK_FEATURES).to_numpy().astype(np.float64, copy=False)


def _ingest_tracks(paths: list[Path], group: LocalGroup | zarr.Group, bar: tqdm, read=None) -> pl.DataFrame:
    """Fit quantizers on a sample (+ exact extremes), then encode. Returns id -> code.

    ``read(path)``: the parsed file (``ParseAhead.next`` in the serial ingest), else parsed here.
    Blocks are kept between the two steps while they fit in ``KEEP_TRACK_BYTES`` (the synthetic and
    mini releases); beyond that each file is read again, so memory stays bounded for 3.7M tracks.
    """
    def parse(p: Path) -> pl.DataFrame:
        return read_in_blocks(p, S.TRACK_CSV)

    read = read or parse
    rng = np.random.default_rng(0)
    samples, extremes, ids, kept, kept_bytes = [], RangeScan(len(S.TRACK_FEATURES)), [], [], 0
    for p in paths:
        df = read(p)
        block = _track_block(df, p)
        ids.append(df[S.TRACK_ID])
        del df  # the parsed file (~300 bytes a track) goes before the next file's arrives
        take = rng.choice(len(block), size=min(len(block), FIT_SAMPLE_ROWS // len(paths) + 1), replace=False)
        samples.append(block[take])
        extremes.update(block)
        kept_bytes += block.nbytes
        kept.append(block if kept_bytes <= KEEP_TRACK_BYTES else None)
        del block  # (if not kept) freed before the next file's block is made
        bar.update(p.stat().st_size // 2)
    quantizers = QuantizerBank.fit(samples, "auto", extremes).quantizers
    quantizers[S.TRACK_FEATURES.index("mode")] = ExactQuantizer(0, labels=S.MODE_LABELS)  # text, stored as 0/1
    all_ids = pl.concat(ids)
    dup = all_ids.is_duplicated()
    if dup.any():
        raise InputError(paths[0].parent, f"track id {all_ids[int(dup.arg_max())]!r} appears twice in track features")
    writer = FeatureTableWriter(group, "tracks", S.TRACK_FEATURES, quantizers)
    for p, block in zip(paths, kept, strict=True):
        writer.append(block if block is not None else _track_block(parse(p), p))
        bar.update(p.stat().st_size - p.stat().st_size // 2)
    writer.close()
    return pl.DataFrame({S.TRACK_ID: all_ids, "code": np.arange(len(all_ids), dtype=np.int32)})


# --- sessions ---------------------------------------------------------------------------------

def _ingest_train(paths, builder: StoreBuilder, enc, registry, bar, writer: RaggedWriter | None = None,
                  ahead: ParseAhead | None = None) -> RaggedWriter:
    """Check, encode and write the logs batch by batch (whole sessions, ``log_batches``) while ``ahead``
    parses the next ones; into a new train set, or into ``writer`` (an append resumes the parent
    version's set)."""
    own = ahead is None
    ahead = ParseAhead([], paths) if own else ahead
    try:
        writer = writer if writer is not None else RaggedWriter(builder.tree, "train", S.EVENT_COLUMNS,
                                                                chunk=TRAIN_CHUNK)
        ids = builder.ids("train")
        for p in paths:
            for batch in ahead.batches(p):
                with LinesFrom(p, batch.first_line):
                    runs = session_runs(batch.frame, p, FULL)
                    columns = enc.columns(batch.frame, p)
                registry.add(p, runs.session_ids)
                writer.append(runs.lengths, columns)
                ids.append(runs.session_ids)
                ahead.vocabularies = enc.vocabularies()
                del batch, runs, columns  # freed before the next batch arrives: its parse reuses this memory
            bar.update(p.stat().st_size)
    finally:
        if own:
            ahead.close()
    return writer


def _ingest_test(triples, builder: StoreBuilder, enc, registry, bar) -> tuple[RaggedWriter, bool]:
    writer = RaggedWriter(builder.tree, "test", S.EVENT_COLUMNS)
    ids = builder.ids("test")
    labelled = check_test_labels(triples)
    for pre_path, inp, gt in triples:
        for merged, lengths, lines, session_ids in test_date_batches(pre_path, inp, gt):
            registry.add(pre_path, session_ids)
            writer.append(lengths, enc.columns(merged, pre_path, lines))
            ids.append(session_ids)
        bar.update(sum(p.stat().st_size for p in (pre_path, inp, gt) if p is not None))
    return writer, labelled


def _run_ids(path: Path) -> Iterator[pl.Series]:
    return run_id_batches(path)


def sources_with(raw_dir: Path, paths: list[Path], digests: dict[Path, str] | None) -> list[dict]:
    """Manifest source entries; sha256 from ``digests`` where the parse computed it, else read here."""
    out = file_sources(raw_dir, paths, checksums=False)
    if digests is not None:
        for entry, p in zip(out, paths, strict=True):
            entry["sha256"] = digests.get(p) or sha256_file(p)
    return out


def ingest_spotify(raw_dir: str | Path, store_path: str | Path, overwrite: bool = False,
                   progress: bool = True, source_checksums: bool = True, workers: int = 0,
                   scheduler: str | None = None, hashes: SourceHashes | None = None,
                   ahead: ParseAhead | None = None) -> IngestSummary:
    """Ingest an MSSD release (or a synthetic one) into a new store at ``store_path``.

    ``workers`` > 0 (a local Dask cluster of that many processes) or ``scheduler`` (an existing Dask
    cluster's address): the training logs are encoded by one task per file (``ingest/distributed.py``);
    the store's content is the same as the serial path's (``workers=0``). ``hashes`` (the raw files'
    checksums) and ``ahead`` (their parse): already running, when the command line started them
    before its imports; else the serial path starts them here (the distributed one hashes and parses
    each file in its task)."""
    raw_dir = Path(raw_dir)
    if not (workers or scheduler):
        try:
            refuse_existing(store_path, overwrite)
            files = discover(raw_dir)
            if source_checksums and hashes is None:
                hashes = SourceHashes(all_files(files))
            ahead = ahead if ahead is not None else ParseAhead(files["tracks"], files["train"])
            return _ingest(raw_dir, store_path, overwrite, progress, source_checksums, None, hashes, ahead)
        finally:
            for started in (ahead, hashes):
                if started is not None:
                    started.close()
    refuse_existing(store_path, overwrite)
    from .distributed import dask_client, warm_up  # Dask and zarr: imported only for a distributed ingest

    with dask_client(workers, scheduler) as client:
        warming = warm_up(client)  # noqa: F841 - held while the ingest runs
        return _ingest(raw_dir, store_path, overwrite, progress, source_checksums, client, None, None)


def _ingest(raw_dir: Path, store_path: str | Path, overwrite: bool, progress: bool, source_checksums: bool,
            client, hashes: SourceHashes | None, ahead: ParseAhead | None) -> IngestSummary:
    files = discover(raw_dir)
    paths = all_files(files)
    raw_bytes = sum(p.stat().st_size for p in paths)
    with StoreBuilder(store_path, "spotify-mssd", overwrite=overwrite, progress=progress, files=len(paths),
                      raw_bytes=raw_bytes) as b:
        bar = b.bar(raw_bytes, "B", "ingest spotify")
        enc = SessionEncoder(None)
        for name, d in enc.dicts.items():
            b.adopt_dictionary(name, d)
        enc.track_codes = _ingest_tracks(files["tracks"], b.tree, bar, read=ahead.next if ahead else None)
        b.table("tracks", dict(b.tree["tracks"].attrs))
        b.write_ids("tracks", enc.track_codes[S.TRACK_ID])
        registry = SessionIdRegistry(b.stage / ".session-hashes")  # spilled there beyond 32 MB, removed by check
        digests: dict[Path, str] | None = {} if source_checksums else None
        if client is None:
            b.table("train", _ingest_train(files["train"], b, enc, registry, bar, ahead=ahead).close(split="train"))
            if files["test"]:
                test, labelled = _ingest_test(files["test"], b, enc, registry, bar)
                b.table("test", test.close(split="test", second_half_labels=labelled))
        else:
            from .distributed import ingest_sessions_distributed

            networked = not hasattr(client.cluster, "workers")  # --scheduler: workers on other machines
            for name, meta in ingest_sessions_distributed(client, files["train"], files["test"], b, enc, registry,
                                                          bar, digests, TRAIN_CHUNK, networked=networked).items():
                b.table(name, meta)
        if not files["test"]:
            b.summary.notes.append("no test_set/log_prehistory_* files: store has no test split")
        registry.check(_run_ids)
        if hashes is not None and digests is not None:
            digests.update(hashes.digests())
        b.finish(sources_with(raw_dir, paths, digests))
    return b.summary
