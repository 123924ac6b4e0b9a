"""The vectorized session-run checks find the same first error as a plain row-by-row scan."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from featurestore.ingest import sessions as SS
from featurestore.schemas.mssd import MAX_SESSION_LENGTH, MIN_SESSION_LENGTH, first_half_length


def scan(starts_mask, slen, pos, part):
    """The rule, one row at a time (the kernel this replaced): (code, row, expected)."""
    n, run_start = len(starts_mask), 0
    for r in range(n + 1):
        if r == n or starts_mask[r]:
            if r > 0:
                length = int(slen[run_start])
                half = first_half_length(length)
                want = (length, half, length - half)[part]
                if r - run_start != want:
                    return SS._COUNT, run_start, want
            if r == n:
                break
            run_start = r
        length = int(slen[run_start])
        if slen[r] != length:
            return SS._LENGTH_CHANGES, r, length
        if length < MIN_SESSION_LENGTH or length > MAX_SESSION_LENGTH:
            return SS._LENGTH_RANGE, r, length
        first = first_half_length(length) + 1 if part == 2 else 1
        if pos[r] != first + (r - run_start):
            return SS._POSITION, r, first + (r - run_start)
    return SS._OK, -1, 0


@st.composite
def logs(draw):
    part = draw(st.integers(0, 2))
    mask, slen, pos = [], [], []
    for _ in range(draw(st.integers(1, 6))):
        length = draw(st.sampled_from([0, 1, 2, 3, 5, 8, 256]) if draw(st.booleans()) else st.integers(1, 9))
        half = first_half_length(length)
        count = max(1, (length, half, length - half)[part] + draw(st.sampled_from([0, 0, 0, -1, 1])))
        first = half + 1 if part == 2 else 1
        for i in range(count):
            mask.append(i == 0)
            slen.append(length)
            pos.append(first + i)
    slen, pos = np.array(slen, np.int32), np.array(pos, np.int32)
    for arr in (slen, pos):  # a stray value somewhere
        if draw(st.booleans()):
            arr[draw(st.integers(0, len(arr) - 1))] += draw(st.sampled_from([-1, 1]))
    return np.array(mask), slen, pos, part


@given(logs())
def test_first_bad_row_matches_the_row_scan(case):
    mask, slen, pos, part = case
    assert SS._first_bad_row(mask, slen, pos, part) == scan(mask, slen, pos, part)
