"""Property tests: feature tables, ragged sets and dictionaries survive write -> read."""

from __future__ import annotations

import tempfile
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import zarr
from hypothesis import given
from hypothesis import strategies as st

from featurestore.quantize import (
    NAN_CODE,
    AffineQuantizer,
    ExactQuantizer,
    QuantileQuantizer,
    choose_quantizer,
    quantizer_from_config,
)
from featurestore.store import (
    Dictionary,
    FeatureTableWriter,
    IdListWriter,
    RaggedWriter,
    Store,
    StoreError,
    staged_directory,
    write_manifest,
)
from featurestore.store.dictionary import read_id_list

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)
maybe_nan = st.one_of(finite, st.just(float("nan")))


def column_arrays(max_rows: int = 300):
    return hnp.arrays(np.float64, st.integers(0, max_rows), elements=maybe_nan)


@pytest.mark.parametrize("cls", [AffineQuantizer, QuantileQuantizer])
@given(x=column_arrays())
def test_float_quantizers_within_bound_and_nan_preserved(cls, x):
    q = cls.fit(x)
    codes = q.encode(x)
    assert codes.dtype == np.uint8
    back = q.decode(codes)
    nan = np.isnan(x)
    assert np.array_equal(np.isnan(back), nan)
    assert np.all(codes[nan] == NAN_CODE) and np.all(codes[~nan] != NAN_CODE)
    if (~nan).any():
        assert np.max(np.abs(back[~nan] - x[~nan])) <= q.error_bound() * (1 + 1e-9) + 1e-9
    # the JSON config rebuilds an identical codec
    q2 = quantizer_from_config(q.get_config())
    assert np.array_equal(q2.encode(x), codes)


@given(x=hnp.arrays(np.int64, st.integers(0, 200), elements=st.integers(-1000, -746)))
def test_exact_quantizer_is_lossless(x):
    x = x.astype(np.float64)
    assert ExactQuantizer.fits(x)
    q = ExactQuantizer.fit(x)
    assert np.array_equal(q.decode(q.encode(x)), x)


def test_exact_quantizer_rejects_out_of_range():
    q = ExactQuantizer(0)
    with pytest.raises(ValueError, match="cannot be stored exactly"):
        q.encode(np.array([300.0]))


def test_quantile_beats_affine_on_skewed_column():
    x = np.random.default_rng(0).lognormal(0, 2, 50_000)
    assert choose_quantizer(x).codec_id == "fstore.quantile_u8"
    mae = {}
    for cls in (AffineQuantizer, QuantileQuantizer):
        q = cls.fit(x)
        mae[cls] = np.mean(np.abs(q.decode(q.encode(x)) - x))
    # a single scale/offset spends its levels on the tail; quantile levels follow the mass
    assert mae[QuantileQuantizer] < mae[AffineQuantizer] / 5


def _finish(stage: Path, tables: dict) -> Store:
    write_manifest(stage, "test", tables, [])
    return Store(stage)


@given(rows=st.integers(0, 150), cols=st.integers(1, 5), seed=st.integers(0, 2**16), chunk=st.integers(1, 64))
def test_feature_table_roundtrip(rows, cols, seed, chunk):
    rng = np.random.default_rng(seed)
    data = rng.lognormal(0, 1.5, (rows, cols)) * rng.choice([-1, 1], cols)
    data[rng.random((rows, cols)) < 0.05] = np.nan
    with tempfile.TemporaryDirectory() as tmp:
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        qs = [choose_quantizer(data[:, j]) for j in range(cols)]
        w = FeatureTableWriter(root, "t", [f"c{j}" for j in range(cols)], qs, chunk_rows=chunk)
        half = rows // 2
        w.append(data[:half])
        w.append(data[half:])
        meta = w.close()
        table = _finish(Path(tmp), {"t": meta}).feature_table("t")
        codes = table.codes()
        assert codes.shape == (rows, cols)
        expected = np.stack([q.encode(data[:, j]) for j, q in enumerate(qs)], 1) if rows else codes
        assert np.array_equal(codes, expected)
        back = table.dequantize()
        assert np.array_equal(np.isnan(back), np.isnan(data))
        for j, c in enumerate(meta["columns"]):
            ok = ~np.isnan(data[:, j])
            err = np.abs(back[ok, j] - data[ok, j])
            assert err.max(initial=0) <= c["bound"] * (1 + 1e-6) + 1e-6
            assert c["max_abs_error"] == pytest.approx(err.max(initial=0), rel=1e-5, abs=1e-5)


@given(lengths=st.lists(st.integers(0, 30), max_size=40), chunk=st.integers(1, 50), seed=st.integers(0, 99),
       splits=st.integers(1, 4))
