"""``fstore ingest yandex``: Yandex Cup 2022 artist-retrieval features -> frame sets, track by track.

Raw layout (DATASETS.md section 3): ``train_meta.tsv`` (``trackid  artistid  archive_features_path``),
``test_meta.tsv`` (``trackid  archive_features_path``) and one ``.npy`` float matrix of shape
(512, T), 1 <= T <= 81, per track. ``archive_features_path`` is relative to RAW_DIR (as the synthetic
generator writes it) or, as in the real release, to ``RAW_DIR/train_features`` / ``RAW_DIR/test_features``;
the root is chosen per split from the first track.

Tables written:
- ``train``: frame set (see store/frames.py), one clip per track, grouped by artist (``train_meta.tsv``
  order within an artist, so m clips of one artist are one contiguous read), frames =
  the matrix transposed (T x 512); per-clip ``clips/artist`` int32 codes into ``dicts/artist.parquet``
  (codes in order of first appearance) and ``clips/fold`` int16 (first path component, -1 if not a number).
- ``test``: frame set in ``test_meta.tsv`` order, ``clips/fold`` only (artists are hidden), encoded
  with the quantizers fitted on ``train``.
- ``ids/train.parquet``, ``ids/test.parquet``: track ids (row = clip index).
Quantizers: one affine (by default) 8-bit quantizer per feature, fitted on the frames of the first
tracks of ``train`` (``sample_frames``, 64 MB of float32 by default) plus, with ``two_pass`` (default),
the exact per-feature min / max over every train and test track from a first read-only pass (which
also validates every file before anything is written), so no value is clipped. Then every track is
streamed. Memory: the sample, never all frames.

Bad input (InputError naming the file and, for TSV problems, the line; nothing is committed):
missing meta file, header without the expected columns, a line with the wrong number of fields or an
empty field, a duplicate track id (over train and test), a missing feature file, a file that is not
a readable ``.npy``, a non-float dtype, a matrix that is not 2-D, whose first dimension is not 512 or
whose T is outside 1..81.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import zarr
from tqdm import tqdm

from ..store import Dictionary, InputError, staged_directory, write_manifest
from ..store.frame_writer import FrameWriter, RangeScan
from .frames_common import FrameIngestSummary, refuse_existing, source_entries, write_ids

FEATURES = 512
MIN_STEPS = 1
MAX_STEPS = 81
NPY_MAGIC = b"\x93NUMPY"
TRAIN_COLUMNS = ["trackid", "artistid", "archive_features_path"]
TEST_COLUMNS = ["trackid", "archive_features_path"]


def read_tsv(path: Path, columns: list[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, {column: value}) for every data line; header must name ``columns``."""
    if not path.is_file():
        raise InputError(path, "file not found")
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    if not lines:
        raise InputError(path, "file is empty")
    header = [h.strip() for h in lines[0].split("\t")]
    missing = [c for c in columns if c not in header]
    if missing:
        raise InputError(path, f"missing column(s) {missing}; header has {header}", line=1)
    pos = {c: header.index(c) for c in columns}
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise InputError(path, f"{len(fields)} tab-separated fields, header has {len(header)}", line=n)
        row = {c: fields[i].strip() for c, i in pos.items()}
        for c, v in row.items():
            if not v:
                raise InputError(path, "empty value", line=n, column=c)
        rows.append((n, row))
    if not rows:
        raise InputError(path, "no data rows (header only)")
    return rows


