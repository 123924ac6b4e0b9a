"""``SegmentBatches``: audio feature clips as GPU-ready batches of frames.

Modes:
- ``mode="crop"``: a random ``crop``-frame window of each clip (clips shorter than ``crop`` are
  zero-padded and masked); ``crop`` may follow a curriculum (``linear_curriculum``);
- ``mode="whole"``: whole clips for evaluation, sorted by length so each batch pads only to its
  own longest clip (``order`` is ignored).
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

8-bit codes travel to the device and are dequantized there through the per-bin lookup table.
Random crop offsets come from (seed, epoch, rank, batch index): deterministic, resumable, and
independent of the number of threads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from featurestore.quantize import AffineQuantizer
from featurestore.store import Store, StoreError

from .balanced import balanced_batches
from .kernels import dequantize_frames, dequantize_frames_affine, fill_crops, fill_multi_hot
from .orders import ORDERS, epoch_order, item_ids
from .prefetch import numpy_views, pool_for, prefetch
from .sharding import batches_per_rank, check_rank, rank_batches


def linear_curriculum(start: int, stop: int, epochs: int) -> Callable[[int], int]:
    """Crop length growing linearly from ``start`` to ``stop`` over ``epochs`` (the seed: 10 -> 81)."""
    def crop(epoch: int) -> int:
        if epochs <= 1:
            return stop
        return int(round(start + (stop - start) * min(epoch, epochs - 1) / (epochs - 1)))
    return crop


class SegmentBatches(torch.utils.data.IterableDataset):
    """Iterate batches of frame crops (or whole clips) of one frame set of a store."""

    def __init__(self, store: str | Path | Store, split: str = "train", batch_size: int = 64,
                 crop: int | Callable[[int], int] = 64, mode: str = "crop", order: str = "quasi_random",
                 balanced: tuple[int, int] | None = None, label: str | None = None, seed: int = 0,
                 device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1, drop_last: bool = False,
                 threads: int = 2, ring: int = 4, feature_dtype: torch.dtype = torch.float32,
                 window: int = 8, chunk: int = 1024):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if mode not in ("crop", "whole"):
            raise ValueError(f"mode must be 'crop' or 'whole', got {mode!r}")
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
        check_rank(rank, world_size)
        self.store = store if isinstance(store, Store) else Store(store)
        if self.store.tables.get(split, {}).get("kind") != "frames":
            have = [n for n, m in self.store.tables.items() if m["kind"] == "frames"]
            raise StoreError(f"{self.store.path}: no frame set {split!r} (have {have})")
        self.fs = self.store.frames(split)
        self.split, self.batch_size, self.mode, self.order, self.seed = split, batch_size, mode, order, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.threads, self.ring, self.window, self.chunk = threads, ring, window, chunk
        self._crop = crop if callable(crop) else (lambda epoch, c=int(crop): c)
        if mode == "crop" and self._crop(0) < 1:
            raise ValueError(f"crop must be >= 1 frames, got {self._crop(0)}")
        self.device = torch.device(device)
        self.feature_dtype = feature_dtype
        self.offsets = self.fs.offsets.astype(np.int64)
        self.lengths = np.diff(self.offsets)
        self.frames = np.asarray(self.fs.memmap())  # plain ndarray view: cheap numba dispatch
        self.lut_np = self.fs.lut()
        # all-affine frame sets (the default) dequantize by arithmetic on the CPU path
        self._affine = None
        if all(isinstance(q, AffineQuantizer) for q in self.fs.quantizers):
            self._affine = (np.array([q.lo for q in self.fs.quantizers]), np.array([q.step for q in self.fs.quantizers]))
            self._affine_dev = tuple(torch.from_numpy(a).to(self.device) for a in self._affine)
        self.lut = torch.from_numpy(self.lut_np).to(self.device, feature_dtype)
        self._bins = torch.arange(self.fs.bins, device=self.device)
        self.label_name = label
        self.label_values = self.fs.column(label).astype(np.int64) if label else None
        multi = self.fs.labels()
        self.multi = None
        if multi is not None:
            cls_dict = self.fs.meta["labels"]["dictionary"]
            self.classes = self.store.dictionary(cls_dict).values
            self.multi = (multi.offsets.astype(np.int64), multi.read("class").astype(np.int64))
        self.balanced = balanced
        if balanced is not None:
            if self.label_values is None:
                raise ValueError("balanced batches need label= (the class column, e.g. 'artist' or 'speaker')")
            self.batch_size = balanced[0] * balanced[1]
        self.epoch = 0
        self._start_batch = 0
        self.batches_done = 0
        self._pools: dict = {}  # CPU batch buffers, reused across epochs

    # --- epoch, order, state --------------------------------------------------------------------
    def crop_length(self, epoch: int | None = None) -> int:
        return self._crop(self.epoch if epoch is None else epoch)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._start_batch, self.batches_done = epoch, 0, 0

    def epoch_batches(self) -> list[np.ndarray]:
        clips = item_ids(self.fs.clips)
        if self.balanced is not None:
            m, p = self.balanced
            batches = balanced_batches(self.label_values, m, p, self.seed, self.epoch, self.window)
            per_rank = len(batches) // self.world_size  # equal counts: the remainder waits for next epoch
            return batches[self.rank : per_rank * self.world_size : self.world_size]
        if self.mode == "whole":
            order = clips[np.argsort(self.lengths, kind="stable")]
        else:
            order = epoch_order(clips, self.order, self.seed, self.epoch, self.chunk, self.window)
        return rank_batches(order, self.batch_size, self.rank, self.world_size, self.drop_last)

    def __len__(self) -> int:
        if self.balanced is not None:
            return len(self.epoch_batches())
        return batches_per_rank(self.fs.clips, self.batch_size, self.world_size, self.drop_last)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batches_done, "seed": self.seed, "order": self.order,
                "mode": self.mode, "batch_size": self.batch_size, "rank": self.rank,
                "world_size": self.world_size, "split": self.split, "clips": int(self.fs.clips)}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        for k in ("seed", "order", "mode", "batch_size", "world_size", "split", "clips"):
            if state.get(k) != mine[k]:
                raise ValueError(f"loader state has {k}={state.get(k)!r}, this loader has {mine[k]!r}")
        self.epoch, self._start_batch, self.batches_done = state["epoch"], state["batch"], state["batch"]

    # --- batches --------------------------------------------------------------------------------
    def _window(self, batches: list[np.ndarray]) -> int:
        if self.mode == "crop":
            return self.crop_length()
        return int(max((self.lengths[b].max() for b in batches if b.size), default=1))

    def _shapes(self, T: int) -> dict:
        B, bins = self.batch_size, self.fs.bins
        shapes = {"clip": ((B,), torch.int64), "start": ((B,), torch.int64), "length": ((B,), torch.int64),
                  "codes": ((B, T, bins), torch.uint8)}
        if self.label_values is not None:
            shapes["label"] = ((B,), torch.int64)
        if self.multi is not None:
            shapes["labels"] = ((B, len(self.classes)), torch.uint8)
        if self.device.type == "cpu":  # dequantize in the prefetch threads
            shapes["frames"] = ((B, T, bins), self.feature_dtype)
        return shapes

    def _starts(self, clips: np.ndarray, T: int, i: int) -> np.ndarray:
        if self.mode == "whole":
            return np.zeros(clips.size, dtype=np.int64)
        room = np.maximum(self.lengths[clips] - T, 0)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, i])
        return (rng.random(clips.size) * (room + 1)).astype(np.int64)

    def _fill(self, i: int, clips: np.ndarray, T: int, slot: dict) -> dict:
        b = clips.size
        v = {k: a[:b] for k, a in numpy_views(slot).items()}
        v["clip"][:] = clips
        v["start"][:] = self._starts(clips, T, i)
        codes = v["codes"][:, :T]
        fill_crops(clips, v["start"], self.offsets, self.frames, T, codes, v["length"])
        if "label" in v:
            v["label"][:] = self.label_values[clips]
        if "labels" in v:
            fill_multi_hot(clips, self.multi[0], self.multi[1], v["labels"])
        if "frames" in v:
            if self._affine is not None and self.feature_dtype == torch.float32:
                dequantize_frames_affine(codes, v["length"], *self._affine, v["frames"][:, :T])
            else:
                dequantize_frames(codes, v["length"], self.lut_np, v["frames"][:, :T])
        return {k: (t[:b, :T] if k in ("codes", "frames") else t[:b]) for k, t in slot.items()}

    def _finish(self, raw: dict) -> dict:
        T = raw["codes"].shape[1]
        mask = torch.arange(T, device=self.device)[None] < raw["length"][:, None]
        out = {"clip": raw["clip"], "start": raw["start"], "length": raw["length"], "mask": mask}
        if "frames" in raw:
            out["frames"] = raw["frames"]
        elif self._affine is not None and self.feature_dtype == torch.float32:
            # affine codes: lo + code * step in float64 (separate mul and add, no FMA: bit-identical
            # to the lookup table and the CPU path), one elementwise pass instead of a gather
            codes = raw["codes"]
            lo, step = self._affine_dev
            x = (codes.to(torch.float64) * step + lo).to(torch.float32)
            x = torch.where(codes == 255, torch.nan, x)
            out["frames"] = x * mask[..., None]
        else:  # uint8 codes crossed the bus; decode here through the table, padding to zero
            out["frames"] = self.lut[raw["codes"].long(), self._bins] * mask[..., None]
        if "label" in raw:
            out["label"] = raw["label"]
        if "labels" in raw:
            out["labels"] = raw["labels"].to(self.feature_dtype)
        return out

    def __iter__(self) -> Iterator[dict]:
        batches = self.epoch_batches()
        start = self._start_batch
        self.batches_done = start
        info = torch.utils.data.get_worker_info()
        if info is not None:
            batches = batches[info.id :: info.num_workers]
            start = -(-(start - info.id) // info.num_workers) if start > info.id else 0
        T = self._window(batches)
        return self._run(batches, start, T)

    def _run(self, batches: list[np.ndarray], start: int, T: int) -> Iterator[dict]:
        def fill(i: int, slot: dict) -> dict:
            t = T if self.mode == "crop" else int(max(self.lengths[batches[i]].max(), 1))
            return self._fill(i, batches[i], t, slot)

        shapes = self._shapes(T)
        for raw in prefetch(len(batches), start, fill, shapes, self.device, self.ring, self.threads,
                            pool_for(self._pools, shapes)):
            self.batches_done += 1
            yield self._finish(raw)
        self._start_batch = self.batches_done = 0
