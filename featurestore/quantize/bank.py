"""The quantizer bank: one quantizer per column (feature tables) or per bin (frame sets).

Every place that turns floats into codes or codes back into floats goes through a bank: both store
writers (fit on a sample plus exact extremes, encode 2-D blocks with error statistics), both store
readers, and both loaders (decode on the CPU with numba, or on the device with torch).

Decoding has two paths with identical results:
- the lookup table ``lut()`` (256, C): any quantizer; row ``NAN_CODE`` is NaN;
- the affine fast path, when every quantizer is affine: ``float32(lo + code * step)`` computed in
  float64 with a separate multiply and add (no fused multiply-add), which is how the table itself is
  built, so the two are bit-identical. Arithmetic vectorizes where a table gather cannot (measured
  in ``fstore bench loader`` on frame stores).

Error statistics (``BlockEncoder.report``) separate values inside each quantizer's fitted range,
for which ``bound`` is guaranteed, from values outside it (clipped to the nearest level: their error
is unbounded, so it is reported on its own as ``clipped_max_abs_error``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .affine import AffineQuantizer
from .base import NAN_CODE, Quantizer
from .choose import choose_quantizer, quantizer_from_config

# rows of a sample a (slow, per-column) non-affine fit sees at most
FIT_ROWS = 1 << 16

__all__ = ["FIT_ROWS", "BlockEncoder", "QuantizerBank", "RangeScan", "TorchDecoder"]


class RangeScan:
    """Running per-column finite min / max (a first, read-only pass before fitting quantizers)."""

    def __init__(self, columns: int):
        self.lo = np.full(columns, np.inf)
        self.hi = np.full(columns, -np.inf)

    def update(self, block: np.ndarray) -> None:
        block = np.asarray(block)
        if not len(block):
            return
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(block)
            self.lo = np.fmin(self.lo, np.where(finite, block, np.inf).min(axis=0))
            self.hi = np.fmax(self.hi, np.where(finite, block, -np.inf).max(axis=0))

    def merge(self, other: RangeScan) -> None:
        self.lo = np.fmin(self.lo, other.lo)
        self.hi = np.fmax(self.hi, other.hi)

    def affine(self) -> list[Quantizer]:
        """Affine quantizers over [lo, hi] per column (what ``AffineQuantizer.fit`` gives on the same data)."""
        return [AffineQuantizer(float(a), float(b)) if a <= b else AffineQuantizer(0.0, 0.0)
                for a, b in zip(self.lo, self.hi, strict=True)]

    def rows(self) -> np.ndarray:
        """The extremes as sample rows (0 to 2 of them: columns with no finite value are NaN)."""
        seen = self.lo <= self.hi
        if not np.any(seen):
            return np.zeros((0, self.lo.size))
        return np.stack([np.where(seen, self.lo, np.nan), np.where(seen, self.hi, np.nan)])


class QuantizerBank:
    """An ordered list of quantizers, one per column, with block encode / decode on CPU and device."""

    def __init__(self, quantizers: Sequence[Quantizer]):
        self.quantizers: list[Quantizer] = list(quantizers)
        self._lut: np.ndarray | None = None
        self.affine: tuple[np.ndarray, np.ndarray] | None = None
        if self.quantizers and all(type(q) is AffineQuantizer for q in self.quantizers):
            self.affine = (np.array([q.lo for q in self.quantizers], dtype=np.float64),
                           np.array([q.step for q in self.quantizers], dtype=np.float64))

    # --- construction -------------------------------------------------------------------------------
    @classmethod
    def fit(cls, sample: np.ndarray | Sequence[np.ndarray], kind: str = "auto",
            extremes: RangeScan | None = None, columns: int | None = None) -> QuantizerBank:
        """Fit one quantizer per column of ``sample`` (rows, C), or of a list of such blocks.

        ``kind`` as in :func:`choose_quantizer` ("auto", "affine", "quantile", "exact"). ``extremes``
        (exact per-column min / max of all the data) widen the fitted ranges so nothing is clipped.
        Affine fits are min / max only (vectorized, no copy); other fits see at most ``FIT_ROWS``
        rows of the sample, drawn deterministically, plus the extremes. ``columns`` is needed only
        when the sample may be empty.
        """
        blocks = [np.asarray(b) for b in ([sample] if isinstance(sample, np.ndarray) else sample)]
        blocks = [b if b.dtype.kind == "f" else b.astype(np.float64) for b in blocks]
        if columns is None:
            columns = blocks[0].shape[1] if blocks else (extremes.lo.size if extremes is not None else 0)
        if kind == "affine":
            scan = RangeScan(columns)
            for b in blocks:
                scan.update(b)
            if extremes is not None:
                scan.merge(extremes)
            return cls(scan.affine())
        parts = [b.astype(np.float64, copy=False) for b in blocks if len(b)]
        x = np.concatenate(parts, axis=0) if parts else np.zeros((0, columns))
        if len(x) > FIT_ROWS:
            x = x[np.random.default_rng(0).choice(len(x), FIT_ROWS, replace=False)]
        if extremes is not None:
            x = np.concatenate([x, extremes.rows()], axis=0)
        return cls([choose_quantizer(x[:, j], kind) for j in range(columns)])

    @classmethod
    def from_configs(cls, configs: Sequence[dict]) -> QuantizerBank:
        """Rebuild from the JSON configs kept in the store's metadata."""
        return cls([quantizer_from_config(c) for c in configs])

    def configs(self) -> list[dict]:
        return [q.get_config() for q in self.quantizers]

    def __len__(self) -> int:
        return len(self.quantizers)

    # --- tables ---------------------------------------------------------------------------------------
    def lut(self) -> np.ndarray:
        """float32 (256, C): lut[code, j] is column j's decoded value for that code (row 255: NaN)."""
        if self._lut is None:
            self._lut = (np.stack([q.lut() for q in self.quantizers], axis=1) if self.quantizers
                         else np.zeros((256, 0), np.float32))
        return self._lut

    def bounds(self) -> np.ndarray:
        """float64 (C,): each column's guaranteed |error| for values inside its fitted range."""
        return np.array([q.error_bound() for q in self.quantizers], dtype=np.float64)

    def ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """float64 (C,) pair: each column's fitted range [lo, hi]; values outside it are clipped."""
        r = np.array([q.fitted_range() for q in self.quantizers], dtype=np.float64).reshape(-1, 2)
        return r[:, 0].copy(), r[:, 1].copy()

    # --- encode ----------------------------------------------------------------------------------------
    def encoder(self) -> BlockEncoder:
        """A block encoder that also accumulates per-column error statistics."""
        return BlockEncoder(self)

    def encode(self, block: np.ndarray) -> np.ndarray:
        """uint8 codes of a float block (rows, C), without statistics."""
        block = np.asarray(block)
        codes = np.empty(block.shape, dtype=np.uint8)
        for j, q in enumerate(self.quantizers):
            codes[:, j] = q.encode(block[:, j])
        return codes

    # --- decode ----------------------------------------------------------------------------------------
    def decode(self, codes: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """float32 values of uint8 codes (..., C) on the CPU (numba; affine fast path when possible)."""
        codes = np.asarray(codes)
        if codes.dtype != np.uint8 or codes.shape[-1:] != (len(self),):
            raise ValueError(f"codes must be uint8 (..., {len(self)}), got {codes.dtype} {codes.shape}")
        if out is None:
            out = np.empty(codes.shape, dtype=np.float32)
        flat_codes = codes.reshape(-1, len(self))
        flat_out = out.reshape(-1, len(self))  # a view: out must be C-contiguous
        from . import kernels  # numba: loaded on first decode, never by an ingest that only encodes

        if self.affine is not None:
            kernels.decode_affine(flat_codes, *self.affine, flat_out)
        else:
            kernels.decode_lut(flat_codes, self.lut(), flat_out)
        return out

    def decode_rows(self, codes: np.ndarray, length: np.ndarray, out: np.ndarray) -> None:
        """Decode (B, T, C) codes into (B, T, C) float32 ``out`` for t < length[b] only; the rest of
        ``out`` is left as it is (the loader's one padding kernel owns the zeros)."""
        from . import kernels

        if self.affine is not None:
            kernels.decode_rows_affine(codes, length, *self.affine, out)
        else:
            kernels.decode_rows_lut(codes, length, self.lut(), out)

    def torch_decoder(self, device, dtype=None) -> TorchDecoder:
        """A decoder whose tables live on ``device`` (shipped once)."""
        return TorchDecoder(self, device, dtype)


class BlockEncoder:
    """Encodes 2-D float blocks with one bank and keeps per-column error statistics of every value."""

    def __init__(self, bank: QuantizerBank):
        self.bank = bank
        n = len(bank)
        self.bound = bank.bounds()
        self.lo, self.hi = bank.ranges()
        self.max_abs = np.zeros(n)  # over values inside the fitted range: <= bound
        self.clipped_max_abs = np.zeros(n)  # over values outside it
        self.sum_sq = np.zeros(n)
        self.count = np.zeros(n, dtype=np.int64)
        self.nan = np.zeros(n, dtype=np.int64)
        self.clipped = np.zeros(n, dtype=np.int64)

    def encode(self, block: np.ndarray) -> np.ndarray:
        """uint8 codes (rows, C) of a float block, identical to each column's ``Quantizer.encode``."""
        x = np.asarray(block)
        if x.ndim != 2 or x.shape[1] != len(self.bank):
            raise ValueError(f"block must be (rows, {len(self.bank)}), got {x.shape}")
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        codes = np.empty(x.shape, dtype=np.uint8)
        if self.bank.affine is not None:
            from . import kernels

            lo, step = self.bank.affine
            kernels.encode_affine(x, lo, step, self.hi, self.bank.lut(), codes, self.max_abs, self.clipped_max_abs,
                           self.sum_sq, self.count, self.nan, self.clipped)
            return codes
        x = x.astype(np.float64, copy=False)
        for j, q in enumerate(self.bank.quantizers):
            codes[:, j] = q.encode(x[:, j])
        # one float64 array of the block's size beside it, worked in place (the same values and sums as
        # |x - decoded| written out step by step: a 1.85M-track file held five such arrays at once, 2 GB)
        err = self.bank.lut()[codes, np.arange(len(self.bank))].astype(np.float64)
        finite = np.isfinite(x)
        with np.errstate(invalid="ignore"):
            np.subtract(x, err, out=err)
            np.abs(err, out=err)
            err[~finite] = 0.0
            outside = finite & ((x < self.lo) | (x > self.hi))
        if len(x):  # err >= 0, so a max over the rows kept, from 0, equals the max with the others zeroed
            self.max_abs = np.maximum(self.max_abs, np.max(err, axis=0, where=~outside, initial=0.0))
            self.clipped_max_abs = np.maximum(self.clipped_max_abs, np.max(err, axis=0, where=outside, initial=0.0))
        np.square(err, out=err)
        self.sum_sq += err.sum(axis=0)
        self.count += finite.sum(axis=0)
        self.nan += (~finite).sum(axis=0)
        self.clipped += outside.sum(axis=0)
        return codes

    def report(self) -> list[dict]:
        """Per column: codec config, ``max_abs_error`` (inside the fitted range, <= ``bound``), ``rmse``
        (all finite values), ``nan``, ``clipped`` (values outside the fitted range) and
        ``clipped_max_abs_error`` (their largest error)."""
        rmse = np.sqrt(self.sum_sq / np.maximum(self.count, 1))
        return [
            {"codec": q.get_config(), "max_abs_error": float(self.max_abs[j]), "rmse": float(rmse[j]),
             "bound": float(self.bound[j]), "nan": int(self.nan[j]), "clipped": int(self.clipped[j]),
             "clipped_max_abs_error": float(self.clipped_max_abs[j])}
            for j, q in enumerate(self.bank.quantizers)
        ]


class TorchDecoder:
    """Decodes uint8 code tensors (..., C) on one device: the affine fast path (float32 output only)
    or a gather from the (256, C) table. Code 255 decodes to NaN either way."""

    def __init__(self, bank: QuantizerBank, device, dtype=None):
        import torch  # the store itself does not need torch; loaders do

        self.device = torch.device(device)
        self.dtype = torch.float32 if dtype is None else dtype
        self.columns = len(bank)
        self.lut = torch.from_numpy(bank.lut()).to(self.device, self.dtype)
        self._cols = torch.arange(self.columns, device=self.device)
        self.affine = None
        if bank.affine is not None and self.dtype == torch.float32:
            self.affine = tuple(torch.from_numpy(a).to(self.device) for a in bank.affine)

    def __call__(self, codes):
        import torch

        if self.affine is not None:
            lo, step = self.affine
            x = (codes.to(torch.float64) * step + lo).to(torch.float32)  # mul, then add: no FMA
            return torch.where(codes == NAN_CODE, torch.nan, x)
        return self.lut[codes.long(), self._cols]

    def decode_array(self, codes: np.ndarray, out=None, block: int = 1 << 20):
        """Ship numpy codes (rows, C) to the device a block of rows at a time and decode them into
        ``out`` (a (rows, C) tensor on the device; allocated when None). Bounded temporaries."""
        import torch

        if out is None:
            out = torch.empty(codes.shape, dtype=self.dtype, device=self.device)
        for start in range(0, codes.shape[0], block):
            stop = min(start + block, codes.shape[0])
            out[start:stop] = self(torch.from_numpy(np.ascontiguousarray(codes[start:stop])).to(self.device))
        return out
