"""``SessionBatches``: Spotify sessions as GPU-ready batches, context and labels kept apart.

A batch of B sessions (each at most ``2 * half`` long, MSSD: 20) is a dict of tensors on
``device``:

    session       (B,)            int64  row of the split (``store.ids(split)`` names it)
    length        (B,)            int64  session length
    track         (B, 2h)         int64  track code of every position (0 past the end)
    ctx_mask      (B, h)          bool   first-half positions (p < length // 2)
    ctx_track     (B, h)          int64
    ctx_log       (B, h, F)       uint8  first-half log features, LOG_COLUMNS order (skips included)
    ctx_features  (B, h, C)       float  track features of the first half (zero on padding)
    tgt_mask      (B, h)          bool   second-half positions
    tgt_track     (B, h)          int64
    tgt_features  (B, h, C)       float
    tgt_skip      (B, h)          float  skip_2 targets (absent for an unlabelled test split)

The CPU ships int32 track codes and uint8 log bytes per batch. The track table travels to the
device once as uint8 codes with its (256, C) lookup table and is dequantized there (in blocks)
into a resident ``feature_dtype`` table; each batch's join is then one ``index_select`` on the
device (torch's advanced indexing per batch was 10x slower on the CPU).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from featurestore.store import Store, StoreError

from .kernels import fill_session_batch, join_features, session_masks
from .orders import ORDERS, epoch_order, item_ids
from .prefetch import numpy_views, pool_for, prefetch
from .session_cache import LOG_COLUMNS, SKIP_2, open_session_cache
from .sharding import batches_per_rank, check_rank, rank_batches

MSSD_HALF = 10
_BATCH_KEYS = ("session", "length", "track", "ctx_mask", "ctx_track", "ctx_log", "ctx_features", "tgt_mask",
               "tgt_track", "tgt_features")


def dequantize_on_device(codes: np.ndarray, lut: np.ndarray, device: torch.device, dtype: torch.dtype,
                         block: int = 1 << 20) -> torch.Tensor:
    """Ship uint8 codes (rows, C) to the device and decode them there, a block of rows at a time.

    The result has one extra all-zero row (index ``rows``) that padded positions gather."""
    lut_d = torch.from_numpy(lut).to(device)
    col = torch.arange(lut.shape[1], device=device)
    out = torch.zeros((codes.shape[0] + 1, codes.shape[1]), dtype=dtype, device=device)
    for start in range(0, codes.shape[0], block):
        stop = min(start + block, codes.shape[0])
        c = torch.from_numpy(codes[start:stop]).to(device).long()
        out[start:stop] = lut_d[c, col].to(dtype)
    return out


def holdout_mask(n: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Deterministic by-session split: True for sessions in the held-out part."""
    return np.random.default_rng([seed, 7919]).random(n) < fraction


