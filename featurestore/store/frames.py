"""Frame sets: clips as ragged sequences of frames (time x bins), one 8-bit quantizer per bin.

On disk, one group ``<name>/`` per frame set (e.g. ``train``, ``test``)::

    <name>/offsets              int64 (clips + 1,), CSR offsets: clip i is frames [offsets[i], offsets[i+1])
    <name>/frames               uint8 (n_frames, bins) zarr v3 array, see below
    <name>/clips/<column>       optional per-clip 1-D arrays (clips,), e.g. ``artist`` / ``speaker`` int32
                                codes into ``dicts/<dictionary>.parquet``, ``curated`` uint8 0/1
    <name>/labels/...           optional multi-label CSR (a ragged set, see ragged.py): ``labels/offsets``
                                (clips + 1) and ``labels/events/class`` codes into a dictionary
    ids/<name>.parquet          clip ids (row number = clip index), written by the ingest

Group attributes (also the manifest's table entry): ``kind="frames"``, ``clips`` (= ``rows``),
``frames``, ``bins``, ``frame_chunk``, ``quantizers`` (one per bin: the quantizer config, the measured
``max_abs_error`` / ``rmse`` over every value written, its ``bound``, ``nan`` and ``clipped`` counts,
``clipped`` = values whose error exceeds the bound, i.e. outside the range the quantizer was fitted on),
``sample_frames`` (frames the quantizers were fitted on), ``clip_columns`` (column -> {"dtype",
optional "dictionary" or "type": "bool"}) and ``labels`` ({"dictionary": ...} when multi-label).

The ``frames`` array is both a valid zarr array and one contiguous memory-mappable region: it uses
the sharding codec with a single shard spanning the whole array padded to ``FRAME_CHUNK`` rows, inner
chunks of ``(FRAME_CHUNK, bins)`` and no compression (inner codecs: ``bytes`` only). The writer
appends raw codes to the shard file (key ``c/0/0``) as clips arrive, pads to a whole inner chunk at
close and appends the shard index (per inner chunk ``(offset, nbytes)`` as little-endian uint64, then
the crc32c of those bytes, zarr's default index codecs). So the shard file is the raw frames in
order followed by padding and the index: ``np.memmap(shard, uint8, shape=(n_frames, bins))`` is
the array, and zarr reads a crop with two ranged reads (index + the inner chunks it needs).

Quantizers are fitted sample-first: the writer buffers the first ``sample_frames`` frames (or takes
quantizers given to it), fits one quantizer per bin (``choose_quantizer(kind=...)``, affine by
default) on them plus, when given, the exact per-bin ``extremes`` of all the data (a ``RangeScan``
from a first, read-only pass), then encodes the buffer and streams every later clip straight to disk.
Memory is bounded by the sample. With extremes every value lies inside the fitted range, so the
error bound holds everywhere; without them values outside the sample's range are clipped and
counted in ``clipped``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import google_crc32c
import numba
import numpy as np
import zarr
from zarr.storage import LocalStore

from ..quantize import AffineQuantizer, Quantizer, choose_quantizer, quantizer_from_config
from ..quantize.base import N_LEVELS, NAN_CODE
from .arrays import EVENT_CHUNK, ROW_CHUNK, ChunkedAppender, create
from .errors import StoreError
from .ragged import RaggedSet, RaggedWriter

FRAME_CHUNK = 256
# float bytes buffered to fit the quantizers when no sample size is given
SAMPLE_BYTES = 64 << 20
# rows of the sample a (slow) quantile fit sees at most
FIT_ROWS = 1 << 16
INDEX_ENTRY = 16  # (offset, nbytes) uint64 per inner chunk
CRC_BYTES = 4

__all__ = ["FRAME_CHUNK", "FrameIngestSummary", "FrameSet", "FrameWriter", "RangeScan", "default_sample_frames"]


def default_sample_frames(bins: int) -> int:
    """Frames whose float32 values fill ``SAMPLE_BYTES``."""
    return max(FRAME_CHUNK, SAMPLE_BYTES // (4 * max(bins, 1)))


def _padded(n_frames: int) -> int:
    return -(-n_frames // FRAME_CHUNK) * FRAME_CHUNK


def shard_index(n_frames: int, bins: int) -> bytes:
    """The shard index for ``n_frames`` raw frames written in order: entries then crc32c."""
    chunk_bytes = FRAME_CHUNK * bins
    n_chunks = _padded(n_frames) // FRAME_CHUNK
    idx = np.empty((n_chunks, 2), dtype="<u8")
    idx[:, 0] = np.arange(n_chunks, dtype=np.uint64) * np.uint64(chunk_bytes)
    idx[:, 1] = chunk_bytes
    raw = idx.tobytes()
    return raw + np.uint32(google_crc32c.value(raw)).astype("<u4").tobytes()


def shard_file_size(n_frames: int, bins: int) -> int:
    """Bytes of the shard file holding ``n_frames`` frames (0 when there are none: no file)."""
    if n_frames == 0:
        return 0
    padded = _padded(n_frames)
    return padded * bins + (padded // FRAME_CHUNK) * INDEX_ENTRY + CRC_BYTES


def _local_dir(group: zarr.Group) -> Path:
    store = group.store
    if not isinstance(store, LocalStore):
        raise StoreError(f"frame sets need a local directory store, not {type(store).__name__}")
    return Path(store.root) / group.path


@numba.njit(nogil=True, cache=True)
def _affine_encode(x, lo, step, lut, bound, codes, max_abs, sum_sq, count, nan, clipped):
    """Affine codes of x (n, bins), as ``AffineQuantizer.encode`` computes them, plus error statistics."""
    n, bins = x.shape
    for i in range(n):
        for j in range(bins):
            v = np.float64(x[i, j])
            if np.isfinite(v):
                c = np.rint((v - lo[j]) / step[j])
                c = min(max(c, 0.0), np.float64(N_LEVELS - 1))
                k = np.uint8(c)
                codes[i, j] = k
                e = abs(v - np.float64(lut[k, j]))
                if e > max_abs[j]:
                    max_abs[j] = e
                sum_sq[j] += e * e
                count[j] += 1
                if e > bound[j]:
                    clipped[j] += 1
            else:
                codes[i, j] = NAN_CODE
                nan[j] += 1


class _BinCodec:
    """Vectorized per-bin encode and decode plus running per-bin error statistics."""

    def __init__(self, quantizers: list[Quantizer]):
        self.quantizers = quantizers
        self.bins = len(quantizers)
        self.lut = np.stack([q.lut() for q in quantizers], axis=1) if quantizers else np.zeros((256, 0), np.float32)
        self.bound = np.array([q.error_bound() for q in quantizers], dtype=np.float64)
        self.affine = bool(quantizers) and all(type(q) is AffineQuantizer for q in quantizers)
        if self.affine:
            self.lo = np.array([q.lo for q in quantizers], dtype=np.float64)
            self.step = np.array([q.step for q in quantizers], dtype=np.float64)
        self.max_abs = np.zeros(self.bins)
        self.sum_sq = np.zeros(self.bins)
        self.count = np.zeros(self.bins, dtype=np.int64)
        self.nan = np.zeros(self.bins, dtype=np.int64)
        self.clipped = np.zeros(self.bins, dtype=np.int64)
        self._cols = np.arange(self.bins)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """uint8 codes of float frames (n, bins), identical to each bin's ``Quantizer.encode``."""
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        codes = np.empty(x.shape, dtype=np.uint8)
        if self.affine:
            _affine_encode(x, self.lo, self.step, self.lut, self.bound, codes, self.max_abs, self.sum_sq,
                           self.count, self.nan, self.clipped)
            return codes
        x = x.astype(np.float64, copy=False)
        finite = np.isfinite(x)
        for j, q in enumerate(self.quantizers):
            codes[:, j] = q.encode(x[:, j])
        decoded = self.lut[codes, self._cols].astype(np.float64)
        with np.errstate(invalid="ignore"):
            err = np.where(finite, np.abs(x - decoded), 0.0)
        if len(x):
            self.max_abs = np.maximum(self.max_abs, err.max(axis=0))
        self.sum_sq += (err**2).sum(axis=0)
        self.count += finite.sum(axis=0)
        self.nan += (~finite).sum(axis=0)
        self.clipped += (err > self.bound).sum(axis=0)
        return codes

    def report(self) -> list[dict]:
        rmse = np.sqrt(self.sum_sq / np.maximum(self.count, 1))
        return [
            {"codec": q.get_config(), "max_abs_error": float(self.max_abs[j]), "rmse": float(rmse[j]),
             "bound": float(self.bound[j]), "nan": int(self.nan[j]), "clipped": int(self.clipped[j])}
            for j, q in enumerate(self.quantizers)
        ]


