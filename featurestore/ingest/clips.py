"""Clip datasets (one frame matrix per item: Yandex tracks, FSD clips, speaker utterances) -> frame sets.

A dataset is a small **source adapter** (``ClipSource``): its splits with their items (id, what to
load, per-clip values, labels), how to load one item as a (frames x bins) float matrix, its metadata
files and its notes. ``ingest_clips`` does the rest, the same for every dataset:

- optionally a first read-only pass (``two_pass``) that loads every item, validating it, and records
  the exact per-bin min / max, so no value is clipped;
- one ``FrameWriter`` per split, the quantizers fitted on the first split (``sample_frames`` frames,
  with ``kind``) and reused for the others (attributes ``quantizers_from``, ``exact_range``);
- per-clip columns: values of columns with a ``dictionary`` are strings, encoded here through the
  builder's dictionary of that name (likewise the ``labels`` of a split with a label column);
- items are loaded by ``workers`` threads in order (``ordered_map``), written in order;
- nothing is converted without a word: what a source's loader converts (``load_counted``: e.g. FSD's
  multi-channel wavs mixed down to mono) and the non-finite frame values (stored as the NaN code 255,
  read back as NaN) are counted over the clips written and become notes of the summary (``LoadTally``),
  the same whether clips are loaded by threads or by Dask tasks;
- ids, dictionaries, manifest (sources: the metadata files with sha256, the feature files as one
  counted entry), staging, commit and summary through ``StoreBuilder``;
- ``append=True``: the clips go into the latest version's frame sets as a new version
  (``clips_append.py``): the parent's quantizers, growing vocabularies, new clip ids only, and a
  rebase on the new latest version when another writer commits first (``builder.with_rebase``).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl
from tqdm import tqdm

from ..store.errors import StoreError
from ..store.frame_writer import FrameWriter, RangeScan
from .builder import IngestSummary, StoreBuilder, file_sources, refuse_existing, with_rebase
from .clips_append import FrameAppender


@dataclass
class Clip:
    """One item: its id, its feature file, per-clip values, label strings and whatever else
    ``ClipSource.load`` needs (``extra``)."""

    id: str
    path: Path
    values: dict[str, Any] = field(default_factory=dict)
    labels: list[str] | None = None
    extra: Any = None


@dataclass
class ClipSplit:
    """One table: its clips, per-clip column metadata (FrameWriter ``columns``), label metadata and
    extra table attributes."""

    name: str
    clips: list[Clip]
    columns: dict[str, dict] = field(default_factory=dict)
    labels: dict | None = None
    attrs: dict = field(default_factory=dict)


class ClipSource(Protocol):
    """What a clip dataset tells ``ingest_clips``. ``read()`` validates all metadata (not the contents of
    feature files) and fills the attributes below, every feature file checked to exist; ``load(clip)``
    returns one (frames, bins) float array, validated."""

    dataset: str            # manifest "dataset"
    name: str               # short name for progress bars
    unit: str               # what an item is called (track, clip, utt)
    raw_dir: Path
    bins: int
    splits: list[ClipSplit]
    meta_files: list[Path]  # metadata files read (checksummed in the manifest)
    pattern: str            # how the feature files are named, for the manifest
    dictionaries: dict[str, list[str]]  # vocabularies known up front (in code order)
    notes: list[str]

    def read(self) -> None: ...

    def load(self, clip: Clip) -> np.ndarray: ...

    def load_counted(self, clip: Clip) -> tuple[np.ndarray, dict[str, int]]: ...

    def count_notes(self, counts: Counter) -> list[str]: ...


class ClipSourceBase:
    """The state every clip source adapter starts with; subclasses set the class attributes
    (``dataset``, ``name``, ``unit``, ``pattern``, and ``bins`` when fixed) and fill the rest in ``read``."""

    dataset: str
    name: str
    unit: str
    pattern: str
    bins: int = 0

    def __init__(self, raw_dir: str | Path):
        self.raw_dir = Path(raw_dir)
        self.splits: list[ClipSplit] = []
        self.meta_files: list[Path] = []
        self.dictionaries: dict[str, list[str]] = {}
        self.notes: list[str] = []

    def load_counted(self, clip: Clip) -> tuple[np.ndarray, dict[str, int]]:
        """``load``, and what loading converted, as counts by kind (plain data: it travels back from a
        Dask worker); summed over the clips written and worded by ``count_notes``. Nothing here."""
        return self.load(clip), {}

    def count_notes(self, counts: Counter) -> list[str]:
        """Summary notes for the summed ``load_counted`` counts (a source that counts words them)."""
        return []


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


class LoadTally:
    """What loading the clips written converted or let through, for the summary's notes: the source's own
    counts (``load_counted``) and the non-finite frame values, which every quantizer stores as the NaN
    code 255 (an infinity too: it reads back as NaN)."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.nan = self.nan_clips = self.inf = self.inf_clips = 0

    def add(self, frames: np.ndarray, counts: dict[str, int]) -> None:
        self.counts.update(counts)
        frames = np.asarray(frames)
        if frames.dtype.kind != "f" or np.isfinite(frames).all():
            return
        nan = int(np.isnan(frames).sum())
        inf = int(np.isinf(frames).sum())
        self.nan, self.nan_clips = self.nan + nan, self.nan_clips + (nan > 0)
        self.inf, self.inf_clips = self.inf + inf, self.inf_clips + (inf > 0)

    def notes(self, source: ClipSource) -> list[str]:
        out = source.count_notes(self.counts)
        if self.nan:
            out.append(f"{_plural(self.nan, 'NaN value')} in {_plural(self.nan_clips, source.unit)} (stored as the "
                       "NaN code 255: they read back as NaN)")
        if self.inf:
            out.append(f"{_plural(self.inf, 'infinite value')} in {_plural(self.inf_clips, source.unit)} stored as "
                       "the NaN code 255: they read back as NaN, not as infinity")
        return out


