"""The shared loader machinery: validated resume state, store-kind errors, the orders registry,
rank sharding of ready-made batches, length-bucketed training batches and the one padding step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from featurestore.ingest.spotify import ingest_spotify
from featurestore.store import Store, StoreError
from featurestore.synth.spotify import synth_spotify
from loaders import ORDERS, SegmentBatches, SessionBatches
from loaders.orders import Order, make_order, register
from loaders.padding import pad_on_device, pad_rows
from loaders.prefetch import allocate_slot
from loaders.sharding import split_batches


@pytest.fixture(scope="module")
def other_session_store(tmp_path_factory) -> Store:
    raw = tmp_path_factory.mktemp("other_raw")
    synth_spotify(raw, sessions=150, tracks=300, seed=11, train_files=1)
    path = tmp_path_factory.mktemp("other") / "s.fstore"
    ingest_spotify(raw, path, progress=False)
    return Store(path)


def clips_of(loader) -> list[np.ndarray]:
    return [b["clip"].numpy().copy() for b in loader]


# --- resume state --------------------------------------------------------------------------------------
def test_state_from_another_store_is_rejected(store, other_session_store):
    a = SessionBatches(store, batch_size=32)
    b = SessionBatches(other_session_store, batch_size=32)
    assert a.state_dict()["store"] != b.state_dict()["store"]
    assert a.state_dict()["store"] == SessionBatches(store.path, batch_size=32).state_dict()["store"]
    state = b.state_dict() | {"items": a.state_dict()["items"]}  # even when the sizes happen to agree
    with pytest.raises(ValueError, match="'store'.*another store"):
        a.load_state_dict(state)


@pytest.mark.parametrize("field, value, message", [
    ("batch", -3, "'batch' must be in 0.."),
    ("batch", 10_000, "'batch' must be in 0.."),
    ("batch", "2", "'batch' must be an int"),
    ("batch", 2.0, "'batch' must be an int"),
    ("batch", True, "'batch' must be an int"),
    ("epoch", -1, "'epoch' must be >= 0"),
    ("epoch", None, "'epoch' must be an int"),
    ("batch_size", "32", "'batch_size' must be an int"),
    ("batch_size", 16, r"global batch of 16 \(1 x 16\), this loader 32"),
    ("world_size", 0, "world_size=0"),
    ("legs", [[2, 16]], "'legs' must be a list of"),
    ("legs", [[0, 16, 1]], "'legs' must be a list of"),
    ("seed", 4, "seed=4"),
])
def test_bad_state_fields_are_named(store, field, value, message):
    loader = SessionBatches(store, batch_size=32)
    state = loader.state_dict() | {field: value}
    with pytest.raises(ValueError, match=message):
        loader.load_state_dict(state)
    assert loader.epoch == 0 and loader.batches_done == 0  # nothing half-loaded


def test_missing_fields_and_non_dict_states(store):
    loader = SessionBatches(store, batch_size=32)
    for field in ("store", "batch", "epoch", "order"):
        state = loader.state_dict()
        del state[field]
        with pytest.raises(ValueError, match=f"lacks field '{field}'"):
            loader.load_state_dict(state)
    with pytest.raises(ValueError, match="must be a dict"):
        loader.load_state_dict([("epoch", 0)])


def test_the_last_batch_index_is_a_valid_state(store):
    loader = SessionBatches(store, batch_size=64)
    loader.load_state_dict(loader.state_dict() | {"epoch": 2, "batch": len(loader)})
    assert list(loader) == []  # resumed at the end of epoch 2: nothing left
    loader.load_state_dict(loader.state_dict() | {"epoch": 2, "batch": len(loader) - 1})
    assert len(list(loader)) == 1


@given(step=st.integers(0, 30), world=st.integers(1, 3), mode=st.sampled_from(["crop", "bucketed"]))
def test_segment_resume_from_any_step(frames_store, step, world, mode):
    rank = world - 1
    kw = dict(batch_size=7, crop=25, mode=mode, seed=5, rank=rank, world_size=world, order="random")
    a = SegmentBatches(frames_store, **kw)
    a.set_epoch(1)
    full = [{k: v.clone() for k, v in b.items()} for b in a]
    step = min(step, len(full))
    a.set_epoch(1)
    it = iter(a)
    for _ in range(step):
        next(it)
    b = SegmentBatches(frames_store, **kw)
    b.load_state_dict(a.state_dict())
    rest = list(b)
    assert len(rest) == len(full) - step
    for x, y in zip(rest, full[step:], strict=True):
        assert all(torch.equal(x[k], y[k]) for k in y)


# --- store kinds -----------------------------------------------------------------------------------------
def test_session_loader_on_a_frame_store_says_what_the_store_is(frames_store):
    with pytest.raises(StoreError) as e:
        SessionBatches(frames_store, split="train")
    msg = str(e.value)
    assert "yandex" in msg and "frame sets: test, train" in msg and "session sets: none" in msg
    assert "read it with SegmentBatches" in msg and "`fstore ingest spotify` writes" in msg


def test_segment_loader_on_a_session_store_says_what_the_store_is(store):
    with pytest.raises(StoreError) as e:
        SegmentBatches(store, split="train")
    msg = str(e.value)
    assert "session sets: test, train" in msg and "frame sets: none" in msg
    assert "read it with SessionBatches" in msg and "`fstore ingest yandex|fsd|speakers` writes" in msg


# --- orders, sharding ------------------------------------------------------------------------------------
def test_orders_are_a_registry_of_classes():
    assert {"sequential", "random", "quasi_random", "by_length", "length_bucketed"} <= set(ORDERS)

    @register
    class Reversed(Order):
        name = "test_reversed"

        def __call__(self, items, seed, epoch):
            return items[::-1].copy()

    try:
        assert np.array_equal(make_order("test_reversed")(np.arange(5), 0, 0), [4, 3, 2, 1, 0])
    finally:
        del ORDERS["test_reversed"]
    with pytest.raises(ValueError, match="unknown order 'test_reversed'"):
        make_order("test_reversed")
    with pytest.raises(ValueError, match="needs item lengths"):
        make_order("length_bucketed")(np.arange(5), 0, 0)


@given(n=st.integers(0, 60), world=st.integers(1, 5))
def test_split_batches_equal_counts_disjoint(n, world):
    batches = [np.array([i]) for i in range(n)]
    shares = [split_batches(batches, r, world) for r in range(world)]
    assert len({len(s) for s in shares}) == 1
    got = np.concatenate([b for s in shares for b in s] or [np.zeros(0, int)])
    assert np.unique(got).size == got.size and got.size > n - world


def test_balanced_batches_split_ranks_through_split_batches(frames_store):
    full = SegmentBatches(frames_store, balanced=(2, 3), label="artist").epoch_batches()
    for world in (2, 3):
        for rank in range(world):
            got = SegmentBatches(frames_store, balanced=(2, 3), label="artist", rank=rank,
                                 world_size=world).epoch_batches()
            want = split_batches(full, rank, world)
            assert len(got) == len(want) and all(np.array_equal(x, y) for x, y in zip(got, want, strict=True))


# --- length-bucketed training batches --------------------------------------------------------------------
@given(batch=st.integers(1, 40), world=st.integers(1, 3), seed=st.integers(0, 3), epoch=st.integers(0, 3),
       window=st.integers(1, 5))
def test_bucketed_every_clip_once_padded_to_its_own_batch(frames_store, batch, world, seed, epoch, window):
    lengths = frames_store.frames("train").lengths()
    if batch == 1 and lengths.size % world:
        return  # no equal batch counts exist (sharding's documented case)
    seen, counts = [], set()
    for rank in range(world):
        loader = SegmentBatches(frames_store, mode="bucketed", batch_size=batch, seed=seed, rank=rank,
                                world_size=world, window=window)
        loader.set_epoch(epoch)
        batches = list(loader)
        counts.add(len(batches))
        for b in batches:
            clips = b["clip"].numpy()
            assert torch.equal(b["length"], torch.as_tensor(lengths[clips]))
            assert b["frames"].shape[1] == lengths[clips].max()  # padded to this batch's longest only
            assert not b["frames"][~b["mask"]].any()
            seen.append(clips)
    assert len(counts) == 1
    allc = np.concatenate(seen)
    assert np.array_equal(np.sort(allc), np.arange(lengths.size))


def test_bucketed_is_shuffled_deterministic_and_pads_less_than_random(frames_store):
    def run(seed, epoch, mode="bucketed"):
        loader = SegmentBatches(frames_store, mode=mode, batch_size=8, seed=seed, window=4)
        loader.set_epoch(epoch)
        batches = list(loader)
        pad = sum(int((~b["mask"]).sum()) for b in batches)
        return [b["clip"].numpy().copy() for b in batches], pad

    a, pad = run(0, 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, run(0, 1)[0], strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, run(0, 2)[0], strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, run(1, 1)[0], strict=True))
    by_length = np.concatenate(run(0, 0, mode="whole")[0])
    assert not np.array_equal(np.concatenate(a), by_length)  # training batches are not the sorted sweep
    # the same clips in random batches of 8, each padded to its own longest: bucketing pads far less
    lengths = frames_store.frames("train").lengths()
    shuffled = np.random.default_rng(0).permutation(lengths.size)
    random_pad = sum(int((lengths[b].max() - lengths[b]).sum()) for b in np.array_split(shuffled, len(a)))
    assert pad < 0.5 * random_pad


# --- padding ---------------------------------------------------------------------------------------------
def test_pad_rows_zeroes_exactly_the_padding():
    x = np.full((3, 5, 2), 7, np.uint8)
    pad_rows(x, np.array([0, 2, 5]))
    assert not x[0].any() and (x[1, :2] == 7).all() and not x[1, 2:].any() and (x[2] == 7).all()


def test_pad_on_device_zeroes_padding_even_where_decoding_gave_nan():
    x = torch.tensor([[[1.0, float("nan")], [float("nan"), 2.0]]])
    out = pad_on_device(x, torch.tensor([[True, False]]))
    assert torch.isnan(out[0, 0, 1]) and out[0, 0, 0] == 1 and not out[0, 1].any()


def _poisoned(loader, batches):
    """A slot whose every byte is 0xFF, as a reused buffer may hold: fill must leave no stale value."""
    slot = allocate_slot(loader.shapes(batches), pin=False)
    for t in slot.values():
        if t.dtype == torch.bool:
            t.fill_(True)
        else:
            t.view(torch.uint8).fill_(0xFF)
    return slot


def test_fill_writes_every_pad_zero_into_stale_session_buffers(store):
    loader = SessionBatches(store, batch_size=50, order="random", seed=3)
    batches = loader.epoch_batches()
    b = loader.finish(loader.fill(0, batches[0], _poisoned(loader, batches)))
    ref = next(iter(SessionBatches(store, batch_size=50, order="random", seed=3)))
    assert all(torch.equal(b[k], ref[k]) for k in ref)
    n = b["length"]
    assert not b["ctx_features"][~b["ctx_mask"]].any() and not b["tgt_features"][~b["tgt_mask"]].any()
    assert not b["ctx_log"][~b["ctx_mask"]].any() and not b["tgt_skip"][~b["tgt_mask"]].any()
    assert not b["track"][torch.arange(20)[None] >= n[:, None]].any()


@pytest.mark.parametrize("mode", ["crop", "whole"])
def test_fill_writes_every_pad_zero_into_stale_frame_buffers(frames_store, mode):
    loader = SegmentBatches(frames_store, batch_size=16, crop=90, mode=mode, order="random", seed=2)
    batches = loader.epoch_batches()
    b = loader.finish(loader.fill(0, batches[0], _poisoned(loader, batches)))
    assert (~b["mask"]).any()
    assert not b["frames"][~b["mask"]].any()
    ref = next(iter(SegmentBatches(frames_store, batch_size=16, crop=90, mode=mode, order="random", seed=2)))
    assert all(torch.equal(b[k], ref[k]) for k in ref)


def test_dataloader_workers_give_the_in_process_crops(frames_store):
    ref = [b for b in SegmentBatches(frames_store, batch_size=10, crop=30, seed=6)]
    dl = torch.utils.data.DataLoader(SegmentBatches(frames_store, batch_size=10, crop=30, seed=6),
                                     batch_size=None, num_workers=2)
    got = list(dl)
    assert len(got) == len(ref)
    for x, y in zip(got, ref, strict=True):
        assert torch.equal(x["clip"], y["clip"]) and torch.equal(x["start"], y["start"])
        assert torch.equal(x["frames"], y["frames"])