class RangeScan:
    """Running per-bin finite min / max over frames (a first pass before fitting quantizers)."""

    def __init__(self, bins: int):
        self.lo = np.full(bins, np.inf)
        self.hi = np.full(bins, -np.inf)

    def update(self, frames: np.ndarray) -> None:
        frames = np.asarray(frames)
        if not len(frames):
            return
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(frames)
            self.lo = np.fmin(self.lo, np.where(finite, frames, np.inf).min(axis=0))
            self.hi = np.fmax(self.hi, np.where(finite, frames, -np.inf).max(axis=0))

    def merge(self, other: RangeScan) -> None:
        self.lo = np.fmin(self.lo, other.lo)
        self.hi = np.fmax(self.hi, other.hi)

    def affine(self) -> list[Quantizer]:
        """Affine quantizers over [lo, hi] per bin (what ``AffineQuantizer.fit`` gives on the same data)."""
        return [AffineQuantizer(float(a), float(b)) if a <= b else AffineQuantizer(0.0, 0.0)
                for a, b in zip(self.lo, self.hi, strict=True)]

    def rows(self) -> np.ndarray:
        """The extremes as sample rows (0 to 2 of them: bins with no finite value are NaN)."""
        if not np.any(self.lo <= self.hi):
            return np.zeros((0, self.lo.size))
        return np.stack([np.where(self.lo <= self.hi, self.lo, np.nan), np.where(self.lo <= self.hi, self.hi, np.nan)])


