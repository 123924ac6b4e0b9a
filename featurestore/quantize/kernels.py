"""The quantizer bank's numba kernels (nogil: loaders call them from prefetch threads).

A module of their own so that importing ``featurestore.quantize`` does not load numba (0.16 s of
every ``fstore`` process): ``bank.py`` imports this on the first block it encodes or decodes."""

from __future__ import annotations

import numba
import numpy as np

from .base import N_LEVELS, NAN_CODE


@numba.njit(nogil=True, cache=True)
def encode_affine(x, lo, step, hi, lut, codes, max_abs, clipped_max_abs, sum_sq, count, nan, clipped):
    """Affine codes of x (n, C), as ``AffineQuantizer.encode`` computes them, plus error statistics."""
    n, cols = x.shape
    for i in range(n):
        for j in range(cols):
            v = np.float64(x[i, j])
            if np.isfinite(v):
                c = np.rint((v - lo[j]) / step[j])
                c = min(max(c, 0.0), np.float64(N_LEVELS - 1))
                k = np.uint8(c)
                codes[i, j] = k
                e = abs(v - np.float64(lut[k, j]))
                sum_sq[j] += e * e
                count[j] += 1
                if v < lo[j] or v > hi[j]:
                    clipped[j] += 1
                    if e > clipped_max_abs[j]:
                        clipped_max_abs[j] = e
                elif e > max_abs[j]:
                    max_abs[j] = e
            else:
                codes[i, j] = NAN_CODE
                nan[j] += 1


@numba.njit(nogil=True, cache=True)
def decode_affine(codes, lo, step, out):
    nan = np.float32(np.nan)
    for i in range(codes.shape[0]):
        for j in range(codes.shape[1]):
            c = codes[i, j]
            out[i, j] = np.float32(lo[j] + c * step[j]) if c != NAN_CODE else nan


@numba.njit(nogil=True, cache=True)
def decode_lut(codes, lut, out):
    for i in range(codes.shape[0]):
        for j in range(codes.shape[1]):
            out[i, j] = lut[codes[i, j], j]


@numba.njit(nogil=True, cache=True)
def decode_rows_affine(codes, length, lo, step, out):
    nan = np.float32(np.nan)
    for b in range(codes.shape[0]):
        for t in range(min(length[b], codes.shape[1])):
            for j in range(codes.shape[2]):
                c = codes[b, t, j]
                out[b, t, j] = np.float32(lo[j] + c * step[j]) if c != NAN_CODE else nan


@numba.njit(nogil=True, cache=True)
def decode_rows_lut(codes, length, lut, out):
    for b in range(codes.shape[0]):
        for t in range(min(length[b], codes.shape[1])):
            for j in range(codes.shape[2]):
                out[b, t, j] = lut[codes[b, t, j], j]
