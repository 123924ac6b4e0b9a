"""Reading one version from the root checkout, and from its own tree once a commit moves the root on.

The root checkout is convenient (plain zarr readers, short paths in messages) but a later commit
replaces its files. A reader pinned to version N reads the root while the root's ``manifest.json`` is
still the inode it opened, and its tree otherwise. The check follows each read: a commit removes the
root's ``manifest.json`` before it touches any data file, so a read made before the check saw version N.
"""

from __future__ import annotations

import os
from pathlib import Path

from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import LocalStore


class RootPin:
    """Whether the root still holds the version a reader opened (sticky: once moved, always moved)."""

    def __init__(self, root: Path, tree: Path, marker_ino: int):
        self.root, self.tree, self._ino = Path(root), Path(tree), marker_ino
        self._moved = False

    def moved(self) -> bool:
        if not self._moved:
            try:
                self._moved = os.stat(self.root / "manifest.json").st_ino != self._ino
            except FileNotFoundError:
                self._moved = True
        return self._moved

    def folder(self) -> Path:
        return self.tree if self.moved() else self.root

    def read(self, rel: str, fn):
        """``fn(path)`` on the root copy of ``rel``, again on the tree's if the root moved meanwhile."""
        if not self.moved():
            out = fn(self.root / rel)
            if not self.moved():
                return out
        return fn(self.tree / rel)


class PinnedLocalStore(LocalStore):
    """A read-only zarr ``LocalStore`` on the root that serves a version's tree once the root moved on."""

    def __init__(self, pin: RootPin):
        super().__init__(pin.root, read_only=True)
        self.pin = pin
        self._tree = LocalStore(pin.tree, read_only=True)

    async def get(self, key: str, prototype: BufferPrototype | None = None,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        if not self.pin.moved():
            out = await super().get(key, prototype, byte_range)
            if not self.pin.moved():
                return out
        return await self._tree.get(key, prototype, byte_range)

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        if not self.pin.moved():
            out = await super().get_partial_values(prototype, key_ranges)
            if not self.pin.moved():
                return out
        return await self._tree.get_partial_values(prototype, key_ranges)

    async def exists(self, key: str) -> bool:
        return await (self._tree if self.pin.moved() else super()).exists(key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PinnedLocalStore) and self.pin is other.pin
