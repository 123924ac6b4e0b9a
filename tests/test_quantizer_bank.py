"""The quantizer bank: one encode / decode for tables and frames, on the CPU and in torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from featurestore.quantize import (
    NAN_CODE,
    AffineQuantizer,
    ExactQuantizer,
    QuantileQuantizer,
    QuantizerBank,
    RangeScan,
)


def _block(draw_rows: int, cols: int, seed: int, nan: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((draw_rows, cols)) * rng.uniform(0.1, 100, cols) + rng.uniform(-50, 50, cols)
    x[:, ::3] = np.exp(x[:, ::3] / 30)  # skewed columns: "auto" gives them quantile codes
    if nan and x.size:
        x[rng.random(x.shape) < 0.05] = np.nan
    return x.astype(np.float32)


kinds = st.sampled_from(["affine", "quantile", "auto"])


@given(rows=st.integers(0, 400), cols=st.integers(1, 9), seed=st.integers(0, 2**31 - 1), kind=kinds,
       nan=st.booleans())
def test_every_decode_path_agrees_bit_for_bit(rows, cols, seed, kind, nan):
    """numba CPU decode, the lookup table, each codec's own decode and the torch decoder are identical."""
    x = _block(rows, cols, seed, nan)
    bank = QuantizerBank.fit(x, kind, columns=cols)
    codes = bank.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == x.shape
    table = bank.lut()[codes, np.arange(cols)]
    cpu = bank.decode(codes)
    np.testing.assert_array_equal(cpu, table)  # NaN == NaN for assert_array_equal
    for j, q in enumerate(bank.quantizers):
        np.testing.assert_array_equal(q.decode(codes[:, j]), table[:, j])
    dev = bank.torch_decoder("cpu")(torch.from_numpy(codes))
    np.testing.assert_array_equal(dev.numpy(), table)
    np.testing.assert_array_equal(bank.torch_decoder("cpu").decode_array(codes, block=7).numpy(), table)
    assert (bank.affine is not None) == all(type(q) is AffineQuantizer for q in bank.quantizers)
    assert bank.affine is not None or kind != "affine"
    if rows:
        assert np.array_equal(np.isnan(cpu), np.isnan(x))


@given(b=st.integers(1, 6), t=st.integers(1, 12), cols=st.integers(1, 5), seed=st.integers(0, 2**31 - 1),
       affine=st.booleans())
def test_decode_rows_writes_only_real_positions(b, t, cols, seed, affine):
    rng = np.random.default_rng(seed)
    bank = QuantizerBank.fit(_block(50, cols, seed, False), "affine" if affine else "quantile")
    codes = rng.integers(0, 256, (b, t, cols)).astype(np.uint8)
    length = rng.integers(0, t + 1, b).astype(np.int64)
    out = np.full((b, t, cols), 7.5, dtype=np.float32)
    bank.decode_rows(codes, length, out)
    full = bank.decode(codes)
    for i in range(b):
        np.testing.assert_array_equal(out[i, : length[i]], full[i, : length[i]])
        assert np.all(out[i, length[i] :] == 7.5)


@given(rows=st.integers(1, 300), cols=st.integers(1, 6), seed=st.integers(0, 2**31 - 1), kind=kinds,
       sample=st.integers(1, 300), exact=st.booleans())
def test_encoder_statistics(rows, cols, seed, kind, sample, exact):
    """Codes equal each codec's encode; in-range errors stay within the bound; clipped values counted."""
    x = _block(rows, cols, seed, nan=True)
    extremes = None
    if exact:
        extremes = RangeScan(cols)
        extremes.update(x)
    bank = QuantizerBank.fit(x[:sample], kind, extremes, columns=cols)
    enc = bank.encoder()
    codes = np.concatenate([enc.encode(x[:5]), enc.encode(x[5:])])
    expected = np.stack([q.encode(x[:, j]) for j, q in enumerate(bank.quantizers)], axis=1)
    np.testing.assert_array_equal(codes, expected)
    back = bank.decode(codes).astype(np.float64)
    finite = np.isfinite(x)
    err = np.where(finite, np.abs(back - x), 0.0)
    lo, hi = bank.ranges()
    outside = finite & ((x < lo) | (x > hi))
    for j, r in enumerate(enc.report()):
        assert r["codec"] == bank.quantizers[j].get_config()
        assert r["nan"] == int((~finite[:, j]).sum())
        assert r["clipped"] == int(outside[:, j].sum())
        assert r["max_abs_error"] == pytest.approx(err[~outside[:, j], j].max(initial=0), abs=1e-12)
        assert r["max_abs_error"] <= r["bound"] * (1 + 1e-9) + 1e-12
        assert r["clipped_max_abs_error"] == pytest.approx(err[outside[:, j], j].max(initial=0), abs=1e-12)
        if exact:
            assert r["clipped"] == 0


def test_auto_fit_on_a_sample_without_finite_values_encodes_later_values():
    """Found by hypothesis: an all-NaN sample column gave exact codes, which then refused real values."""
    sample = np.array([[np.nan, 1.5], [np.nan, 2.5]])
    bank = QuantizerBank.fit(sample, "auto")
    assert type(bank.quantizers[0]) is AffineQuantizer
    enc = bank.encoder()
    codes = enc.encode(np.array([[3.25, 2.0], [np.nan, 1.5]]))
    assert codes[1, 0] == NAN_CODE
    assert enc.report()[0]["clipped"] == 1  # 3.25 lies outside the (empty) fitted range


def test_mixed_bank_and_nan_code():
    bank = QuantizerBank([AffineQuantizer(0, 1), ExactQuantizer(3), QuantileQuantizer([0.5], [0.0, 1.0])])
    assert bank.affine is None
    codes = np.array([[0, 0, 0], [254, 2, 1], [NAN_CODE, NAN_CODE, NAN_CODE]], dtype=np.uint8)
    out = bank.decode(codes)
    np.testing.assert_array_equal(out[:2], [[0.0, 3.0, 0.0], [1.0, 5.0, 1.0]])
    assert np.isnan(out[2]).all()
    assert bank.from_configs(json.loads(json.dumps(bank.configs()))).configs() == bank.configs()
    with pytest.raises(ValueError, match="uint8"):
        bank.decode(codes.astype(np.int16))


def test_codecs_load_through_the_entry_point_without_importing_fstore(store):
    """A process that never imports fstore decodes a store's feature table with zarr + numcodecs alone."""
    script = f"""
import json, sys
import numcodecs, numpy as np, zarr
group = zarr.open_group({str(store.path)!r}, mode="r")["tracks"]
assert not any(m.startswith("featurestore") for m in sys.modules), "imported fstore first"
columns = group.attrs["columns"]
codes = group["codes"][:]
values = np.stack([numcodecs.get_codec(c["codec"]).decode(codes[:, j]) for j, c in enumerate(columns)], axis=1)
print(json.dumps(values[:50].tolist()))
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    got = np.array(json.loads(res.stdout.replace("NaN", "null")), dtype=np.float64)
    want = store.feature_table("tracks").dequantize()[:50]
    np.testing.assert_array_equal(got, want.astype(np.float64))
