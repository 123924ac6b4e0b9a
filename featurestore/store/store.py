"""Open a store and validate it. Layout (one directory):

    manifest.json               schema version, tables, sources, sha256 of every file
    zarr.json                   zarr v3 root group
    <table>/...                 feature tables (codes), ragged sets (offsets + events/*) and frame sets
                                (offsets + frames + clips/* [+ labels/], see frames.py)
    dicts/<name>.parquet        categorical vocabularies (code, value)
    ids/<table>.parquet         row ids of a table (row number = code)
    cache/                      loader caches, rebuilt on demand, verified by their own checksums
    _fstore/                    versions: log/<N>.json, trees/<id>/ (see versions.py)

A versioned store's root is a checkout of its latest version; ``Store(path, version=V)`` opens any kept
version (number or tag) and keeps reading exactly it, whatever writers commit meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from .arrays import EVENT_CHUNK
from .dictionary import Dictionary, read_id_list
from .errors import StoreError
from .feature_table import FeatureTable
from .frames import FrameSet, shard_file_size
from .manifest import MANIFEST, SCHEMA_VERSION, sha256_file, verify_checksums
from .pinned import PinnedLocalStore, RootPin
from .ragged import RaggedSet
from .remote import S3Store, as_url, is_remote
from .versions import read_entry, resolve, root_is_current, tree_path


class Store:
    """A read-only view of one store directory."""

    def __init__(self, path: str | Path, version: int | str | None = None, *,
                 cache_dir: str | Path | None = None, cache_limit: int | None = None):
        """``path``: a folder, or ``s3://bucket/prefix`` (materialized in ``cache_dir``, at most
        ``cache_limit`` bytes of objects kept; see remote.py). ``version``: number or tag, None the latest."""
        self.pin: RootPin | None = None
        self.remote: str | None = None
        if is_remote(path):
            self.remote = as_url(path)
            local, entry = S3Store(self.remote).materialize(version, cache_dir, cache_limit)
            self.path, self.version, self.manifest = local, entry["version"], entry
            self._open_zarr(local)
            return
        self.path = Path(path)
        self.version = resolve(self.path, version)  # None: an unversioned (legacy) store
        if self.version is None:
            self.manifest = self._read_manifest(self.path / MANIFEST)
            zarr_store = self.path
        else:
            self.manifest = read_entry(self.path, self.version)
            tree = tree_path(self.path, self.manifest)
            zarr_store = tree
            if root_is_current(self.path, self.version):  # the root holds it: read there while it does
                with contextlib.suppress(FileNotFoundError):
                    self.pin = RootPin(self.path, tree, os.stat(self.path / MANIFEST).st_ino)
                    zarr_store = PinnedLocalStore(self.pin)
        self._open_zarr(zarr_store)

    def _open_zarr(self, zarr_store) -> None:
        if self.manifest.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"{self.path / MANIFEST}: schema version {self.manifest.get('schema_version')} "
                             f"(this fstore reads {SCHEMA_VERSION})")
        try:
            self.root = zarr.open_group(zarr_store, mode="r", zarr_format=3)
        except (zarr.errors.BaseZarrError, OSError, ValueError) as e:
            raise StoreError(f"{self.data_dir / 'zarr.json'}: damaged store, no readable zarr root group "
                             f"({type(e).__name__}); ingest it again") from None
        self._dicts: dict[str, Dictionary] = {}

    def _read_manifest(self, mf: Path) -> dict:
        if not mf.is_file():
            raise StoreError(f"{self.path}: not an fstore store (no {MANIFEST})")
        try:
            return json.loads(mf.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"{mf}: unreadable manifest ({e})") from None

    @property
    def data_dir(self) -> Path:
        """The folder this version's files are read from: the root checkout, or the version's tree."""
        if self.version is None or self.remote is not None:
            return self.path
        return self.pin.folder() if self.pin is not None else tree_path(self.path, self.manifest)

    def _read_file(self, rel: str, fn):
        """``fn(path)`` of a version file, pinned like the zarr reads."""
        return self.pin.read(rel, fn) if self.pin is not None else fn(self.data_dir / rel)

    @property
    def tables(self) -> dict[str, dict]:
        return self.manifest["tables"]

    def _table_meta(self, name: str, kind: str) -> dict:
        meta = self.tables.get(name)
        if meta is None or meta["kind"] != kind:
            have = sorted(n for n, m in self.tables.items() if m["kind"] == kind)
            raise StoreError(f"{self.path}: no {kind} table {name!r} (have {have})")
        return meta

    def _group(self, name: str) -> zarr.Group:
        try:
            return self.root[name]
        except (KeyError, zarr.errors.BaseZarrError, OSError, ValueError) as e:
            raise StoreError(f"{self.data_dir / name / 'zarr.json'}: damaged store, table {name!r} in the manifest "
                             f"but not readable ({type(e).__name__}); ingest it again") from None

    def feature_table(self, name: str) -> FeatureTable:
        self._table_meta(name, "feature_table")
        return FeatureTable(self._group(name))

    def ragged(self, name: str) -> RaggedSet:
        self._table_meta(name, "ragged")
        return RaggedSet(self._group(name))

    def frames(self, name: str) -> FrameSet:
        self._table_meta(name, "frames")
        return FrameSet(self._group(name))

    def columns(self, name: str) -> dict[str, np.ndarray]:
        """A table of kind ``columns`` (a zarr group of equal-length 1-D arrays), read whole."""
        meta = self._table_meta(name, "columns")
        g = self._group(name)
        return {c: np.asarray(g[c][:]).astype(bool) if cm.get("type") == "bool" else np.asarray(g[c][:])
                for c, cm in meta["columns"].items()}

    def parquet(self, name: str) -> pa.Table:
        """A table of kind ``parquet`` (``tables/<name>.parquet``), read whole."""
        meta = self._table_meta(name, "parquet")
        rel = meta.get("path", f"tables/{name}.parquet")
        if not self._read_file(rel, lambda p: p.is_file()):
            raise StoreError(f"{self.data_dir / rel}: missing (damaged store; run `fstore validate`)")
        return self._read_file(rel, pq.read_table)

    def dictionary(self, name: str) -> Dictionary:
        if name not in self._dicts:
            rel = f"dicts/{name}.parquet"
            if not self._read_file(rel, lambda p: p.is_file()):
                raise StoreError(f"{self.path}: no dictionary {name!r}")
            self._dicts[name] = self._read_file(rel, Dictionary.read)
        return self._dicts[name]

    def ids(self, table: str, start: int = 0, stop: int | None = None) -> list[str]:
        return self._read_file(f"ids/{table}.parquet", lambda p: read_id_list(p, start, stop))

    def bytes_on_disk(self) -> int:
        return sum(f["bytes"] for f in self.manifest["files"].values())

    def verify_table(self, name: str, metadata_only: bool = False) -> list[str]:
        """sha256 of the files of table ``name`` (only its zarr.json files with ``metadata_only``) against
        this version's manifest: what a loader ships to the device is what the version says."""
        problems = []
        for rel, f in sorted(self.manifest["files"].items()):
            if rel.split("/", 1)[0] != name or (metadata_only and not rel.endswith("zarr.json")):
                continue
            try:
                digest = self._read_file(rel, sha256_file)
            except FileNotFoundError:
                problems.append(f"{self.data_dir / rel}: missing")
                continue
            if digest != f["sha256"]:
                problems.append(f"{self.data_dir / rel}: checksum mismatch (damaged store; run `fstore validate`)")
        return problems

    def validate(self, checksums: bool = True) -> list[str]:
        """Every problem found; empty means valid. Reads event columns chunk by chunk."""
        problems = (self._read_file("", lambda folder: verify_checksums(folder, self.manifest))
                    if checksums else [])
        if problems:
            return problems
        sizes = {n: m["rows"] for n, m in self.tables.items()}
        for name, meta in self.tables.items():
            if meta["kind"] == "feature_table":
                t = self.feature_table(name)
                if t.rows != meta["rows"]:
                    problems.append(f"{name}: {t.rows} rows, manifest says {meta['rows']}")
            elif meta["kind"] == "ragged":
                problems += self._validate_ragged(name, meta, sizes)
            elif meta["kind"] == "frames":
                problems += self._validate_frames(name, meta)
            elif meta["kind"] in ("columns", "parquet"):
                problems += self._validate_whole(name, meta)
        return problems

    def _validate_whole(self, name: str, meta: dict) -> list[str]:
        """``columns`` and ``parquet`` tables: readable, every column as long as the manifest's rows."""
        try:
            data = self.columns(name) if meta["kind"] == "columns" else self.parquet(name)
        except (StoreError, KeyError, OSError, ValueError, pa.ArrowException) as e:
            return [f"{name}: unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"]
        lengths = ({c: v.shape[0] for c, v in data.items()} if isinstance(data, dict)
                   else dict.fromkeys(data.column_names, data.num_rows))
        return [f"{name}/{c}: {n} rows, manifest says {meta['rows']}" for c, n in lengths.items() if n != meta["rows"]]

    def _code_limit(self, cm: dict) -> int | None:
        if "dictionary" in cm:
            return len(self.dictionary(cm["dictionary"]))
        return 2 if cm.get("type") == "bool" else None

    def _validate_frames(self, name: str, meta: dict) -> list[str]:
        """Offsets monotone from 0 to n_frames, the shard file's size, per-clip codes in range."""
        f = self.frames(name)
        problems = []
        if f.clips != meta["clips"] or f.frames != meta["frames"] or f.bins != meta["bins"]:
            problems.append(f"{name}: {f.clips} clips / {f.frames} x {f.bins} frames, manifest says "
                            f"{meta['clips']} / {meta['frames']} x {meta['bins']}")
        if f.offsets.size == 0 or f.offsets[0] != 0 or np.any(np.diff(f.offsets) < 0):
            problems.append(f"{name}/offsets: not monotone from 0")
        elif f.offsets[-1] != f.frames:
            problems.append(f"{name}/offsets: last offset {f.offsets[-1]} != {f.frames} frames")
        shard = f.shard_path
        size = shard.stat().st_size if shard.is_file() else 0
        if size != shard_file_size(f.frames, f.bins):
            problems.append(f"{name}/frames: shard file has {size} bytes, expected "
                            f"{shard_file_size(f.frames, f.bins)}")
        for col, cm in f.clip_columns.items():
            values = f.column(col)
            if values.shape[0] != f.clips:
                problems.append(f"{name}/clips/{col}: {values.shape[0]} values for {f.clips} clips")
                continue
            limit = self._code_limit(cm)
            bad = np.flatnonzero((values < 0) | (values >= limit)) if limit is not None else []
            if len(bad):
                problems.append(f"{name}/clips/{col}: code {values[bad[0]]} at clip {bad[0]} out of range 0..{limit - 1}")
        labels = f.labels()
        if labels is not None:
            if labels.rows != f.clips or labels.offsets[0] != 0 or np.any(np.diff(labels.offsets) < 0):
                problems.append(f"{name}/labels: {labels.rows} rows for {f.clips} clips, or offsets not monotone")
            limit = self._code_limit(meta["labels"])
            codes = labels.read("class")
            bad = np.flatnonzero((codes < 0) | (codes >= limit)) if limit is not None else []
            if len(bad):
                problems.append(f"{name}/labels/events/class: code {codes[bad[0]]} at event {bad[0]} "
                                f"out of range 0..{limit - 1}")
        return problems

    def _validate_ragged(self, name: str, meta: dict, sizes: dict[str, int]) -> list[str]:
        r = self.ragged(name)
        problems = []
        if r.rows != meta["rows"] or r.events != meta["events"]:
            problems.append(f"{name}: {r.rows} rows / {r.events} events, manifest says {meta['rows']} / {meta['events']}")
        if r.offsets[0] != 0 or np.any(np.diff(r.offsets) < 0):
            problems.append(f"{name}/offsets: not monotone from 0")
        for col, cm in r.columns.items():
            arr = r.array(col)
            if arr.shape[0] != r.events:
                problems.append(f"{name}/events/{col}: {arr.shape[0]} values for {r.events} events")
                continue
            limit = None
            if "ref" in cm:
                limit = sizes.get(cm["ref"])
                if limit is None:
                    problems.append(f"{name}/events/{col}: references missing table {cm['ref']!r}")
                    continue
            elif "dictionary" in cm:
                limit = len(self.dictionary(cm["dictionary"]))
            elif cm.get("type") == "bool":
                limit = 2
            if limit is None:
                continue
            for start in range(0, r.events, 8 * EVENT_CHUNK):
                block = r.read(col, start, min(r.events, start + 8 * EVENT_CHUNK))
                bad = np.flatnonzero((block < 0) | (block >= limit))
                if bad.size:
                    problems.append(
                        f"{name}/events/{col}: code {block[bad[0]]} at event {start + bad[0]} out of range 0..{limit - 1}"
                    )
                    break
        return problems
