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
- ids, dictionaries, manifest (sources: the metadata files with sha256, the feature files as one
  counted entry), staging, commit and summary through ``StoreBuilder``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from ..store.frame_writer import FrameWriter, RangeScan
from .builder import IngestSummary, StoreBuilder, file_sources, refuse_existing


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


def ingest_clips(source: ClipSource, store_path: str | Path, *, overwrite: bool = False, progress: bool = True,
                 sample_frames: int | None = None, kind: str = "affine", two_pass: bool = True,
                 workers: int = 1) -> IngestSummary:
    """Ingest a clip dataset through its source adapter into a new store at ``store_path``."""
    from .distributed_clips import current_loader

    refuse_existing(store_path, overwrite)
    # hook: inside ``distributed_clips.clip_loader`` the clips are loaded by Dask tasks
    load_all = current_loader() or (lambda fn, items: ordered_map(fn, items, workers))
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
        first: FrameWriter | None = None
        for split in source.splits:
            writer = FrameWriter(builder.root, split.name, source.bins, kind=kind, sample_frames=sample_frames,
                                 extremes=extremes, columns=split.columns or None, labels=split.labels,
                                 quantizers=first.quantizers if first else None)
            builder.on_failure(writer.abort)
            coded = {c for c, m in split.columns.items() if "dictionary" in m}
            label_dict = builder.dictionary(split.labels["dictionary"]) if split.labels else None
            for frames, clip in zip(load_all(source.load, split.clips), split.clips,
                                    strict=True):
                values = {c: (builder.dictionary(split.columns[c]["dictionary"]).add(v) if c in coded else v)
                          for c, v in clip.values.items()}
                labels = [label_dict.add(x) for x in clip.labels] if label_dict is not None else None
                writer.append(frames, values or None, labels=labels)
                bar.update(1)
            shared = {"quantizers_from": source.splits[0].name, "exact_range": two_pass} if first else {}
            builder.table(split.name, writer.close(split=split.name, **split.attrs, **shared))
            builder.write_ids(split.name, [c.id for c in split.clips])
            first = first or writer
        sources = file_sources(source.raw_dir, source.meta_files)
        sources.append({"path": source.pattern, "files": len(clips), "bytes": feature_bytes})
        builder.finish(sources)
    return builder.summary
