"""The split-session check: one 64-bit hash per session, exact ids compared only on a hash match."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurestore.ingest.sessions import SessionIdRegistry
from featurestore.store import InputError


def registry(files: dict[str, list[str]], hashes: dict[str, list[int]] | None = None) -> SessionIdRegistry:
    r = SessionIdRegistry()
    for name, ids in files.items():
        if hashes is None:
            r.add(Path(name), pl.Series(ids, dtype=pl.Utf8))
        else:
            r.add_hashes(Path(name), np.asarray(hashes[name], dtype=np.uint64))
    return r


@given(st.lists(st.lists(st.text(min_size=1, max_size=6), max_size=8), min_size=1, max_size=4))
def test_raises_exactly_when_an_id_is_in_two_places(groups):
    files = {f"f{i}.csv": ids for i, ids in enumerate(groups)}
    ids = [x for g in groups for x in g]
    r = registry(files)
    if len(set(ids)) == len(ids):
        r.check(lambda p: pl.Series(files[str(p)], dtype=pl.Utf8))
    else:
        with pytest.raises(InputError, match="split across"):
            r.check(lambda p: pl.Series(files[str(p)], dtype=pl.Utf8))


def test_a_hash_collision_is_no_false_alarm_and_a_real_repeat_names_both_files():
    files = {"a.csv": ["s1", "s2"], "b.csv": ["s3", "s4"]}
    read = lambda p: pl.Series(files[str(p)], dtype=pl.Utf8)  # noqa: E731
    registry(files, {"a.csv": [7, 8], "b.csv": [9, 7]}).check(read)  # s1 and s4 share a hash only
    files["b.csv"] = ["s3", "s1"]
    with pytest.raises(InputError, match=r"'s1' is split across a.csv and b.csv"):
        registry(files, {"a.csv": [7, 8], "b.csv": [9, 7]}).check(read)


@given(st.lists(st.lists(st.text(min_size=1, max_size=6), max_size=8), min_size=1, max_size=4),
       st.integers(1, 5))
def test_spilled_to_disk_it_finds_the_same_repeats(groups, spill):
    import tempfile

    files = {f"f{i}.csv": ids for i, ids in enumerate(groups)}
    ids = [x for g in groups for x in g]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "spill"
        r = SessionIdRegistry(folder, spill_hashes=spill)
        for name, g in files.items():  # each file in batches of two, as a batched read adds them
            for k in range(0, max(len(g), 1), 2):
                r.add(Path(name), pl.Series(g[k:k + 2], dtype=pl.Utf8))
        batches = lambda p: (pl.Series(files[str(p)][k:k + 3], dtype=pl.Utf8)  # noqa: E731
                             for k in range(0, len(files[str(p)]), 3))
        if len(set(ids)) == len(ids):
            r.check(batches)
        else:
            with pytest.raises(InputError, match="split across"):
                r.check(batches)
        assert not folder.exists()  # the spilled hashes are removed by the check
