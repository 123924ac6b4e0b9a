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


@numba.njit(nogil=True, cache=True)
def pad_rows(out, length):
    """out[b, length[b]:] = 0 for every row b of a (B, T, ...) array; positions before stay untouched."""
    for b in range(out.shape[0]):
        out[b, length[b] :] = 0


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
