"""Helpers shared by the synthetic generators (output folder handling for all; ids and summary for yandex,
fsd, speakers).

Every generator draws all of its randomness, file ids included, from one seeded
``numpy.random.Generator``, so a fixed seed reproduces byte-identical output.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..store.errors import FstoreError

__all__ = ["SynthSummary", "hex_ids", "prepare_out_dir", "tree_size"]


@dataclass(frozen=True)
class SynthSummary:
    """What a generator wrote.

    files: number of files written (metadata and payload files).
    clips: number of audio items (tracks, clips or utterances, test items included).
    classes: number of labelled classes (artists, sound classes or speakers).
    bytes: total size of the files written, in bytes.
    """

    files: int
    clips: int
    classes: int
    bytes: int


def hex_ids(rng: np.random.Generator, n: int, digits: int, exclude: set[str] | None = None) -> list[str]:
    """``n`` distinct lower-case hex strings of ``digits`` characters drawn from ``rng``.

    Deterministic for a given generator state (no uuid4). Ids in ``exclude`` are never returned.
    """
    if digits <= 0 or digits % 2:
        raise ValueError(f"digits must be a positive even number, got {digits}")
    nbytes = digits // 2
    taken: set[str] = set(exclude or ())
    out: list[str] = []
    while len(out) < n:
        need = n - len(out)
        raw = rng.integers(0, 256, size=need * nbytes, dtype=np.uint8).tobytes().hex()
        for i in range(need):
            s = raw[i * digits : (i + 1) * digits]
            if s not in taken:
                taken.add(s)
                out.append(s)
    return out


def tree_size(paths: list[Path]) -> int:
    """Total size in bytes of the given files."""
    return sum(os.path.getsize(p) for p in paths)


def prepare_out_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """Make ``out_dir`` an empty directory to generate into.

    A non-empty one is refused (stale files from an earlier run would be ingested with the new ones)
    unless ``overwrite``, which clears it first.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FstoreError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FstoreError(f"{out}: folder is not empty (pass --overwrite to clear it first)")
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out