def fit_quantizers(sample: np.ndarray, kind: str = "affine") -> list[Quantizer]:
    """One quantizer per column of ``sample`` (frames, bins)."""
    sample = np.asarray(sample)
    if sample.dtype.kind != "f":
        sample = sample.astype(np.float64)
    if kind == "affine":  # the affine fit is the finite min / max: vectorized over bins, exact in any float
        scan = RangeScan(sample.shape[1])
        scan.update(sample)
        return scan.affine()
    sample = sample.astype(np.float64, copy=False)
    if len(sample) > FIT_ROWS:
        sample = sample[np.random.default_rng(0).choice(len(sample), FIT_ROWS, replace=False)]
    return [choose_quantizer(sample[:, j], kind) for j in range(sample.shape[1])]


class FrameWriter:
    """Streaming writer of one frame set: ``append(frames)`` per clip, then ``close()``.

    ``columns``: per-clip columns, name -> {"dtype": numpy dtype name, optional "dictionary" or
    "type": "bool"}; their values are passed to ``append(values={...})``. ``labels``: when given
    ({"dictionary": name, optional "dtype"}), every clip carries a list of label codes, stored as a
    CSR under ``<name>/labels``. Per-clip values are held in memory (a few bytes a clip); frames never.
    """

    def __init__(self, group: zarr.Group, name: str, bins: int, *, quantizers: list[Quantizer] | None = None,
                 kind: str = "affine", sample_frames: int | None = None, extremes: RangeScan | None = None,
                 columns: dict[str, dict] | None = None, labels: dict | None = None):
        if bins < 1:
            raise ValueError("a frame set needs at least one bin")
        if quantizers is not None and len(quantizers) != bins:
            raise ValueError(f"{len(quantizers)} quantizers for {bins} bins")
        self.group = group.require_group(name)
        self.name, self.bins, self.kind = name, bins, kind
        self.sample_frames = default_sample_frames(bins) if sample_frames is None else sample_frames
        self.columns = dict(columns or {})
        self.label_meta = dict(labels) if labels is not None else None
        self.extremes = extremes
        self._codec = _BinCodec(quantizers) if quantizers is not None else None
        self._fitted_on: int | None = None  # frames the quantizers were fitted on (None: given)
        self._pending: list[np.ndarray] = []
        self._pending_frames = 0
        self._offsets = ChunkedAppender(create(self.group, "offsets", "int64", (0,), (EVENT_CHUNK,)))
        self._offsets.append(np.zeros(1, dtype=np.int64))
        self._values: dict[str, list] = {c: [] for c in self.columns}
        self._label_lengths: list[int] = []
        self._label_codes: list[int] = []
        self._dir = _local_dir(self.group) / "frames"
        self._shard = self._dir / "c" / "0" / "0"
        self._file = None
        self.clips = 0
        self.frames = 0  # frames appended (written or pending)
        self._written = 0  # frames on disk

    @property
    def quantizers(self) -> list[Quantizer]:
        """The per-bin quantizers; fits them on the frames buffered so far if not done yet."""
        if self._codec is None:
            self._fit()
        return self._codec.quantizers

    def append(self, frames: np.ndarray, values: dict | None = None, labels: Sequence[int] | None = None) -> int:
        """Add one clip of float frames (T, bins), T >= 0; returns its clip index."""
        frames = np.asarray(frames)
        if frames.ndim != 2 or frames.shape[1] != self.bins:
            raise ValueError(f"clip frames must be (T, {self.bins}), got {frames.shape}")
        values = values or {}
        if set(values) != set(self.columns):
            raise ValueError(f"clip values {sorted(values)} != declared columns {sorted(self.columns)}")
        if (labels is None) != (self.label_meta is None):
            raise ValueError("labels must be given for every clip exactly when the set is multi-label")
        for c, v in values.items():
            self._values[c].append(v)
        if labels is not None:
            labels = list(labels)
            self._label_lengths.append(len(labels))
            self._label_codes.extend(int(x) for x in labels)
        self.frames += len(frames)
        self._offsets.append(np.array([self.frames], dtype=np.int64))
        if self._codec is None:
            self._pending.append(np.array(frames))  # a copy: the caller may reuse its buffer
            self._pending_frames += len(frames)
            if self._pending_frames >= self.sample_frames:
                self._fit()
        else:
            self._write(frames)
        self.clips += 1
        return self.clips - 1

    def _fit(self) -> None:
        if self.kind == "affine":  # min / max only: no copy of the sample
            scan = RangeScan(self.bins)
            for p in self._pending:
                scan.update(p)
            if self.extremes is not None:
                scan.merge(self.extremes)
            quantizers = scan.affine()
        else:
            parts = [p.astype(np.float64, copy=False) for p in self._pending if len(p)]
            if self.extremes is not None:
                parts.append(self.extremes.rows())
            sample = np.concatenate(parts, axis=0) if parts else np.zeros((0, self.bins))
            quantizers = fit_quantizers(sample, self.kind)
        self._codec = _BinCodec(quantizers)
        self._fitted_on = self._pending_frames
        pending, self._pending, self._pending_frames = self._pending, [], 0
        for f in pending:
            self._write(f)

    def _write(self, frames: np.ndarray) -> None:
        if not len(frames):
            return
        codes = self._codec.encode(frames)
        if self._file is None:
            self._shard.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._shard, "wb")  # noqa: SIM115 - closed in close()
        self._file.write(np.ascontiguousarray(codes).tobytes())
        self._written += len(frames)

    def close(self, **attrs) -> dict:
        """Pad, write the shard index and the zarr metadata, the per-clip columns; returns the meta."""
        if self._codec is None:
            self._fit()  # on whatever is pending
        if self._written != self.frames:
            raise AssertionError("frames left unwritten")
        if self._file is not None:
            pad = _padded(self.frames) - self.frames
            self._file.write(bytes(pad * self.bins))
            self._file.write(shard_index(self.frames, self.bins))
            self._file.close()
            self._file = None
        shard_rows = max(_padded(self.frames), FRAME_CHUNK)
        self.group.create_array(
            "frames", shape=(self.frames, self.bins), dtype="uint8", shards=(shard_rows, self.bins),
            chunks=(FRAME_CHUNK, self.bins), compressors=None, filters=None, fill_value=0,
        )
        self._offsets.close()
        clip_columns = {}
        if self.columns:
            cg = self.group.require_group("clips")
            for c, m in self.columns.items():
                arr = create(cg, c, m["dtype"], (self.clips,), (ROW_CHUNK,), attributes=m)
                if self.clips:
                    arr[:] = np.asarray(self._values[c], dtype=m["dtype"])
                clip_columns[c] = m
        meta = {
            "kind": "frames", "rows": self.clips, "clips": self.clips, "frames": self.frames, "bins": self.bins,
            "frame_chunk": FRAME_CHUNK, "quantizer_kind": self.kind, "sample_frames": self._fitted_on,
            "exact_range": self.extremes is not None,
            "clip_columns": clip_columns, "quantizers": self._codec.report(),
        }
        if self.label_meta is not None:
            dtype = self.label_meta.get("dtype", "int32")
            col = {**self.label_meta, "dtype": dtype}
            rw = RaggedWriter(self.group, "labels", {"class": col})
            rw.append(np.asarray(self._label_lengths, dtype=np.int64),
                      {"class": np.asarray(self._label_codes, dtype=dtype)})
            rw.close(of=self.name)
            meta["labels"] = col
        meta.update(attrs)
        self.group.attrs.update(meta)
        return meta

    def abort(self) -> None:
        """Close the shard file without finishing (the caller discards the directory)."""
        if self._file is not None:
            self._file.close()
            self._file = None


