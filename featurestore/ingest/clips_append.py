"""Appending clips to a frame set of the parent version (``fstore ingest fsd|yandex|speakers --append``).

The new version's tree starts as hard links to the parent's files (``StoreBuilder`` append mode);
``FrameAppender`` then adds clips to one frame set without modifying any parent file:

- offsets, per-clip columns and the label CSR grow in whole chunks: new chunks are new files, only
  the partial last chunk of each array is rewritten (aside: zarr writes a temporary and renames);
- codes are encoded with the parent's quantizers (never refitted: the parent's frames keep their
  meaning); values outside the fitted ranges are clipped and counted (``clipped``);
- the frames array is one shard file that every reader memory-maps as one contiguous region
  (frames.py), so it cannot be extended by adding files: the new shard is the parent's raw codes
  copied with ``os.copy_file_range`` (in the kernel; a copy-on-write file system such as btrfs or XFS
  shares the extents instead of writing them) followed by the new codes, the padding and a new index.
  That file is the one part of an audio append whose bytes grow with the parent.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr

from ..quantize import QuantizerBank
from ..store.arrays import ChunkedAppender
from ..store.frames import FRAME_CHUNK, _local_dir, _padded, shard_index
from ..store.ragged import RaggedWriter

COPY_BLOCK = 64 << 20


def _copy_prefix(src: Path, dst_fd: int, nbytes: int) -> None:
    """The first ``nbytes`` of ``src`` into ``dst_fd`` (at its current position), in the kernel."""
    with open(src, "rb") as f:
        left = nbytes
        while left:
            n = os.copy_file_range(f.fileno(), dst_fd, min(left, COPY_BLOCK))
            if n == 0:
                raise OSError(f"{src}: shorter than its {nbytes} bytes of frames")
            left -= n


def merge_reports(old: list[dict], old_frames: int, new: list[dict], new_frames: int) -> list[dict]:
    """Per-bin error statistics of the parent's frames and the appended ones together."""
    out = []
    total = max(old_frames + new_frames, 1)
    for a, b in zip(old, new, strict=True):
        rmse = float(np.sqrt((a["rmse"] ** 2 * old_frames + b["rmse"] ** 2 * new_frames) / total))
        out.append({**a, "max_abs_error": max(a["max_abs_error"], b["max_abs_error"]), "rmse": rmse,
                    "nan": a["nan"] + b["nan"], "clipped": a.get("clipped", 0) + b["clipped"],
                    "clipped_max_abs_error": max(a.get("clipped_max_abs_error", 0.0), b["clipped_max_abs_error"])})
    return out


class FrameAppender:
    """``append(frames, values, labels)`` per new clip, then ``close()``; same calls as ``FrameWriter``."""

    def __init__(self, root: zarr.Group, name: str):
        self.group = root[name]
        self.name = name
        self.meta = dict(self.group.attrs)
        self.bins = int(self.meta["bins"])
        self.bank = QuantizerBank.from_configs([q["codec"] for q in self.meta["quantizers"]])
        self._encoder = self.bank.encoder()
        self.clips0, self.frames0 = int(self.meta["clips"]), int(self.meta["frames"])
        self.clips, self.frames = self.clips0, self.frames0
        self.columns: dict[str, dict] = dict(self.meta.get("clip_columns", {}))
        self._values: dict[str, list] = {c: [] for c in self.columns}
        self._offsets = ChunkedAppender(self.group["offsets"])
        self._labels = RaggedWriter.resume(self.group, "labels") if "labels" in self.meta else None
        # the new shard is written beside the frames folder, moved in after the metadata is rewritten
        folder = _local_dir(self.group)
        self._parent_shard = folder / "frames" / "c" / "0" / "0"
        self._tmp = folder / f".frames-append-{os.getpid()}"
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in close() / abort()
        if self.frames0:
            _copy_prefix(self._parent_shard, self._file.fileno(), self.frames0 * self.bins)

    def append(self, frames: np.ndarray, values: dict | None = None, labels: Sequence[int] | None = None) -> int:
        frames = np.asarray(frames)
        if frames.ndim != 2 or frames.shape[1] != self.bins:
            raise ValueError(f"clip frames must be (T, {self.bins}) like the store's {self.name!r}, got {frames.shape}")
        values = values or {}
        if set(values) != set(self.columns):
            raise ValueError(f"clip values {sorted(values)} != the store's columns {sorted(self.columns)}")
        if (labels is None) != (self._labels is None):
            raise ValueError(f"labels must be given exactly when {self.name!r} is multi-label")
        for c, v in values.items():
            self._values[c].append(v)
        if labels is not None:
            codes = np.asarray(list(labels), dtype=self._labels.columns["class"]["dtype"])
            self._labels.append(np.array([codes.size]), {"class": codes})
        if len(frames):
            self._file.write(np.ascontiguousarray(self._encoder.encode(frames)).tobytes())
        self.frames += len(frames)
        self._offsets.append(np.array([self.frames], dtype=np.int64))
        self.clips += 1
        return self.clips - 1

    @property
    def clipped(self) -> int:
        return int(self._encoder.clipped.sum())

    @property
    def clipped_max_error(self) -> float:
        return float(self._encoder.clipped_max_abs.max(initial=0.0))

    def close(self, **attrs) -> dict:
        """Pad, index, rewrite the frames metadata, move the shard in; columns, labels, attributes."""
        if self.frames:
            self._file.write(bytes((_padded(self.frames) - self.frames) * self.bins))
            self._file.write(shard_index(self.frames, self.bins))
        self._file.close()
        shard_rows = max(_padded(self.frames), FRAME_CHUNK)
        # overwrite=True drops the frames folder of this tree (its links to the parent's files only)
        self.group.create_array(
            "frames", shape=(self.frames, self.bins), dtype="uint8", shards=(shard_rows, self.bins),
            chunks=(FRAME_CHUNK, self.bins), compressors=None, filters=None, fill_value=0, overwrite=True,
        )
        if self.frames:
            self._parent_shard.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp, self._parent_shard)
        else:
            self._tmp.unlink()
        self._offsets.close()
        for c, m in self.columns.items():
            arr = self.group["clips"][c]
            arr.resize((self.clips,))
            if self.clips > self.clips0:
                arr[self.clips0:] = np.asarray(self._values[c], dtype=m["dtype"])
        if self._labels is not None:
            self._labels.close(of=self.name)
        new = self._encoder.report()
        meta = {**self.meta, "rows": self.clips, "clips": self.clips, "frames": self.frames,
                "quantizers": merge_reports(self.meta["quantizers"], self.frames0, new, self.frames - self.frames0),
                **attrs}
        self.group.attrs.update(meta)
        return meta

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)
