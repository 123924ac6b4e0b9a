"""fstore's own arrays written straight to their files: the bytes zarr would write, without zarr.

Ingest writes every array of a new version into a local staging folder. Through zarr-python that
cost, on the 3M-event Spotify ingest, 0.13 s to import zarr in each process, 0.06 s to create the 22
event arrays (asyncio round trips per metadata file) and 0.29 s of CPU for ``array[a:b] = values``
chunk by chunk, against 0.09 s for the same chunk files here (measured on ``bench/ingest.py``'s
data). This module does only what those calls did for fstore's own layout, and nothing else:

- metadata (``zarr.json`` of groups and arrays) as zarr-python 3 writes it for the arrays that
  ``store.arrays.create`` makes: regular grid chunked along the first axis only, default ``c/`` keys,
  ``bytes`` (little endian) then ``blosc`` (zstd) codecs, fill value 0 (tested byte for byte);
- chunks: numcodecs' ``Blosc`` configured from that metadata exactly as zarr's ``BloscCodec``
  configures it, fed the chunk's little-endian bytes; an edge chunk is padded with the fill value to
  the full chunk shape; a chunk holding only the fill value is not written (its file is removed), as
  zarr does with ``write_empty_chunks=False`` (tested byte for byte against zarr's files);
- every file is written aside and renamed: never written through (it may be a hard link to the
  parent version's file) and never visible half-written.

Arrays of any other layout (``ChunkFile.supports`` says no) are written through zarr. Readers always
use zarr.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numcodecs import Blosc

_SHUFFLE = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}
META = "zarr.json"


def _write_json(path: Path, meta: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta, indent=2))  # zarr-python's own formatting (ASCII, 2 spaces, no newline)
    os.replace(tmp, path)


def read_meta(node_dir: str | os.PathLike) -> dict:
    return json.loads((Path(node_dir) / META).read_text())


def array_meta(shape: tuple[int, ...], dtype: str, chunks: tuple[int, ...], shuffle: str,
               attributes: dict | None = None) -> dict:
    """The ``zarr.json`` zarr-python 3 writes for ``create_array(shape, dtype, chunks,
    compressors=[BloscCodec(cname="zstd", clevel=1, shuffle)], fill_value=0, attributes)``."""
    itemsize = np.dtype(dtype).itemsize
    return {
        "shape": [int(s) for s in shape],
        "data_type": str(np.dtype(dtype)),
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [int(c) for c in chunks]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [
            {"name": "bytes", "configuration": {"endian": "little"}} if itemsize > 1 else {"name": "bytes"},
            {"name": "blosc", "configuration": {"typesize": itemsize, "cname": "zstd", "clevel": 1,
                                                "shuffle": shuffle, "blocksize": 0}},
        ],
        "attributes": dict(attributes or {}),
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


class Attributes(Mapping):
    """A node's attributes, read from and written to its ``zarr.json`` (like ``zarr.Group.attrs``)."""

    def __init__(self, node_dir: Path):
        self._path = node_dir / META

    def _all(self) -> dict:
        return json.loads(self._path.read_text())["attributes"]

    def __getitem__(self, key: str) -> Any:
        return self._all()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def update(self, values: Mapping) -> None:
        meta = json.loads(self._path.read_text())
        meta["attributes"] = {**meta["attributes"], **values}
        _write_json(self._path, meta)


class LocalGroup:
    """A zarr v3 group in a local folder, with the part of ``zarr.Group``'s writing API that fstore's
    writers use (``require_group``, ``attrs``, ``[name]``); arrays come from ``store.arrays.create``."""

    def __init__(self, node_dir: str | os.PathLike):
        self.dir = Path(node_dir)

    @classmethod
    def create(cls, node_dir: str | os.PathLike) -> LocalGroup:
        group = cls(node_dir)
        group.dir.mkdir(parents=True, exist_ok=True)
        _write_json(group.dir / META, {"attributes": {}, "zarr_format": 3, "node_type": "group"})
        return group

    @property
    def attrs(self) -> Attributes:
        return Attributes(self.dir)

    def require_group(self, name: str) -> LocalGroup:
        child = self.dir / name
        if (child / META).is_file():
            if read_meta(child)["node_type"] != "group":
                raise ValueError(f"{child}: an array, not a group")
            return LocalGroup(child)
        return LocalGroup.create(child)

    def create_array(self, name: str, shape: tuple[int, ...], dtype: str, chunks: tuple[int, ...], shuffle: str,
                     attributes: dict | None = None) -> LocalArray:
        node = self.dir / name
        if (node / META).exists():
            raise FileExistsError(f"{node}: exists")
        node.mkdir(parents=True, exist_ok=True)
        _write_json(node / META, array_meta(shape, dtype, chunks, shuffle, attributes))
        return LocalArray(node)

    def __getitem__(self, name: str) -> LocalGroup | LocalArray:
        node = self.dir / name
        if not (node / META).is_file():
            raise KeyError(name)
        return LocalGroup(node) if read_meta(node)["node_type"] == "group" else LocalArray(node)


