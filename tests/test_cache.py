"""Verified loader caches (issue 9): damaged caches are rebuilt or named in one line, never trusted."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from featurestore.cli import main
from featurestore.ingest.spotify import ingest_spotify
from featurestore.store import Store, StoreError
from loaders import SessionBatches

FILES = ["offsets.i64", "track.i32", "log.u8", "meta.json"]


@pytest.fixture
def fresh(raw, tmp_path) -> Path:
    path = tmp_path / "s.fstore"
    ingest_spotify(raw, path, progress=False)
    return path


def _batches(path: Path, **kw) -> list[dict]:
    return [{k: v.clone() for k, v in b.items()}
            for b in SessionBatches(path, batch_size=64, order="random", seed=3, threads=1, **kw)]


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b, strict=True))


def _cache_folder(path: Path) -> Path:
    return next(p for p in (path / "cache").iterdir() if p.name.startswith("train-") and "." not in p.name)


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x5A
    p.write_bytes(bytes(data))


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-3])


DAMAGE = {"flip": _flip, "truncate": _truncate, "delete": Path.unlink}


@pytest.mark.parametrize("how", sorted(DAMAGE))
@pytest.mark.parametrize("name", FILES)
def test_every_damaged_cache_file_is_rebuilt_and_batches_unchanged(fresh, name, how):
    good = _batches(fresh)
    folder = _cache_folder(fresh)
    DAMAGE[how](folder / name)
    assert _same(_batches(fresh), good)
    Store(fresh)  # the rebuilt cache passes the full check
    r = CliRunner().invoke(main, ["validate", str(fresh), "--caches"])
    assert r.exit_code == 0 and "1 loader cache(s) checked" in r.output, r.output


def _write_keeping_stamp(p: Path, offset: int, value: np.ndarray) -> None:
    """Change bytes in place and restore the mtime: damage that the stat stamp alone cannot see."""
    st = os.stat(p)
    with open(p, "r+b") as f:
        f.seek(offset)
        f.write(value.tobytes())
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_extreme_values_never_crash_the_kernels(fresh):
    good = _batches(fresh)
    folder = _cache_folder(fresh)
    # an offset of 10^9: caught by the cheap offsets check on open, rebuilt
    _write_keeping_stamp(folder / "offsets.i64", 8 * 5, np.array([10**9], dtype=np.int64))
    assert _same(_batches(fresh), good)
    # a track id of 2^31-1 that no check on open reads: the kernel refuses it in one line, no segfault
    folder = _cache_folder(fresh)
    _write_keeping_stamp(folder / "track.i32", 0, np.full(4096, 2**31 - 1, dtype=np.int32))
    with pytest.raises(StoreError, match=r"track.*out of bounds.*rebuild|out of bounds"):
        _batches(fresh)
    r = CliRunner().invoke(main, ["validate", str(fresh), "--caches"])
    assert r.exit_code == 1 and "track.i32: checksum mismatch" in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1


def test_a_cache_without_meta_is_replaced_not_reused(fresh):
    good = _batches(fresh)
    folder = _cache_folder(fresh)
    (folder / "meta.json").unlink()
    _flip(folder / "track.i32")
    assert _same(_batches(fresh), good)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["tracks"] == Store(fresh).feature_table("tracks").rows and meta["version"] == 1
    assert not [p for p in (fresh / "cache").iterdir() if ".old-" in p.name or ".tmp-" in p.name]


def test_damaged_track_table_is_refused_even_with_a_cache(fresh):
    _batches(fresh)  # the cache exists
    chunk = next(p for p in (fresh / "tracks" / "codes" / "c").rglob("*") if p.is_file())
    _flip(chunk)
    with pytest.raises(StoreError, match=r"tracks/codes/c.*checksum mismatch"):
        SessionBatches(fresh)


def test_changed_quantizer_config_is_refused(fresh):
    _batches(fresh)
    meta_path = fresh / "tracks" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    codec = next(c["codec"] for c in meta["attributes"]["columns"]
                 if any(isinstance(v, float) for v in c["codec"].values()))
    key = next(k for k, v in codec.items() if isinstance(v, float))
    codec[key] += 1.0  # e.g. an affine offset: every decoded value would shift
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=r"tracks/zarr.json.*checksum mismatch"):
        SessionBatches(fresh)


def test_cache_of_another_version_is_not_used(raw, fresh, tmp_path):
    first = _batches(fresh)
    shutil.rmtree(tmp_path / "other", ignore_errors=True)
    from featurestore.synth.spotify import synth_spotify

    other = tmp_path / "other"
    synth_spotify(other, sessions=500, tracks=200, seed=11, train_files=2)
    ingest_spotify(other, fresh, overwrite=True, progress=False)
    second = _batches(fresh)
    assert not _same(first, second)
    assert _same(_batches(fresh, version=1), first)  # version 1's cache is still there and still valid
    assert len([p for p in (fresh / "cache").iterdir() if p.name.startswith("train-")]) == 2
