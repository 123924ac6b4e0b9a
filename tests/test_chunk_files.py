"""Chunks written straight to files (store/chunks.py) are the files zarr writes, byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.store import chunks
from featurestore.store.arrays import ChunkedAppender, create


def _files(array_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(array_dir).as_posix(): p.read_bytes() for p in sorted(array_dir.rglob("*")) if p.is_file()}


def _via_zarr(array: zarr.Array, blocks: list[np.ndarray]) -> None:
    """The reference: resize + setitem, one chunk-aligned write per whole chunk (zarr does the I/O)."""
    values = np.concatenate([np.zeros(0, array.dtype), *blocks])
    start = array.shape[0]
    array.resize((start + values.size,))
    array[start:] = values


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(["uint8", "uint16", "int32", "int64", "float32"]),
       bits=st.booleans(), chunk=st.integers(1, 50),
       sizes=st.lists(st.integers(0, 120), min_size=0, max_size=6),
       zero_fraction=st.sampled_from([0.0, 0.5, 1.0]), seed=st.integers(0, 2**16))
def test_direct_chunks_equal_zarr_files(tmp_path_factory, dtype, bits, chunk, sizes, zero_fraction, seed):
    rng = np.random.default_rng(seed)
    blocks = [np.where(rng.random(n) < zero_fraction, 0, rng.integers(1, 200, n)).astype(dtype) for n in sizes]
    root = tmp_path_factory.mktemp("chunks")
    direct = create(zarr.open_group(root / "a", mode="w"), "x", dtype, (0,), (chunk,), bits=bits)
    reference = create(zarr.open_group(root / "b", mode="w"), "x", dtype, (0,), (chunk,), bits=bits)
    appender = ChunkedAppender(direct)
    assert appender._direct is not None  # the direct path is the one under test
    for b in blocks:
        appender.append(b)
    appender.close()
    _via_zarr(reference, blocks)
    assert _files(root / "a" / "x") == _files(root / "b" / "x")
    expected = np.concatenate([np.zeros(0, dtype), *blocks])
    np.testing.assert_array_equal(zarr.open_array(root / "a" / "x", mode="r")[:], expected)


@settings(max_examples=30, deadline=None)
@given(chunk=st.integers(1, 20), first=st.integers(0, 60), second=st.integers(0, 60), seed=st.integers(0, 2**16))
def test_append_to_partial_last_chunk(tmp_path_factory, chunk, first, second, seed):
    """Resuming an array whose last chunk is partial rewrites that chunk whole, as zarr does."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 9, first).astype("int32"), rng.integers(0, 9, second).astype("int32")
    root = tmp_path_factory.mktemp("resume")
    direct = create(zarr.open_group(root / "a", mode="w"), "x", "int32", (0,), (chunk,))
    w = ChunkedAppender(direct)
    w.append(a)
    w.close()
    w = ChunkedAppender(zarr.open_array(root / "a" / "x", mode="r+"))
    w.append(b)
    w.close()
    reference = create(zarr.open_group(root / "b", mode="w"), "x", "int32", (0,), (chunk,))
    _via_zarr(reference, [a])
    _via_zarr(reference, [b])
    assert _files(root / "a" / "x") == _files(root / "b" / "x")


def test_chunk_file_never_writes_through_a_hard_link(tmp_path):
    """A parent version's chunk, hard-linked into a new version, keeps its bytes when the new one rewrites it."""
    array = create(zarr.open_group(tmp_path / "v1", mode="w"), "x", "int32", (0,), (4,))
    w = ChunkedAppender(array)
    w.append(np.arange(1, 3, dtype="int32"))
    w.close()
    (tmp_path / "v2" / "x" / "c").mkdir(parents=True)
    for name in ("zarr.json", "c/0"):
        (tmp_path / "v2" / "x" / name).hardlink_to(tmp_path / "v1" / "x" / name)
    before = (tmp_path / "v1" / "x" / "c" / "0").read_bytes()
    w = ChunkedAppender(zarr.open_array(tmp_path / "v2" / "x", mode="r+"))
    w.append(np.array([7, 8], dtype="int32"))
    w.close()
    assert (tmp_path / "v1" / "x" / "c" / "0").read_bytes() == before
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "v1" / "x", mode="r")[:], [1, 2])
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "v2" / "x", mode="r")[:], [1, 2, 7, 8])


def test_unsupported_layouts_are_refused(tmp_path):
    array = zarr.open_group(tmp_path, mode="w").create_array("x", shape=(0,), dtype="int32", chunks=(4,),
                                                             compressors=None)
    meta = array.metadata.to_dict()
    assert not chunks.ChunkFile.supports(meta)
    with pytest.raises(ValueError, match="codecs are not"):
        chunks.ChunkFile(tmp_path / "x", meta)
    assert ChunkedAppender(array)._direct is None  # written through zarr instead


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.lists(st.integers(1, 9), min_size=0, max_size=12), min_size=1, max_size=4),
       rows=st.lists(st.integers(0, 40), min_size=1, max_size=4), chunk=st.integers(1, 17), seed=st.integers(0, 99))
def test_local_group_writes_the_files_zarr_writes(tmp_path_factory, lengths, rows, chunk, seed):
    """A ragged set and a feature table written into a LocalGroup (no zarr) and into a zarr group give
    the same files, metadata included, and zarr reads the LocalGroup's back."""
    from featurestore.quantize import AffineQuantizer
    from featurestore.store import FeatureTableWriter, RaggedSet, RaggedWriter
    from featurestore.store.chunks import LocalGroup

    rng = np.random.default_rng(seed)
    columns = {"track": {"dtype": "int32", "ref": "tracks"}, "flag": {"dtype": "uint8", "type": "bool"},
               "count": {"dtype": "uint16", "type": "count"}}
    blocks = []
    for ls in lengths:
        n = sum(ls)
        blocks.append((np.array(ls, dtype=np.int64), {"track": rng.integers(0, 50, n).astype("int32"),
                                                       "flag": (rng.random(n) < 0.5).astype("uint8"),
                                                       "count": rng.integers(0, 3, n).astype("uint16")}))
    feats = [rng.normal(size=(r, 3)) for r in rows]
    root = tmp_path_factory.mktemp("trees")
    for group in (LocalGroup.create(root / "local"), zarr.open_group(root / "zarr", mode="w")):
        w = RaggedWriter(group, "train", columns, chunk=chunk)
        for ls, values in blocks:
            w.append(ls, values)
        w.close(split="train")
        t = FeatureTableWriter(group, "tracks", ["a", "b", "c"], [AffineQuantizer(-3.0, 3.0)] * 3, chunk_rows=chunk)
        for f in feats:
            t.append(f)
        t.close()
    assert _tree(root / "local") == _tree(root / "zarr")
    back = RaggedSet(zarr.open_group(root / "local", mode="r")["train"])
    np.testing.assert_array_equal(back.read("track"), np.concatenate([v["track"] for _, v in blocks]))
