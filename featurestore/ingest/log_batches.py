"""MSSD log files read in bounded batches of whole sessions, so that an ingest's memory does not grow
with the size of a log file (a 7 GB log of the full release is read 24 MB at a time).

- ``text_blocks``: a CSV file (plain or gzip, streamed) as blocks of whole lines, each with the file
  line of its first row;
- ``typed_blocks``: those blocks parsed with ``table.read_typed_csv``'s rules and errors, lines
  counted from the start of the file;
- ``session_batches``: typed blocks re-cut at session boundaries (the last, maybe unfinished session of
  a block is carried into the next), so that every check sees each session whole, as in one read.

Block size: 24 MB by default. Larger blocks are allocated by glibc with a fresh ``mmap`` each time, and
their page faults made reading 4x slower here (0.41 against 1.72 GB/s for 64 MB against 24 MB reads).
Kept free of numpy at import: the command line's parse thread imports this while the main thread imports
the rest.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ..schemas.mssd import MAX_SESSION_LENGTH
from ..store.errors import InputError
from .table import read_header, read_typed_csv_bytes

# bytes of CSV text per block (see the module docstring); FSTORE_LOG_BLOCK_BYTES sets another size for
# a whole process (the memory-limit test ingests with blocks smaller, and larger, than a file)
BLOCK_BYTES = int(os.environ.get("FSTORE_LOG_BLOCK_BYTES", 24 << 20))


@dataclass
class Batch:
    """Rows of whole sessions (of one file): row r is line ``first_line + r`` of ``path``."""

    path: Path
    frame: pl.DataFrame
    first_line: int
    last: bool  # the file's last batch

    def line(self, r: int) -> int:
        return self.first_line + r


def shift_lines(err: InputError, path: Path, first_line: int) -> InputError:
    """``err`` raised for a block (row r at line r + 2) as an error of the file, where the block's row 0
    is line ``first_line``."""
    if err.path != path or err.line is None or first_line == 2:
        return err
    return InputError(path, err.detail, line=err.line + first_line - 2, column=err.column)


class LinesFrom:
    """``with LinesFrom(path, first_line):`` re-raises a block's ``InputError`` with file lines."""

    def __init__(self, path: Path, first_line: int):
        self.path, self.first_line = path, first_line

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if isinstance(exc, InputError):
            shifted = shift_lines(exc, self.path, self.first_line)
            if shifted is not exc:
                raise shifted from None
        return False


def _cut(data: bytes, start: int) -> int:
    """The end of the last whole line of ``data[start:]`` that is not followed only by blank lines
    (blank lines are accepted at the end of a file only, so a block never ends with them); ``start`` if
    there is none (the next read must be larger)."""
    cut = data.rfind(b"\n", start) + 1
    while cut > start:
        prev = data.rfind(b"\n", start, cut - 1) + 1
        if data[max(prev, start):cut].strip():
            return cut
        cut = max(prev, start)
    return start


def _count_lines(data: bytes, stop: int) -> int:
    """Newlines in ``data[:stop]``: numpy compares 1 MB at a time (in cache) 3x faster than ``bytes.count``,
    which tests one byte at a time (4 against 12 ms a 24 MB block here). numpy is imported on first use,
    when the main thread has imported it already or is importing it."""
    import numpy as np

    view, piece = np.frombuffer(data, np.uint8, count=stop), 1 << 20
    return sum(int(np.count_nonzero(view[i:i + piece] == 10)) for i in range(0, stop, piece))


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb", buffering=0)  # noqa: SIM115


def text_blocks(path: Path, block_bytes: int | None = None
                ) -> Iterator[tuple[bytes, int, int, int, bool, int | None]]:
    """(data, start, stop, first line, last, lines): ``data[start:stop]`` is whole lines of the file
    (without its header), the first being line ``first line``; ``lines``: how many (None for the last
    block, whose lines nobody counts). A line longer than a block doubles the read.
    ``block_bytes``: None for ``BLOCK_BYTES`` (read when called: tests lower it).

    A plain file is read again from the start of the unfinished line that ends a block (one seek back)
    instead of carrying those bytes into the next block, which would copy every block once more; a gzip
    stream cannot seek back cheaply, so it carries them."""
    block_bytes = block_bytes or BLOCK_BYTES
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")
    seek_back = path.suffix != ".gz"
    try:
        with _open(path) as f:
            header = f.readline()
            yield header, 0, len(header), 1, False, 1
            line, carry, want = 2, b"", block_bytes
            while True:
                chunk = f.read(want)
                eof = len(chunk) < want
                data = carry + chunk if carry else chunk
                stop = len(data) if eof else _cut(data, 0)
                if stop == 0 and not eof:
                    want *= 2  # no whole line in it: read more
                    if seek_back:
                        f.seek(-len(data), os.SEEK_CUR)
                    else:
                        carry = data
                    continue
                lines = None if eof else _count_lines(data, stop)
                yield data, 0, stop, line, eof, lines
                if eof:
                    return
                line += lines
                want = block_bytes
                if seek_back:
                    f.seek(stop - len(data), os.SEEK_CUR)
                else:
                    carry = data[stop:]
    except EOFError:
        raise InputError(path, "truncated gzip file (compressed stream ended early)") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise InputError(path, f"corrupt gzip file ({e})") from None


