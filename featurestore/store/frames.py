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
error statistics of ``BlockEncoder.report``: ``max_abs_error`` over the values inside the fitted range,
which the ``bound`` covers, ``rmse``, ``nan``, and ``clipped`` = values outside the fitted range with
``clipped_max_abs_error``, their largest error),
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
quantizers given to it), fits one quantizer per bin (``QuantizerBank.fit(kind=...)``, affine by
default) on them plus, when given, the exact per-bin ``extremes`` of all the data (a ``RangeScan``
from a first, read-only pass), then encodes the buffer and streams every later clip straight to disk.
Memory is bounded by the sample. With extremes every value lies inside the fitted range, so the
error bound holds everywhere; without them values outside the sample's range are clipped and
counted in ``clipped``.
"""


from __future__ import annotations

from pathlib import Path

import google_crc32c
import numpy as np
import zarr
from zarr.storage import LocalStore

from ..quantize import Quantizer, QuantizerBank
from .errors import StoreError
from .ragged import RaggedSet

FRAME_CHUNK = 256
INDEX_ENTRY = 16  # (offset, nbytes) uint64 per inner chunk
CRC_BYTES = 4

__all__ = ["FRAME_CHUNK", "FrameSet", "shard_file_size", "shard_index"]


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
    pin = getattr(store, "pin", None)  # a versioned store's root checkout: the folder its version is in now
    return (pin.folder() if pin is not None else Path(store.root)) / group.path


class FrameSet:
    """Reader over one frame set: offsets, codes (zarr or memmap), per-bin LUT, per-clip columns."""

    def __init__(self, group: zarr.Group):
        self.group = group
        self.meta = dict(group.attrs)
        if self.meta.get("kind") != "frames":
            raise StoreError(f"{group.path}: not a frame set (kind {self.meta.get('kind')!r})")
        self.bank = QuantizerBank.from_configs([b["codec"] for b in self.meta["quantizers"]])
        self.offsets = np.asarray(group["offsets"][:])
        self.array: zarr.Array = group["frames"]
        self._mm: np.ndarray | None = None

    @property
    def quantizers(self) -> list[Quantizer]:
        return self.bank.quantizers

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
                if self.shard_path != path:  # a commit moved the root checkout on while mapping: map the tree's
                    self._mm = None
                    return self.memmap()
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
        return self.bank.lut()

    def dequantize(self, codes: np.ndarray) -> np.ndarray:
        """float32 values of codes (..., bins)."""
        return self.bank.decode(np.asarray(codes))

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