class FrameSet:
    """Reader over one frame set: offsets, codes (zarr or memmap), per-bin LUT, per-clip columns."""

    def __init__(self, group: zarr.Group):
        self.group = group
        self.meta = dict(group.attrs)
        if self.meta.get("kind") != "frames":
            raise StoreError(f"{group.path}: not a frame set (kind {self.meta.get('kind')!r})")
        self.quantizers: list[Quantizer] = [quantizer_from_config(b["codec"]) for b in self.meta["quantizers"]]
        self.offsets = np.asarray(group["offsets"][:])
        self.array: zarr.Array = group["frames"]
        self._mm: np.ndarray | None = None

    @property
    def clips(self) -> int:
        return self.offsets.size - 1

    @property
    def frames(self) -> int:
        return int(self.array.shape[0])

    @property
    def bins(self) -> int:
        return int(self.array.shape[1])

    def lengths(self) -> np.ndarray:
        """Frames per clip, int64 (clips,)."""
        return np.diff(self.offsets)

    @property
    def shard_path(self) -> Path:
        """The file holding every frame: raw (padded) codes followed by the shard index."""
        return _local_dir(self.group) / "frames" / self.array.metadata.encode_chunk_key((0, 0))

    def memmap(self) -> np.ndarray:
        """Read-only (frames, bins) uint8 view of the shard file (an ``np.memmap`` when non-empty)."""
        if self._mm is None:
            if self.frames == 0:
                empty = np.zeros((0, self.bins), dtype=np.uint8)
                empty.flags.writeable = False
                self._mm = empty
            else:
                self._check_layout()
                path = self.shard_path
                need = shard_file_size(self.frames, self.bins)
                size = path.stat().st_size if path.is_file() else -1
                if size != need:
                    raise StoreError(f"{path}: {size} bytes, expected {need} for {self.frames} x {self.bins} frames")
                self._mm = np.memmap(path, dtype=np.uint8, mode="r", shape=(self.frames, self.bins), offset=0)
        return self._mm

    def _check_layout(self) -> None:
        """The zarr metadata must describe the raw single-shard layout the memmap assumes."""
        md = self.array.metadata.to_dict()
        codecs = md["codecs"]
        ok = len(codecs) == 1 and codecs[0]["name"] == "sharding_indexed"
        if ok:
            cfg = codecs[0]["configuration"]
            grid = md["chunk_grid"]["configuration"]["chunk_shape"]
            ok = (list(cfg["chunk_shape"]) == [FRAME_CHUNK, self.bins]
                  and [c["name"] for c in cfg["codecs"]] == ["bytes"]
                  and cfg.get("index_location", "end") == "end"
                  and list(grid) == [max(_padded(self.frames), FRAME_CHUNK), self.bins])
        if not ok:
            raise StoreError(f"{self.group.path}/frames: not the raw single-shard layout a memmap needs")

    def clip(self, i: int) -> np.ndarray:
        """Codes (T, bins) of clip i: a read-only view into the memmap."""
        if not -self.clips <= i < self.clips:
            raise IndexError(f"clip {i} out of range (0..{self.clips - 1})")
        i %= self.clips
        return self.memmap()[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def lut(self) -> np.ndarray:
        """float32 (256, bins): lut[code, b] is bin b's decoded value for that code."""
        return np.stack([q.lut() for q in self.quantizers], axis=1)

    def dequantize(self, codes: np.ndarray) -> np.ndarray:
        """float32 values of codes (..., bins)."""
        codes = np.asarray(codes)
        return self.lut()[codes, np.arange(self.bins)]

    @property
    def clip_columns(self) -> dict[str, dict]:
        return self.meta.get("clip_columns", {})

    def column(self, name: str) -> np.ndarray:
        """Per-clip values of one column (clips,)."""
        if name not in self.clip_columns:
            raise KeyError(f"no clip column {name!r}; columns are {sorted(self.clip_columns)}")
        return np.asarray(self.group["clips"][name][:])

    def labels(self) -> RaggedSet | None:
        """The multi-label CSR (rows = clips, event column ``class``), or None."""
        return RaggedSet(self.group["labels"]) if "labels" in self.meta else None

    def error_summary(self) -> dict[str, tuple[float, float, float]]:
        """min / median / max over bins of the measured max |error| and rmse."""
        out = {}
        for key in ("max_abs_error", "rmse"):
            v = np.array([b[key] for b in self.meta["quantizers"]], dtype=np.float64)
            out[key] = (float(v.min()), float(np.median(v)), float(v.max())) if v.size else (0.0, 0.0, 0.0)
        return out


@dataclass
class FrameIngestSummary:
    """What a frame-set ingest wrote; ``lines()`` is what ``fstore ingest`` prints."""

    dataset: str
    files: int = 0
    raw_bytes: int = 0
    clips: dict = field(default_factory=dict)
    frames: dict = field(default_factory=dict)
    bins: int = 0
    bytes_on_disk: int = 0
    frame_bytes: int = 0
    seconds: float = 0.0
    notes: list = field(default_factory=list)

    @property
    def total_frames(self) -> int:
        return sum(self.frames.values())

    def finish(self, manifest: dict, t0: float) -> FrameIngestSummary:
        """Fill the counts and sizes from a written manifest; ``t0`` is the start time."""
        for name, t in manifest["tables"].items():
            if t["kind"] == "frames":
                self.clips[name], self.frames[name], self.bins = t["clips"], t["frames"], t["bins"]
        files = manifest["files"]
        self.bytes_on_disk = sum(f["bytes"] for f in files.values())
        self.frame_bytes = sum(f["bytes"] for n, f in files.items() if "/frames/c/" in n)
        self.seconds = time.perf_counter() - t0
        return self

    def lines(self) -> list[str]:
        n = max(self.total_frames, 1)
        f32 = 4 * self.bins
        per = self.bytes_on_disk / n
        return [
            f"files          {self.files} ({self.raw_bytes / 1e6:.1f} MB raw)",
            *[f"{k:<14} {self.clips[k]} clips, {self.frames[k]} frames" for k in self.clips],
            f"bins           {self.bins} per frame (float32: {f32} bytes/frame)",
            f"bytes on disk  {self.bytes_on_disk / 1e6:.2f} MB: {per:.1f} bytes/frame in all "
            f"({self.frame_bytes / n:.1f} in frame arrays), {f32 / max(per, 1e-9):.2f}x smaller than float32",
            f"seconds        {self.seconds:.2f} ({self.total_frames / max(self.seconds, 1e-9):,.0f} frames/s)",
            *[f"note           {x}" for x in self.notes],
        ]


def refuse_existing(store_path: str | Path, overwrite: bool) -> None:
    """Fail fast, before any reading, when the target exists (staged_directory checks again)."""
    if Path(store_path).exists() and not overwrite:
        raise StoreError(f"{store_path}: already exists (pass --overwrite to replace it)")


def source_entries(raw_dir: Path, meta_files: list[Path], feature_files: int, feature_bytes: int,
                   pattern: str) -> list[dict]:
    """Manifest sources: metadata files with sha256, feature files as one counted entry."""
    from .manifest import sha256_file

    out = [{"path": str(p.relative_to(raw_dir)), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
           for p in meta_files]
    out.append({"path": pattern, "files": feature_files, "bytes": feature_bytes})
    return out
