"""``fstore ingest spotify RAW STORE --append``: new log files and new tracks as a new version.

Existing event data is not rewritten: the new version's tree hard-links the parent's files, and the
new sessions go into new chunks (plus the partial last chunk of each array, rewritten aside). Only
the id lists and dictionaries are rewritten whole (they are small beside the events).
- RAW holds ``training_set/log_*`` (new sessions) and optionally ``track_features/tf_*`` (new
  tracks only: an id the store has is an error). ``test_set/`` cannot be appended.
- A session already in the store (split between old and new files) is an error. A file whose name
  the store already ingested is skipped when its content is the same (sha256; MSSD ships one set of
  track files beside many log archives, so each append's RAW may carry them again) and counted in the
  summary; with a different content it is an error.
- New tracks are encoded with the parent version's quantizers: values outside their fitted ranges
  are clipped and counted in a note. With ``refit`` (``--refit``) the track quantizers are fitted
  again on the old tracks (their decoded values: the raw floats are not kept) and the new ones, and
  the track table alone is rewritten; event data is untouched either way. An old track's error
  against its raw value is then at most the old bound plus the new one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

from ..quantize import ExactQuantizer, QuantizerBank, RangeScan
from ..schemas import mssd as S
from ..store import FeatureTableWriter, InputError, RaggedWriter, Store, StoreError
from ..store.manifest import sha256_file
from .builder import IngestSummary, StoreBuilder, with_rebase
from .sessions import SessionIdRegistry
from .sources import SourceHashes, _glob
from .spotify import FIT_SAMPLE_ROWS, _ingest_train, _run_ids, _track_block, sources_with
from .spotify_encode import SessionEncoder
from .table import read_typed_csv

REFIT_BLOCK_ROWS = 1 << 18  # old tracks decoded at a time by --refit (29 columns: 60 MB of float64)


def _discover(raw_dir: Path, parent: Store, digests: dict[Path, str]) -> tuple[list[Path], list[Path], list[Path]]:
    """(new logs, new track files, files skipped: ingested before with the same content). ``digests``:
    sha256 of the raw files hashed to decide (filled here, reused when called again on a newer parent)."""
    if not raw_dir.is_dir():
        raise InputError(raw_dir, "raw directory not found")
    if _glob(raw_dir / "test_set", "log_*"):
        raise InputError(raw_dir / "test_set", "an append adds training logs and tracks; test_set/ cannot be appended")
    logs, tracks = _glob(raw_dir / "training_set", "log_*"), _glob(raw_dir / "track_features", "tf_*")
    if not logs and not tracks:
        raise InputError(raw_dir, "nothing to append (no training_set/log_* or track_features/tf_* files)")
    seen: dict[str, list[dict]] = {}
    for s in parent.manifest.get("sources", []):
        seen.setdefault(Path(s["path"]).name, []).append(s)
    skipped = [p for p in logs + tracks if p.name in seen and _ingested_before(p, seen[p.name], parent, digests)]
    if skipped:
        logs, tracks = [p for p in logs if p not in skipped], [p for p in tracks if p not in skipped]
        if not logs and not tracks:
            raise InputError(raw_dir, f"nothing to append: all {len(skipped)} training_set/log_* and "
                             f"track_features/tf_* files were ingested before, with the same content")
    return logs, tracks, skipped


def _ingested_before(path: Path, before: list[dict], parent: Store, digests: dict[Path, str]) -> bool:
    """True when ``path`` has the content of a source file of the same name the store ingested before
    (``before``: those manifest entries), to be skipped; a different content is an error. The size is
    compared first: only a file of the same size is hashed (the one read of it an append makes)."""
    store = parent.remote or parent.path
    recorded = [s for s in before if s.get("sha256")]
    if not recorded:
        raise InputError(path, f"{store} (version {parent.version}) already holds a file named {path.name}, "
                         "ingested without a checksum (--no-source-checksums): cannot tell whether its content "
                         "is the same")
    size = path.stat().st_size
    if any(s["bytes"] == size for s in recorded):
        if path not in digests:
            digests[path] = sha256_file(path)
        if any(s["sha256"] == digests[path] for s in recorded):
            return True
    s = recorded[-1]
    this = f"{size} bytes" + (f", sha256 {digests[path][:12]}" if path in digests else "")
    raise InputError(path, f"content differs from the {path.name} already ingested into {store} (its sources as of "
                     f"version {parent.version}: {s['path']}, {s['bytes']} bytes, sha256 {s['sha256'][:12]}; this "
                     f"file: {this}); a file name is ingested once: give new data a new name")


def _old_blocks(table, rows: int = REFIT_BLOCK_ROWS) -> Iterator[np.ndarray]:
    """The parent's tracks, decoded (float64), in blocks: memory bounded by ``rows``."""
    for start in range(0, table.rows, rows):
        yield table.dequantize(table.array[start:start + rows]).astype(np.float64)


