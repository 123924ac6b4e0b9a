"""Property tests for SessionBatches on small synthetic stores."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from featurestore.ingest.spotify import ingest_spotify
from featurestore.schemas.mssd import first_half_length
from featurestore.store import StoreError
from loaders import LOG_COLUMNS, SessionBatches
from loaders.orders import epoch_order
from loaders.sharding import rank_batches


def sessions_of(loader) -> list[np.ndarray]:
    return [b["session"].numpy().copy() for b in loader]


@given(order=st.sampled_from(["sequential", "random", "quasi_random"]), batch=st.integers(1, 300),
       world=st.integers(1, 4), seed=st.integers(0, 5), epoch=st.integers(0, 3), drop=st.booleans())
def test_every_session_once_and_equal_rank_batches(store, order, batch, world, seed, epoch, drop):
    n = store.tables["train"]["rows"]
    got, counts = [], []
    for rank in range(world):
        try:
            b = SessionBatches(store, batch_size=batch, order=order, seed=seed, rank=rank, world_size=world,
                               drop_last=drop, chunk=37, window=3)
        except ValueError:
            raise
        b.set_epoch(epoch)
        try:
            batches = sessions_of(b)
        except ValueError as e:  # only the documented impossible case: batch_size 1 with uneven ranks
            assert batch == 1 and "equal batch counts" in str(e)
            return
        counts.append(len(batches))
        assert len(batches) == len(b)
        assert all(0 < x.size <= batch for x in batches)
        got.append(np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64))
    assert len(set(counts)) == 1  # no DDP hang
    allv = np.concatenate(got)
    assert np.unique(allv).size == allv.size  # disjoint, never twice
    if drop:
        assert allv.size >= n - world * batch - world
    else:
        assert np.array_equal(np.sort(allv), np.arange(n))


def test_batches_decode_to_the_store_rows(store):
    r = store.ragged("train")
    track = r.read("track")
    cols = {c: r.read(c) for c in LOG_COLUMNS}
    table = store.feature_table("tracks").dequantize()
    seen = 0
    for b in SessionBatches(store, batch_size=64, order="random", seed=1):
        for i, s in enumerate(b["session"].tolist()):
            lo, hi = r.offsets[s], r.offsets[s + 1]
            n, h = hi - lo, first_half_length(hi - lo)
            assert b["length"][i] == n
            assert b["ctx_mask"][i].sum() == h and b["tgt_mask"][i].sum() == n - h
            assert np.array_equal(b["track"][i, :n].numpy(), track[lo:hi])
            assert not b["track"][i, n:].any()
            assert np.array_equal(b["ctx_track"][i, :h].numpy(), track[lo : lo + h])
            assert np.array_equal(b["tgt_track"][i, : n - h].numpy(), track[lo + h : hi])
            for j, c in enumerate(LOG_COLUMNS):
                expect = np.minimum(cols[c][lo : lo + h], 255)
                assert np.array_equal(b["ctx_log"][i, :h, j].numpy(), expect), c
            assert not b["ctx_log"][i, h:].any()  # padding in one place: zeros
            assert np.array_equal(b["tgt_skip"][i, : n - h].numpy(), cols["skip_2"][lo + h : hi].astype(np.float32))
            assert np.array_equal(b["ctx_features"][i, :h].numpy(), table[track[lo : lo + h]])
            assert np.array_equal(b["tgt_features"][i, : n - h].numpy(), table[track[lo + h : hi]])
            assert not b["ctx_features"][i, h:].any() and not b["tgt_features"][i, n - h :].any()
            seen += 1
    assert seen == store.tables["train"]["rows"]


@given(step=st.integers(0, 12), order=st.sampled_from(["random", "quasi_random", "sequential"]),
       world=st.integers(1, 3), batch=st.integers(20, 120))
def test_resume_mid_epoch_yields_exactly_the_rest(store, step, order, world, batch):
    rank = world - 1
    a = SessionBatches(store, batch_size=batch, order=order, seed=3, rank=rank, world_size=world)
    a.set_epoch(2)
    full = sessions_of(a)
    step = min(step, len(full))
    a.set_epoch(2)
    it = iter(a)
    for _ in range(step):
        next(it)
    state = a.state_dict()
    b = SessionBatches(store, batch_size=batch, order=order, seed=3, rank=rank, world_size=world)
    b.load_state_dict(state)
    rest = sessions_of(b)
    assert len(rest) == len(full) - step
    for x, y in zip(rest, full[step:], strict=True):
        assert np.array_equal(x, y)


def test_order_independent_of_threads_and_usable_through_dataloader(store):
    ref = sessions_of(SessionBatches(store, batch_size=50, order="quasi_random", seed=9, threads=1))
    for threads in (2, 3):
        got = sessions_of(SessionBatches(store, batch_size=50, order="quasi_random", seed=9, threads=threads))
        assert all(np.array_equal(x, y) for x, y in zip(got, ref, strict=True))
    for workers in (0, 2):
        dl = torch.utils.data.DataLoader(SessionBatches(store, batch_size=50, order="quasi_random", seed=9),
                                         batch_size=None, num_workers=workers)
        got = [b["session"].numpy() for b in dl]
        assert len(got) == len(ref) and all(np.array_equal(x, y) for x, y in zip(got, ref, strict=True))


def test_quasi_random_differs_between_epochs_and_seeds():
    items = np.arange(5000)
    a = epoch_order(items, "quasi_random", 0, 0, chunk=100, window=4)
    assert not np.array_equal(a, epoch_order(items, "quasi_random", 0, 1, chunk=100, window=4))
    assert not np.array_equal(a, epoch_order(items, "quasi_random", 1, 0, chunk=100, window=4))
    assert np.array_equal(a, epoch_order(items, "quasi_random", 0, 0, chunk=100, window=4))
    assert np.array_equal(np.sort(a), items)
    # locality: each window of 4 chunks covers exactly 4 source chunks
    first = a[:400]
    assert np.unique(first // 100).size == 4


def test_holdout_subsets_partition_the_split(store):
    fit = np.concatenate(sessions_of(SessionBatches(store, batch_size=100, subset="fit", holdout=0.2)))
    held = np.concatenate(sessions_of(SessionBatches(store, batch_size=100, subset="holdout", holdout=0.2)))
    assert np.intersect1d(fit, held).size == 0
    assert np.array_equal(np.sort(np.concatenate([fit, held])), np.arange(store.tables["train"]["rows"]))
    assert 0.1 < held.size / (fit.size + held.size) < 0.3


def test_test_split_without_ground_truth(raw, tmp_path):
    raw2 = tmp_path / "raw"
    shutil.copytree(raw, raw2)
    for p in (raw2 / "test_set").glob("ground_truth_*"):
        p.unlink()
    ingest_spotify(raw2, tmp_path / "s", progress=False)
    b = next(iter(SessionBatches(tmp_path / "s", split="test", batch_size=32)))
    assert "tgt_skip" not in b and b["tgt_track"].shape == (32, 10)
    labelled = next(iter(SessionBatches(tmp_path / "s", split="train", batch_size=32)))
    assert "tgt_skip" in labelled


def test_bad_arguments(store, tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        SessionBatches(store, batch_size=0)
    with pytest.raises(ValueError, match="rank"):
        SessionBatches(store, rank=2, world_size=2)
    with pytest.raises(StoreError, match="no session split 'valid'"):
        SessionBatches(store, split="valid")
    with pytest.raises(ValueError, match="unknown order"):
        SessionBatches(store, order="shuffled")
    with pytest.raises(ValueError, match="holdout"):
        SessionBatches(store, subset="fit", holdout=1.5)
    b = SessionBatches(store, batch_size=10)
    with pytest.raises(ValueError, match="batch_size"):
        SessionBatches(store, batch_size=20).load_state_dict(b.state_dict())
    with pytest.raises(ValueError, match="equal batch counts"):
        rank_batches(np.arange(5), 1, 1, 2)
    # a damaged store fails validation before any batch is served
    broken = tmp_path / "broken"
    shutil.copytree(store.path, broken, ignore=shutil.ignore_patterns("cache"))
    chunk = next((broken / "train" / "events" / "track" / "c").rglob("*"))
    chunk.write_bytes(b"garbage")
    with pytest.raises(StoreError, match="fails validation|checksum"):
        SessionBatches(broken)


def test_kept_batches_are_never_overwritten_by_buffer_reuse(store):
    """CPU buffers are pooled: a batch (or a view of it) the caller keeps must stay intact."""
    kept = list(SessionBatches(store, batch_size=40, order="random", seed=2))
    views = [b["ctx_features"][:, :3] for b in SessionBatches(store, batch_size=40, order="random", seed=2)]
    fresh = [{k: v.clone() for k, v in b.items()}
             for b in SessionBatches(store, batch_size=40, order="random", seed=2, threads=1)]
    for a, b, v in zip(kept, fresh, views, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in b)
        assert torch.equal(v, b["ctx_features"][:, :3])


@given(n=st.integers(1, 400), world=st.integers(1, 5), batch=st.integers(2, 80))
def test_rank_batches_partition_with_equal_counts(n, world, batch):
    """Pure sharding property, including parts that are exact multiples of batch_size (160 / 3 / 53)."""
    if n < world:
        return
    per_rank = [rank_batches(np.arange(n), batch, r, world) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1
    assert all(0 < x.size <= batch for b in per_rank for x in b)
    allv = np.concatenate([x for b in per_rank for x in b])
    assert np.array_equal(np.sort(allv), np.arange(n))


def test_cache_sweeps_dead_builds_and_explains_unwritable_dirs(store, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    SessionBatches(store, cache_dir=cache)
    built = next(p for p in cache.iterdir() if p.is_dir())
    stale = cache / (built.name + ".tmp-999999999")  # no such process
    stale.mkdir()
    shutil.rmtree(built)
    SessionBatches(store, cache_dir=cache)
    assert not stale.exists() and built.exists()
    blocker = tmp_path / "a-file"  # a cache path below a regular file cannot be created, even as root
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot write the loader cache"):
        SessionBatches(store, cache_dir=blocker / "sub")


def test_track_features_exclude_the_padding_row(store):
    b = SessionBatches(store)
    table = store.feature_table("tracks").dequantize()
    assert b.track_features.shape == table.shape
    assert np.array_equal(b.track_features.numpy(), table)
    assert not b.track_table[-1].any()  # the zero row padded positions gather
