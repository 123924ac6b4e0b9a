"""Loader caches that are verified, not trusted: a key per version, sealed files, whole-folder publish.

A cache folder holds plain files plus ``meta.json``: the key (a hash of the version's checksums of the
tables it was built from), the bounds proven at build, and per file its size, crc32 and a stat stamp
(inode, mtime). ``check_cache`` compares sizes and stamps (cheap: no data read); a file whose stamp
changed is checksummed again, and ``full=True`` (``fstore validate --caches``) checksums them all.
A folder that fails is rebuilt by its loader; ``publish`` swaps a fresh folder in whole, so a reader
never sees half of one (a reader still mapping the old files keeps them until it closes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import zlib
from pathlib import Path

from featurestore.store import Store, StoreError

META = "meta.json"
PIECE = 16 << 20


class CacheDamaged(StoreError):
    """A cache file that is missing, resized, changed, or not what its key says."""


def cache_key(store: Store, tables: list[str], salt: list) -> str:
    """A short hash of the manifest's checksums of ``tables``' files: one key per distinct content."""
    files = {k: v["sha256"] for k, v in store.manifest["files"].items() if k.split("/", 1)[0] in tables}
    blob = json.dumps([salt, sorted(files.items())], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def crc32_file(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while piece := f.read(PIECE):
            crc = zlib.crc32(piece, crc)
    return crc


def _stamp(path: Path) -> list[int]:
    st = os.stat(path)
    return [st.st_ino, st.st_mtime_ns]


def _meta_crc(meta: dict) -> int:
    body = {k: v for k, v in meta.items() if k != "meta_crc32"}
    return zlib.crc32(json.dumps(body, sort_keys=True).encode())


def seal(folder: Path, key: str, meta: dict, files: list[str]) -> dict:
    """Record sizes, checksums and stamps of ``files`` in ``folder/meta.json`` (written last)."""
    meta = {**meta, "key": key,
            "sizes": {n: (folder / n).stat().st_size for n in files},
            "crc32": {n: crc32_file(folder / n) for n in files},
            "stamps": {n: _stamp(folder / n) for n in files}}
    meta["meta_crc32"] = _meta_crc(meta)
    (folder / META).write_text(json.dumps(meta))
    return meta


def check_cache(folder: Path, key: str | None, full: bool) -> dict:
    """The cache's meta if every file is what it recorded; CacheDamaged naming the first bad file."""
    path = folder / META
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CacheDamaged(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise CacheDamaged(f"{path}: unreadable ({type(e).__name__})") from None
    if not isinstance(meta, dict) or meta.get("meta_crc32") != _meta_crc(meta):
        raise CacheDamaged(f"{path}: checksum mismatch")
    if key is not None and meta.get("key") != key:
        raise CacheDamaged(f"{path}: built from other data (key {meta.get('key')}, expected {key})")
    for name, size in meta["sizes"].items():
        p = folder / name
        try:
            actual = p.stat().st_size
        except FileNotFoundError:
            raise CacheDamaged(f"{p}: missing") from None
        if actual != size:
            raise CacheDamaged(f"{p}: {actual} bytes, built with {size}")
        if (full or _stamp(p) != meta["stamps"][name]) and crc32_file(p) != meta["crc32"][name]:
            raise CacheDamaged(f"{p}: checksum mismatch")
    return meta


def publish(tmp: Path, folder: Path) -> None:
    """Swap the finished ``tmp`` in as ``folder`` (a damaged folder there is moved away first)."""
    old = None
    if folder.exists():
        old = folder.with_name(f"{folder.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(folder, old)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process published first: use theirs (its loader checks it on open)
        shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def validate_caches(store: Store) -> tuple[int, list[str]]:
    """Full check of every cache folder under ``STORE/cache``: (folders checked, problems)."""
    root = store.path / "cache"
    checked, problems = 0, []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir() or ".tmp-" in folder.name or ".old-" in folder.name:
            continue
        checked += 1
        try:
            check_cache(folder, None, full=True)
        except CacheDamaged as e:
            problems.append(f"loader cache {e} (the loader rebuilds it on its next open)")
    return checked, problems
