"""Whole chunks of a zarr v3 array written straight to their files: the bytes zarr would write.

zarr-python's ``array[a:b] = values`` costs ~5 ms of asyncio and buffer bookkeeping per call on
top of the codec itself; for ingest, which writes every event column chunk by chunk, that was 0.29 s
of CPU of the 3M-event Spotify ingest against 0.09 s here (measured: ``bench/ingest.py``'s data,
21 columns). This module does only what those calls did for fstore's own arrays, and nothing else:

- it reads the array's ``zarr.json`` (written by zarr itself, at creation) and accepts only the
  pipeline fstore creates, ``bytes`` (little endian) then ``blosc``, on a regular 1-D grid with the
  default ``c/`` key encoding; anything else is written through zarr (``ChunkFile.supports``);
- the codec is numcodecs' ``Blosc`` configured from that metadata exactly as zarr's ``BloscCodec``
  configures it, fed the chunk's little-endian bytes: the file is byte-for-byte zarr's (tested);
- an edge chunk is padded with the fill value to the full chunk shape, and a chunk holding only the
  fill value is not written (its file is removed), as zarr does with ``write_empty_chunks=False``;
- files are written aside and renamed: a chunk file is never written through (it may be a hard link
  to the parent version's file) and never visible half-written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from numcodecs import Blosc

_SHUFFLE = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}


class ChunkFile:
    """Encoder and writer of whole chunks of one local 1-D zarr v3 array (see the module docstring)."""

    def __init__(self, array_dir: str | os.PathLike, meta: dict | None = None):
        self.dir = Path(array_dir)
        self.meta = meta if meta is not None else read_meta(self.dir)
        why = _unsupported(self.meta)
        if why:
            raise ValueError(f"{self.dir}: {why}")
        self.chunk = int(self.meta["chunk_grid"]["configuration"]["chunk_shape"][0])
        self.dtype = np.dtype(self.meta["data_type"]).newbyteorder("<")
        self.fill = self.dtype.type(self.meta["fill_value"])
        blosc = self.meta["codecs"][1]["configuration"]
        self.codec = Blosc.from_config({"cname": blosc["cname"], "clevel": blosc["clevel"],
                                        "shuffle": _SHUFFLE[blosc["shuffle"]], "blocksize": blosc["blocksize"],
                                        "typesize": blosc["typesize"]})

    @staticmethod
    def supports(meta: dict) -> bool:
        return not _unsupported(meta)

    def encode(self, values: np.ndarray) -> bytes | None:
        """The stored bytes of one chunk holding ``values`` (at most a chunk; padded), or None when
        every value is the fill value (zarr writes no file then)."""
        values = np.asarray(values)
        if values.ndim != 1 or values.size > self.chunk:
            raise ValueError(f"{self.dir}: a chunk holds at most {self.chunk} values, got shape {values.shape}")
        if not np.any(values != self.fill):
            return None
        if values.size < self.chunk:
            padded = np.full(self.chunk, self.fill, dtype=self.dtype)
            padded[: values.size] = values
            values = padded
        return bytes(self.codec.encode(np.ascontiguousarray(values, dtype=self.dtype).view(np.uint8)))

    def write(self, index: int, values: np.ndarray) -> int:
        """Write chunk ``index`` (values from ``index * chunk`` on); returns the bytes written."""
        data = self.encode(values)
        path = self.dir / "c" / str(index)
        if data is None:
            path.unlink(missing_ok=True)
            return 0
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{index}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return len(data)


def read_meta(array_dir: str | os.PathLike) -> dict:
    return json.loads((Path(array_dir) / "zarr.json").read_text())


def set_length(array_dir: str | os.PathLike, length: int) -> None:
    """Set a 1-D array's shape in its ``zarr.json`` (what ``zarr.Array.resize`` writes), aside and renamed."""
    path = Path(array_dir) / "zarr.json"
    meta = json.loads(path.read_text())
    meta["shape"] = [int(length)]
    tmp = path.with_name(f".zarr.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, path)


def _unsupported(meta: dict) -> str | None:
    """Why ``ChunkFile`` cannot write this array's chunks exactly as zarr would (None: it can)."""
    try:
        grid, keys, codecs = meta["chunk_grid"], meta["chunk_key_encoding"], meta["codecs"]
        if meta.get("zarr_format") != 3 or meta.get("node_type") != "array" or len(meta["shape"]) != 1:
            return "not a 1-D zarr v3 array"
        if grid["name"] != "regular" or keys != {"name": "default", "configuration": {"separator": "/"}}:
            return "not a regular grid with default chunk keys"
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
