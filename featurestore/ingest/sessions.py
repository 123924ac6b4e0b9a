"""Vectorized checks that turn rows of a session log into validated CSR runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ..schemas.mssd import MAX_SESSION_LENGTH, MIN_SESSION_LENGTH, first_half_length
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


# error codes of _first_bad_row
_OK, _LENGTH_CHANGES, _LENGTH_RANGE, _POSITION, _COUNT = 0, 1, 2, 3, 4


def _first_bad_row(starts_mask: np.ndarray, slen: np.ndarray, pos: np.ndarray, part: int) -> tuple[int, int, int]:
    """(error code, row, expected value) of the first bad row, as a row-by-row scan meets it.

    part 0/1/2 = FULL / FIRST_HALF / SECOND_HALF; the first half is ``first_half_length(L)`` rows.
    A scan checks, at each row r: first the row count of the run that ended just before r, then r's
    session_length (same as its run's), the run's length range, r's position. Each kind of error is
    found vectorized (numpy: no JIT start-up in each process); the first by (row, that order) wins.
    """
    n = starts_mask.shape[0]
    starts = np.flatnonzero(starts_mask)
    ends = np.append(starts[1:], n)
    rows = ends - starts  # per-run values are spread over their rows with np.repeat (2x a gather by run index)
    length = slen[starts].astype(np.int64)
    half = first_half_length(length)
    want = length if part == 0 else (half if part == 1 else length - half)
    first = half + 1 if part == 2 else np.ones_like(length)
    found = []  # (row where the scan meets it, order at that row, code, row reported, expected)
    run_length = np.repeat(length, rows)
    bad = np.flatnonzero(slen != run_length)
    if bad.size:
        r = int(bad[0])
        found.append((r, 1, _LENGTH_CHANGES, r, int(run_length[r])))
    bad = np.flatnonzero((length < MIN_SESSION_LENGTH) | (length > MAX_SESSION_LENGTH))
    if bad.size:
        k = int(bad[0])
        found.append((int(starts[k]), 2, _LENGTH_RANGE, int(starts[k]), int(length[k])))
    expected = np.arange(n) - np.repeat(starts - first, rows)  # position first + (row - run start)
    bad = np.flatnonzero(pos != expected)
    if bad.size:
        r = int(bad[0])
        found.append((r, 3, _POSITION, r, int(expected[r])))
    bad = np.flatnonzero(ends - starts != want)
    if bad.size:
        k = int(bad[0])
        found.append((int(ends[k]), 0, _COUNT, int(starts[k]), int(want[k])))
    if not found:
        return _OK, -1, 0
    _, _, code, row, value = min(found)
    return code, row, value


def session_runs(df: pl.DataFrame, path: Path, part: str = FULL) -> Runs:
    """Split rows into sessions and check each is contiguous, ordered and of the stated length.

    part: FULL (positions 1..L), FIRST_HALF (1..h) or SECOND_HALF (h+1..L), h = ``first_half_length(L)``
    (schemas/mssd.py).
    """
    sid = df["session_id"]
    starts_mask = (sid != sid.shift(1)).fill_null(True).to_numpy()
    slen = df["session_length"].to_numpy()
    pos = df["session_position"].to_numpy()
    code, r, want = _first_bad_row(starts_mask, slen, pos, {FULL: 0, FIRST_HALF: 1, SECOND_HALF: 2}[part])
    if code == _LENGTH_CHANGES:
        raise InputError(path, f"session {sid[r]!r}: session_length changes within the session", line=r + 2,
                         column="session_length")
    if code == _LENGTH_RANGE:
        raise InputError(path, f"session_length {slen[r]} outside {MIN_SESSION_LENGTH}..{MAX_SESSION_LENGTH}", line=r + 2, column="session_length")
    if code == _POSITION:
        raise InputError(path, f"session {sid[r]!r}: rows out of order (position {pos[r]} where {want} expected)",
                         line=r + 2, column="session_position")
    starts = np.flatnonzero(starts_mask)
    lengths = np.diff(np.append(starts, df.height))
    if code == _COUNT:
        i = int(np.searchsorted(starts, r))
        raise InputError(path, f"session {sid[r]!r} has {lengths[i]} rows but session_length {slen[r]} implies "
                         f"{want} in this file", line=r + 2, column="session_length")
    return Runs(starts=starts, lengths=lengths, session_ids=sid.gather(starts),
                session_length=slen[starts].astype(np.int64))


class SessionIdRegistry:
    """Detects a session id seen in two places (two files, or twice in one file), bounded in memory.

    Keeps one 64-bit hash per session (1 GB for 130M sessions); only on a hash match are the two
    files' ids re-read to compare exact strings, so a collision cannot raise a false alarm.
    """

    def __init__(self) -> None:
        self._hashes: list[np.ndarray] = []
        self.paths: list[Path] = []

    def add(self, path: Path, session_ids: pl.Series) -> None:
        self.add_hashes(path, session_ids.hash(seed=0).to_numpy())

    def add_hashes(self, path: Path, hashes: np.ndarray) -> None:
        """``session_ids.hash(seed=0)``, computed elsewhere (by the task that parsed the file)."""
        self.paths.append(path)
        self._hashes.append(hashes)

    def check(self, read_run_ids) -> None:
        """read_run_ids(path) -> the run session ids of that file (called only on a hash match)."""
        if not self._hashes:
            return
        h = np.concatenate(self._hashes)
        ordered = np.sort(h)  # numpy's vectorized sort: 8.5 ns a hash here, against 135 ns for a stable argsort
        if not np.any(ordered[1:] == ordered[:-1]):
            return  # no two hashes alike: no session in two places (the common case, decided in one sort)
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
