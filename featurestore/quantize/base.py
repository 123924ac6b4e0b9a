"""The quantizer abstraction: a numcodecs ``Codec`` that maps float columns to uint8 codes.

Every quantizer reserves code 255 for NaN (``NAN_CODE``), so a column's missing values survive
a round trip. Every quantizer can also describe its decoding as a 256-entry lookup table
(``lut()``): loaders ship uint8 codes to the device and dequantize there with one gather,
whatever quantizer wrote the column.
"""

from __future__ import annotations

import abc

import numpy as np
from numcodecs.abc import Codec

NAN_CODE = 255
N_LEVELS = 255  # codes 0..254 carry values, 255 is NaN


class Quantizer(Codec, abc.ABC):
    """Float -> uint8 codec with a JSON config (``get_config`` / ``from_config``)."""

    codec_id: str

    @abc.abstractmethod
    def lut(self) -> np.ndarray:
        """float32 array of 256 decoded values, index = code (index 255 is NaN)."""

    @abc.abstractmethod
    def _encode_finite(self, x: np.ndarray) -> np.ndarray:
        """Codes for finite float64 values."""

    def encode(self, buf) -> np.ndarray:
        x = np.asarray(buf, dtype=np.float64)
        out = np.full(x.shape, NAN_CODE, dtype=np.uint8)
        finite = np.isfinite(x)
        if finite.any():
            out[finite] = self._encode_finite(x[finite])
        return out

    def decode(self, buf, out=None) -> np.ndarray:
        codes = np.asarray(buf).view(np.uint8) if np.asarray(buf).dtype != np.uint8 else np.asarray(buf)
        values = self.lut()[codes]
        if out is not None:
            out[...] = values
            return out
        return values

    @abc.abstractmethod
    def error_bound(self) -> float:
        """Largest |x - decode(encode(x))| for finite x inside the fitted range."""

    @abc.abstractmethod
    def fitted_range(self) -> tuple[float, float]:
        """[lo, hi]: values inside are coded within ``error_bound``; values outside are clipped."""