def test_ragged_roundtrip(lengths, chunk, seed, splits):
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths, dtype=np.int64)
    n = int(lengths.sum())
    cols = {"a": rng.integers(0, 2**31 - 1, n).astype(np.int32), "b": rng.integers(0, 255, n).astype(np.uint8)}
    with tempfile.TemporaryDirectory() as tmp:
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        w = RaggedWriter(root, "r", {"a": {"dtype": "int32"}, "b": {"dtype": "uint8"}}, chunk=chunk)
        bounds = np.linspace(0, lengths.size, splits + 1).astype(int)
        offs = np.concatenate([[0], np.cumsum(lengths)])
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            w.append(lengths[lo:hi], {k: v[offs[lo]:offs[hi]] for k, v in cols.items()})
        r = _finish(Path(tmp), {"r": w.close()}).ragged("r")
        assert np.array_equal(r.offsets, offs)
        for k, v in cols.items():
            assert np.array_equal(r.read(k), v)
        if lengths.size:
            i = int(rng.integers(0, lengths.size))
            vals, o = r.rows_slice("a", i, lengths.size)
            assert np.array_equal(vals, cols["a"][offs[i]:])
            assert np.array_equal(o, offs[i:] - offs[i])


@given(values=st.lists(st.text(max_size=12), max_size=60))
def test_dictionary_roundtrip(values):
    d = Dictionary()
    codes = [d.add(v) for v in values]
    with tempfile.TemporaryDirectory() as tmp:
        d.write(Path(tmp) / "d.parquet")
        back = Dictionary.read(Path(tmp) / "d.parquet")
        assert back.values == d.values
        assert list(back.decode(np.asarray(codes, dtype=np.int64))) == values
        # id lists (session ids): row number is the code, appended in blocks
        import polars as pl

        w = IdListWriter(Path(tmp) / "ids.parquet")
        half = len(values) // 2
        w.append(pl.Series(values[:half], dtype=pl.Utf8))
        w.append(pl.Series(values[half:], dtype=pl.Utf8))
        w.close()
        assert read_id_list(Path(tmp) / "ids.parquet") == values
        assert not [p.name for p in Path(tmp).iterdir() if p.name.startswith(".")]  # parts removed
        # the file depends on the ids only, not on their split into parts (serial vs distributed ingest)
        one = IdListWriter(Path(tmp) / "one.parquet")
        one.append(pl.Series(values, dtype=pl.Utf8))
        one.close()
        assert (Path(tmp) / "one.parquet").read_bytes() == (Path(tmp) / "ids.parquet").read_bytes()
        # an append: the parent's list first, then the new ids; nothing new keeps the parent's file
        more = IdListWriter(Path(tmp) / "more.parquet", first=Path(tmp) / "one.parquet")
        more.append(pl.Series(["extra"], dtype=pl.Utf8))
        more.close()
        assert read_id_list(Path(tmp) / "more.parquet") == [*values, "extra"]
        assert not (Path(tmp) / "one.parquet").exists()
        same = IdListWriter(Path(tmp) / "same.parquet", first=Path(tmp) / "more.parquet")
        same.close()
        assert read_id_list(Path(tmp) / "same.parquet") == [*values, "extra"]
        empty = IdListWriter(Path(tmp) / "empty.parquet")
        empty.close()
        assert read_id_list(Path(tmp) / "empty.parquet") == []


def test_staged_directory_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "s"
    with pytest.raises(RuntimeError), staged_directory(target) as stage:
        (stage / "x").write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with staged_directory(target) as stage:
        (stage / "x").write_text("v1")
    with pytest.raises(StoreError, match="already exists"), staged_directory(target):
        pass
    with pytest.raises(RuntimeError), staged_directory(target, overwrite=True) as stage:
        (stage / "x").write_text("v2")
        raise RuntimeError("boom")
    assert (target / "x").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["s"]
    with staged_directory(target, overwrite=True) as stage:
        (stage / "x").write_text("v2")
    assert (target / "x").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_validate_detects_corruption(tmp_path):
    root = zarr.open_group(tmp_path, mode="w", zarr_format=3)
    w = RaggedWriter(root, "r", {"a": {"dtype": "uint8", "type": "bool"}})
    w.append(np.array([2, 3]), {"a": np.array([0, 1, 1, 0, 1], dtype=np.uint8)})
    store = _finish(tmp_path, {"r": w.close()})
    assert store.validate() == []
    chunk = next((tmp_path / "r" / "events" / "a" / "c").rglob("*"))
    chunk.write_bytes(chunk.read_bytes()[:-1] + b"\x00")
    assert any("checksum" in p or "size" in p for p in Store(tmp_path).validate())
