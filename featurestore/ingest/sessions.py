"""Vectorized checks that turn rows of a session log into validated CSR runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ..store.errors import InputError

# which positions a file holds of each session
FULL, FIRST_HALF, SECOND_HALF = "full", "first_half", "second_half"


@dataclass
class Runs:
    """Contiguous runs of one session id: row starts, row counts and the run's session ids."""

    starts: np.ndarray
    lengths: np.ndarray
    session_ids: pl.Series
    session_length: np.ndarray


def session_runs(df: pl.DataFrame, path: Path, part: str = FULL) -> Runs:
    """Split rows into sessions and check each is contiguous, ordered and of the stated length.

    part: FULL (positions 1..L), FIRST_HALF (1..L//2) or SECOND_HALF (L//2+1..L), the MSSD rule
    being that position p is in the second half when 2p > L.
    """
    sid = df["session_id"]
    n = df.height
    starts_mask = (sid != sid.shift(1)).fill_null(True).to_numpy()
    starts = np.flatnonzero(starts_mask)
    lengths = np.diff(np.append(starts, n))
    run_of_row = np.cumsum(starts_mask) - 1
    slen = df["session_length"].to_numpy().astype(np.int64)
    pos = df["session_position"].to_numpy().astype(np.int64)

    bad = np.flatnonzero(slen != slen[starts][run_of_row])
    if bad.size:
        r = int(bad[0])
        raise InputError(path, f"session {sid[r]!r}: session_length changes within the session", line=r + 2,
                         column="session_length")
    bad = np.flatnonzero((slen < 1) | (slen > 255))
    if bad.size:
        r = int(bad[0])
        raise InputError(path, f"session_length {slen[r]} outside 1..255", line=r + 2, column="session_length")

    first = {FULL: 1, FIRST_HALF: 1, SECOND_HALF: 0}[part]
    run_slen = slen[starts]
    if part == SECOND_HALF:
        first_pos = run_slen // 2 + 1
        expected_len = run_slen - run_slen // 2
    else:
        first_pos = np.full(starts.size, first)
        expected_len = run_slen if part == FULL else run_slen // 2
    expected_pos = np.arange(n) - starts[run_of_row] + first_pos[run_of_row]
    bad = np.flatnonzero(pos != expected_pos)
    if bad.size:
        r = int(bad[0])
        raise InputError(
            path, f"session {sid[r]!r}: rows out of order (position {pos[r]} where {expected_pos[r]} expected)",
            line=r + 2, column="session_position",
        )
    bad = np.flatnonzero(lengths != expected_len)
    if bad.size:
        i = bad[0]
        r = int(starts[i])
        raise InputError(
            path, f"session {sid[r]!r} has {lengths[i]} rows but session_length {run_slen[i]} implies "
            f"{expected_len[i]} in this file", line=r + 2, column="session_length",
        )
    return Runs(starts=starts, lengths=lengths, session_ids=sid.gather(starts), session_length=run_slen)


class SessionIdRegistry:
    """Detects a session id seen in two places (two files, or twice in one file), bounded in memory.

    Keeps one 64-bit hash per session (1 GB for 130M sessions); only on a hash match are the two
    files' ids re-read to compare exact strings, so a collision cannot raise a false alarm.
    """

    def __init__(self) -> None:
        self._hashes: list[np.ndarray] = []
        self.paths: list[Path] = []

    def add(self, path: Path, session_ids: pl.Series) -> None:
        self.paths.append(path)
        self._hashes.append(session_ids.hash(seed=0).to_numpy())

    def check(self, read_run_ids) -> None:
        """read_run_ids(path) -> the run session ids of that file (called only on a hash match)."""
        if not self._hashes:
            return
        h = np.concatenate(self._hashes)
        files = np.concatenate([np.full(len(x), i, dtype=np.int32) for i, x in enumerate(self._hashes)])
        local = np.concatenate([np.arange(len(x)) for x in self._hashes])
        order = np.argsort(h, kind="stable")
        for d in np.flatnonzero(h[order][1:] == h[order][:-1]):
            a, b = order[d], order[d + 1]
            pa, pb = self.paths[files[a]], self.paths[files[b]]
            ida, idb = read_run_ids(pa)[int(local[a])], read_run_ids(pb)[int(local[b])]
            if ida == idb:
                where = f"{pa} and {pb}" if pa != pb else f"two separate runs of {pa}"
                raise InputError(pa, f"session {ida!r} is split across {where} (rows of a session must be contiguous)")
