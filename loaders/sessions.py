"""``SessionBatches``: Spotify sessions as GPU-ready batches, context and labels kept apart.

A batch of B sessions (each at most ``2 * half`` long, MSSD: 20) is a dict of tensors on
``device``:

    session       (B,)            int64  row of the split (``store.ids(split)`` names it)
    length        (B,)            int64  session length
    track         (B, 2h)         int64  track code of every position (0 past the end)
    ctx_mask      (B, h)          bool   first-half positions (p < first_half_length(length))
    ctx_track     (B, h)          int64
    ctx_log       (B, h, F)       uint8  first-half log features, BATCH_LOG_COLUMNS order (skips included)
    ctx_features  (B, h, C)       float  track features of the first half (zero on padding)
    tgt_mask      (B, h)          bool   second-half positions
    tgt_track     (B, h)          int64
    tgt_features  (B, h, C)       float
    tgt_skip      (B, h)          float  skip_2 targets (absent for an unlabelled test split)

The CPU ships int32 track codes and uint8 log bytes per batch. The track table travels to the
device once as uint8 codes and is dequantized there by the table's quantizer bank (in blocks)
into a resident ``feature_dtype`` table; each batch's join is then one ``index_select`` on the
device (torch's advanced indexing per batch was 10x slower on the CPU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from featurestore.schemas.mssd import BATCH_LOG_COLUMNS, MAX_HALF, TARGET, first_half_length
from featurestore.store import Store, StoreError
from featurestore.store.feature_table import FeatureTable

from .base import BatchLoader, require_table, verify_table_files
from .kernels import fill_session_batch, join_features, session_masks
from .orders import TRAINING_ORDERS, item_ids
from .padding import pad_on_device, pad_session_events, pad_session_features, table_with_zero_row
from .prefetch import numpy_views
from .session_cache import open_session_cache

_BATCH_KEYS = ("session", "length", "track", "ctx_mask", "ctx_track", "ctx_log", "ctx_features", "tgt_mask",
               "tgt_track", "tgt_features")
_TARGET_COLUMN = BATCH_LOG_COLUMNS.index(TARGET)


def device_track_table(table: FeatureTable, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The table's uint8 codes shipped to the device and decoded there by its quantizer bank (in blocks);
    row ``rows`` is the zero row padded positions gather."""
    codes = table.codes()
    out = table_with_zero_row(codes.shape[0], codes.shape[1], dtype, device)
    table.bank.torch_decoder(device, dtype).decode_array(codes, out=out[:-1])
    return out


def holdout_mask(n: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Deterministic by-session split: True for sessions in the held-out part."""
    return np.random.default_rng([seed, 7919]).random(n) < fraction


class SessionBatches(BatchLoader):
    """Iterate batches of one session split (see ``BatchLoader`` for DataLoader use and resume)."""

    def __init__(self, store: str | Path | Store, split: str = "train", batch_size: int = 1024,
                 order: str = "quasi_random", seed: int = 0, device: str | torch.device = "cpu",
                 rank: int = 0, world_size: int = 1, drop_last: bool = False, half: int = MAX_HALF,
                 subset: str = "all", holdout: float = 0.0, threads: int = 2, ring: int = 4,
                 feature_dtype: torch.dtype = torch.float32, cache_dir: str | Path | None = None,
                 chunk: int = 4096, window: int = 8, version: int | str | None = None,
                 cache_limit: int | None = None):
        if order not in TRAINING_ORDERS:  # sessions have no length orders: they are padded to 2 * half
            raise ValueError(f"unknown order {order!r}; choose one of {', '.join(TRAINING_ORDERS)}")
        if subset not in ("all", "fit", "holdout"):
            raise ValueError(f"subset must be 'all', 'fit' or 'holdout', got {subset!r}")
        if subset != "all" and not 0.0 < holdout < 1.0:
            raise ValueError(f"subset {subset!r} needs 0 < holdout < 1, got {holdout}")
        super().__init__(store, split, batch_size, order, seed, device, rank, world_size, drop_last, threads,
                         ring, feature_dtype, chunk, window, version=version,
                         cache_limit=cache_limit)
        require_table(self.store, split, "ragged", "session split")
        self.tables_read = [split, "tracks"]
        self.half = half
        self.cache = open_session_cache(self.store, split, cache_dir, random_access=order != "sequential")
        if self.cache.max_length > 2 * half:
            raise StoreError(f"{self.store.path}: split {split!r} has sessions of {self.cache.max_length} events, "
                             f"longer than 2 * half = {2 * half}")
        self.labelled = split != "test" or bool(self.store.tables[split].get("second_half_labels"))
        n = self.cache.sessions
        self.items = item_ids(n)  # session rows an epoch visits: the split, or its fit / holdout subset
        if subset != "all":
            mask = holdout_mask(n, holdout, seed)
            self.items = self.items[mask if subset == "holdout" else ~mask]
        self.log_columns = list(BATCH_LOG_COLUMNS)
        verify_table_files(self.store, "tracks")  # what goes to the device is the version's track table
        table = self.store.feature_table("tracks")
        self.feature_columns = table.columns
        self.track_table = device_track_table(table, self.device, feature_dtype)
        self._table_np = self.track_table.numpy() if self.device.type == "cpu" else None

    def state_config(self) -> dict:
        return {"items": int(self.items.size)}

    # --- the batch kind --------------------------------------------------------------------------------
    def shapes(self, batches: list[np.ndarray]) -> dict:
        B, h, F = self.batch_size, self.half, len(BATCH_LOG_COLUMNS)
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

    def fill(self, i: int, sessions: np.ndarray, slot: dict) -> dict:
        b = sessions.size
        v = {k: a[:b] for k, a in numpy_views(slot).items()}
        v["session"][:] = sessions
        bad = fill_session_batch(sessions, self.cache.offsets, self.cache.track, self.cache.log, self.half,
                                 v["track"], v["ctx_log"], v["tgt_track"], v["tgt_skip"], v["length"], _TARGET_COLUMN,
                                 self.cache.tracks)
        if bad >= 0:  # only a cache changed after it was opened gets here: it was checked on open
            raise StoreError(f"{self.cache.folder}: session {sessions[bad]} has offsets or track codes out of "
                             "bounds (loader cache damaged while in use); open the loader again to rebuild it")
        n = v["length"]
        pad_session_events(n, v["track"], v["ctx_log"], v["tgt_track"], v["tgt_skip"])
        if "ctx_features" in v:
            session_masks(n, self.half, v["track"], v["ctx_track"], v["ctx_mask"], v["tgt_mask"])
            join_features(n, self._table_np, v["track"], v["tgt_track"], v["ctx_features"], v["tgt_features"])
            pad_session_features(n, v["ctx_track"], v["ctx_features"], v["tgt_features"])
        return {k: t[:b] for k, t in slot.items()}

    def finish(self, raw: dict) -> dict:
        """Device-side work: masks, int64 ids and the feature join (CPU: done in the fill)."""
        if "ctx_features" in raw:
            out = {k: raw[k] for k in _BATCH_KEYS}
            if self.labelled:
                out["tgt_skip"] = raw["tgt_skip"]
            return out
        h = self.half
        length = raw["length"]
        first = first_half_length(length)
        pos = torch.arange(h, device=self.device)
        ctx_mask = pos[None] < first[:, None]
        tgt_mask = pos[None] < (length - first)[:, None]
        track = raw["track"].long()
        ctx_track = pad_on_device(track[:, :h], ctx_mask)
        tgt_track = raw["tgt_track"].long()
        pad = self.track_table.shape[0] - 1  # padding gathers the table's zero row
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