def load_track(path: Path) -> np.ndarray:
    """The (T, 512) frames of one feature file, validated."""
    if not path.is_file():
        raise InputError(path, "feature file not found")
    with open(path, "rb") as fh:
        if fh.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise InputError(path, "not a .npy file (no NUMPY magic header)")
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(path, f"not a readable .npy file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(a, np.ndarray):
        raise InputError(path, "not a single .npy array")
    if a.dtype.kind != "f":
        raise InputError(path, f"dtype {a.dtype} is not floating point")
    if a.ndim != 2:
        raise InputError(path, f"shape {a.shape} is not 2-D ({FEATURES} x T)")
    if a.shape[0] != FEATURES:
        raise InputError(path, f"shape {a.shape}: first dimension {a.shape[0]} != {FEATURES}")
    if not MIN_STEPS <= a.shape[1] <= MAX_STEPS:
        raise InputError(path, f"shape {a.shape}: T = {a.shape[1]} outside {MIN_STEPS}..{MAX_STEPS}")
    return a.T


def _fold(rel: str) -> int:
    head = rel.replace("\\", "/").split("/", 1)[0]
    return int(head) if head.isdigit() else -1


def _features_root(raw_dir: Path, split: str, meta: Path, rows: list[tuple[int, dict[str, str]]]) -> Path:
    rel = rows[0][1]["archive_features_path"]
    for root in (raw_dir, raw_dir / f"{split}_features"):
        if (root / rel).is_file():
            return root
    raise InputError(raw_dir / rel, f"feature file not found (listed in {meta.name}, line {rows[0][0]})")


def _resolve(raw_dir: Path, split: str, meta: Path, rows) -> list[Path]:
    root = _features_root(raw_dir, split, meta, rows)
    paths = []
    for n, row in rows:
        p = root / row["archive_features_path"]
        if not p.is_file():
            raise InputError(p, f"feature file not found (listed in {meta.name}, line {n})")
        paths.append(p)
    return paths


def _check_unique(splits: dict[str, tuple[Path, list]]) -> None:
    seen: dict[str, tuple[Path, int]] = {}
    for meta, rows in splits.values():
        for n, row in rows:
            tid = row["trackid"]
            if tid in seen:
                first, line = seen[tid]
                raise InputError(meta, f"track id {tid!r} appears twice (first in {first.name}, line {line})",
                                 line=n, column="trackid")
            seen[tid] = (meta, n)


def ingest_yandex(raw_dir: str | Path, store_path: str | Path, overwrite: bool = False, progress: bool = True,
                  sample_frames: int | None = None, kind: str = "affine", two_pass: bool = True) -> FrameIngestSummary:
    """Ingest a Yandex Cup 2022 release (or a synthetic one) into a new store at ``store_path``."""
    t0 = time.perf_counter()
    raw_dir = Path(raw_dir)
    refuse_existing(store_path, overwrite)
    if not raw_dir.is_dir():
        raise InputError(raw_dir, "raw directory not found")
    train_meta, test_meta = raw_dir / "train_meta.tsv", raw_dir / "test_meta.tsv"
    splits = {"train": (train_meta, read_tsv(train_meta, TRAIN_COLUMNS))}
    if test_meta.exists():
        splits["test"] = (test_meta, read_tsv(test_meta, TEST_COLUMNS))
    _check_unique(splits)
    paths = {s: _resolve(raw_dir, s, meta, rows) for s, (meta, rows) in splits.items()}
    # Train clips are stored grouped by artist (stable, meta order within an artist): the m clips an
    # artist-balanced batch takes from one artist are then one contiguous read (loaders/balanced.py).
    meta, rows = splits["train"]
    by_artist = sorted(range(len(rows)), key=lambda i: rows[i][1]["artistid"])
    splits["train"] = (meta, [rows[i] for i in by_artist])
    paths["train"] = [paths["train"][i] for i in by_artist]
    n_files = sum(len(p) for p in paths.values())
    feature_bytes = sum(p.stat().st_size for ps in paths.values() for p in ps)
    metas = [m for m, _ in splits.values()]
    summary = FrameIngestSummary("yandex-cup-2022", files=len(metas) + n_files,
                                 raw_bytes=feature_bytes + sum(m.stat().st_size for m in metas))
    if "test" not in splits:
        summary.notes.append("no test_meta.tsv: store has no test split")
    extremes = None
    if two_pass:
        extremes = RangeScan(FEATURES)
        for p in tqdm([p for ps in paths.values() for p in ps], unit="track", desc="scan yandex",
                      disable=not progress):
            extremes.update(load_track(p))
    with staged_directory(store_path, overwrite) as stage, contextlib.ExitStack() as cleanup, tqdm(
        total=n_files, unit="track", desc="ingest yandex", disable=not progress
    ) as bar:
        root = zarr.open_group(stage, mode="w", zarr_format=3)
        (stage / "dicts").mkdir()
        (stage / "ids").mkdir()
        artists = Dictionary()
        tables, quantizers = {}, None
        for split, (meta, rows) in splits.items():
            columns = {"fold": {"dtype": "int16", "meaning": "first component of archive_features_path"}}
            if split == "train":
                columns["artist"] = {"dtype": "int32", "dictionary": "artist"}
            writer = FrameWriter(root, split, FEATURES, quantizers=quantizers, kind=kind,
                                 sample_frames=sample_frames, extremes=extremes, columns=columns)
            cleanup.callback(writer.abort)
            for (_, row), path in zip(rows, paths[split], strict=True):
                values = {"fold": _fold(row["archive_features_path"])}
                if split == "train":
                    values["artist"] = artists.add(row["artistid"])
                writer.append(load_track(path), values)
                bar.update(1)
            shared = {"quantizers_from": "train", "exact_range": two_pass} if quantizers else {}
            tables[split] = writer.close(split=split, source=meta.name, **shared)
            quantizers = writer.quantizers
            write_ids(stage, split, [row["trackid"] for _, row in rows])
        artists.write(stage / "dicts" / "artist.parquet")
        sources = source_entries(raw_dir, metas, n_files, feature_bytes, "*/*.npy (archive_features_path)")
        manifest = write_manifest(stage, "yandex-cup-2022", tables, sources)
    return summary.finish(manifest, t0)
