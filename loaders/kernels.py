"""numba kernels that build whole batches from the packed session cache (no per-session Python).

Every kernel is ``nogil`` so prefetch threads run them in parallel with the training loop.
"""

from __future__ import annotations

import numba
import numpy as np

from featurestore.schemas.mssd import first_half_length

_first_half = numba.njit(first_half_length)


@numba.njit(nogil=True, cache=True)
def fill_session_batch(sessions, offsets, track, log, half, track_out, ctx_log_out, tgt_track_out,
                       tgt_skip_out, length_out, skip_col, tracks=2**31 - 1):
    """Split each session at the MSSD rule (``first_half_length`` positions of context, the rest targets).

    track_out (B, 2*half) int32: every position's track; ctx_log_out (B, half, F) uint8: first
    half log bytes; tgt_track_out / tgt_skip_out (B, half): second half tracks and skip_2.
    Real positions only: ``padding.pad_rows`` zeroes the rest; lengths tell what is real.
    Returns -1, or the position in ``sessions`` of the first session whose offsets or track codes (below
    ``tracks``) are out of bounds: nothing is read out of bounds whatever the cache holds.
    """
    nlog = log.shape[1]
    for b in range(sessions.shape[0]):
        s = sessions[b]
        if s < 0 or s + 1 >= offsets.shape[0]:
            return b
        lo = offsets[s]
        n = offsets[s + 1] - lo
        if lo < 0 or n < 0 or n > track_out.shape[1] or lo + n > track.shape[0] or lo + n > log.shape[0]:
            return b
        for p in range(n):
            if track[lo + p] < 0 or track[lo + p] >= tracks:
                return b
        h = _first_half(n)
        length_out[b] = n
        for p in range(n):
            track_out[b, p] = track[lo + p]
        for p in range(h):
            for f in range(nlog):
                ctx_log_out[b, p, f] = log[lo + p, f]
        for p in range(n - h):
            tgt_track_out[b, p] = track[lo + h + p]
            tgt_skip_out[b, p] = log[lo + h + p, skip_col]
    return -1


@numba.njit(nogil=True, cache=True)
def join_features(length, table, ctx_track, tgt_track, ctx_out, tgt_out):
    """The CPU path of the track-feature join: rows of ``table`` for real positions only."""
    ncol = table.shape[1]
    for b in range(length.shape[0]):
        n = length[b]
        h = _first_half(n)
        for p in range(h):
            row = ctx_track[b, p]
            for j in range(ncol):
                ctx_out[b, p, j] = table[row, j]
        for p in range(n - h):
            row = tgt_track[b, p]
            for j in range(ncol):
                tgt_out[b, p, j] = table[row, j]


@numba.njit(nogil=True, cache=True)
def gather_session_bytes(sessions, offsets, track, log, table, batch, out_track, out_log, out_features):
    """The bare-gather limit: the same events' bytes for the same sessions, plus each event's feature
    row when ``table`` has columns (give it none for events only), into a reused batch-sized buffer
    (restarting every ``batch`` sessions). No padding, splitting or batching logic."""
    pos = 0
    for b in range(sessions.shape[0]):
        if b % batch == 0:
            pos = 0
        s = sessions[b]
        for e in range(offsets[s], offsets[s + 1]):
            t = track[e]
            out_track[pos] = t
            for f in range(log.shape[1]):
                out_log[pos, f] = log[e, f]
            for j in range(table.shape[1]):
                out_features[pos, j] = table[t, j]
            pos += 1
    return pos


@numba.njit(nogil=True, cache=True)
def fill_crops(clips, starts, offsets, frames, crop, out, length_out):
    """Copy up to ``crop`` frames from ``starts[b]`` of each clip (real frames only: shorter clips are
    padded by ``padding.pad_rows``). Reads only the frames it copies, straight from the memory map."""
    nbins = frames.shape[1]
    for b in range(clips.shape[0]):
        c = clips[b]
        lo = offsets[c] + starts[b]
        take = min(crop, offsets[c + 1] - lo)
        length_out[b] = take
        for t in range(take):
            for j in range(nbins):
                out[b, t, j] = frames[lo + t, j]


@numba.njit(nogil=True, cache=True)
def fill_multi_hot(clips, label_offsets, label_values, out):
    """(B, classes) 0/1 rows from a clip -> classes CSR."""
    out[:] = 0
    for b in range(clips.shape[0]):
        c = clips[b]
        for k in range(label_offsets[c], label_offsets[c + 1]):
            out[b, label_values[k]] = 1


@numba.njit(nogil=True, cache=True)
def gather_crops(clips, starts, offsets, frames, crop, lo, step, out):
    """The segment limit: the same crops' frames copied into a reused buffer, no padding or masks.

    With an empty ``lo`` the uint8 codes are copied (the floor for CUDA output, which ships codes);
    otherwise they are decoded to float32 as lo + code * step (the floor for CPU output).
    """
    decode = lo.shape[0] > 0
    pos = 0
    for b in range(clips.shape[0]):
        start = offsets[clips[b]] + starts[b]
        take = min(crop, offsets[clips[b] + 1] - start)
        if pos + take > out.shape[0]:
            pos = 0
        for t in range(take):
            for j in range(frames.shape[1]):
                if decode:
                    out[pos, j] = np.float32(lo[j] + frames[start + t, j] * step[j])
                else:
                    out[pos, j] = frames[start + t, j]
            pos += 1
    return pos


@numba.njit(nogil=True, cache=True)
def session_masks(length, half, track, ctx_track, ctx_mask, tgt_mask):
    """CPU path: first/second-half masks and first-half track ids (real positions), in the fill thread."""
    for b in range(length.shape[0]):
        n = length[b]
        h = _first_half(n)
        for p in range(half):
            ctx_mask[b, p] = p < h
            tgt_mask[b, p] = p < n - h
        for p in range(h):
            ctx_track[b, p] = track[b, p]
