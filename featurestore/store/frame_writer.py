"""Writing frame sets: sample-first quantizer fitting, then raw codes streamed into the shard file.

The layout written here is described (and read) in ``frames.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
import zarr

from ..quantize import AffineQuantizer, Quantizer, choose_quantizer
from ..quantize.base import N_LEVELS, NAN_CODE
from .arrays import EVENT_CHUNK, ROW_CHUNK, ChunkedAppender, create
from .frames import FRAME_CHUNK, _local_dir, _padded, shard_index
from .ragged import RaggedWriter

# float bytes buffered to fit the quantizers when no sample size is given
SAMPLE_BYTES = 64 << 20
# rows of the sample a (slow) quantile fit sees at most
FIT_ROWS = 1 << 16

__all__ = ["FrameWriter", "RangeScan", "default_sample_frames", "fit_quantizers"]


def default_sample_frames(bins: int) -> int:
    """Frames whose float32 values fill ``SAMPLE_BYTES``."""
    return max(FRAME_CHUNK, SAMPLE_BYTES // (4 * max(bins, 1)))


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
