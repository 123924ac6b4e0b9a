"""Ragged sequences in CSR form: ``offsets`` plus flat per-event columns.

On disk: ``<name>/offsets`` (rows + 1, int64) and ``<name>/events/<column>`` 1-D arrays, all
chunked and compressed. Row i's events are ``[offsets[i], offsets[i+1])`` in every column.
Column metadata (dtype, what the values mean) lives in the group's attributes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .arrays import EVENT_CHUNK, ChunkedAppender, create, read_range

if TYPE_CHECKING:
    import zarr

    from .chunks import LocalGroup


class RaggedWriter:
    """Streaming writer: ``append(lengths, {column: values})`` for blocks of whole rows."""

    def __init__(self, group: zarr.Group | LocalGroup, name: str, columns: dict[str, dict], chunk: int = EVENT_CHUNK):
        """columns: name -> {"dtype": numpy dtype name, plus free-form meaning, e.g. "dictionary"}."""
        self.group = group.require_group(name)
        self.columns = columns
        self._offsets = ChunkedAppender(create(self.group, "offsets", "int64", (0,), (EVENT_CHUNK,)))
        self._offsets.append(np.zeros(1, dtype=np.int64))
        events = self.group.require_group("events")
        self._cols = {c: ChunkedAppender(create(events, c, m["dtype"], (0,), (chunk,), bits=m.get("type") == "bool"))
                      for c, m in columns.items()}
        self.rows = 0
        self.events = 0

    @classmethod
    def resume(cls, group: zarr.Group, name: str) -> RaggedWriter:
        """A writer that appends rows to an existing ragged group (an append: new chunks only, plus the
        partial last chunk of each array, rewritten aside)."""
        self = cls.__new__(cls)
        self.group = group[name]
        meta = dict(self.group.attrs)
        self.columns = meta["columns"]
        self._offsets = ChunkedAppender(self.group["offsets"])
        self._cols = {c: ChunkedAppender(self.group["events"][c]) for c in self.columns}
        self.rows, self.events = int(meta["rows"]), int(meta["events"])
        return self

    def append(self, lengths: np.ndarray, values: dict[str, np.ndarray]) -> None:
        lengths = np.asarray(lengths, dtype=np.int64)
        total = int(lengths.sum())
        if set(values) != set(self._cols):
            raise ValueError(f"columns {sorted(values)} != declared {sorted(self._cols)}")
        for c, v in values.items():
            if len(v) != total:
                raise ValueError(f"column {c!r} has {len(v)} values for {total} events")
            self._cols[c].append(v)
        self._offsets.append(self.events + np.cumsum(lengths))
        self.rows += lengths.size
        self.events += total

    def close(self, **attrs) -> dict:
        self._offsets.close()
        for a in self._cols.values():
            a.close()
        meta = {**dict(self.group.attrs), "kind": "ragged", "rows": self.rows, "events": self.events,
                "columns": self.columns, **attrs}
        self.group.attrs.update(meta)
        return meta


class RaggedSet:
    """Reader over one ragged group. Offsets are small (8 bytes a row) and read whole."""

    def __init__(self, group: zarr.Group):
        self.group = group
        self.meta = dict(group.attrs)
        self.columns: dict[str, dict] = self.meta["columns"]
        self.offsets = np.asarray(group["offsets"][:])

    @property
    def rows(self) -> int:
        return self.offsets.size - 1

    @property
    def events(self) -> int:
        return int(self.offsets[-1])

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def array(self, column: str) -> zarr.Array:
        if column not in self.columns:
            raise KeyError(f"no event column {column!r}; columns are {sorted(self.columns)}")
        return self.group["events"][column]

    def read(self, column: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Events [start, stop) of one column, in one read."""
        stop = self.events if stop is None else stop
        return read_range(self.array(column), start, stop)

    def rows_slice(self, column: str, row_start: int, row_stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(values, offsets rebased to 0) for rows [row_start, row_stop)."""
        lo, hi = int(self.offsets[row_start]), int(self.offsets[row_stop])
        return self.read(column, lo, hi), self.offsets[row_start : row_stop + 1] - lo
