"""The store manifest: schema version, tables, sources and per-file checksums.

``manifest.json`` is written last, inside the staging directory, so a store with a manifest is
a complete store. ``verify_checksums`` recomputes every file's sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# top-level folders that hold no version data: loader caches and the version log with its trees
NOT_DATA = ("cache", "_fstore")


def store_files(root: Path) -> list[Path]:
    """Every data file of a store (or of one version's tree), manifest, caches and version log excluded."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        top = Path(dirpath) == Path(root)
        dirnames[:] = sorted(d for d in dirnames if not (top and d in NOT_DATA) and d != "cache")
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.name != MANIFEST:
                out.append(p)
    return out


def write_manifest(root: Path, dataset: str, tables: dict, sources: list[dict], extra: dict | None = None,
                   uploaded: dict[str, dict] | None = None) -> dict:
    """Write ``root/manifest.json`` listing every data file under ``root`` with its size and sha256, plus
    ``uploaded``: files of the version that live only in a remote store's objects (relative path ->
    ``{"bytes", "sha256"}``, hashed by whoever uploaded them)."""
    files = {str(p.relative_to(root)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in store_files(root)}
    clash = set(files) & set(uploaded or {})
    if clash:
        raise ValueError(f"{root}: {sorted(clash)[0]} is both a local file and an uploaded one")
    files = dict(sorted({**files, **(uploaded or {})}.items()))
    manifest = {
        "format": "fstore",
        "schema_version": SCHEMA_VERSION,
        "dataset": dataset,
        "tables": tables,
        "sources": sources,
        "files": files,
        **(extra or {}),
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def verify_checksums(root: Path, manifest: dict) -> list[str]:
    """Problems found: missing, extra, resized or changed files."""
    problems = []
    expected = manifest["files"]
    present = {str(p.relative_to(root)) for p in store_files(root)}
    for name in sorted(set(expected) - present):
        problems.append(f"{name}: missing")
    for name in sorted(present - set(expected)):
        problems.append(f"{name}: not in the manifest")
    for name in sorted(set(expected) & present):
        p = root / name
        if p.stat().st_size != expected[name]["bytes"]:
            problems.append(f"{name}: size {p.stat().st_size} != {expected[name]['bytes']}")
        elif sha256_file(p) != expected[name]["sha256"]:
            problems.append(f"{name}: checksum mismatch")
    return problems
