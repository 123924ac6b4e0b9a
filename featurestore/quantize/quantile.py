"""Quantile (lookup-table) 8-bit quantizer for skewed columns.

Bin edges are the fitted sample's quantiles, so every code is used about equally often; each
code decodes to the mean of its bin (stored as a 255-entry table). A long tail that would waste
most affine levels costs nothing here.
"""

from __future__ import annotations

import numpy as np

from .base import N_LEVELS, NAN_CODE, Quantizer


class QuantileQuantizer(Quantizer):
    """code = number of inner edges <= x; decode = per-bin centre table."""

    codec_id = "fstore.quantile_u8"

    def __init__(self, edges: list[float], centers: list[float]):
        self.edges = np.asarray(edges, dtype=np.float64)  # inner edges, ascending, len = len(centers) - 1
        self.centers = np.asarray(centers, dtype=np.float64)
        if self.centers.size < 1 or self.edges.size != self.centers.size - 1:
            raise ValueError("quantile quantizer needs len(edges) == len(centers) - 1 >= 0")

    @classmethod
    def fit(cls, sample: np.ndarray) -> QuantileQuantizer:
        finite = np.sort(sample[np.isfinite(sample)].astype(np.float64))
        if finite.size == 0:
            return cls([], [0.0])
        qs = np.quantile(finite, np.linspace(0, 1, N_LEVELS + 1)[1:-1])
        edges = np.unique(qs)
        # centre of each bin = midpoint of its value range in the sample (minimises the max error)
        idx = np.searchsorted(edges, finite, side="right")
        lo = np.full(edges.size + 1, np.inf)
        hi = np.full(edges.size + 1, -np.inf)
        np.minimum.at(lo, idx, finite)
        np.maximum.at(hi, idx, finite)
        empty = ~np.isfinite(lo)
        centers = np.where(empty, 0.0, (lo + hi) / 2)
        # empty bins cannot occur for sample values; give them a neighbour's centre for monotonicity
        for i in np.flatnonzero(empty):
            centers[i] = edges[min(i, edges.size - 1)]
        return cls(edges.tolist(), centers.tolist())

    def _encode_finite(self, x: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.edges, x, side="right").astype(np.uint8)

    def lut(self) -> np.ndarray:
        table = np.full(256, np.nan, dtype=np.float32)
        table[: self.centers.size] = self.centers
        table[NAN_CODE] = np.nan
        return table

    def error_bound(self) -> float:
        # within the fitted range the worst case is the widest bin's half-width
        bounds = np.concatenate([[self.centers[0]], self.edges, [self.centers[-1]]])
        half = np.maximum(np.abs(self.centers - bounds[:-1]), np.abs(bounds[1:] - self.centers))
        return float(half.max()) if half.size else 0.0

    def get_config(self) -> dict:
        return {"id": self.codec_id, "edges": self.edges.tolist(), "centers": self.centers.tolist()}