class LocalArray:
    """A local zarr v3 array of fstore's layout: its shape, dtype and chunks, for ``ChunkedAppender``."""

    def __init__(self, node_dir: Path):
        self.dir = node_dir
        self.meta = read_meta(node_dir)
        self.shape = tuple(self.meta["shape"])
        self.chunks = tuple(self.meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.dtype = np.dtype(self.meta["data_type"])

    @property
    def attrs(self) -> Attributes:
        return Attributes(self.dir)


class ChunkFile:
    """Encoder, writer and reader of whole chunks (along the first axis) of one local array."""

    def __init__(self, array_dir: str | os.PathLike, meta: dict | None = None):
        self.dir = Path(array_dir)
        self.meta = meta if meta is not None else read_meta(self.dir)
        why = _unsupported(self.meta)
        if why:
            raise ValueError(f"{self.dir}: {why}")
        self.chunk_shape = tuple(int(c) for c in self.meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.chunk = self.chunk_shape[0]
        self.dtype = np.dtype(self.meta["data_type"]).newbyteorder("<")
        self.fill = self.dtype.type(self.meta["fill_value"])
        self._tail_key = "/0" * (len(self.chunk_shape) - 1)  # chunk (i, 0, ...): one chunk across the rest
        blosc = self.meta["codecs"][1]["configuration"]
        self.codec = Blosc.from_config({"cname": blosc["cname"], "clevel": blosc["clevel"],
                                        "shuffle": _SHUFFLE[blosc["shuffle"]], "blocksize": blosc["blocksize"],
                                        "typesize": blosc["typesize"]})

    @staticmethod
    def supports(meta: dict) -> bool:
        return not _unsupported(meta)

    def path(self, index: int) -> Path:
        return self.dir / "c" / f"{index}{self._tail_key}"

    def encode(self, values: np.ndarray) -> bytes | None:
        """The stored bytes of one chunk holding ``values`` (at most a chunk of rows; padded), or None
        when every value is the fill value (zarr writes no file then)."""
        values = np.asarray(values)
        if values.shape[1:] != self.chunk_shape[1:] or values.shape[0] > self.chunk:
            raise ValueError(f"{self.dir}: a chunk holds at most {self.chunk_shape}, got {values.shape}")
        if not np.any(values != self.fill):
            return None
        if values.shape[0] < self.chunk:
            padded = np.full(self.chunk_shape, self.fill, dtype=self.dtype)
            padded[: values.shape[0]] = values
            values = padded
        return bytes(self.codec.encode(np.ascontiguousarray(values, dtype=self.dtype).view(np.uint8)))

    def write(self, index: int, values: np.ndarray) -> int:
        """Write chunk ``index`` (rows from ``index * chunk`` on); returns the bytes written."""
        data = self.encode(values)
        path = self.path(index)
        if data is None:
            path.unlink(missing_ok=True)
            return 0
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return len(data)

    def read(self, index: int) -> np.ndarray:
        """Chunk ``index``, whole (padding included); the fill value where no file was written."""
        path = self.path(index)
        if not path.is_file():
            return np.full(self.chunk_shape, self.fill, dtype=self.dtype)
        raw = np.frombuffer(self.codec.decode(path.read_bytes()), dtype=self.dtype)
        return raw.reshape(self.chunk_shape).copy()


def set_length(array_dir: str | os.PathLike, length: int) -> None:
    """Set an array's first dimension in its ``zarr.json`` (what ``zarr.Array.resize`` writes)."""
    path = Path(array_dir) / META
    meta = json.loads(path.read_text())
    meta["shape"][0] = int(length)
    _write_json(path, meta)


def _unsupported(meta: dict) -> str | None:
    """Why ``ChunkFile`` cannot write this array's chunks exactly as zarr would (None: it can)."""
    try:
        grid, keys, codecs = meta["chunk_grid"], meta["chunk_key_encoding"], meta["codecs"]
        chunk_shape, shape = grid["configuration"]["chunk_shape"], meta["shape"]
        if meta.get("zarr_format") != 3 or meta.get("node_type") != "array" or not shape:
            return "not a zarr v3 array"
        if grid["name"] != "regular" or keys != {"name": "default", "configuration": {"separator": "/"}}:
            return "not a regular grid with default chunk keys"
        if list(chunk_shape[1:]) != list(shape[1:]):
            return "chunked along more than the first axis"
        if meta.get("storage_transformers"):
            return "has storage transformers"
        if [c["name"] for c in codecs] != ["bytes", "blosc"] or codecs[0].get("configuration", {}).get(
                "endian", "little") != "little":
            return "codecs are not bytes(little) -> blosc"
        if codecs[1]["configuration"]["typesize"] != np.dtype(meta["data_type"]).itemsize:
            return "blosc typesize is not the item size"
        if codecs[1]["configuration"]["shuffle"] not in _SHUFFLE:
            return "unknown blosc shuffle"
    except (KeyError, TypeError, IndexError):
        return "unexpected zarr.json layout"
    return None
