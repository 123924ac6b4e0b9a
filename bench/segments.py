"""``fstore bench loader`` on a frame store: random-crop segments, side by side in one run.

1. fstore ``SegmentBatches`` (CPU output; CUDA output when a GPU is present);
2. the common baseline: a map-style ``Dataset`` whose ``__getitem__`` loads the clip's own raw
   file (the Yandex ``.npy``, 512 x T float32), crops it and transposes, behind
   ``DataLoader(num_workers=2)``;
3. the limits: a bare numba gather of the same crops' bytes (same clips, same offsets), the floor
   for CUDA output (codes cross the bus); and the same gather decoded to float32, the floor for
   CPU output, which must write 4x the bytes.
Frames/s and GB/s of delivered float32 frames, and bytes per stored frame against float32.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import torch

from featurestore.store import Store
from loaders import SegmentBatches
from loaders.kernels import gather_crops

from .common import over_epochs, same_batches, timed
from .memory import peak_mb, reset_peak


class PerClipFiles(torch.utils.data.Dataset):
    """The seed's loader: np.load one clip per item, random crop, transpose to (T, bins)."""

    def __init__(self, raw_dir: Path, crop: int, seed: int = 0):
        with open(raw_dir / "train_meta.tsv", newline="") as f:
            self.paths = [raw_dir / row["archive_features_path"] for row in csv.DictReader(f, delimiter="\t")]
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        x = np.load(self.paths[i])  # (512, T)
        T = x.shape[1]
        s = int(self.rng.integers(0, max(T - self.crop, 0) + 1))
        out = np.zeros((self.crop, x.shape[0]), np.float32)
        take = min(self.crop, T - s)
        out[:take] = x[:, s : s + take].T
        return {"frames": out, "length": take}


def balanced_locality(loader: SegmentBatches, labels: np.ndarray, bins: int, m: int = 4, p: int = 16,
                      window: int = 8) -> list[str]:
    """Locality vs mixing of artist-balanced epochs: storage one batch reads (span, distinct 1 MB
    blocks) and how many nearby artists its p artists are drawn from, per class-window setting."""
    from loaders.balanced import balanced_batches

    block = 1 << 20
    total = loader.offsets[-1] * bins / 1e6
    out = [f"  balanced batches ({m} clips x {p} artists; artists stored contiguously, {total:.1f} MB):"]
    for name, w in (("class window of 1 batch", 1), (f"class window of {window} batches", window),
                    ("fully random class order", None)):
        spans, blocks = [], []
        for clips in balanced_batches(labels, m, p, seed=0, epoch=0, window=w):
            lo = loader.offsets[clips] * bins
            hi = loader.offsets[clips + 1] * bins
            spans.append((hi.max() - lo.min()) / 1e6)
            blocks.append(len({b for a, z in zip(lo // block, (hi - 1) // block, strict=True)
                               for b in range(a, z + 1)}))
        pool = "all" if w is None else str(w * p)
        out.append(f"    {name:<28} a batch spans {np.mean(spans):6.1f} MB, touches {np.mean(blocks):5.1f} "
                   f"1 MB blocks; artists drawn from {pool} neighbours")
    return out


def run(store_path: Path, raw_dir: Path | None, batch_size: int = 64, crop: int = 64, epochs: int = 3,
        baseline_clips: int = 2000) -> list[str]:
    store = Store(store_path)
    fs = store.frames("train")
    lines = [f"segment benchmark: {store_path}, train, {fs.clips} clips x {fs.bins} bins, "
             f"batch {batch_size}, crop {crop}, random order"]
    results = {}
    ours = SegmentBatches(store, batch_size=batch_size, crop=crop, order="random", device="cpu")
    for _ in ours:
        pass

    count_frames = lambda b: int(b["length"].sum())  # noqa: E731
    total = epochs * int(np.minimum(fs.lengths(), crop).sum())
    results["fstore (cpu)"] = timed(over_epochs(ours, epochs), total, count_frames)
    if torch.cuda.is_available():
        gpu = SegmentBatches(store, batch_size=batch_size, crop=crop, order="random", device="cuda")
        lines.append(f"  cuda batches identical to cpu batches: {same_batches(gpu, ours)}")
        results["fstore (cuda)"] = timed(over_epochs(gpu, epochs), total, count_frames)
    if raw_dir is not None:
        ds = PerClipFiles(Path(raw_dir), crop)
        dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=2)
        results["baseline np.load+crop, DataLoader(2)"] = timed(lambda: iter(dl), baseline_clips * crop, count_frames)

    # the limit: same clips, same crop offsets as fstore's epoch 1
    ours.set_epoch(1)
    batches = ours.epoch_batches()
    clips = np.concatenate(batches)
    starts = np.concatenate([ours._starts(b, crop, i) for i, b in enumerate(batches)])
    frames = epochs * int(np.minimum(fs.lengths()[clips] - starts, crop).sum())
    out_u8 = np.empty((batch_size * crop, fs.bins), np.uint8)
    out_f32 = np.empty((batch_size * crop, fs.bins), np.float32)
    none = np.empty(0)
    limits = {"limit: bare gather of the crops": (
        lambda: gather_crops(clips, starts, ours.offsets, ours.frames, crop, none, none, out_u8), 1)}
    if ours.bank.affine is not None:
        lo, step = ours.bank.affine
        limits["limit: gather + decode to float32"] = (
            lambda: gather_crops(clips, starts, ours.offsets, ours.frames, crop, lo, step, out_f32), 4)
    for name, (fn, width) in limits.items():
        fn()  # compile
        reset_peak()
        t = time.perf_counter()
        for _ in range(epochs):
            fn()
        results[name] = (time.perf_counter() - t, frames, frames * fs.bins * width, peak_mb())

    for name, (dt, frames, nbytes, peak) in results.items():
        lines.append(f"  {name:<38}{frames / dt:>14,.0f} frames/s {nbytes / dt / 1e9:>8.2f} GB/s   peak RSS {peak:,.0f} MB")
    rate = {k: v[1] / v[0] for k, v in results.items()}
    lim = rate["limit: bare gather of the crops"]
    lim_f32 = rate.get("limit: gather + decode to float32")
    if raw_dir is not None:
        base = rate["baseline np.load+crop, DataLoader(2)"]
        lines.append(f"  fstore cpu / baseline   {rate['fstore (cpu)'] / base:8.1f}x")
        if "fstore (cuda)" in rate:
            lines.append(f"  fstore cuda / baseline  {rate['fstore (cuda)'] / base:8.1f}x")
    lines.append(f"  fstore cpu / limit      {rate['fstore (cpu)'] / lim:8.2f}")
    if lim_f32:
        lines.append(f"  fstore cpu / limit (gather + decode to float32)  {rate['fstore (cpu)'] / lim_f32:8.2f}")
    if "fstore (cuda)" in rate:
        lines.append(f"  fstore cuda / limit     {rate['fstore (cuda)'] / lim:8.2f}")
    if "artist" in fs.clip_columns:
        lines += balanced_locality(ours, fs.column("artist").astype(np.int64), fs.bins)
    stored = sum(f["bytes"] for k, f in store.manifest["files"].items() if k.startswith("train/"))
    lines.append(f"  storage: {stored / max(fs.frames, 1):.1f} bytes/frame vs {4 * fs.bins} as float32 "
                 f"({4 * fs.bins * fs.frames / stored:.2f}x smaller)")
    return lines
