"""Output folders that are not stores: where the synthetic generators (``featurestore.synth``) and the
offline split (``featurestore.ingest.melon_split``) write raw-format files. Here, below both, so that
neither imports the other."""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import FstoreError

__all__ = ["prepare_out_dir"]


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
