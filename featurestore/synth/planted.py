"""The generators' truth beside a synthetic release (``OUT/_planted/``, outside the release format), as
the ceiling rows read it: one error line when a folder has none (a real release, or the wrong folder),
and ``.npz`` arrays read once each."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..store.errors import FstoreError

__all__ = ["planted_file", "read_npz"]


def planted_file(raw_dir: str | os.PathLike[str], relative: str, family: str) -> Path:
    """``raw_dir / relative``, or :class:`FstoreError` naming it when ``fstore synth FAMILY`` did not write it."""
    path = Path(raw_dir) / relative
    if not path.is_file():
        raise FstoreError(f"{path}: no planted truth (only `fstore synth {family}` output has one)")
    return path


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, each decompressed once (an ``NpzFile`` decompresses on every access)."""
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}
