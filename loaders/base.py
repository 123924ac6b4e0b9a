"""``BatchLoader``: what every batch kind shares; a batch kind is a subclass that is a small spec.

The base owns argument checks, the epoch plan (a registered order over the items, dealt to ranks by
``sharding``; or ready-made batches, e.g. class-balanced ones, dealt by ``split_batches``), the
DataLoader-worker split, the prefetch ring, ``set_epoch`` / ``__len__`` / ``__iter__`` and the
validated resume state. A batch kind supplies:

    items                     the item ids an epoch visits, storage order (an attribute)
    shapes(batches)           the CPU buffers of one batch: name -> (shape, dtype)
    fill(i, batch, slot)      write batch i (an array of item ids) into the slot (numba kernels,
                              real positions only, then ``padding``); return the tensors to ship
    finish(raw)               device-side work on the shipped tensors
    state_config()            settings a resume state must match (seed, order, batch size... are added)
    tables_read               store tables whose checksums make the store's identity
and may override ``ready_batches`` (whole batches built by a sampler) and ``order_options``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from featurestore.store import Store, StoreError

from .orders import check_order, make_order
from .prefetch import pool_for, prefetch
from .sharding import batches_per_rank, check_rank, rank_batches, split_batches

# per table kind: the loader that reads it, and the ingest commands that write such tables
READERS = {"ragged": ("SessionBatches", "fstore ingest spotify"),
           "frames": ("SegmentBatches", "fstore ingest yandex|fsd|speakers")}
KIND_NAME = {"ragged": "session sets", "frames": "frame sets", "feature_table": "feature tables"}


def open_store(store: str | Path | Store, version: int | str | None = None,
               cache_limit: int | None = None) -> Store:
    """A path opens ``version`` (None: the latest); an open Store must be that version already.
    ``cache_limit``: bytes of downloaded objects kept for an ``s3://`` path (see Store; unused locally)."""
    if cache_limit is not None and (isinstance(cache_limit, bool) or not isinstance(cache_limit, int)
                                    or cache_limit < 0):
        raise ValueError(f"cache_limit must be a number of bytes >= 0 or None, got {cache_limit!r}")
    if not isinstance(store, Store):
        return Store(store, version=version, cache_limit=cache_limit)
    if cache_limit is not None:
        raise ValueError("cache_limit applies when the store is opened here: pass the path, "
                         "or Store(path, cache_limit=...)")
    if version is not None and store.version != Store(store.path, version=version).version:
        raise ValueError(f"version={version!r} but the Store given is version {store.version}: "
                         "pass the path, or Store(path, version=...)")
    return store


