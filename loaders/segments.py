"""``SegmentBatches``: audio feature clips as GPU-ready batches of frames.

``clips=`` restricts every mode to a subset of the clip ids (a validation split from
``loaders.splits``); the resume state records which subset.
Modes:
- ``mode="crop"``: a random ``crop``-frame window of each clip (clips shorter than ``crop`` are
  zero-padded and masked); ``crop`` may follow a curriculum (``linear_curriculum``);
- ``mode="whole"``: whole clips for evaluation, sorted by length so each batch pads only to its
  own longest clip (order ``by_length``; ``order`` is ignored);
- ``mode="bucketed"``: whole clips for training: shuffled, grouped into batches of similar length
  (order ``length_bucketed``: sorted by length within windows of ``window`` batches, batch order
  shuffled), deterministic by (seed, epoch), resumable, each batch padded only to its own longest
  clip (``order`` is ignored).
Samplers: the usual traversal orders over clips, or ``balanced=(m, classes_per_batch)``: m clips
per class with no class in two batches of an epoch (``loaders/balanced.py`` says how locality is
kept). A batch is a dict on ``device``:

    clip     (B,)          int64  clip index (``store.ids(split)`` names it)
    start    (B,)          int64  first frame of the crop
    length   (B,)          int64  real frames in the window
    mask     (B, T)        bool
    frames   (B, T, bins)  float  dequantized on the device (zero on padding)
    label    (B,)          int64  the ``label`` column (artist / speaker code), when asked
    labels   (B, classes)  float  multi-hot, for multi-label sets (FSD)

8-bit codes travel to the device and are dequantized there by the frame set's quantizer bank (the
affine fast path, or its per-bin lookup table); CPU output is decoded by the bank in the fill threads.
Random crop offsets come from (seed, epoch, rank, batch index): deterministic, resumable, and
independent of the number of threads and DataLoader workers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from featurestore.store import Store, StoreError

from .balanced import balanced_batches
from .base import BatchLoader, require_table, verify_table_files
from .kernels import fill_crops, fill_multi_hot
from .orders import item_ids
from .padding import pad_on_device, pad_rows
from .prefetch import numpy_views

MODES = {"crop": None, "whole": "by_length", "bucketed": "length_bucketed"}  # mode -> its own order


def _clip_subset(clips, n: int) -> np.ndarray:
    """Validated clip ids for ``clips=``: unique, in 0..n-1, kept in storage order (locality)."""
    ids = np.asarray(clips)
    if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
        raise ValueError(f"clips must be a 1-D array of clip ids, got {ids.dtype} {ids.shape}")
    ids = np.unique(ids.astype(np.int64))
    if ids.size != np.asarray(clips).size:
        raise ValueError("clips holds a clip id twice")
    if ids.size and (ids[0] < 0 or ids[-1] >= n):
        raise ValueError(f"clips must lie in 0..{n - 1}, got {ids[0] if ids[0] < 0 else ids[-1]}")
    return ids.astype(item_ids(n).dtype)


def linear_curriculum(start: int, stop: int, epochs: int) -> Callable[[int], int]:
    """Crop length growing linearly from ``start`` to ``stop`` over ``epochs`` (the seed: 10 -> 81)."""
    def crop(epoch: int) -> int:
        if epochs <= 1:
            return stop
        return int(round(start + (stop - start) * min(epoch, epochs - 1) / (epochs - 1)))
    return crop


class SegmentBatches(BatchLoader):
    """Iterate batches of frame crops (or whole clips) of one frame set of a store."""

    def __init__(self, store: str | Path | Store, split: str = "train", batch_size: int = 64,
                 crop: int | Callable[[int], int] = 64, mode: str = "crop", order: str = "quasi_random",
                 balanced: tuple[int, int] | None = None, label: str | None = None, seed: int = 0,
                 device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1, drop_last: bool = False,
                 threads: int = 2, ring: int = 4, feature_dtype: torch.dtype = torch.float32,
                 window: int = 8, chunk: int = 1024, clips: np.ndarray | None = None,
                 version: int | str | None = None,
                 cache_limit: int | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        super().__init__(store, split, batch_size, order, seed, device, rank, world_size, drop_last, threads,
                         ring, feature_dtype, chunk, window, version=version,
                         cache_limit=cache_limit)
        require_table(self.store, split, "frames", "frame set")
        verify_table_files(self.store, split, metadata_only=True)  # quantizers and layout as the version says
        self.tables_read = [split]
        self.fs = self.store.frames(split)
        self.mode = mode
        self._crop = crop if callable(crop) else (lambda epoch, c=int(crop): c)
        if mode == "crop" and self._crop(0) < 1:
            raise ValueError(f"crop must be >= 1 frames, got {self._crop(0)}")
        self.items = item_ids(self.fs.clips) if clips is None else _clip_subset(clips, self.fs.clips)
        self.offsets = self.fs.offsets.astype(np.int64)
        self.lengths = np.diff(self.offsets)
        if self.offsets.size != self.fs.clips + 1 or self.offsets[0] != 0 or self.offsets[-1] != self.fs.frames \
                or (self.lengths.size and self.lengths.min() < 0):  # the crop kernel trusts these bounds
            raise StoreError(f"{self.store.data_dir / split / 'offsets'}: clip offsets not monotone from 0 to "
                             f"{self.fs.frames} frames (damaged store; run `fstore validate`)")
        self.frames = np.asarray(self.fs.memmap())  # plain ndarray view: cheap numba dispatch
        self.bank = self.fs.bank  # decodes frames: numba in the fill threads (CPU), torch on the device
        self._decode = self.bank.torch_decoder(self.device, feature_dtype) if self.device.type != "cpu" else None
        self.label_name = label
        self.label_values = self.fs.column(label).astype(np.int64) if label else None
        multi = self.fs.labels()
        self.multi = None
        if multi is not None:
            cls_dict = self.fs.meta["labels"]["dictionary"]
            self.classes = self.store.dictionary(cls_dict).values
            self.multi = (multi.offsets.astype(np.int64), multi.read("class").astype(np.int64))
            lo, values = self.multi
            if lo.size != self.fs.clips + 1 or lo[0] != 0 or lo[-1] != values.size or np.any(np.diff(lo) < 0) \
                    or (values.size and (values.min() < 0 or values.max() >= len(self.classes))):
                raise StoreError(f"{self.store.data_dir / split / 'labels'}: label offsets or codes out of bounds "
                                 "(damaged store; run `fstore validate`)")
        self.balanced = balanced
        if balanced is not None:
            if self.label_values is None:
                raise ValueError("balanced batches need label= (the class column, e.g. 'artist' or 'speaker')")
            self.batch_size = balanced[0] * balanced[1]

    # --- epoch plan ----------------------------------------------------------------------------------
    def crop_length(self, epoch: int | None = None) -> int:
        return self._crop(self.epoch if epoch is None else epoch)

    def order_name(self) -> str:
        return MODES[self.mode] or self.order

    def order_options(self) -> dict:
        return {"chunk": self.chunk, "window": self.window, "lengths": self.lengths,
                "group": self.batch_size * self.world_size}

    def ready_batches(self, epoch: int) -> list[np.ndarray] | None:
        if self.balanced is None:
            return None
        m, p = self.balanced
        batches = balanced_batches(self.label_values[self.items], m, p, self.seed, epoch, self.window)
        return [self.items[b] for b in batches]  # positions in the subset -> clip ids

    def state_config(self) -> dict:
        subset = hashlib.sha256(np.ascontiguousarray(self.items, dtype=np.int64).tobytes()).hexdigest()[:16]
        return {"mode": self.mode, "clips": int(self.fs.clips), "subset": subset}

    # --- the batch kind --------------------------------------------------------------------------------
    def _window(self, clips: np.ndarray) -> int:
        """Frames per item of a batch: the crop, or the batch's own longest clip."""
        if self.mode == "crop":
            return self.crop_length()
        return int(max(self.lengths[clips].max(initial=0), 1))

    def shapes(self, batches: list[np.ndarray]) -> dict:
        B, bins = self.batch_size, self.fs.bins
        T = max((self._window(b) for b in batches), default=1)
        shapes = {"clip": ((B,), torch.int64), "start": ((B,), torch.int64), "length": ((B,), torch.int64),
                  "codes": ((B, T, bins), torch.uint8)}
        if self.label_values is not None:
            shapes["label"] = ((B,), torch.int64)
        if self.multi is not None:
            shapes["labels"] = ((B, len(self.classes)), torch.uint8)
        if self.device.type == "cpu":  # dequantize in the prefetch threads (float32; cast in finish)
            shapes["frames"] = ((B, T, bins), torch.float32)
        return shapes

    def _starts(self, clips: np.ndarray, T: int, i: int) -> np.ndarray:
        if self.mode != "crop":
            return np.zeros(clips.size, dtype=np.int64)
        room = np.maximum(self.lengths[clips] - T, 0)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, i])
        return (rng.random(clips.size) * (room + 1)).astype(np.int64)

    def fill(self, i: int, clips: np.ndarray, slot: dict) -> dict:
        b, T = clips.size, self._window(clips)
        v = {k: a[:b] for k, a in numpy_views(slot).items()}
        v["clip"][:] = clips
        v["start"][:] = self._starts(clips, T, i)
        codes = v["codes"][:, :T]
        fill_crops(clips, v["start"], self.offsets, self.frames, T, codes, v["length"])
        pad_rows(codes, v["length"])
        if "label" in v:
            v["label"][:] = self.label_values[clips]
        if "labels" in v:
            fill_multi_hot(clips, self.multi[0], self.multi[1], v["labels"])
        if "frames" in v:
            frames = v["frames"][:, :T]
            self.bank.decode_rows(codes, v["length"], frames)
            pad_rows(frames, v["length"])
        return {k: (t[:b, :T] if k in ("codes", "frames") else t[:b]) for k, t in slot.items()}

    def finish(self, raw: dict) -> dict:
        T = raw["codes"].shape[1]
        mask = torch.arange(T, device=self.device)[None] < raw["length"][:, None]
        out = {"clip": raw["clip"], "start": raw["start"], "length": raw["length"], "mask": mask}
        if "frames" in raw:
            out["frames"] = raw["frames"].to(self.feature_dtype)
        else:  # uint8 codes crossed the bus: decode here (affine arithmetic or the table), then pad
            out["frames"] = pad_on_device(self._decode(raw["codes"]), mask)
        if "label" in raw:
            out["label"] = raw["label"]
        if "labels" in raw:
            out["labels"] = raw["labels"].to(self.feature_dtype)
        return out
