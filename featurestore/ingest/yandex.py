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
streamed. Memory: the sample, never all frames. NaN and infinite values are accepted: every quantizer
stores them as the NaN code 255 (an infinity reads back as NaN), and the summary counts them and the
tracks holding them (``clips.LoadTally``).

The meta files are read with ``table.read_table`` (a BOM, CRLF, blank lines at the end and spaces
around names are accepted). Bad input (InputError naming the file and, for TSV problems, the line;
nothing is committed): missing meta file, header without the expected columns, a line with the wrong
number of fields or an empty field, a blank line between rows, a duplicate track id (over train and test), a missing feature file, a file that is not
a readable ``.npy``, a non-float dtype, a matrix that is not 2-D, whose first dimension is not 512 or
whose T is outside 1..81.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..schemas import yandex as S
from ..store import InputError
from .builder import IngestSummary
from .clips import Clip, ClipSourceBase, ClipSplit, ingest_clips
from .table import read_table

NPY_MAGIC = b"\x93NUMPY"


def read_meta(path: Path, columns: list[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, {column: value}) for every data line of a meta TSV; header must name ``columns``."""
    return read_table(path, columns).records(columns)


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
        raise InputError(path, f"shape {a.shape} is not 2-D ({S.FEATURES} x T)")
    if a.shape[0] != S.FEATURES:
        raise InputError(path, f"shape {a.shape}: first dimension {a.shape[0]} != {S.FEATURES}")
    if not S.MIN_STEPS <= a.shape[1] <= S.MAX_STEPS:
        raise InputError(path, f"shape {a.shape}: T = {a.shape[1]} outside {S.MIN_STEPS}..{S.MAX_STEPS}")
    return a.T


def _fold(rel: str) -> int:
    head = rel.replace("\\", "/").split("/", 1)[0]
    return int(head) if head.isdigit() else -1


def _features_root(raw_dir: Path, split: str, meta: Path, rows: list[tuple[int, dict[str, str]]]) -> Path:
    rel = rows[0][1][S.FEATURES_PATH]
    for root in (raw_dir, raw_dir / S.FEATURE_ROOTS[split]):
        if (root / rel).is_file():
            return root
    raise InputError(raw_dir / rel, f"feature file not found (listed in {meta.name}, line {rows[0][0]})")


class YandexSource(ClipSourceBase):
    """The source adapter of a Yandex Cup 2022 release (see ``clips.ClipSource``)."""

    dataset, name, unit, bins = "yandex-cup-2022", "yandex", "track", S.FEATURES
    pattern = f"*/*.npy ({S.FEATURES_PATH})"

    def read(self) -> None:
        if not self.raw_dir.is_dir():
            raise InputError(self.raw_dir, "raw directory not found")
        train_meta, test_meta = self.raw_dir / S.TRAIN_META, self.raw_dir / S.TEST_META
        metas = {"train": (train_meta, read_meta(train_meta, S.TRAIN_COLUMNS))}
        if test_meta.exists():
            metas["test"] = (test_meta, read_meta(test_meta, S.TEST_COLUMNS))
        else:
            self.notes.append(f"no {S.TEST_META}: store has no test split")
        seen: dict[str, tuple[Path, int]] = {}
        for split, (meta, rows) in metas.items():
            root = _features_root(self.raw_dir, split, meta, rows)
            clips = []
            for n, row in rows:
                tid = row[S.TRACK_ID]
                if tid in seen:
                    first, line = seen[tid]
                    raise InputError(meta, f"track id {tid!r} appears twice (first in {first.name}, line {line})",
                                     line=n, column=S.TRACK_ID)
                seen[tid] = (meta, n)
                path = root / row[S.FEATURES_PATH]
                if not path.is_file():
                    raise InputError(path, f"feature file not found (listed in {meta.name}, line {n})")
                values = {"fold": _fold(row[S.FEATURES_PATH])}
                if split == "train":
                    values["artist"] = row[S.ARTIST_ID]
                clips.append(Clip(tid, path, values))
            columns = {"fold": {"dtype": "int16", "meaning": f"first component of {S.FEATURES_PATH}"}}
            if split == "train":
                columns["artist"] = {"dtype": "int32", "dictionary": "artist"}
                # grouped by artist (stable, meta order within an artist): the m clips an artist-balanced
                # batch takes from one artist are then one contiguous read (loaders/balanced.py)
                clips.sort(key=lambda c: c.values["artist"])
            self.splits.append(ClipSplit(split, clips, columns, attrs={"source": meta.name}))
            self.meta_files.append(meta)

    def load(self, clip: Clip) -> np.ndarray:
        return load_track(clip.path)


def ingest_yandex(raw_dir: str | Path, store_path: str | Path, overwrite: bool = False, progress: bool = True,
                  sample_frames: int | None = None, kind: str = "affine", two_pass: bool = True,
                  append: bool = False) -> IngestSummary:
    """Ingest a Yandex Cup 2022 release (or a synthetic one) into a new store at ``store_path``."""
    return ingest_clips(YandexSource(raw_dir), store_path, overwrite=overwrite, progress=progress,
                        sample_frames=sample_frames, kind=kind, two_pass=two_pass, append=append)
