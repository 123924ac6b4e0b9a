"""Feature tables: rows x columns of numbers stored as 8-bit codes, one quantizer per column.

On disk: ``<name>/codes`` is a (rows, columns) uint8 zarr array, chunked by rows; the group's
attributes hold each column's quantizer config and its measured quantization error. Row-major
codes make the batch-time join a single gather of ``columns`` bytes per track.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..quantize import Quantizer, QuantizerBank
from .arrays import ROW_CHUNK, ChunkedAppender, create

if TYPE_CHECKING:
    import zarr

    from .chunks import LocalGroup


class FeatureTableWriter:
    """Streaming writer: call ``append(block)`` with float blocks of shape (n, columns)."""

    def __init__(self, group: zarr.Group | LocalGroup, name: str, columns: list[str], quantizers: list[Quantizer],
                 chunk_rows: int = ROW_CHUNK):
        if len(columns) != len(quantizers):
            raise ValueError("one quantizer per column")
        self.group = group.require_group(name)
        self.columns = columns
        self.encoder = QuantizerBank(quantizers).encoder()
        self.codes = ChunkedAppender(create(self.group, "codes", "uint8", (0, len(columns)), (chunk_rows, len(columns))))
        self.rows = 0

    def append(self, block: np.ndarray) -> None:
        self.codes.append(self.encoder.encode(np.asarray(block, dtype=np.float64)))
        self.rows += len(block)

    def close(self) -> dict:
        self.codes.close()
        meta = {
            "kind": "feature_table",
            "rows": self.rows,
            "columns": [{"name": c, **stats} for c, stats in zip(self.columns, self.encoder.report(), strict=True)],
        }
        self.group.attrs.update(meta)
        return meta


class FeatureTable:
    """Reader: raw codes as numpy, per-column decode, and the (256, columns) dequantization table."""

    def __init__(self, group: zarr.Group):
        self.group = group
        self.meta = dict(group.attrs)
        self.columns: list[str] = [c["name"] for c in self.meta["columns"]]
        self.bank = QuantizerBank.from_configs([c["codec"] for c in self.meta["columns"]])
        self.array = group["codes"]

    @property
    def quantizers(self) -> list[Quantizer]:
        return self.bank.quantizers

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
        return self.bank.lut()

    def dequantize(self, codes: np.ndarray | None = None) -> np.ndarray:
        """float32 values of ``codes`` (rows, columns); all rows when codes is None."""
        return self.bank.decode(self.codes() if codes is None else np.asarray(codes))
