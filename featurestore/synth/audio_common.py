"""Helpers shared by the synthetic generators: ids and summary for yandex, fsd, speakers (the output
folder: ``featurestore.store.folders.prepare_out_dir``).

Every generator draws all of its randomness, file ids included, from one seeded
``numpy.random.Generator``, so a fixed seed reproduces byte-identical output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SynthSummary", "hex_ids", "tree_size"]


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
