"""Feature tables: rows x columns of numbers stored as 8-bit codes, one quantizer per column.

On disk: ``<name>/codes`` is a (rows, columns) uint8 zarr array, chunked by rows; the group's
attributes hold each column's quantizer config and its measured quantization error. Row-major
codes make the batch-time join a single gather of ``columns`` bytes per track.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from ..quantize import Quantizer, quantizer_from_config
from .arrays import ROW_CHUNK, create


@dataclass
class ColumnError:
    """Quantization error of one column, measured over every value written."""

    max_abs: float = 0.0
    sum_sq: float = 0.0
    count: int = 0
    nan: int = 0

    def update(self, x: np.ndarray, decoded: np.ndarray) -> None:
        finite = np.isfinite(x)
        self.nan += int((~finite).sum())
        if finite.any():
            err = np.abs(x[finite] - decoded[finite].astype(np.float64))
            self.max_abs = max(self.max_abs, float(err.max()))
            self.sum_sq += float((err**2).sum())
            self.count += int(finite.sum())

    def to_json(self, bound: float) -> dict:
        rmse = (self.sum_sq / self.count) ** 0.5 if self.count else 0.0
        return {"max_abs_error": self.max_abs, "rmse": rmse, "bound": bound, "nan": self.nan}


class FeatureTableWriter:
    """Streaming writer: call ``append(block)`` with float blocks of shape (n, columns)."""

    def __init__(self, group: zarr.Group, name: str, columns: list[str], quantizers: list[Quantizer],
                 chunk_rows: int = ROW_CHUNK):
        if len(columns) != len(quantizers):
            raise ValueError("one quantizer per column")
        self.group = group.require_group(name)
        self.columns, self.quantizers = columns, quantizers
        self.codes = create(self.group, "codes", "uint8", (0, len(columns)), (chunk_rows, len(columns)))
        self.errors = [ColumnError() for _ in columns]
        self.rows = 0

    def append(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float64)
        codes = np.empty(block.shape, dtype=np.uint8)
        for j, q in enumerate(self.quantizers):
            codes[:, j] = q.encode(block[:, j])
            self.errors[j].update(block[:, j], q.decode(codes[:, j]))
        self.codes.resize((self.rows + len(block), len(self.columns)))
        self.codes[self.rows :] = codes
        self.rows += len(block)

    def close(self) -> dict:
        meta = {
            "kind": "feature_table",
            "rows": self.rows,
            "columns": [
                {"name": c, "codec": q.get_config(), **e.to_json(q.error_bound())}
                for c, q, e in zip(self.columns, self.quantizers, self.errors, strict=True)
            ],
        }
        self.group.attrs.update(meta)
        return meta


class FeatureTable:
    """Reader: raw codes as numpy, per-column decode, and the (256, columns) dequantization table."""

    def __init__(self, group: zarr.Group):
        self.group = group
        self.meta = dict(group.attrs)
        self.columns: list[str] = [c["name"] for c in self.meta["columns"]]
        self.quantizers: list[Quantizer] = [quantizer_from_config(c["codec"]) for c in self.meta["columns"]]
        self.array = group["codes"]

    @property
    def rows(self) -> int:
        return int(self.array.shape[0])

    def codes(self) -> np.ndarray:
        """All codes, (rows, columns) uint8: 3.7M tracks x 29 columns is 107 MB."""
        return np.asarray(self.array[:])

    def column_index(self, name: str) -> int:
        try:
            return self.columns.index(name)
        except ValueError:
            raise KeyError(f"no column {name!r}; columns are {self.columns}") from None

    def lut(self) -> np.ndarray:
        """float32 (256, columns): lut[code, j] is column j's decoded value for that code."""
        return np.stack([q.lut() for q in self.quantizers], axis=1)

    def dequantize(self, codes: np.ndarray | None = None) -> np.ndarray:
        """float32 values of ``codes`` (rows, columns); all rows when codes is None."""
        codes = self.codes() if codes is None else codes
        return self.lut()[codes, np.arange(codes.shape[1])]
