"""Affine (scale/offset) 8-bit quantizer: uniform levels between a fitted min and max."""

from __future__ import annotations

import numpy as np

from .base import N_LEVELS, NAN_CODE, Quantizer


class AffineQuantizer(Quantizer):
    """code = round((x - lo) / step), clipped to 0..254; decode = lo + code * step.

    Values outside [lo, hi] are clipped (the error report in ``fstore info`` counts them).
    """

    codec_id = "fstore.affine_u8"

    def __init__(self, lo: float, hi: float):
        self.lo = float(lo)
        self.hi = float(hi)

    @property
    def step(self) -> float:
        span = self.hi - self.lo
        return span / (N_LEVELS - 1) if span > 0 else 1.0

    @classmethod
    def fit(cls, sample: np.ndarray) -> AffineQuantizer:
        finite = sample[np.isfinite(sample)]
        if finite.size == 0:
            return cls(0.0, 0.0)
        return cls(float(finite.min()), float(finite.max()))

    def _encode_finite(self, x: np.ndarray) -> np.ndarray:
        codes = np.rint((x - self.lo) / self.step)
        return np.clip(codes, 0, N_LEVELS - 1).astype(np.uint8)

    def lut(self) -> np.ndarray:
        table = (self.lo + np.arange(256, dtype=np.float64) * self.step).astype(np.float32)
        table[N_LEVELS:] = np.nan
        table[NAN_CODE] = np.nan
        return table

    def error_bound(self) -> float:
        # half a step, plus float32 rounding of the decoded value
        return self.step / 2 + float(np.spacing(np.float32(max(abs(self.lo), abs(self.hi)))))

    def fitted_range(self) -> tuple[float, float]:
        return self.lo, self.hi

    def get_config(self) -> dict:
        return {"id": self.codec_id, "lo": self.lo, "hi": self.hi}
