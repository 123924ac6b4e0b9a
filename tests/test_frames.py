"""The frame store: round trip of ragged (time x bins) clips, zarr == memmap, ranged crops."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given
from hypothesis import strategies as st
from zarr.storage import LocalStore

from featurestore.quantize import AffineQuantizer
from featurestore.store.frame_writer import FrameWriter, RangeScan
from featurestore.store.frames import FRAME_CHUNK, FrameSet, shard_file_size


def _clips(rng: np.random.Generator, lengths: list[int], bins: int, nan: bool = False) -> list[np.ndarray]:
    scale = rng.lognormal(0, 2, size=bins)
    offset = rng.normal(0, 5, size=bins)
    out = []
    for n in lengths:
        x = (rng.standard_normal((n, bins)) * scale + offset).astype(np.float32)
        if nan and n:
            x[rng.random(x.shape) < 0.01] = np.nan
        out.append(x)
    return out


def _write(root: Path, clips: list[np.ndarray], bins: int, **kw) -> tuple[FrameSet, dict]:
    g = zarr.open_group(root, mode="w", zarr_format=3)
    w = FrameWriter(g, "x", bins, columns={"k": {"dtype": "int32"}}, labels={"dictionary": "c", "dtype": "int16"},
                    **kw)
    for i, c in enumerate(clips):
        assert w.append(c, {"k": i * 3}, labels=list(range(i % 4))) == i
    meta = w.close(split="s")
    return FrameSet(zarr.open_group(root, mode="r", zarr_format=3)["x"]), meta


def _check(fs: FrameSet, meta: dict, clips: list[np.ndarray], bins: int, within_bound: bool) -> None:
    lengths = [len(c) for c in clips]
    n = sum(lengths)
    assert fs.clips == len(clips) and fs.frames == n and fs.bins == bins
    assert meta["clips"] == len(clips) and meta["frames"] == n and meta["split"] == "s"
    np.testing.assert_array_equal(fs.lengths(), lengths)
    np.testing.assert_array_equal(fs.offsets, np.concatenate([[0], np.cumsum(lengths)]))
    x = np.concatenate(clips, axis=0) if clips else np.zeros((0, bins), np.float32)
    # codes exactly as each bin's quantizer encodes
    expected = np.stack([q.encode(x[:, j]) for j, q in enumerate(fs.quantizers)], axis=1) if n else \
        np.zeros((0, bins), np.uint8)
    mm = fs.memmap()
    assert mm.shape == (n, bins) and mm.dtype == np.uint8 and not mm.flags.writeable
    np.testing.assert_array_equal(mm, expected)
    # the zarr array reads the same bytes
    z = zarr.open_array(fs.shard_path.parents[2], mode="r")
    assert z.shape == (n, bins)
    np.testing.assert_array_equal(z[:], mm)
    if n:
        a, b = n // 3, max(n // 3 + 1, (2 * n) // 3)
        np.testing.assert_array_equal(z[a:b], mm[a:b])
        assert fs.shard_path.stat().st_size == shard_file_size(n, bins)
    for i, c in enumerate(clips):
        np.testing.assert_array_equal(fs.clip(i), expected[fs.offsets[i] : fs.offsets[i + 1]])
        assert fs.clip(i).shape == c.shape
    # dequantized values: within the bound for finite values, NaN stays NaN; measured errors agree
    back = fs.dequantize(mm)
    assert back.dtype == np.float32 and fs.lut().shape == (256, bins)
    finite = np.isfinite(x)
    np.testing.assert_array_equal(np.isnan(back), ~finite)
    err = np.where(finite, np.abs(back.astype(np.float64) - x), 0.0)
    for j, (bm, q) in enumerate(zip(meta["quantizers"], fs.quantizers, strict=True)):
        lo, hi = q.fitted_range()
        outside = finite[:, j] & ((x[:, j] < lo) | (x[:, j] > hi))
        # max_abs_error covers the values inside the fitted range, where the bound is guaranteed;
        # clipped values (outside it) are counted and their largest error is reported on its own
        assert err[~outside, j].max(initial=0) == pytest.approx(bm["max_abs_error"], rel=1e-12, abs=1e-12)
        assert bm["max_abs_error"] <= bm["bound"]
        assert err[outside, j].max(initial=0) == pytest.approx(bm["clipped_max_abs_error"], rel=1e-12, abs=1e-12)
        assert bm["nan"] == int((~finite[:, j]).sum())
        assert bm["clipped"] == int(outside.sum())
        if within_bound:
            assert bm["clipped"] == 0
            assert err[:, j].max(initial=0) <= bm["bound"]
    # per-clip values and the multi-label CSR
    np.testing.assert_array_equal(fs.column("k"), np.arange(len(clips)) * 3)
    lab = fs.labels()
    assert lab is not None and lab.rows == len(clips)
    np.testing.assert_array_equal(lab.lengths(), [i % 4 for i in range(len(clips))])
    np.testing.assert_array_equal(lab.read("class"), [k for i in range(len(clips)) for k in range(i % 4)])


lengths_st = st.lists(st.one_of(st.integers(0, 1), st.integers(2, 700)), min_size=0, max_size=12)


@given(lengths=lengths_st, bins=st.integers(1, 24), seed=st.integers(0, 2**31 - 1), nan=st.booleans())
def test_round_trip_fitted_on_everything(lengths: list[int], bins: int, seed: int, nan: bool) -> None:
    clips = _clips(np.random.default_rng(seed), lengths, bins, nan)
    with tempfile.TemporaryDirectory() as d:
        fs, meta = _write(Path(d), clips, bins, sample_frames=10**9)
        assert meta["sample_frames"] == sum(lengths)
        _check(fs, meta, clips, bins, within_bound=True)


@given(lengths=lengths_st, bins=st.integers(1, 12), seed=st.integers(0, 2**31 - 1),
       sample=st.integers(1, 300), exact=st.booleans())
def test_round_trip_sample_first(lengths: list[int], bins: int, seed: int, sample: int, exact: bool) -> None:
    """Fitted on the first frames only: codes still exact, clipping counted; extremes remove it."""
    clips = _clips(np.random.default_rng(seed), lengths, bins)
    scan = None
    if exact:
        scan = RangeScan(bins)
        for c in clips:
            scan.update(c)
    with tempfile.TemporaryDirectory() as d:
        fs, meta = _write(Path(d), clips, bins, sample_frames=sample, extremes=scan)
        assert meta["exact_range"] is exact
        _check(fs, meta, clips, bins, within_bound=exact)


@pytest.mark.parametrize("kind", ["quantile", "auto"])
def test_other_quantizer_kinds(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(1)
    clips = [np.exp(rng.standard_normal((n, 5))) for n in (300, 0, 1, 500)]  # skewed: auto picks quantile
    fs, meta = _write(tmp_path, clips, 5, kind=kind)
    assert {q["codec"]["id"] for q in meta["quantizers"]} == {"fstore.quantile_u8"}
    _check(fs, meta, clips, 5, within_bound=True)


def test_given_quantizers_and_fixed_layout(tmp_path: Path) -> None:
    qs = [AffineQuantizer(-1.0, 1.0), AffineQuantizer(0.0, 10.0)]
    clips = [np.array([[0.0, 5.0], [2.0, -1.0], [np.nan, 10.0]]), np.zeros((0, 2))]
    fs, meta = _write(tmp_path, clips, 2, quantizers=qs)
    assert meta["sample_frames"] is None
    np.testing.assert_array_equal(fs.memmap(), [[127, 127], [254, 0], [255, 254]])
    assert meta["quantizers"][0]["clipped"] == 1  # 2.0 is outside [-1, 1]
    assert meta["quantizers"][0]["clipped_max_abs_error"] == pytest.approx(1.0)  # stored as 1.0
    # the zarr metadata: one shard over the padded array, inner (256, bins) chunks, bytes only
    z = zarr.open_array(tmp_path / "x" / "frames", mode="r")
    codecs = z.metadata.to_dict()["codecs"]
    assert len(codecs) == 1 and codecs[0]["name"] == "sharding_indexed"
    cfg = codecs[0]["configuration"]
    assert list(cfg["chunk_shape"]) == [FRAME_CHUNK, 2] and [c["name"] for c in cfg["codecs"]] == ["bytes"]
    assert list(z.metadata.chunk_grid.chunk_shape) == [FRAME_CHUNK, 2] and cfg["index_location"] == "end"
    raw = fs.shard_path.read_bytes()
    assert raw[:6] == bytes([127, 127, 254, 0, 255, 254]) and set(raw[6 : FRAME_CHUNK * 2]) == {0}


def test_empty_sets(tmp_path: Path) -> None:
    fs, meta = _write(tmp_path / "a", [], 3)
    assert fs.clips == 0 and fs.memmap().shape == (0, 3) and meta["frames"] == 0
    assert not fs.shard_path.exists()
    fs, meta = _write(tmp_path / "b", [np.zeros((0, 3))] * 4, 3)
    assert fs.clips == 4 and fs.frames == 0 and fs.clip(3).shape == (0, 3)
    assert zarr.open_array(tmp_path / "b" / "x" / "frames", mode="r")[:].shape == (0, 3)


def test_crop_reads_byte_ranges_not_the_whole_shard(tmp_path: Path, monkeypatch) -> None:
    bins = 16
    clips = _clips(np.random.default_rng(2), [1000] * 10, bins)
    fs, _ = _write(tmp_path, clips, bins)
    size = fs.shard_path.stat().st_size
    calls: list[tuple[str, object]] = []
    orig = LocalStore.get

    async def recording_get(self, key, prototype=None, byte_range=None):
        calls.append((key, byte_range))
        return await orig(self, key, prototype, byte_range)

    monkeypatch.setattr(LocalStore, "get", recording_get)
    z = zarr.open_array(tmp_path / "x" / "frames", mode="r")
    calls.clear()
    crop = z[3000:3100]
    np.testing.assert_array_equal(crop, fs.memmap()[3000:3100])
    shard_reads = [r for k, r in calls if k.endswith("c/0/0")]
    assert shard_reads and all(r is not None for r in shard_reads)  # ranged: index suffix + inner chunk(s)
    fetched = 0
    for r in shard_reads:
        fetched += r.suffix if hasattr(r, "suffix") else r.end - r.start
    assert fetched <= 2 * FRAME_CHUNK * bins + 1024 and fetched < size / 10


def test_writer_rejects_bad_shapes(tmp_path: Path) -> None:
    g = zarr.open_group(tmp_path, mode="w", zarr_format=3)
    w = FrameWriter(g, "x", 4)
    with pytest.raises(ValueError, match=r"\(T, 4\)"):
        w.append(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="columns"):
        w.append(np.zeros((3, 4)), {"nope": 1})
    with pytest.raises(ValueError, match="at least one bin"):
        FrameWriter(g, "y", 0)
    w.abort()


def test_memmap_refuses_other_layouts(tmp_path: Path) -> None:
    from featurestore.store import StoreError

    _write(tmp_path, _clips(np.random.default_rng(3), [10, 20], 4), 4)
    g = zarr.open_group(tmp_path, mode="r+", zarr_format=3)["x"]
    g.create_array("frames", shape=(30, 4), chunks=(8, 4), dtype="uint8", overwrite=True)  # compressed, unsharded
    with pytest.raises(StoreError, match="single-shard layout"):
        FrameSet(zarr.open_group(tmp_path, mode="r", zarr_format=3)["x"]).memmap()
