"""Raw files hashed on a background thread (ingest/sources.py) and vocabularies from parsed codes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.ingest.sources import SourceHashes
from featurestore.store.dictionary import Dictionary


def test_digests_are_sha256_of_each_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([0, 1, (1 << 20) - 1, 1 << 20, (3 << 20) + 7]):
        p = tmp_path / f"f{i}.csv"
        p.write_bytes(rng.bytes(size))
        paths.append(p)
    hashes = SourceHashes(paths)
    assert hashes.digests() == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    assert hashes.digest(tmp_path / "not-listed.csv") is None


def test_unreadable_file_has_no_digest_and_close_stops(tmp_path: Path) -> None:
    good = tmp_path / "a.csv"
    good.write_bytes(b"x" * 10)
    hashes = SourceHashes([tmp_path / "missing.csv", good])
    assert hashes.digest(tmp_path / "missing.csv") is None  # the ingest's own read reports it
    assert hashes.digest(good) == hashlib.sha256(b"x" * 10).hexdigest()
    big = tmp_path / "big.csv"
    big.write_bytes(b"y" * (8 << 20))
    links = []
    for i in range(40):
        (tmp_path / f"link{i}.csv").hardlink_to(big)
        links.append(tmp_path / f"link{i}.csv")
    stopped = SourceHashes(links)
    stopped.close()
    stopped._thread.join(timeout=30)
    assert not stopped._thread.is_alive()
    assert len(stopped.digests()) < len(links)  # stopped between blocks: 320 MB were not all hashed


@settings(max_examples=80, deadline=None)
@given(prior=st.lists(st.sampled_from("abcdefg"), unique=True, max_size=4),
       extra=st.lists(st.sampled_from("abcdefghij"), unique=True, max_size=6),
       picks=st.lists(st.integers(0, 30), min_size=0, max_size=40))
def test_encode_categories_equals_encoding_the_text(prior, extra, picks) -> None:
    """Codes parsed against an Enum (vocabulary so far + known values) and remapped give the same codes
    and the same vocabulary, in first-appearance order, as encoding the text column."""
    categories = prior + [v for v in extra if v not in prior]
    if not categories:
        return
    codes = np.array([k % len(categories) for k in picks], dtype=np.uint8)
    text = pl.Series([categories[k] for k in codes], dtype=pl.Utf8)
    by_text, by_codes = Dictionary(prior), Dictionary(prior)
    expected = by_text.encode_series(text).to_numpy()
    got = by_codes.encode_categories(codes, categories, pl.Series(codes).unique(maintain_order=True).to_numpy())
    np.testing.assert_array_equal(got, expected)
    assert by_codes.values == by_text.values


def _logs(tmp_path: Path, n: int, bad: int | None = None) -> list[Path]:
    from featurestore.schemas import mssd as S

    header = ",".join(S.LOG_CSV)
    row = "s{i},1,1,t_1,True,False,False,True,0,1,0,0,0,0,False,5,2018-07-15,True,catalog,trackdone,fwdbtn"
    paths = []
    for k in range(n):
        p = tmp_path / f"log_{k}.csv"
        line = row.format(i=k) if k != bad else row.format(i=k).replace(",5,", ",x5,")
        p.write_text(f"{header}\n{line}\n")
        paths.append(p)
    return paths


def test_parse_ahead_gives_batches_in_order_and_errors_at_their_file(tmp_path: Path) -> None:
    import pytest

    from featurestore.ingest.sources import ParseAhead
    from featurestore.ingest.table import read_typed_csv
    from featurestore.schemas import mssd as S
    from featurestore.store.errors import InputError

    paths = _logs(tmp_path, 4, bad=2)
    ahead = ParseAhead([], paths)
    try:
        with pytest.raises(ValueError, match="next is"):
            ahead.batches(paths[1])
        for p in paths[:2]:
            (batch,) = list(ahead.batches(p))
            assert batch.last and batch.first_line == 2
            assert batch.frame.equals(read_typed_csv(p, S.log_parse_schema()))
        with pytest.raises(InputError, match="hour_of_day") as err:
            list(ahead.batches(paths[2]))
        assert err.value.line == 2
    finally:
        ahead.close()


def test_parse_ahead_holds_at_most_two_batches(tmp_path: Path) -> None:
    import time

    from featurestore.ingest.sources import ParseAhead

    paths = _logs(tmp_path, 5)
    ahead = ParseAhead([], paths, ahead=2)
    try:
        first = ahead.batches(paths[0])
        next(first)  # being "encoded": two more batches may wait, the parse holds the fourth
        deadline = time.monotonic() + 30
        while not ahead._queue.full() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        assert ahead._queue.qsize() == 2  # no more queued while the consumer holds its batch
        assert [b.path for b in ahead.batches(paths[1])] == [paths[1]]
        assert [b.path for b in ahead.batches(paths[2])] == [paths[2]]
    finally:
        ahead.close()