class SessionBatches(torch.utils.data.IterableDataset):
    """Iterate batches of one split. Also a ``torch.utils.data.IterableDataset`` (use
    ``DataLoader(batches, batch_size=None)``; with workers, batch i goes to worker i % workers and
    DataLoader keeps the order). Resume state is tracked in-process: with DataLoader workers, keep
    the epoch and batch count in the training loop and pass them to ``load_state_dict``."""

    def __init__(self, store: str | Path | Store, split: str = "train", batch_size: int = 1024,
                 order: str = "quasi_random", seed: int = 0, device: str | torch.device = "cpu",
                 rank: int = 0, world_size: int = 1, drop_last: bool = False, half: int = MSSD_HALF,
                 subset: str = "all", holdout: float = 0.0, threads: int = 2, ring: int = 4,
                 feature_dtype: torch.dtype = torch.float32, cache_dir: str | Path | None = None,
                 chunk: int = 4096, window: int = 8):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
        check_rank(rank, world_size)
        if subset not in ("all", "fit", "holdout"):
            raise ValueError(f"subset must be 'all', 'fit' or 'holdout', got {subset!r}")
        if subset != "all" and not 0.0 < holdout < 1.0:
            raise ValueError(f"subset {subset!r} needs 0 < holdout < 1, got {holdout}")
        self.store = store if isinstance(store, Store) else Store(store)
        if split not in self.store.tables or self.store.tables[split]["kind"] != "ragged":
            have = [n for n, m in self.store.tables.items() if m["kind"] == "ragged"]
            raise StoreError(f"{self.store.path}: no session split {split!r} (have {have})")
        self.split, self.batch_size, self.order, self.seed = split, batch_size, order, seed
        self.rank, self.world_size, self.drop_last, self.half = rank, world_size, drop_last, half
        self.threads, self.ring, self.chunk, self.window = threads, ring, chunk, window
        self.device = torch.device(device)
        self.cache = open_session_cache(self.store, split, cache_dir)
        if self.cache.max_length > 2 * half:
            raise StoreError(f"{self.store.path}: split {split!r} has sessions of {self.cache.max_length} events, "
                             f"longer than 2 * half = {2 * half}")
        self.labelled = split != "test" or bool(self.store.tables[split].get("second_half_labels"))
        n = self.cache.sessions
        self.items = item_ids(n)
        if subset != "all":
            mask = holdout_mask(n, holdout, seed)
            self.items = self.items[mask if subset == "holdout" else ~mask]
        self.log_columns = list(LOG_COLUMNS)
        table = self.store.feature_table("tracks")
        self.feature_columns = table.columns
        self.feature_dtype = feature_dtype
        self.track_table = dequantize_on_device(table.codes(), table.lut(), self.device, feature_dtype)
        self._table_np = self.track_table.numpy() if self.device.type == "cpu" else None
        self.epoch = 0
        self._start_batch = 0
        self.batches_done = 0
        self._pools: dict = {}  # CPU batch buffers, reused across epochs

    # --- epoch, order, state --------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._start_batch, self.batches_done = epoch, 0, 0

    def epoch_batches(self) -> list[np.ndarray]:
        order = epoch_order(self.items, self.order, self.seed, self.epoch, self.chunk, self.window)
        return rank_batches(order, self.batch_size, self.rank, self.world_size, self.drop_last)

    def __len__(self) -> int:
        return batches_per_rank(self.items.size, self.batch_size, self.world_size, self.drop_last)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batches_done, "seed": self.seed, "order": self.order,
                "batch_size": self.batch_size, "rank": self.rank, "world_size": self.world_size,
                "split": self.split, "items": int(self.items.size)}

    def load_state_dict(self, state: dict) -> None:
        for k in ("seed", "order", "batch_size", "world_size", "split", "items"):
            if state.get(k) != self.state_dict()[k]:
                raise ValueError(f"loader state has {k}={state.get(k)!r}, this loader has {self.state_dict()[k]!r}")
        self.epoch, self._start_batch, self.batches_done = state["epoch"], state["batch"], state["batch"]

    # --- batches --------------------------------------------------------------------------------
    def _shapes(self) -> dict:
        B, h, F = self.batch_size, self.half, len(LOG_COLUMNS)
        shapes = {"session": ((B,), torch.int64), "length": ((B,), torch.int64),
                  "track": ((B, 2 * h), torch.int32), "ctx_log": ((B, h, F), torch.uint8),
                  "tgt_track": ((B, h), torch.int32), "tgt_skip": ((B, h), torch.uint8)}
        if self.device.type == "cpu":  # CPU output is finished in the fill threads: final dtypes, masks, join
            C = self.track_table.shape[1]
            shapes |= {"track": ((B, 2 * h), torch.int64), "tgt_track": ((B, h), torch.int64),
                       "tgt_skip": ((B, h), self.feature_dtype), "ctx_track": ((B, h), torch.int64),
                       "ctx_mask": ((B, h), torch.bool), "tgt_mask": ((B, h), torch.bool),
                       "ctx_features": ((B, h, C), self.feature_dtype), "tgt_features": ((B, h, C), self.feature_dtype)}
        return shapes

    def _fill(self, sessions: np.ndarray, slot: dict) -> dict:
        b = sessions.size
        v = {k: a[:b] for k, a in numpy_views(slot).items()}
        v["session"][:] = sessions
        fill_session_batch(sessions, self.cache.offsets, self.cache.track, self.cache.log, self.half,
                           v["track"], v["ctx_log"], v["tgt_track"], v["tgt_skip"], v["length"], SKIP_2)
        if "ctx_features" in v:
            session_masks(v["length"], self.half, v["track"], v["ctx_track"], v["ctx_mask"], v["tgt_mask"])
            join_features(v["length"], self.half, self._table_np, v["track"], v["tgt_track"],
                          v["ctx_features"], v["tgt_features"])
        return {k: t[:b] for k, t in slot.items()}

    def _finish(self, raw: dict) -> dict:
        """Device-side work: masks, int64 ids, the feature join and dequantization (CPU: done in the fill)."""
        if "ctx_features" in raw:
            out = {k: raw[k] for k in _BATCH_KEYS}
            if self.labelled:
                out["tgt_skip"] = raw["tgt_skip"]
            return out
        h = self.half
        length = raw["length"]
        first = length // 2
        pos = torch.arange(h, device=self.device)
        ctx_mask = pos[None] < first[:, None]
        tgt_mask = pos[None] < (length - first)[:, None]
        track = raw["track"].long()
        ctx_track = track[:, :h] * ctx_mask
        tgt_track = raw["tgt_track"].long()
        pad = self.track_table.shape[0] - 1  # padding gathers the table's extra zero row
        out = {"session": raw["session"], "length": length, "track": track,
               "ctx_mask": ctx_mask, "ctx_track": ctx_track, "ctx_log": raw["ctx_log"],
               "ctx_features": self.features(torch.where(ctx_mask, ctx_track, pad)),
               "tgt_mask": tgt_mask, "tgt_track": tgt_track,
               "tgt_features": self.features(torch.where(tgt_mask, tgt_track, pad))}
        if self.labelled:
            out["tgt_skip"] = raw["tgt_skip"].to(self.feature_dtype)
        return out

    @property
    def track_features(self) -> torch.Tensor:
        """The dequantized track table on the device, (tracks, C), without the padding row."""
        return self.track_table[:-1]

    def features(self, track: torch.Tensor) -> torch.Tensor:
        """Track features for a tensor of track codes, gathered on the device."""
        return torch.index_select(self.track_table, 0, track.reshape(-1)).reshape(*track.shape, -1)

    def __iter__(self) -> Iterator[dict]:
        # not a generator function: the resume point is taken when iteration starts, not at first next()
        batches = self.epoch_batches()
        start = self._start_batch
        self.batches_done = start
        info = torch.utils.data.get_worker_info()
        if info is not None:  # DataLoader workers: split batches round-robin, DataLoader re-interleaves
            batches = batches[info.id :: info.num_workers]
            start = -(-(start - info.id) // info.num_workers) if start > info.id else 0
        return self._run(batches, start)

    def _run(self, batches: list[np.ndarray], start: int) -> Iterator[dict]:
        shapes = self._shapes()
        for raw in prefetch(len(batches), start, lambda i, slot: self._fill(batches[i], slot), shapes,
                            self.device, self.ring, self.threads, pool_for(self._pools, shapes)):
            self.batches_done += 1
            yield self._finish(raw)
        # a finished epoch leaves a fresh state: iterating again replays it from the start
        self._start_batch = self.batches_done = 0
