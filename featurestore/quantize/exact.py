"""Exact 8-bit codes for integers, booleans and small categoricals: value = offset + code."""

from __future__ import annotations

import numpy as np

from .base import N_LEVELS, NAN_CODE, Quantizer


class ExactQuantizer(Quantizer):
    """Integer-valued columns whose range spans at most 255 values are stored without loss.

    ``labels`` (optional) names the values of a categorical column (e.g. ``["major", "minor"]``):
    code i means labels[i].
    """

    codec_id = "fstore.exact_u8"

    def __init__(self, offset: int = 0, labels: list[str] | None = None):
        self.offset = int(offset)
        self.labels = list(labels) if labels is not None else None

    @classmethod
    def fits(cls, sample: np.ndarray) -> bool:
        finite = sample[np.isfinite(sample)]
        if finite.size == 0:
            return True
        return bool(np.all(finite == np.rint(finite)) and finite.max() - finite.min() < N_LEVELS)

    @classmethod
    def fit(cls, sample: np.ndarray) -> ExactQuantizer:
        finite = sample[np.isfinite(sample)]
        return cls(int(finite.min()) if finite.size else 0)

    def _encode_finite(self, x: np.ndarray) -> np.ndarray:
        codes = x - self.offset
        bad = (codes < 0) | (codes >= N_LEVELS) | (codes != np.rint(codes))
        if bad.any():
            raise ValueError(
                f"value {x[bad][0]!r} cannot be stored exactly (offset {self.offset}, 255 levels)"
            )
        return codes.astype(np.uint8)

    def lut(self) -> np.ndarray:
        table = (self.offset + np.arange(256)).astype(np.float32)
        table[NAN_CODE] = np.nan
        return table

    def error_bound(self) -> float:
        return 0.0

    def fitted_range(self) -> tuple[float, float]:
        return float(self.offset), float(self.offset + N_LEVELS - 1)

    def get_config(self) -> dict:
        return {"id": self.codec_id, "offset": self.offset, "labels": self.labels}
