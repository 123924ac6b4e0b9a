"""``fstore bench loader``: session batches from fstore vs a per-item Dataset vs a bare gather.

Same store, same batch size, same batch contents, in one process:
1. fstore ``SessionBatches`` (CPU output; and CUDA output when a GPU is present);
2. the common baseline: a map-style ``Dataset`` whose ``__getitem__`` builds one padded session
   with numpy from a uint8 memmap plus a float32 track-feature array, behind
   ``DataLoader(num_workers=2, pin_memory=True)``;
3. the limits: bare numba gathers in the same session order, with no batching logic: of the
   events' bytes alone (what the CUDA path reads on the CPU: it ships ids and joins on the device),
   and of the events' bytes plus each event's feature row (what CPU output must read).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from featurestore.schemas.mssd import BATCH_LOG_COLUMNS, MAX_HALF, TARGET, first_half_length
from featurestore.store import Store
from loaders import SessionBatches
from loaders.kernels import gather_session_bytes
from loaders.orders import epoch_order
from loaders.session_cache import open_session_cache

from .common import over_epochs, over_epochs_of, same_batches, timed
from .memory import peak_mb, reset_peak


class PerItemSessions(torch.utils.data.Dataset):
    """The seed's loader: one session per ``__getitem__``, padded with numpy, collated by DataLoader."""

    def __init__(self, store_path: Path, half: int = MAX_HALF):
        store = Store(store_path)
        c = open_session_cache(store, "train")
        self.offsets, self.track, self.log = c.offsets, c.track, c.log
        self.table = store.feature_table("tracks").dequantize().astype(np.float32)
        self.half = half
        self.target = BATCH_LOG_COLUMNS.index(TARGET)

    def __len__(self) -> int:
        return self.offsets.size - 1

    def __getitem__(self, s: int) -> dict:
        lo, hi = self.offsets[s], self.offsets[s + 1]
        n, H = hi - lo, self.half
        h = first_half_length(n)
        track = np.zeros(2 * H, np.int64)
        track[:n] = self.track[lo:hi]
        ctx_log = np.zeros((H, self.log.shape[1]), np.uint8)
        ctx_log[:h] = self.log[lo : lo + h]
        tgt = np.zeros(H, np.int64)
        tgt[: n - h] = self.track[lo + h : hi]
        skip = np.zeros(H, np.float32)
        skip[: n - h] = self.log[lo + h : hi, self.target]
        ctx_track = np.where(np.arange(H) < h, track[:H], 0)
        return {"session": s, "length": n, "track": track, "ctx_log": ctx_log, "ctx_track": ctx_track,
                "ctx_mask": np.arange(H) < h, "tgt_mask": np.arange(H) < n - h, "tgt_track": tgt,
                "tgt_skip": skip, "ctx_features": self.table[ctx_track], "tgt_features": self.table[tgt]}


def run(store_path: Path, batch_size: int = 1024, order: str = "random", baseline_sessions: int = 50_000,
        epochs: int = 3) -> list[str]:
    store = Store(store_path)
    lines = [f"loader benchmark: {store_path}, split train, batch {batch_size}, order {order}"]
    results = {}

    fs = SessionBatches(store, batch_size=batch_size, order=order, device="cpu")
    n_sessions = fs.cache.sessions
    for _ in fs:  # warm: compile kernels, fill the page cache
        pass

    sessions = lambda b: b["session"].shape[0]  # noqa: E731
    results["fstore (cpu)"] = timed(over_epochs(fs, epochs), epochs * n_sessions, sessions)
    # the same loader as a plain IterableDataset behind DataLoader(batch_size=None): no per-item path
    as_dataset = torch.utils.data.DataLoader(fs, batch_size=None, num_workers=0)
    results["fstore via DataLoader(batch_size=None)"] = timed(over_epochs_of(fs, as_dataset, epochs),
                                                              epochs * n_sessions, sessions)
    if torch.cuda.is_available():
        gpu = SessionBatches(store, batch_size=batch_size, order=order, device="cuda")
        lines.append(f"  cuda batches identical to cpu batches: {same_batches(gpu, fs)}")
        results["fstore (cuda)"] = timed(over_epochs(gpu, epochs), epochs * n_sessions, sessions)

    ds = PerItemSessions(store_path)
    sampler = torch.utils.data.RandomSampler(ds, generator=torch.Generator().manual_seed(0))
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=2,
                                     pin_memory=torch.cuda.is_available(), persistent_workers=False)
    results["baseline Dataset+DataLoader(2)"] = timed(lambda: iter(dl), min(baseline_sessions, n_sessions), sessions)

    order_ids = epoch_order(np.arange(n_sessions), order, 0, 1)
    c = fs.cache
    table = fs.track_features.numpy()
    rows = batch_size * c.max_length  # one batch worth of events, reused like the loader's buffers
    out_track = np.empty(rows, np.int32)
    out_log = np.empty((rows, c.log.shape[1]), np.uint8)
    out_feat = np.empty((rows, table.shape[1]), np.float32)
    no_table, no_feat = np.empty((1, 0), np.float32), np.empty((rows, 0), np.float32)
    B = batch_size
    limits = {
        "limit: gather events": (
            lambda ids: gather_session_bytes(ids, c.offsets, c.track, c.log, no_table, B, out_track, out_log, no_feat),
            c.track.nbytes + c.log.nbytes),
        "limit: gather events+features": (
            lambda ids: gather_session_bytes(ids, c.offsets, c.track, c.log, table, B, out_track, out_log, out_feat),
            c.track.nbytes + c.log.nbytes + c.track.shape[0] * table.shape[1] * 4),
    }
    for name, (fn, nbytes) in limits.items():
        fn(order_ids[:10])
        reset_peak()
        t = time.perf_counter()
        for _ in range(epochs):
            fn(order_ids)
        results[name] = (time.perf_counter() - t, epochs * n_sessions, epochs * nbytes, peak_mb())

    for name, (dt, n, nbytes, peak) in results.items():
        lines.append(f"  {name:<40}{n / dt:>14,.0f} sessions/s {nbytes / dt / 1e6:>9,.0f} MB/s   peak RSS {peak:,.0f} MB")
    rate = {k: v[1] / v[0] for k, v in results.items()}
    base = rate["baseline Dataset+DataLoader(2)"]
    lines.append(f"  fstore cpu / baseline                  {rate['fstore (cpu)'] / base:8.1f}x")
    lines.append(f"  fstore cpu / limit (events+features)   {rate['fstore (cpu)'] / rate['limit: gather events+features']:8.2f}")
    if "fstore (cuda)" in rate:
        lines.append(f"  fstore cuda / baseline                 {rate['fstore (cuda)'] / base:8.1f}x")
        lines.append(f"  fstore cuda / limit (events)           {rate['fstore (cuda)'] / rate['limit: gather events']:8.2f}")
    return lines