def verify_table_files(store: Store, table: str, metadata_only: bool = False) -> None:
    """StoreError naming the first file of ``table`` that differs from the version's checksums."""
    problems = store.verify_table(table, metadata_only)
    if problems:
        raise StoreError(f"{problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))


def describe_store(store: Store) -> str:
    """'a yandex-cup-2022 store (frame sets: test, train; feature tables: none)': what kind of store it is."""
    by_kind = {k: sorted(n for n, m in store.tables.items() if m["kind"] == k) for k in KIND_NAME}
    parts = "; ".join(f"{KIND_NAME[k]}: {', '.join(v) if v else 'none'}" for k, v in by_kind.items())
    return f"a {store.manifest.get('dataset', 'unknown')} store ({parts})"


def require_table(store: Store, split: str, kind: str, what: str) -> None:
    """A StoreError that says what kind of store this is and which loader fits, unless ``split`` is a ``kind`` table."""
    meta = store.tables.get(split)
    if meta is not None and meta["kind"] == kind:
        return
    have = sorted(n for n, m in store.tables.items() if m["kind"] == kind)
    msg = f"{store.path}: no {what} {split!r} (have {have}): it is {describe_store(store)}"
    if meta is not None and meta["kind"] in READERS:
        msg += f"; {split!r} is one of its {KIND_NAME[meta['kind']]}: read it with {READERS[meta['kind']][0]}"
    if kind in READERS:
        msg += f"; {READERS[kind][0]} reads {KIND_NAME[kind]}, which `{READERS[kind][1]}` writes"
    raise StoreError(msg)


def store_identity(store: Store, tables: list[str]) -> str:
    """A short hash of the manifest's checksums of every file of ``tables``: equal iff same data."""
    files = {k: v["sha256"] for k, v in store.manifest["files"].items() if k.split("/", 1)[0] in tables}
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()[:16]


def _legs_field(state: dict) -> list[tuple[int, int, int]]:
    """The earlier legs of the saved epoch (absent in states saved before elastic resume: none)."""
    legs = state.get("legs", [])
    ok = isinstance(legs, list) and all(isinstance(leg, (list, tuple)) and len(leg) == 3 and
                                        all(type(v) is int and v >= 0 for v in leg) and leg[0] >= 1 and leg[1] >= 1
                                        for leg in legs)
    if not ok:
        raise ValueError(f"loader state field 'legs' must be a list of [world_size, batch_size, batches], got {legs!r}")
    return [tuple(leg) for leg in legs]


def _int_field(state: dict, name: str) -> int:
    if name not in state:
        raise ValueError(f"loader state lacks field {name!r}")
    v = state[name]
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise ValueError(f"loader state field {name!r} must be an int, got {type(v).__name__} {v!r}")
    return int(v)


class BatchLoader(torch.utils.data.IterableDataset):
    """Iterate batches of one table. Also a ``torch.utils.data.IterableDataset`` (use
    ``DataLoader(batches, batch_size=None)``; with workers, batch i goes to worker i % workers and
    DataLoader keeps the order). Resume state is tracked in-process: with DataLoader workers, keep
    the epoch and batch count in the training loop and pass them to ``load_state_dict``.

    ``store``: a folder, ``s3://bucket/prefix`` or an open ``Store``; ``version=``: a number or tag (None:
    the latest). ``cache_limit=`` (bytes, S3 paths only): the local copies of the store's objects are kept
    within it, least recently used evicted first; what it holds is never downloaded again. The loader's own
    packed cache (``cache_dir``) is not counted."""

    tables_read: list[str]
    items: np.ndarray

    def __init__(self, store: str | Path | Store, split: str, batch_size: int, order: str, seed: int,
                 device: str | torch.device, rank: int, world_size: int, drop_last: bool, threads: int,
                 ring: int, feature_dtype: torch.dtype, chunk: int, window: int,
                 version: int | str | None = None, cache_limit: int | None = None):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        check_order(order)
        check_rank(rank, world_size)
        self.store = open_store(store, version, cache_limit)  # one version, read as it was whatever writers do
        self.split, self.batch_size, self.order, self.seed = split, batch_size, order, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.threads, self.ring, self.chunk, self.window = threads, ring, chunk, window
        self.device = torch.device(device)
        self.feature_dtype = feature_dtype
        self.epoch = 0
        self._start_batch = 0
        self.batches_done = 0
        self._legs: list[tuple[int, int, int]] = []  # earlier legs of this epoch (see the epoch plan)
        self._pools: dict = {}  # CPU batch buffers, reused across epochs

    # --- what a batch kind supplies ----------------------------------------------------------------
    def shapes(self, batches: list[np.ndarray]) -> dict:
        raise NotImplementedError

    def fill(self, i: int, batch: np.ndarray, slot: dict) -> dict:
        raise NotImplementedError

    def finish(self, raw: dict) -> dict:
        raise NotImplementedError

    def state_config(self) -> dict:
        return {}

    def order_name(self) -> str:
        """The registered order this epoch plan uses (a batch kind may pick one for its mode)."""
        return self.order

    def order_options(self) -> dict:
        return {"chunk": self.chunk, "window": self.window}

    def ready_batches(self, epoch: int) -> list[np.ndarray] | None:
        """Whole batches built by a sampler for the epoch (all ranks'), or None to use the order."""
        return None

    # --- epoch plan ----------------------------------------------------------------------------------
    # An epoch may run in legs: a run resumed mid-epoch at another world size (or per-rank batch) deals
    # the rest of the epoch, every item not yet seen, to the new ranks. ``_legs`` lists the earlier legs
    # of the current epoch as (world_size, batch_size, batches each rank took); the resume state carries
    # them, so the position in the epoch is global, not per rank, and any number of resizes compose.
    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._start_batch, self.batches_done, self._legs = epoch, 0, 0, []

    def shard(self, rank: int, world_size: int) -> None:
        """Deal this loader's epochs to ``world_size`` ranks at the same global batch (before iterating or
        resuming): batches dealt from an order split ``batch_size * world_size`` evenly across the new ranks
        (a ValueError when it does not divide); class-balanced batches are whole and keep their size."""
        check_rank(rank, world_size)
        if (rank, world_size) == (self.rank, self.world_size):
            return
        if self.ready_batches(self.epoch) is None:
            global_batch = self.batch_size * self.world_size
            if global_batch % world_size:
                raise ValueError(f"the global batch of {global_batch} does not divide by {world_size} ranks")
            self.batch_size = global_batch // world_size
        self.rank, self.world_size = rank, world_size
        self._start_batch = self.batches_done = 0
        self._legs = []

    def _epoch_units(self, epoch: int, legs: list[tuple[int, int, int]]) -> tuple[list[np.ndarray] | None, np.ndarray]:
        """The epoch's ready-made batches (or its order of items), less what ``legs`` consumed."""
        ready = self.ready_batches(epoch)
        if ready is not None:
            for world, _, done in legs:  # rank r took batches r, r + world, ...: together a prefix
                ready = ready[world * done:]
            return ready, np.empty(0, np.int64)
        order = make_order(self.order_name(), **self.order_options())(self.items, self.seed, epoch)
        for world, batch, done in legs:
            seen = [b for r in range(world) for b in rank_batches(order, batch, r, world, self.drop_last)[:done]]
            if seen:
                order = order[~np.isin(order, np.concatenate(seen))]
        return None, order

    def _deal(self, epoch: int, legs: list[tuple[int, int, int]], rank: int, world: int, batch: int) -> list[np.ndarray]:
        ready, order = self._epoch_units(epoch, legs)
        if ready is not None:
            return split_batches(ready, rank, world)
        try:
            return rank_batches(order, batch, rank, world, self.drop_last)
        except ValueError as e:
            raise ValueError(f"cannot deal the rest of epoch {epoch} ({order.size} items) to {world} rank(s): {e}") from None

    def epoch_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """This rank's batches (arrays of item ids) for ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        legs = self._legs if epoch == self.epoch else []
        return self._deal(epoch, legs, self.rank, self.world_size, self.batch_size)

    def pending_batches(self) -> list[np.ndarray]:
        """This rank's batches still to come in the current epoch (from the resume point on)."""
        return self.epoch_batches()[self._start_batch:]

    def batches_in_epoch(self, epoch: int) -> int:
        if epoch == self.epoch and self._legs:
            return len(self.epoch_batches(epoch))
        ready = self.ready_batches(epoch)
        if ready is not None:
            return len(ready) // self.world_size  # split_batches' equal share
        return batches_per_rank(self.items.size, self.batch_size, self.world_size, self.drop_last)

    def __len__(self) -> int:
        return self.batches_in_epoch(self.epoch)

    # --- resume state --------------------------------------------------------------------------------
    @functools.cached_property
    def store_id(self) -> str:
        """The identity of the data this loader reads (``store_identity`` of ``tables_read``)."""
        return store_identity(self.store, self.tables_read)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batches_done, "legs": [list(leg) for leg in self._legs],
                "store": self.store_id, "seed": self.seed, "order": self.order, "batch_size": self.batch_size,
                "rank": self.rank, "world_size": self.world_size, "split": self.split, **self.state_config()}

    def load_state_dict(self, state: dict) -> None:
        """Resume at ``state``: a ValueError names the first field that does not fit this loader.

        A state saved at another world size resumes elastically: the rest of its epoch, every item its
        ranks had not yet been given, each once, is dealt to this loader's ranks. Batches dealt from an
        order must keep the global batch (``batch_size * world_size``; e.g. 2 ranks x 32 -> 1 x 64);
        class-balanced batches are whole and keep their size (the global batch follows the ranks)."""
        if not isinstance(state, dict):
            raise ValueError(f"loader state must be a dict, got {type(state).__name__}")
        mine = self.state_dict()
        if "store" in state and state["store"] != mine["store"]:
            raise ValueError(f"loader state field 'store' is {state['store']!r}: it was saved on another store "
                             f"(this loader's store {self.store.path} is {mine['store']!r})")
        for k in mine:
            if k in ("epoch", "batch", "rank", "legs", "world_size", "batch_size"):
                continue
            if k not in state:
                raise ValueError(f"loader state lacks field {k!r}")
            if state[k] != mine[k] or type(state[k]) is not type(mine[k]):
                raise ValueError(f"loader state has {k}={state[k]!r}, this loader has {mine[k]!r}")
        epoch, batch = _int_field(state, "epoch"), _int_field(state, "batch")
        world, size = _int_field(state, "world_size"), _int_field(state, "batch_size")
        if epoch < 0:
            raise ValueError(f"loader state field 'epoch' must be >= 0, got {epoch}")
        if world < 1 or size < 1:
            raise ValueError(f"loader state has world_size={world}, batch_size={size}: both must be >= 1")
        legs = _legs_field(state)
        if (world, size) != (self.world_size, self.batch_size):
            self._check_resize(epoch, world, size)
        count = len(self._deal(epoch, legs, 0, world, size))
        if not 0 <= batch <= count:
            raise ValueError(f"loader state field 'batch' must be in 0..{count} (batches in epoch {epoch}), "
                             f"got {batch}")
        if (world, size) == (self.world_size, self.batch_size):
            self.epoch, self._legs, self._start_batch, self.batches_done = epoch, legs, batch, batch
        else:  # the saved leg ends here; this loader's leg deals what is left
            self.epoch, self._legs, self._start_batch, self.batches_done = epoch, legs + [(world, size, batch)], 0, 0

    def _check_resize(self, epoch: int, world: int, size: int) -> None:
        if self.ready_batches(epoch) is not None:
            if size != self.batch_size:
                raise ValueError(f"loader state has batch_size={size}, this loader has {self.batch_size} "
                                 "(class-balanced batches are whole: keep their size)")
        elif size * world != self.batch_size * self.world_size:
            raise ValueError(f"loader state has a global batch of {size * world} ({world} x {size}), this loader "
                             f"{self.batch_size * self.world_size} ({self.world_size} x {self.batch_size}): "
                             "keep batch_size * world_size when the world size changes")

    # --- iteration -----------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        # not a generator function: the resume point is taken when iteration starts, not at first next()
        batches = list(enumerate(self.epoch_batches()))  # (index in the epoch, item ids)
        start = self._start_batch
        self.batches_done = start
        info = torch.utils.data.get_worker_info()
        if info is not None:  # DataLoader workers: split batches round-robin, DataLoader re-interleaves
            batches = batches[info.id :: info.num_workers]
            start = -(-(start - info.id) // info.num_workers) if start > info.id else 0
        return self._run(batches, start)

    def _run(self, batches: list[tuple[int, np.ndarray]], start: int) -> Iterator[dict]:
        shapes = self.shapes([b for _, b in batches])
        for raw in prefetch(len(batches), start, lambda j, slot: self.fill(*batches[j], slot), shapes,
                            self.device, self.ring, self.threads, pool_for(self._pools, shapes)):
            self.batches_done += 1
            yield self.finish(raw)
        # a finished epoch leaves a fresh state: iterating again replays it from the start
        self._start_batch = self.batches_done = 0
        self._legs = []
