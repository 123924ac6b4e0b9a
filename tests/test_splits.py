"""Validation splits and clip subsets: deterministic, disjoint, stratified, and honoured by every mode."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurestore.ingest.yandex import ingest_yandex
from featurestore.store import Store
from featurestore.synth.yandex import synth_yandex
from loaders import SegmentBatches
from loaders.splits import bounded_sample, group_holdout, rarest_label, stratified_holdout


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    raw = tmp_path_factory.mktemp("yraw")
    synth_yandex(raw, tracks=90, artists=12, test_tracks=4, seed=2)
    path = tmp_path_factory.mktemp("yst") / "y.fstore"
    ingest_yandex(raw, path, progress=False)
    return Store(path)


labels_st = st.lists(st.integers(0, 7), min_size=2, max_size=200).map(np.array)


@given(labels=labels_st, fraction=st.floats(0.05, 0.95), seed=st.integers(0, 2**31 - 1))
def test_stratified_holdout(labels, fraction, seed):
    fit, held = stratified_holdout(labels, fraction, seed)
    assert np.array_equal(np.sort(np.concatenate([fit, held])), np.arange(labels.size))
    for c in np.unique(labels):
        n, k = int((labels == c).sum()), int((labels[held] == c).sum())
        if n >= 2:
            assert 1 <= k <= n - 1 and abs(k - fraction * n) <= max(1.0, 0.5 + 1e-9)
        else:
            assert k == 0
    again = stratified_holdout(labels, fraction, seed)
    assert np.array_equal(again[1], held)


@given(groups=labels_st, fraction=st.floats(0.05, 0.95), seed=st.integers(0, 2**31 - 1))
def test_group_holdout_keeps_groups_whole(groups, fraction, seed):
    if np.unique(groups).size < 2:
        with pytest.raises(ValueError, match="2 groups"):
            group_holdout(groups, fraction, seed)
        return
    fit, held = group_holdout(groups, fraction, seed)
    assert held.size and fit.size
    assert not set(groups[fit]) & set(groups[held])
    assert np.array_equal(np.sort(np.concatenate([fit, held])), np.arange(groups.size))


def test_rarest_label():
    offsets = np.array([0, 2, 2, 5])
    values = np.array([0, 1, 0, 2, 1])  # class 2 appears once, class 0 twice, class 1 twice
    np.testing.assert_array_equal(rarest_label(offsets, values, 3), [0, 3, 2])


def test_bad_fraction():
    with pytest.raises(ValueError, match="fraction"):
        stratified_holdout(np.zeros(4), 1.0)


@pytest.mark.parametrize("mode", ["crop", "whole", "bucketed"])
def test_segment_subset_every_mode(store, mode):
    artist = store.frames("train").column("artist")
    fit, held = stratified_holdout(artist, 0.25, seed=3)
    for part in (fit, held):
        loader = SegmentBatches(store, batch_size=7, mode=mode, crop=8, clips=part, label="artist")
        seen = np.concatenate([b["clip"].numpy() for b in loader])
        assert np.array_equal(np.sort(seen), part)
        assert len(loader) == len(list(loader))


def test_balanced_subset_and_state(store):
    artist = store.frames("train").column("artist")
    fit, held = group_holdout(artist, 0.3, seed=1)
    loader = SegmentBatches(store, balanced=(2, 3), label="artist", clips=fit, crop=4)
    for b in loader:
        assert set(b["clip"].numpy()) <= set(fit.tolist())
        assert len(set(b["label"].numpy())) == 3
    other = SegmentBatches(store, balanced=(2, 3), label="artist", clips=held, crop=4)
    with pytest.raises(ValueError, match="subset"):
        other.load_state_dict(loader.state_dict())


def test_bad_subsets(store):
    n = store.frames("train").clips
    for bad, msg in (([0, 0], "twice"), ([n], "lie in"), ([-1], "lie in"), (np.zeros((2, 2), int), "1-D")):
        with pytest.raises(ValueError, match=msg):
            SegmentBatches(store, clips=np.asarray(bad))


def test_bounded_sample_is_fixed_bounded_and_whole_by_group():
    items = np.arange(5, 5005, 5)  # 1000 held-out ids
    a = bounded_sample(items, 100, seed=3)
    assert a.size == 100 and np.all(np.diff(a) > 0) and np.isin(a, items).all()
    assert np.array_equal(a, bounded_sample(items, 100, seed=3))  # the same items every validation
    assert not np.array_equal(a, bounded_sample(items, 100, seed=4))
    assert bounded_sample(items, 0) is items and bounded_sample(items, 1000) is items  # 0 or enough: all

    groups = np.arange(items.size) // 10  # 100 groups of 10 items
    g = bounded_sample(items, 95, seed=3, groups=groups)
    assert g.size == 90 and np.isin(items[np.isin(groups, groups[np.isin(items, g)])], g).all()  # whole groups
    assert bounded_sample(items, 4, groups=groups).size == 10  # at least one group
    with pytest.raises(ValueError, match="limit"):
        bounded_sample(items, -1)
