"""Writing frame sets: sample-first quantizer fitting, then raw codes streamed into the shard file.

The layout written here is described (and read) in ``frames.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import zarr

from ..quantize import Quantizer, QuantizerBank, RangeScan
from .arrays import EVENT_CHUNK, ROW_CHUNK, ChunkedAppender, create
from .frames import FRAME_CHUNK, _local_dir, _padded, shard_index
from .ragged import RaggedWriter

# float bytes buffered to fit the quantizers when no sample size is given
SAMPLE_BYTES = 64 << 20

__all__ = ["FrameWriter", "RangeScan", "default_sample_frames"]


def default_sample_frames(bins: int) -> int:
    """Frames whose float32 values fill ``SAMPLE_BYTES``."""
    return max(FRAME_CHUNK, SAMPLE_BYTES // (4 * max(bins, 1)))


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
        self._encoder = QuantizerBank(quantizers).encoder() if quantizers is not None else None
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
    def bank(self) -> QuantizerBank:
        """The per-bin quantizers; fits them on the frames buffered so far if not done yet."""
        if self._encoder is None:
            self._fit()
        return self._encoder.bank

    @property
    def quantizers(self) -> list[Quantizer]:
        return self.bank.quantizers

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
        if self._encoder is None:
            self._pending.append(np.array(frames))  # a copy: the caller may reuse its buffer
            self._pending_frames += len(frames)
            if self._pending_frames >= self.sample_frames:
                self._fit()
        else:
            self._write(frames)
        self.clips += 1
        return self.clips - 1

    def _fit(self) -> None:
        self._encoder = QuantizerBank.fit(self._pending, self.kind, self.extremes, self.bins).encoder()
        self._fitted_on = self._pending_frames
        pending, self._pending, self._pending_frames = self._pending, [], 0
        for f in pending:
            self._write(f)

    def _write(self, frames: np.ndarray) -> None:
        if not len(frames):
            return
        codes = self._encoder.encode(frames)
        if self._file is None:
            self._shard.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._shard, "wb")  # noqa: SIM115 - closed in close()
        self._file.write(np.ascontiguousarray(codes).tobytes())
        self._written += len(frames)

    def close(self, **attrs) -> dict:
        """Pad, write the shard index and the zarr metadata, the per-clip columns; returns the meta."""
        if self._encoder is None:
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
            "clip_columns": clip_columns, "quantizers": self._encoder.report(),
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
