"""User-facing errors: the CLI prints these as one line, without a traceback."""

from __future__ import annotations


class FstoreError(Exception):
    """A user mistake or bad input; the message names the file, line or field."""


class InputError(FstoreError):
    """Raw input that cannot be ingested as it is."""

    def __init__(self, path: object, message: str, line: int | None = None, column: str | None = None):
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.column = path, line, column
        self.detail = message  # without the place: an error found in a block is raised again with file lines


class StoreError(FstoreError):
    """A store that is missing, damaged or not what the caller asked for."""