def _refit_tracks(blocks: list[np.ndarray], b: StoreBuilder, table) -> int:
    """Fit the track quantizers on old (decoded) + new tracks, rewrite ``tracks/``; returns values clipped."""
    rng = np.random.default_rng(0)
    extremes, samples = RangeScan(len(S.TRACK_FEATURES)), []
    parts = max(-(-table.rows // REFIT_BLOCK_ROWS) + len(blocks), 1)
    for block in [*_old_blocks(table), *blocks]:
        extremes.update(block)
        samples.append(block[rng.choice(len(block), size=min(len(block), FIT_SAMPLE_ROWS // parts + 1), replace=False)])
    quantizers = QuantizerBank.fit(samples, "auto", extremes).quantizers
    quantizers[S.TRACK_FEATURES.index("mode")] = ExactQuantizer(0, labels=S.MODE_LABELS)  # as a full ingest does
    del b.root["tracks"]  # this tree's links to the parent's files: the parent keeps its own
    writer = FeatureTableWriter(b.root, "tracks", S.TRACK_FEATURES, quantizers)
    for block in [*_old_blocks(table), *blocks]:
        writer.append(block)
    meta = {**writer.close(), "refit": True}
    writer.group.attrs.update(meta)
    b.table("tracks", {**b.tables["tracks"], **meta})
    return int(writer.encoder.clipped.sum())


def _append_tracks(paths: list[Path], b: StoreBuilder, parent: Store, refit: bool = False) -> tuple[pl.DataFrame, int]:
    """Encode new tracks with the parent's quantizers (or refitted ones, ``refit``); returns (id -> code
    for all tracks, values clipped)."""
    old_ids = pl.Series(S.TRACK_ID, parent.ids("tracks"), dtype=pl.Utf8)
    table = parent.feature_table("tracks")
    blocks, ids = [], []
    for p in paths:
        df = read_typed_csv(p, S.TRACK_CSV)
        blocks.append(_track_block(df, p))
        ids.append(df[S.TRACK_ID])
    new_ids = pl.concat(ids) if ids else pl.Series(S.TRACK_ID, [], dtype=pl.Utf8)
    every = pl.concat([old_ids, new_ids])
    dup = every.is_duplicated()
    if dup.any():
        first = every[int(dup.arg_max())]
        raise InputError(paths[0] if paths else b.path, f"track id {first!r} is already in the store or appears twice")
    clipped = 0
    if refit:
        clipped = _refit_tracks(blocks, b, table)
        b.ids("tracks").append(new_ids)
    elif blocks:
        encoder = QuantizerBank.from_configs([c["codec"] for c in table.meta["columns"]]).encoder()
        codes_array = b.root["tracks"]["codes"]
        rows = table.rows
        for block in blocks:
            codes = encoder.encode(np.asarray(block, dtype=np.float64))
            codes_array.resize((rows + len(block), codes.shape[1]))
            codes_array[rows:] = codes
            rows += len(block)
        clipped = int(sum(c.get("clipped", 0) for c in encoder.report()))
        b.root["tracks"].attrs.update({"rows": rows})
        b.table("tracks", {**b.tables["tracks"], "rows": rows})
        b.ids("tracks").append(new_ids)
    return pl.DataFrame({S.TRACK_ID: every, "code": np.arange(len(every), dtype=np.int32)}), clipped


def append_spotify(raw_dir: str | Path, store_path: str | Path, progress: bool = True,
                   source_checksums: bool = True, refit: bool = False) -> IngestSummary:
    """Append RAW's new training logs and tracks to the store as a new version (see the module doc);
    ``refit``: fit the track quantizers again on old + new tracks and rewrite the track table. An append
    that loses the commit race is done again on the new latest version (``with_rebase``)."""
    return with_rebase(store_path, lambda: _append_once(raw_dir, store_path, progress, source_checksums, refit))


def _append_once(raw_dir: str | Path, store_path: str | Path, progress: bool, source_checksums: bool,
                 refit: bool) -> IngestSummary:
    raw_dir = Path(raw_dir)
    parent = Store(store_path)
    if parent.version is None:
        raise StoreError(f"{store_path}: not a versioned store; ingest it again (with --overwrite) to append to it")
    digests: dict[Path, str] = {}
    logs, tracks, skipped = _discover(raw_dir, parent, digests)
    files = tracks + logs
    hashes = SourceHashes(files) if source_checksums else None  # on a low-priority thread, meanwhile
    try:
        return _append_files(raw_dir, store_path, progress, refit, parent, (logs, tracks, skipped), hashes, digests)
    finally:
        if hashes is not None:
            hashes.close()


def _append_files(raw_dir: Path, store_path: str | Path, progress: bool, refit: bool, parent: Store,
                  found: tuple[list[Path], list[Path], list[Path]], hashes: SourceHashes | None,
                  digests: dict[Path, str]) -> IngestSummary:
    logs, tracks, skipped = found
    files = tracks + logs
    raw_bytes = sum(p.stat().st_size for p in files)
    with StoreBuilder(store_path, parent.manifest["dataset"], append=True, progress=progress, files=len(files),
                      raw_bytes=raw_bytes) as b:
        if b.parent != parent.version:  # a commit landed since: check against the version built on
            logs, tracks, skipped = _discover(raw_dir, b.parent_store, digests)  # it may hold more of them
            files = tracks + logs
            raw_bytes = b.summary.raw_bytes = sum(p.stat().st_size for p in files)
            b.summary.files = len(files)
        b.summary.skipped = len(skipped)
        bar = b.bar(raw_bytes, "B", "append spotify")
        track_codes, clipped = _append_tracks(tracks, b, b.parent_store, refit)
        enc = SessionEncoder(track_codes)
        for c in S.CATEGORICAL_COLUMNS:  # vocabularies grow from the parent's: old codes keep their meaning
            enc.dicts[c] = b.parent_store.dictionary(c)
            b.adopt_dictionary(c, enc.dicts[c])
        registry = SessionIdRegistry()
        stored = {}
        for split in ("train", "test"):
            if split in b.parent_store.tables:
                path = b.parent_store.data_dir / "ids" / f"{split}.parquet"
                stored[path] = pl.Series("session_id", b.parent_store.ids(split), dtype=pl.Utf8)
                registry.add(path, stored[path])
        if logs:
            writer = RaggedWriter.resume(b.root, "train")
            b.table("train", _ingest_train(logs, b, enc, registry, bar, writer).close(split="train"))
        registry.check(lambda p: stored[p] if p in stored else _run_ids(p))
        if refit:
            b.summary.notes.append(f"track quantizers refitted on {b.tables['tracks']['rows']} tracks "
                                   f"({len(track_codes) - b.parent_store.tables['tracks']['rows']} new); track table rewritten, events untouched")
        if clipped:
            b.summary.notes.append(f"{clipped} track feature values outside the quantizers' fitted ranges were "
                                   "clipped (append with --refit to refit them)")
        b.finish(sources_with(raw_dir, files, {**digests, **hashes.digests()} if hashes is not None else None))
    return b.summary
