"""The one reader of tabular raw files: CSV, TSV and JSON arrays of objects, errors naming file/line/column.

What real releases and common tools produce is accepted: a UTF-8 byte-order mark, CRLF line ends,
blank lines at the end of the file, spaces around header names (and, in text rows, around values).
Anything else (a missing column, a short or long row, an empty value, a blank line between rows, a
value that does not parse, broken quoting, invalid JSON) is one ``InputError`` naming the file and the
line (CSV/TSV, 1-based, the header is line 1) or the item index and field (JSON).

Two ways to read a delimited file:
- ``read_table``: small metadata files (labels, track lists) as text rows, with Python's csv module
  (``.tsv`` files are tab-separated without quoting, everything else comma-separated with quotes).
- ``read_typed_csv``: large files (MSSD logs) straight into a typed polars frame. The fast path is one
  ``polars.read_csv`` with the schema's dtypes; only when it fails or meets empty values is the file
  looked at again, to find the first bad value or to drop the blank lines at its end.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import json
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ..store.errors import InputError

TAIL_BYTES = 1 << 16  # how much of a file's end is read to count trailing blank lines


# --- bytes ---------------------------------------------------------------------------------------

_HASH_POOL: ThreadPoolExecutor | None = None


class HashAside:
    """A sha256 computed on a background thread (hashlib and file reads release the GIL), so the parse
    of the same file runs meanwhile; ``hexdigest`` waits for it."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._pending: Future | None = None

    def _submit(self, work) -> None:
        global _HASH_POOL
        if _HASH_POOL is None:
            _HASH_POOL = ThreadPoolExecutor(1, thread_name_prefix="fstore-hash")
        before = self._pending

        def feed() -> None:
            if before is not None:
                before.result()
            work()

        self._pending = _HASH_POOL.submit(feed)

    def update(self, data: bytes) -> None:
        self._submit(lambda: self._h.update(data))

    def update_file(self, path: Path) -> None:
        """Feed the file's bytes, read in blocks on the hash thread (``hashlib.file_digest``). Beside
        a parse that maps the same file, this costs 0.06 s less CPU per 125 MB than reading the file
        whole into one bytes object for both (that copy and its page faults cost about as much as
        the hash itself; measured here), and the parse no longer waits for the read."""
        def feed() -> None:
            with open(path, "rb") as f:
                self._h = hashlib.file_digest(f, lambda: self._h)

        self._submit(feed)

    def hexdigest(self) -> str:
        if self._pending is not None:
            self._pending.result()
        return self._h.hexdigest()


def read_source_bytes(path: Path, digest: HashAside | None = None) -> bytes | Path:
    """The file's content: the path itself when plain, decompressed bytes when gzip.

    ``digest``: fed the file's bytes as stored; a plain file is hashed by its own reads on the hash
    thread while the caller parses the path (polars maps it), a gzip file from the one read that
    is then decompressed."""
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")
    if path.suffix != ".gz":
        if digest is not None:
            digest.update_file(path)
        return path
    if digest is not None:
        stored = path.read_bytes()
        digest.update(stored)
    try:
        with gzip.open(path, "rb") if digest is None else gzip.GzipFile(fileobj=io.BytesIO(stored)) as f:
            data = f.read()
    except EOFError:
        raise InputError(path, "truncated gzip file (compressed stream ended early)") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as e:
        raise InputError(path, f"corrupt gzip file ({e})") from None
    if not data:
        raise InputError(path, "file is empty (after decompression)")
    return data


def _text(path: Path) -> str:
    """The whole file as text, BOM removed; undecodable bytes are an error, not a silent replacement."""
    source = read_source_bytes(path)
    data = source.read_bytes() if isinstance(source, Path) else source
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(path, f"not UTF-8 text (byte {e.start})", line=line) from None


def _split_header(line: str, delimiter: str, path: Path) -> list[str]:
    """Header names as the file spells them (quotes removed). A carriage return inside the line (not
    as part of its CRLF end) or a header the csv module cannot split is an error on line 1."""
    try:
        return next(csv.reader([line.rstrip("\r\n")], delimiter=delimiter), [])
    except csv.Error as e:
        if "\r" in line.rstrip("\r\n"):
            message = "stray carriage return (\\r) in the header line, not at its end"
        else:
            message = f"malformed CSV header ({e})"
        raise InputError(path, message, line=1) from None


# --- text rows: read_table -----------------------------------------------------------------------

@dataclass
class Table:
    """A delimited file as text: stripped header names and (line number, stripped fields) rows."""

    path: Path
    header: list[str]
    rows: list[tuple[int, list[str]]]

    def records(self, columns: list[str]) -> list[tuple[int, dict[str, str]]]:
        """(line, {column: value}) for every row, each of ``columns`` present and non-empty."""
        pos = {c: self.header.index(c) for c in columns}
        out = []
        for line, fields in self.rows:
            row = {c: fields[i] for c, i in pos.items()}
            for c, v in row.items():
                if not v:
                    raise InputError(self.path, "empty value", line=line, column=c)
            out.append((line, row))
        return out