def ordered_map(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """``map(fn, items)`` on a thread pool, in order, at most ``2 * workers`` results ahead (bounded memory).

    The first exception in item order is raised; queued work is cancelled.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(workers)
    window: deque[Future] = deque()
    try:
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def clip_loader_for(workers: int) -> Callable[[Callable, list[Clip]], Iterator]:
    """How clips are loaded: by Dask tasks inside ``distributed_clips.clip_loader``, else by ``workers``
    threads in this process (both yield frames in clip order)."""
    from .distributed_clips import current_loader

    return current_loader() or (lambda fn, items: ordered_map(fn, items, workers))


def ingest_clips(source: ClipSource, store_path: str | Path, *, overwrite: bool = False, progress: bool = True,
                 sample_frames: int | None = None, kind: str = "affine", two_pass: bool = True,
                 workers: int = 1, append: bool = False) -> IngestSummary:
    """Ingest a clip dataset through its source adapter into a new store at ``store_path``; with
    ``append``, add its clips to the store's latest version as a new version (``_append_clips``)."""
    if append:  # done again on the new latest version if another writer commits first
        source.read()
        return with_rebase(store_path, lambda: _append_clips(source, store_path, progress=progress, workers=workers,
                                                             overwrite=overwrite))
    refuse_existing(store_path, overwrite)
    load_all = clip_loader_for(workers)
    source.read()
    clips = [c for s in source.splits for c in s.clips]
    feature_bytes = sum(c.path.stat().st_size for c in clips)
    builder = StoreBuilder(store_path, source.dataset, overwrite=overwrite, progress=progress,
                           files=len(source.meta_files) + len(clips),
                           raw_bytes=feature_bytes + sum(m.stat().st_size for m in source.meta_files),
                           notes=source.notes)
    extremes = None
    if two_pass:
        extremes = RangeScan(source.bins)
        with tqdm(total=len(clips), unit=source.unit, desc=f"scan {source.name}", disable=not progress) as bar:
            for frames in load_all(source.load, clips):
                extremes.update(frames)
                bar.update(1)
    with builder:
        for name, values in source.dictionaries.items():
            builder.dictionary(name, values)
        bar = builder.bar(len(clips), source.unit, f"ingest {source.name}")
        tally = LoadTally()
        first: FrameWriter | None = None
        for split in source.splits:
            writer = FrameWriter(builder.root, split.name, source.bins, kind=kind, sample_frames=sample_frames,
                                 extremes=extremes, columns=split.columns or None, labels=split.labels,
                                 quantizers=first.quantizers if first else None)
            builder.on_failure(writer.abort)
            _write_split(builder, source, split, writer, workers, bar, tally)
            shared = {"quantizers_from": source.splits[0].name, "exact_range": two_pass} if first else {}
            builder.table(split.name, writer.close(split=split.name, **split.attrs, **shared))
            builder.write_ids(split.name, [c.id for c in split.clips])
            first = first or writer
        builder.summary.notes += tally.notes(source)
        builder.finish(_sources(source, clips, feature_bytes))
    return builder.summary


def _write_split(builder: StoreBuilder, source: ClipSource, split: ClipSplit, writer, workers: int,
                 bar: tqdm, tally: LoadTally) -> None:
    """Load, encode (dictionary columns and labels through the builder's vocabularies) and write a split;
    what loading converted goes into ``tally``."""
    coded = {c for c, m in split.columns.items() if "dictionary" in m}
    label_dict = builder.dictionary(split.labels["dictionary"]) if split.labels else None
    loaded = clip_loader_for(workers)(source.load_counted, split.clips)
    for (frames, counts), clip in zip(loaded, split.clips, strict=True):
        tally.add(frames, counts)
        values = {c: (builder.dictionary(split.columns[c]["dictionary"]).add(v) if c in coded else v)
                  for c, v in clip.values.items()}
        labels = [label_dict.add(x) for x in clip.labels] if label_dict is not None else None
        writer.append(frames, values or None, labels=labels)
        bar.update(1)


def _sources(source: ClipSource, clips: list[Clip], feature_bytes: int) -> list[dict]:
    sources = file_sources(source.raw_dir, source.meta_files)
    sources.append({"path": source.pattern, "files": len(clips), "bytes": feature_bytes})
    return sources


def _append_clips(source: ClipSource, store_path: str | Path, *, progress: bool, workers: int,
                  overwrite: bool) -> IngestSummary:
    """New clips into the latest version's frame sets, as a new version (see clips_append.py).

    Quantizers stay the parent's (clipped values counted in a note), vocabularies grow, a clip id the
    parent holds is an error, a split the parent lacks is written whole with the parent's quantizers.
    ``source`` has been read."""
    clips = [c for s in source.splits for c in s.clips]
    feature_bytes = sum(c.path.stat().st_size for c in clips)
    builder = StoreBuilder(store_path, source.dataset, overwrite=overwrite, progress=progress, append=True,
                           files=len(source.meta_files) + len(clips),
                           raw_bytes=feature_bytes + sum(m.stat().st_size for m in source.meta_files),
                           notes=source.notes)
    with builder:
        parent = builder.parent_store
        frame_tables = [n for n, m in parent.tables.items() if m["kind"] == "frames"]
        _check_new(source, parent, frame_tables)
        for rel in parent.manifest["files"]:  # vocabularies grow from the parent's: old codes keep their meaning
            if rel.startswith("dicts/") and rel.endswith(".parquet"):
                builder.adopt_dictionary(rel[6:-8], parent.dictionary(rel[6:-8]))
        for name, values in source.dictionaries.items():
            builder.dictionary(name).extend(values)
        bar = builder.bar(len(clips), source.unit, f"append {source.name}")
        tally = LoadTally()
        clipped, worst = 0, 0.0
        for split in source.splits:
            if split.name in parent.tables:
                writer = FrameAppender(builder.root, split.name)
            else:
                writer = FrameWriter(builder.root, split.name, source.bins, columns=split.columns or None,
                                     labels=split.labels, quantizers=parent.frames(frame_tables[0]).quantizers)
            builder.on_failure(writer.abort)
            _write_split(builder, source, split, writer, workers, bar, tally)
            if isinstance(writer, FrameAppender):
                clipped, worst = clipped + writer.clipped, max(worst, writer.clipped_max_error)
                builder.table(split.name, writer.close())
            else:
                builder.table(split.name, writer.close(split=split.name, **split.attrs,
                                                       quantizers_from=frame_tables[0], exact_range=False))
                clipped += sum(q["clipped"] for q in builder.tables[split.name]["quantizers"])
            builder.ids(split.name).append(pl.Series([c.id for c in split.clips], dtype=pl.Utf8))
        added = ", ".join(f"{split.name} +{len(split.clips)}" for split in source.splits)
        builder.summary.notes.append(f"appended {len(clips)} {source.unit}s to version {builder.parent} ({added})")
        if clipped:
            builder.summary.notes.append(
                f"{clipped} frame values outside the quantizers' fitted ranges (version {builder.parent}) were "
                f"clipped, largest error {worst:.4g} (re-ingest with --overwrite to refit)")
        builder.summary.notes += tally.notes(source)
        builder.finish(_sources(source, clips, feature_bytes))
    return builder.summary


def _check_new(source: ClipSource, parent, frame_tables: list[str]) -> None:
    """Every appended clip is new, and its split has the parent's bins and columns."""
    if parent.manifest.get("dataset") != source.dataset or not frame_tables:
        raise StoreError(f"{parent.path} is a {parent.manifest.get('dataset')} store, {source.raw_dir} is "
                         f"{source.dataset}: cannot append")
    if parent.tables[frame_tables[0]]["bins"] != source.bins:
        raise StoreError(f"{parent.path}: {parent.tables[frame_tables[0]]['bins']} bins a frame, "
                         f"{source.raw_dir} has {source.bins}: cannot append")
    held = {}
    for name in frame_tables:
        held.update(dict.fromkeys(parent.ids(name), name))
    for split in source.splits:
        if split.name in parent.tables:
            meta = parent.tables[split.name]
            if meta["kind"] != "frames" or meta["bins"] != source.bins:
                raise StoreError(f"{parent.path}: table {split.name!r} has {meta.get('bins')} bins, "
                                 f"{source.raw_dir} has {source.bins}: cannot append")
            have, new = set(meta.get("clip_columns", {})), set(split.columns)
            if have != new or ("labels" in meta) != (split.labels is not None):
                raise StoreError(f"{source.raw_dir}: split {split.name!r} has columns {sorted(new)} (labels: "
                                 f"{split.labels is not None}), the store's has {sorted(have)} (labels: "
                                 f"{'labels' in meta}): cannot append")
        for c in split.clips:
            if c.id in held:
                raise StoreError(f"{source.raw_dir}: clip {c.id!r} ({split.name}) is already in {parent.path} "
                                 f"version {parent.version} (table {held[c.id]}); an append adds new clips only")
