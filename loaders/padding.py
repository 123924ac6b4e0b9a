"""Every pad zero a batch has is written here; copy and decode kernels write real positions only.

Batch buffers are reused (see ``prefetch``), so padding must be rewritten for every batch: on the
CPU by ``pad_rows`` over each (B, T, ...) output with the lengths that say where its padding starts;
on the device, after decoding, by ``pad_on_device``; and feature joins on the device gather padded
positions from the zero row of ``table_with_zero_row``.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from featurestore.schemas.mssd import first_half_length

_first_half = numba.njit(inline="always")(first_half_length)


@numba.njit(nogil=True, cache=True)
def pad_rows(out, length):
    """out[b, length[b]:] = 0 for every row b of a (B, T, ...) array; positions before stay untouched."""
    for b in range(out.shape[0]):
        out[b, length[b] :] = 0


@numba.njit(nogil=True, cache=True)
def pad_session_events(length, track, ctx_log, tgt_track, tgt_skip):
    """Session batches: zero every position past each session's length (``track``), its first half
    (``ctx_log``) or its second half (``tgt_*``). One call per batch: seven ``pad_rows`` dispatches plus
    the half arithmetic in numpy cost about 10% of a CPU session batch."""
    for b in range(length.shape[0]):
        n = length[b]
        h = _first_half(n)
        track[b, n:] = 0
        ctx_log[b, h:] = 0
        tgt_track[b, n - h :] = 0
        tgt_skip[b, n - h :] = 0


@numba.njit(nogil=True, cache=True)
def pad_session_features(length, ctx_track, ctx_features, tgt_features):
    """The CPU-output extras of a session batch: first-half ids and both halves' joined features."""
    for b in range(length.shape[0]):
        n = length[b]
        h = _first_half(n)
        ctx_track[b, h:] = 0
        ctx_features[b, h:] = 0
        tgt_features[b, n - h :] = 0


def pad_all(pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """``pad_rows`` over several (array, lengths) pairs of one batch."""
    for out, length in pairs:
        pad_rows(out, length)


def pad_on_device(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero (B, T, ...) ``x`` where the (B, T) ``mask`` is False (NaN-safe, unlike multiplying)."""
    return torch.where(mask.reshape(*mask.shape, *([1] * (x.dim() - mask.dim()))), x, 0)


def table_with_zero_row(rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised (rows + 1, cols) table whose last row (index ``rows``) is zero: the caller fills
    rows 0..rows-1, and padded positions gather row ``rows``."""
    out = torch.empty((rows + 1, cols), dtype=dtype, device=device)
    out[rows] = 0
    return out