def read_table(path: Path, columns: list[str] | None = None, *, exact: bool = False,
               allow_empty: bool = False) -> Table:
    """Read a CSV (or, for ``*.tsv``, TSV) file as text rows.

    ``columns``: names the header must hold (``exact``: the header must be exactly these). Every row
    must have as many fields as the header. ``allow_empty``: a header-only file is zero rows, not an
    error.
    """
    delimiter = "\t" if path.name.endswith((".tsv", ".tsv.gz")) else ","
    kind = "tab" if delimiter == "\t" else "comma"
    text = _text(path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True,
                        quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
    rows: list[tuple[int, list[str]]] = []
    blank: int | None = None  # line of the first blank line of the current run of blank lines
    start = 1
    try:
        header = [h.strip() for h in next(reader, [])]
        if not any(header):
            raise InputError(path, "no header line (file is blank)", line=1)
        start = reader.line_num + 1
        for fields in reader:
            if not fields or not "".join(fields).strip():
                blank = start if blank is None else blank
            else:
                if blank is not None:  # blank lines are accepted at the end only
                    raise InputError(path, "blank line between data rows", line=blank)
                if len(fields) != len(header):
                    raise InputError(path, f"{len(fields)} {kind}-separated fields, header has {len(header)}",
                                     line=start)
                rows.append((start, [f.strip() for f in fields]))
            start = reader.line_num + 1
    except csv.Error as e:  # the line where the broken record starts (e.g. an unclosed quote)
        raise InputError(path, f"malformed {'TSV' if kind == 'tab' else 'CSV'} record ({e}, at line {reader.line_num})",
                         line=start) from None
    want = list(columns or [])
    if exact and header != want:
        raise InputError(path, f"header {header[:6]} is not {want}", line=1)
    missing = [c for c in want if c not in header]
    if missing:
        raise InputError(path, f"missing column(s) {missing}; header has {header[:12]}", line=1)
    if len(set(header)) != len(header):
        raise InputError(path, f"a column name appears twice in the header {header[:12]}", line=1)
    if not rows and not allow_empty:
        raise InputError(path, "no data rows (header only)")
    return Table(path, header, rows)


# --- JSON ----------------------------------------------------------------------------------------

def read_json(path: Path, top: type = dict) -> dict | list:
    """A JSON file whose top level is a ``top`` (object or array)."""
    text = _text(path)
    if not text.strip():
        raise InputError(path, "empty file (only whitespace or a byte-order mark)")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(path, f"not valid JSON ({e.msg})", line=e.lineno) from None
    if not isinstance(obj, top):
        raise InputError(path, f"top level is not a JSON {'object' if top is dict else 'array'}")
    return obj


def json_records(path: Path, items: object, fields: dict[str, type], where: str = "") -> list[dict]:
    """Validate ``items`` (found at ``where`` in ``path``) as an array of objects with typed ``fields``.

    Errors name the item index and the field, e.g. ``speakers['id10001'][3], field 'mel_len'``.
    """
    if not isinstance(items, list):
        raise InputError(path, f"{where or 'top level'}: expected an array, got {type(items).__name__}")
    for k, item in enumerate(items):
        at = f"{where}[{k}]"
        if not isinstance(item, dict):
            raise InputError(path, f"{at}: expected an object, got {type(item).__name__}")
        for name, kind in fields.items():
            value = item.get(name)
            ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
            if not ok:
                got = "missing" if name not in item else f"{type(value).__name__} {value!r}"[:80]
                raise InputError(path, f"{at}, field {name!r}: expected {kind.__name__}, got {got}")
    return items


def read_json_records(path: Path, fields: dict[str, type]) -> list[dict]:
    """A JSON file holding one array of objects (e.g. Melon playlists), each with typed ``fields``."""
    return json_records(path, read_json(path, list), fields)


# --- typed polars frames: read_typed_csv ---------------------------------------------------------

def read_header(source: bytes | Path, path: Path) -> list[str]:
    """The header names as polars sees them (BOM and line end removed, not stripped); ``path`` names
    the file in errors."""
    if isinstance(source, Path):
        with open(source, "rb") as f:
            line = f.readline()
    else:
        end = source.find(b"\n")  # not split(): that would copy the whole file after the header
        line = source if end < 0 else source[:end]
    return _split_header(line.removeprefix(codecs.BOM_UTF8).decode("utf-8", errors="replace"), ",", path)


def _parse_text(col: pl.Series, dtype: pl.DataType) -> pl.Series:
    """Non-strict parse of a text column: null where the text is not a value of ``dtype``."""
    if dtype == pl.Boolean:
        return col.str.to_lowercase().replace_strict({"true": True, "false": False}, default=None,
                                                      return_dtype=pl.Boolean)
    if dtype == pl.Date:
        return col.str.to_date("%Y-%m-%d", strict=False)
    return col.cast(dtype, strict=False)


_PARSE_ERRORS = (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError, pl.exceptions.NoDataError,
                 pl.exceptions.ShapeError, pl.exceptions.SchemaError, pl.exceptions.ColumnNotFoundError)


def _read(source: bytes | Path, raw: list[str], names: dict[str, str], schema: dict) -> pl.DataFrame:
    """``names``: stripped column name -> name as spelled in the file, for the columns wanted."""
    reader = source if isinstance(source, Path) else io.BytesIO(source)
    if [h.strip() for h in raw] == list(names):  # the usual case: a full schema skips all inference (10% faster)
        df = pl.read_csv(reader, schema={names[c]: schema[c] for c in names})
    else:
        df = pl.read_csv(reader, columns=list(names.values()),
                         schema_overrides={names[c]: schema[c] for c in names})
    if any(k != v for k, v in names.items()):
        df = df.rename({v: k for k, v in names.items()})
    return df.select(list(names))


def _trailing_blank_lines(source: bytes | Path) -> int:
    """How many blank lines end the file (polars reads each as a row of nulls)."""
    if isinstance(source, Path):
        with open(source, "rb") as f:
            f.seek(max(0, source.stat().st_size - TAIL_BYTES))
            tail = f.read()
    else:
        tail = source[-TAIL_BYTES:]
    lines = tail.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the last line's terminator
    n = 0
    while n < len(lines) - 1 and not lines[-1 - n].strip():
        n += 1
    return n


def read_typed_csv(path: Path, schema: dict[str, pl.DataType], required: list[str] | None = None,
                   digest: HashAside | None = None) -> pl.DataFrame:
    """Read the columns of ``schema`` from a CSV file, every value non-null and of its dtype.

    Raises InputError naming the file, line (1-based, header is line 1) and column of the first
    problem: a missing column, an empty value, or a value that does not parse. ``pl.Enum`` columns
    are open vocabularies: if a value is outside the Enum, that column comes back as text.
    ``digest``: a ``HashAside`` fed the file's bytes (see ``read_source_bytes``).
    """
    return _read_typed(path, read_source_bytes(path, digest), schema, required)


def read_typed_csv_bytes(path: Path, source: bytes, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """``read_typed_csv`` of text already read (a block of a large file, its header line first)."""
    return _read_typed(path, source, schema, None)


def _read_typed(path: Path, source: bytes | Path, schema: dict[str, pl.DataType],
                required: list[str] | None) -> pl.DataFrame:
    raw = read_header(source, path)
    stripped = [h.strip() for h in raw]
    required = list(schema) if required is None else required
    missing = [c for c in required if c not in stripped]
    if missing:
        raise InputError(path, f"missing column(s) {missing}; header has {stripped}", line=1)
    if len(set(stripped)) != len(stripped):
        raise InputError(path, f"a column name appears twice in the header {stripped}", line=1)
    names = {c: raw[stripped.index(c)] for c in schema if c in stripped}
    try:
        df = _read(source, raw, names, schema)
    except _PARSE_ERRORS as e:
        enums = [c for c in names if isinstance(schema[c], pl.Enum)]
        if not enums:
            _locate_parse_error(path, source, names, schema, e)
        # an Enum column met a value outside its vocabulary: open vocabularies take it as text
        return _read_typed(path, source, {c: (pl.Utf8 if c in enums else t) for c, t in schema.items()}, required)
    nulls = df.null_count().row(0)
    if any(nulls):
        df = _drop_trailing_blank_lines(df, source)
        nulls = df.null_count().row(0)
    if df.height == 0:
        raise InputError(path, "no data rows (header only)")
    for c, n in zip(df.columns, nulls, strict=True):
        if n:
            row = int(df[c].is_null().arg_max())
            blank = df.row(row) == (None,) * df.width
            raise InputError(path, "blank line" if blank else "empty value", line=row + 2,
                             column=None if blank else c)
    return df


def _drop_trailing_blank_lines(df: pl.DataFrame, source: bytes | Path) -> pl.DataFrame:
    blank = _trailing_blank_lines(source)
    if not blank:
        return df
    all_null = df.tail(blank).null_count().row(0)
    if min(all_null) == blank:  # the last rows are null in every column: they are those blank lines
        return df.head(df.height - blank)
    return df


def _locate_parse_error(path: Path, source, names: dict[str, str], schema, err: Exception) -> None:
    reader = source if isinstance(source, Path) else io.BytesIO(source)
    try:
        text = pl.read_csv(reader, columns=list(names.values()), infer_schema=False)
    except Exception as e2:  # noqa: BLE001 - the file is not even CSV-shaped
        raise InputError(path, f"not a readable CSV file ({str(e2).splitlines()[0]})") from None
    for c, spelled in names.items():
        raw = text[spelled]
        parsed = _parse_text(raw, schema[c])
        bad = parsed.is_null() & raw.is_not_null()
        if bad.any():
            row = int(bad.arg_max())
            raise InputError(path, f"cannot parse {raw[row]!r} as {schema[c]}", line=row + 2, column=c)
    raise InputError(path, f"unreadable CSV ({str(err).splitlines()[0]})")
