"""``spotify_encode.TrackIndex``: track id -> code through sorted hashes and a top-bits table; every answer
must equal a polars join of the ids against the track table, absent ids included."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from featurestore.ingest.spotify_encode import TrackIndex
from featurestore.schemas import mssd as S


def _joined(table: pl.DataFrame, ids: pl.Series) -> np.ndarray:
    codes = ids.to_frame("t").join(table, left_on="t", right_on=S.TRACK_ID, how="left", maintain_order="left")
    return codes["code"].fill_null(-1).to_numpy().astype(np.int32)


@pytest.mark.parametrize("tracks", [1, 2, 3, 1000, 1024, 50_000])
def test_codes_equal_the_join_present_and_absent(tracks):
    rng = np.random.default_rng(tracks)
    ids = [f"t_{i:06d}-{rng.integers(1 << 30):x}" for i in range(tracks)]
    table = pl.DataFrame({S.TRACK_ID: ids, "code": rng.permutation(tracks).astype(np.int32)})
    known = pl.Series(ids).gather(rng.integers(0, tracks, 5000))
    unknown = pl.Series([f"u_{i}" for i in range(500)])
    asked = pl.concat([known, unknown]).sample(fraction=1.0, shuffle=True, seed=1)
    index = TrackIndex(table)
    got = index.codes(asked)
    np.testing.assert_array_equal(got, _joined(table, asked))
    assert (got[asked.str.starts_with("u_").to_numpy()] == -1).all()
    assert (got[asked.str.starts_with("t_").to_numpy()] >= 0).all()


def test_crowded_top_bits_are_probed_to_the_end():
    """Many tracks in one run of equal top bits (forced by a narrow table): each is found, and an id whose
    run holds only other hashes is absent."""
    ids = [f"track-{i}" for i in range(3000)]
    table = pl.DataFrame({S.TRACK_ID: ids, "code": np.arange(3000, dtype=np.int32)})
    index = TrackIndex(table)
    index.shift = np.uint64(62)  # four runs of ~750 hashes each
    index.start = np.searchsorted(index.hashes >> index.shift, np.arange(5, dtype=np.uint64)).astype(np.int32)
    asked = pl.Series([*ids[::-1], "not-a-track"])
    np.testing.assert_array_equal(index.codes(asked), [*range(2999, -1, -1), -1])


def test_an_empty_track_table_knows_no_id():
    table = pl.DataFrame({S.TRACK_ID: pl.Series([], dtype=pl.Utf8), "code": pl.Series([], dtype=pl.Int32)})
    np.testing.assert_array_equal(TrackIndex(table).codes(pl.Series(["a", "b"])), [-1, -1])