def _blank(data: bytes, start: int, stop: int) -> bool:
    """Only whitespace in ``data[start:stop]``; looks at the first few KB unless they are blank (slicing a
    whole block copies it)."""
    if data[start:min(stop, start + 4096)].strip():
        return False
    return not data[start:stop].strip()


def typed_blocks(path: Path, schema_of: Callable[[], dict], block_bytes: int | None = None
                 ) -> Iterator[tuple[pl.DataFrame, int, bool]]:
    """(frame, file line of its row 0, last) for each block of ``path``, parsed against ``schema_of()``
    (asked again for every block: an open vocabulary grows as the ingest goes) with the checks and
    errors of ``table.read_typed_csv``. A file smaller than a block is exactly one such read."""
    blocks = text_blocks(path, block_bytes)
    header = next(blocks)[0]
    if path.suffix == ".gz" and not header:
        raise InputError(path, "file is empty (after decompression)")
    raw = read_header(header, path)
    first = True
    for data, start, stop, line, last, lines in blocks:
        if not first and _blank(data, start, stop):
            return  # only blank lines after the last block's rows: the file's accepted blank end
        yield _parse_block(path, header, raw, data, start, stop, line, last, lines, schema_of()), line, last
        first = False


def _parse_block(path: Path, header: bytes, raw: list[str], data: bytes, start: int, stop: int, line: int,
                 last: bool, lines: int | None, schema: dict) -> pl.DataFrame:
    """One block: in the usual case (header exactly the schema's columns, no empty value) one headerless
    ``read_csv`` of the lines (``n_rows``: no copy of the block); else the block with its header through
    ``read_typed_csv``'s whole logic, which finds and names the problem."""
    if line > 2 and [h.strip() for h in raw] == list(schema) and not last:
        try:
            df = pl.read_csv(data, has_header=False, new_columns=raw, schema=dict(zip(raw, schema.values(), strict=True)),
                             n_rows=lines)
            if list(df.columns) != list(schema):
                df = df.rename(dict(zip(raw, schema, strict=True)))
            if not any(df.null_count().row(0)):
                return df
        except pl.exceptions.PolarsError:
            pass  # found and named below
    source = header + data[start:stop] if line > 2 or stop < len(data) or start else header + data
    with LinesFrom(path, line):
        return read_typed_csv_bytes(path, source, schema)


def read_in_blocks(path: Path, schema: dict) -> pl.DataFrame:
    """The whole file as one frame, read block by block: what it holds is the parsed frame, never the
    whole text too (a gzip track file of the full release is about 600 MB of text)."""
    frames = [df for df, _, _ in typed_blocks(path, lambda: schema)]
    return frames[0] if len(frames) == 1 else pl.concat(frames, rechunk=False)


def _unify(carry: pl.DataFrame, df: pl.DataFrame) -> pl.DataFrame:
    """``carry`` (rows held from the previous block) before ``df``: an open categorical column may be an
    Enum in one and text in the other, or Enums of a vocabulary that grew; text when they differ."""
    if carry.schema != df.schema:
        cast = {c: pl.Utf8 for c in df.columns if carry.schema[c] != df.schema[c]}
        carry, df = carry.with_columns(pl.col(c).cast(t) for c, t in cast.items()), \
            df.with_columns(pl.col(c).cast(t) for c, t in cast.items())
    return pl.concat([carry, df], rechunk=False)


def _last_run_start(sid: pl.Series) -> int:
    """Row where the last run of equal session ids begins."""
    tail = sid.tail(MAX_SESSION_LENGTH + 1)
    differs = (tail != tail[-1]).to_list()
    if any(differs):
        return sid.len() - tail.len() + len(differs) - differs[::-1].index(True)
    starts = (sid != sid.shift(1)).fill_null(True)
    return int(starts.arg_true()[-1])


def session_batches(path: Path, schema_of: Callable[[], dict], block_bytes: int | None = None) -> Iterator[Batch]:
    """Batches of whole sessions: a block's last session is held back and put before the next block's
    rows (a session never spans two batches). The last batch of a file holds the rest."""
    carry: pl.DataFrame | None = None
    carry_line = 2
    for df, line, last in typed_blocks(path, schema_of, block_bytes):
        if carry is not None:
            df, line = _unify(carry, df), carry_line
        if last:
            yield Batch(path, df, line, True)
            return
        keep = _last_run_start(df["session_id"])
        carry, carry_line = df.slice(keep), line + keep
        if keep:
            yield Batch(path, df.slice(0, keep), line, False)
    if carry is not None:
        yield Batch(path, carry, carry_line, True)


def run_id_batches(path: Path, block_bytes: int | None = None) -> Iterator[pl.Series]:
    """The session id of every run of ``path`` (consecutive rows of one id), in file order, in batches:
    for the split-session check, which looks up ids by their run number."""
    previous = None
    for df, _, _ in typed_blocks(path, lambda: {"session_id": pl.Utf8}, block_bytes):
        sid = df["session_id"]
        starts = (sid != sid.shift(1)).fill_null(True)
        if previous is not None and sid.len() and sid[0] == previous:
            starts[0] = False
        if sid.len():
            previous = sid[-1]
        yield sid.filter(starts)
