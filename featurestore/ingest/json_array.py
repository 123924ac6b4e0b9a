"""Stream a file holding one large JSON array of objects, in blocks of whole elements, with bounded memory.

The Melon release ships each file as a single JSON array (song_meta.json: 708K songs). Decoding it whole
would hold every Python object at once; instead the file is read in byte blocks, each block is cut after
its last complete top-level element, and only those elements are decoded (msgspec, typed: a wrong type
is reported with its JSON path). The cut is found with numpy, without a Python loop over bytes:

- a backslash only occurs inside strings in valid JSON, so a quote is escaped exactly when the run of
  backslashes before it is odd;
- characters after an odd number of unescaped quotes are inside a string; ``{ [`` and ``} ]`` outside
  strings move the nesting depth, and an element ends where the depth returns to the array's level.

Every scan starts at the array's level outside any string (the unconsumed tail of a block is carried
into the next one), so no scanner state crosses blocks. A UTF-8 byte-order mark at the start is skipped
(byte offsets in errors stay offsets in the file, as in any other tool); a file with nothing but it and
whitespace is an "empty file". Errors are :class:`InputError` lines naming the file and the item index
(with the JSON path of a wrong field) or the byte offset of malformed JSON.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import numpy as np

from ..store.errors import InputError

BLOCK_BYTES = 4 << 20  # measured at the real sizes: peak RSS grows ~10x the block (decoded objects)
_WS = b" \t\r\n"
_BOM = codecs.BOM_UTF8
_BYTE_AT = re.compile(r"\(byte (\d+)\)")
_ITEM_AT = re.compile(r"at `\$\[(\d+)\](.*)`")


def _backslashes_before(buf: bytes, q: int) -> int:
    i = q - 1
    while i >= 0 and buf[i] == 0x5C:
        i -= 1
    return q - 1 - i


def element_ends(buf: bytes) -> np.ndarray:
    """End offsets (exclusive) of the complete top-level elements of ``buf``, which starts between two
    elements of an array (outside any string, at the array's depth).

    Works on the structural characters only (quotes and brackets, a fraction of the bytes), so the
    temporaries are a few bytes per structural character, not eight per byte."""
    b = np.frombuffer(buf, dtype=np.uint8)
    quotes = np.flatnonzero(b == 0x22)
    after_bs = quotes[(quotes > 0) & (b[np.maximum(quotes - 1, 0)] == 0x5C)]
    if after_bs.size:  # rare: count each backslash run (backslashes only occur inside strings)
        escaped = [q for q in after_bs.tolist() if _backslashes_before(buf, q) % 2 == 1]
        quotes = np.setdiff1d(quotes, np.asarray(escaped, dtype=quotes.dtype), assume_unique=True)
    opens = np.flatnonzero((b == 0x7B) | (b == 0x5B))
    closes = np.flatnonzero((b == 0x7D) | (b == 0x5D))
    pos = np.concatenate([quotes, opens, closes])
    kind = np.concatenate([np.zeros(quotes.size, np.int8), np.ones(opens.size, np.int8),
                           np.full(closes.size, -1, np.int8)])
    order = np.argsort(pos, kind="stable")
    pos, kind = pos[order], kind[order]
    inside = (np.cumsum(kind == 0, dtype=np.int64) % 2).astype(bool)  # odd count of quotes so far
    delta = np.where(inside, 0, kind).astype(np.int32)
    depth = np.cumsum(delta, dtype=np.int64)
    return pos[(delta == -1) & (depth == 0)] + 1


class ArrayReader:
    """``for items in ArrayReader(path, type): ...`` yields lists of decoded elements, in file order;
    ``index`` is the item index of the first element of the next list; ``consumed`` the bytes read up to
    the end of the last list (for progress bars)."""

    def __init__(self, path: str | Path, item_type: Any, block_bytes: int = BLOCK_BYTES):
        self.path = Path(path)
        self.decoder = msgspec.json.Decoder(list[item_type])
        self.block_bytes = block_bytes
        self.index = 0
        self.offset = 0
        self.consumed = 0

    def __iter__(self) -> Iterator[list]:
        if not self.path.is_file():
            raise InputError(self.path, "file missing")
        with open(self.path, "rb") as f:
            head, start, eof = self._start(f)
            if not head:
                what = "0 bytes" if start == 0 else "only whitespace or a byte-order mark"
                raise InputError(self.path, f"empty file ({what}; expected a JSON array)")
            if head[:1] != b"[":
                raise InputError(self.path, f"not a JSON array (byte {start}: expected '[')")
            buf, pos = head[1:], start + 1  # pos: file offset of buf[0]
            first = True
            while True:
                ends = element_ends(buf)
                if ends.size:
                    cut = int(ends[-1])
                    items = self._decode(buf[:cut], pos, first)
                    self.consumed = pos + cut
                    yield items
                    first = False
                    buf, pos = buf[cut:], pos + cut
                if eof:
                    break
                more = f.read(self.block_bytes)
                eof = len(more) < self.block_bytes
                buf += more
            self._finish(buf, pos, first)

    def _start(self, f: BinaryIO) -> tuple[bytes, int, bool]:
        """Skip a UTF-8 byte-order mark at the file's start and the whitespace after it, reading as many
        blocks as that takes (whitespace is dropped as it is read: memory stays one block). Returns (the
        bytes read from the first other byte on, that byte's file offset, whether the file's end was
        reached); empty bytes: the file holds no other byte."""
        buf, pos, eof, checked = b"", 0, False, False
        while not eof:
            more = f.read(self.block_bytes)
            eof = len(more) < self.block_bytes
            buf += more
            if not checked:
                if len(buf) < len(_BOM) and not eof:
                    continue  # a block shorter than the mark: read on before deciding
                checked = True
                if buf.startswith(_BOM):  # as Windows tools write UTF-8; CSV files with one are accepted too
                    buf, pos = buf[len(_BOM):], len(_BOM)
            rest = buf.lstrip(_WS)
            pos, buf = pos + len(buf) - len(rest), rest
            if buf:
                break
        return buf, pos, eof

    def _decode(self, chunk: bytes, pos: int, first: bool) -> list:
        body = chunk.lstrip(_WS)
        skipped = len(chunk) - len(body)
        if not first:
            if body[:1] != b",":
                raise InputError(self.path, f"invalid JSON at byte {pos + skipped}: expected ',' between items "
                                 f"(item {self.index})")
            body, skipped = body[1:], skipped + 1
        self.offset = pos + skipped
        try:
            items = self.decoder.decode(b"[" + body + b"]")
        except msgspec.ValidationError as e:
            raise InputError(self.path, self._where(str(e))) from None
        except msgspec.DecodeError as e:
            m = _BYTE_AT.search(str(e))
            at = f"byte {self.offset + int(m.group(1)) - 1}" if m else f"items from {self.index}"
            raise InputError(self.path, f"invalid JSON at {at} ({str(e).split(' (byte')[0]})") from None
        self.index += len(items)
        return items

    def _where(self, message: str) -> str:
        m = _ITEM_AT.search(message)
        text = message.split(" - at ")[0]
        if not m:
            return f"item {self.index}: {text}"
        path = m.group(2).lstrip(".")
        return f"item {self.index + int(m.group(1))}" + (f", field {path}" if path else "") + f": {text}"

    def _finish(self, tail: bytes, pos: int, first: bool) -> None:
        rest = tail.strip(_WS)
        lead = len(tail) - len(tail.lstrip(_WS))
        if rest == b"]" or (first and rest == b"]"):
            return
        if not rest.endswith(b"]") or not rest[:-1].strip(_WS):
            what = "truncated: no closing ']'" if not rest.endswith(b"]") else "invalid JSON"
            raise InputError(self.path, f"{what} at byte {pos + lead} (after item {self.index - 1})")
        raise InputError(self.path, f"invalid JSON at byte {pos + lead}: not an object (item {self.index})")


def iter_items(path: str | Path, item_type: Any, block_bytes: int = BLOCK_BYTES,
               progress: Callable[[int], object] | None = None) -> Iterator[tuple[int, list]]:
    """(index of the first item, items) per block of ``path``'s top-level array; ``progress(n)`` is called
    with the bytes consumed since its last call (e.g. a tqdm bar's ``update``), the file's size in all."""
    reader = ArrayReader(path, item_type, block_bytes)
    done = 0
    for items in reader:
        if progress is not None:
            progress(reader.consumed - done)
            done = reader.consumed
        yield reader.index - len(items), items
    if progress is not None:
        progress(Path(path).stat().st_size - done)
