"""Versions of a store: immutable trees, a numbered log claimed with an exclusive create, a root checkout.

Layout (Delta/Lance-style, on plain zarr)::

    STORE/manifest.json, zarr.json, <tables>/, dicts/, ids/   the latest version, checked out (hard links)
    STORE/_fstore/log/00000007.json   version 7: its manifest plus version, parent, tree, time, op, rows
    STORE/_fstore/trees/<id>/         a version's complete zarr v3 tree; never modified once committed
    STORE/_fstore/tags/<name>         a tag: the version number it names (created once, exclusively)

- A writer builds a new tree under ``_fstore/trees/`` (invisible: no log entry names it). Files shared
  with the parent version (an append) are hard links; zarr writes every file by write-aside + rename,
  so a shared file is never modified in place.
- The commit point is one ``link(2)`` of a complete log entry to ``log/<parent + 1>.json``: it fails if
  the number exists, so two writers can never both commit the same version (the loser gets one line).
  A kill -9 before it leaves the previous version; after it, the new one.
- The root checkout is refreshed after the commit, under a lock: its ``manifest.json`` is removed
  first and linked last, so the root holds the latest version exactly when its ``manifest.json`` is the
  latest log entry (same inode). Readers opened on the root fall back to the version's tree as soon as
  that stops being true (``PinnedLocalStore``), so they keep seeing their version whatever commits.
- Plain zarr readers: the root (when ``manifest.json`` is present) or ``_fstore/trees/<id>`` of any
  version are ordinary zarr v3 groups.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import StoreError

META = "_fstore"
MANIFEST = "manifest.json"
ROOT_SKIP = {META, "cache", MANIFEST}  # root entries that are not part of a checkout
GRACE_SECONDS = 3600.0


class CommitConflict(StoreError):
    """Another writer committed version ``number`` first (an append may rebase on it and retry)."""

    def __init__(self, message: str, number: int, op: str | None = None):
        super().__init__(message)
        self.number, self.op = number, op


def _meta(root: Path, *parts: str) -> Path:
    return Path(root, META, *parts)


def _log_name(number: int) -> str:
    return f"{number:08d}.json"


def version_numbers(root: str | os.PathLike) -> list[int]:
    """Committed version numbers, ascending (empty for an unversioned store or no store)."""
    log = _meta(Path(root), "log")
    try:
        names = os.listdir(log)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())


def read_entry(root: str | os.PathLike, number: int) -> dict:
    path = _meta(Path(root), "log", _log_name(number))
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{root}: no version {number} (have {version_numbers(root)})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{path}: unreadable version entry ({e})") from None


def tags(root: str | os.PathLike) -> dict[str, int]:
    folder = _meta(Path(root), "tags")
    out = {}
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(folder)):
            text = (folder / name).read_text().strip()
            if text.isdigit():
                out[name] = int(text)
    return out


def resolve(root: str | os.PathLike, version: int | str | None) -> int | None:
    """The version number ``version`` names (None: the latest); None for an unversioned store."""
    numbers = version_numbers(root)
    if not numbers:
        if version is not None:
            raise StoreError(f"{root}: not a versioned store (no {META}/log), cannot open version {version!r}")
        return None
    if version is None:
        return numbers[-1]
    if isinstance(version, str) and not version.isdigit():
        named = tags(root)
        if version not in named:
            raise StoreError(f"{root}: no tag {version!r} (tags: {sorted(named) or 'none'})")
        version = named[version]
    number = int(version)
    if number not in numbers:
        raise StoreError(f"{root}: no version {number} (have {numbers[0]}..{numbers[-1]}, "
                         f"{len(numbers)} kept)")
    return number


def log_path(root: str | os.PathLike, number: int) -> Path:
    return _meta(Path(root), "log", _log_name(number))


def tree_path(root: str | os.PathLike, entry: dict) -> Path:
    return _meta(Path(root), "trees", entry["tree"])


def root_is_current(root: str | os.PathLike, number: int) -> bool:
    """True when the root checkout holds version ``number``: its manifest.json is that log entry (the same
    file, or a copy of it: a copied store stays readable at its root)."""
    root = Path(root)
    try:
        if os.stat(root / MANIFEST).st_ino == os.stat(log_path(root, number)).st_ino:
            return True
        mine = json.loads((root / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    entry = read_entry(root, number)
    return mine.get("version") == number and mine.get("tree") == entry["tree"]


# --- writing -----------------------------------------------------------------------------------------

def has_store(root: str | os.PathLike) -> bool:
    """A committed version, or a legacy (unversioned) store, or any user file: something to protect."""
    root = Path(root)
    if not root.exists():
        return False
    if version_numbers(root) or not root.is_dir():
        return True
    return any(name != META for name in os.listdir(root))


def new_tree(root: str | os.PathLike) -> Path:
    """A fresh, empty tree directory for a writer (retried: a failed writer may be removing empty parents)."""
    trees = _meta(Path(root), "trees")
    name = f"{int(time.time())}-{os.getpid()}-{secrets.token_hex(4)}"
    for _ in range(20):
        try:
            trees.mkdir(parents=True, exist_ok=True)
            (trees / name).mkdir()
            return trees / name
        except FileNotFoundError:
            continue
    raise StoreError(f"{root}: cannot create a staging tree (store directory keeps disappearing)")


def drop_tree(root: str | os.PathLike, tree: Path) -> None:
    """Remove an uncommitted tree, then the store's directories if nothing else is in them."""
    shutil.rmtree(tree, ignore_errors=True)
    root = Path(root)
    for d in (_meta(root, "trees"), _meta(root, "log"), _meta(root, "tags"), _meta(root), root):
        with contextlib.suppress(OSError):
            d.rmdir()


def _claim(root: Path, number: int, entry: dict) -> bool:
    """Write the entry aside, then link it to its number: False when that number is taken."""
    log = _meta(root, "log")
    log.mkdir(parents=True, exist_ok=True)
    tmp = log / f".{_log_name(number)}.{os.getpid()}-{secrets.token_hex(4)}"
    with open(tmp, "w") as f:
        f.write(json.dumps(entry, indent=1, sort_keys=True))
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, log / _log_name(number))
        _fsync_dir(log)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(root: str | os.PathLike, tree: Path, manifest: dict, op: str, parent: int | None) -> int:
    """Publish ``tree`` as version ``parent + 1`` (1 for a new store); raise StoreError if another writer
    committed that number first (the tree is then removed). Returns the new version number."""
    root = Path(root)
    number = (parent or 0) + 1
    rows = {name: t.get("rows") for name, t in manifest.get("tables", {}).items()}
    entry = {**manifest, "version": number, "parent": parent, "tree": tree.name, "op": op, "rows": rows,
             "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if not _claim(root, number, entry):
        drop_tree(root, tree)
        other = read_entry(root, number)
        what = ("already exists: another ingest created it first" if parent is None
                else "changed while this commit ran: another writer committed")
        raise CommitConflict(f"{root}: {what} (version {number}, {other.get('op')} at {other.get('time')}); "
                             "nothing was written" + (" (pass --overwrite to replace it)" if parent is None else ""),
                             number, other.get("op"))
    checkout(root)
    return number


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    path = _meta(root, "lock")
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _tree_files(tree: Path) -> set[str]:
    out = set()
    for dirpath, _, filenames in os.walk(tree):
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), tree)
            if rel != MANIFEST:
                out.add(rel)
    return out


def _link_over(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}-{secrets.token_hex(4)}")
    os.link(src, tmp)
    os.replace(tmp, dst)


def checkout(root: str | os.PathLike) -> None:
    """Make the root hold the latest version (idempotent; repairs a checkout a kill interrupted)."""
    root = Path(root)
    with _lock(root):
        numbers = version_numbers(root)
        if not numbers or root_is_current(root, numbers[-1]):
            return
        entry = read_entry(root, numbers[-1])
        tree = tree_path(root, entry)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(root / MANIFEST)  # from here on, readers of the root read the trees instead
        wanted = _tree_files(tree)
        for rel in sorted(wanted):
            src, dst = tree / rel, root / rel
            with contextlib.suppress(FileNotFoundError):
                if os.stat(dst).st_ino == os.stat(src).st_ino:
                    continue
            _link_over(src, dst)
        for dirpath, dirnames, filenames in os.walk(root, topdown=False):
            rel_dir = os.path.relpath(dirpath, root)
            if rel_dir == ".":
                dirnames[:] = []
            if rel_dir.split(os.sep)[0] in ROOT_SKIP:
                continue
            for name in filenames:
                rel = os.path.normpath(os.path.join(rel_dir, name))
                if rel not in ROOT_SKIP and rel not in wanted:
                    os.unlink(os.path.join(dirpath, name))
            if rel_dir != ".":
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)  # only when empty
        for entry_name in os.listdir(root):  # top-level entries os.walk(topdown=False) reached last
            p = root / entry_name
            if entry_name not in ROOT_SKIP and p.is_file() and entry_name not in wanted:
                p.unlink()
        _link_over(log_path(root, numbers[-1]), root / MANIFEST)


# --- tags and vacuum ---------------------------------------------------------------------------------

def check_tag_name(name: str) -> None:
    if not name or name.isdigit() or "/" in name or name.startswith("."):
        raise StoreError(f"tag {name!r}: a tag is a name that is not a number, without '/' or a leading '.'")


def tag(root: str | os.PathLike, name: str, version: int | str | None = None) -> int:
    """Name a version (default: the latest) for good: a tag is created once and never moves."""
    check_tag_name(name)
    number = resolve(root, version)
    if number is None:
        raise StoreError(f"{root}: not a versioned store; ingest it again to tag versions")
    folder = _meta(Path(root), "tags")
    folder.mkdir(exist_ok=True)
    try:
        fd = os.open(folder / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise StoreError(f"{root}: tag {name!r} already names version {tags(root).get(name)}") from None
    with os.fdopen(fd, "w") as f:
        f.write(f"{number}\n")
    return number


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _pid(name: str) -> int | None:
    """The writer's pid in a tree name (``time-pid-token``) or a claim's suffix (``pid-token``)."""
    parts = name.split("-")
    digits = [p for p in parts[:-1] if p.isdigit()]
    return int(digits[-1]) if digits else None


def _writer_alive(name: str) -> bool:
    pid = _pid(name)
    return pid is not None and Path(f"/proc/{pid}").exists()


def _uncommitted(root: Path, grace_seconds: float) -> tuple[list[str], list[str]]:
    """What ``sweep_uncommitted`` removes: trees no version names whose writer is dead (this host), and
    claims a kill interrupted (names in ``trees/`` and in ``log/``)."""
    now = time.time()
    referenced = {read_entry(root, n)["tree"] for n in version_numbers(root)}
    trees, log = _meta(root, "trees"), _meta(root, "log")
    # a live writer's tree is never touched: it may commit after ``referenced`` was read
    dead = [name for name in (sorted(os.listdir(trees)) if trees.is_dir() else [])
            if not (name in referenced or _writer_alive(name)
                    or (_pid(name) is None and _age(trees / name, now) < grace_seconds))]
    claims = [name for name in (os.listdir(log) if log.is_dir() else [])
              if name.startswith(".") and not _writer_alive(name.rsplit(".", 1)[-1])]
    return dead, claims


def sweep_uncommitted(root: str | os.PathLike, grace_seconds: float = GRACE_SECONDS) -> list[str]:
    """Remove trees no version names whose writer is dead (this host), and interrupted claims."""
    root = Path(root)
    dead, claims = _uncommitted(root, grace_seconds)
    done = []
    for name in dead:
        shutil.rmtree(_meta(root, "trees", name), ignore_errors=True)
        done.append(f"removed uncommitted tree {name}")
    for name in claims:  # a claim a kill interrupted
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_meta(root, "log", name))
    return done


@dataclass
class VacuumPlan:
    """What ``vacuum`` removes: expired versions (log entry, then tree) and uncommitted leftovers."""

    root: Path
    expire: list[int]  # version numbers
    trees: list[str]  # tree names: the expired versions' and the uncommitted ones'
    claims: list[str]  # interrupted claims in log/

    def paths(self) -> list[Path]:
        return ([log_path(self.root, n) for n in self.expire] + [_meta(self.root, "log", c) for c in self.claims]
                + [_meta(self.root, "trees", t) for t in self.trees])

    def freed_bytes(self) -> int:
        """Disk space (allocated blocks) removing these paths gives back: a file counts only when every
        hard link to it is among them (files a kept version, the root checkout or anything else links
        to stay); the removed directories count too."""
        files: dict[tuple[int, int], list] = {}  # (dev, inode) -> [links seen, links, bytes]
        freed = 0

        def see(path: str) -> None:
            nonlocal freed
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                return
            if stat.S_ISDIR(st.st_mode):
                freed += st.st_blocks * 512
                return
            seen = files.setdefault((st.st_dev, st.st_ino), [0, st.st_nlink, st.st_blocks * 512])
            seen[0] += 1

        for path in self.paths():
            see(str(path))
            for dirpath, dirnames, filenames in os.walk(path):  # nothing for a file
                for name in dirnames + filenames:
                    see(os.path.join(dirpath, name))
        return freed + sum(size for seen, links, size in files.values() if seen >= links)


def plan_vacuum(root: str | os.PathLike, keep: int | None = None,
                grace_seconds: float = GRACE_SECONDS) -> VacuumPlan:
    """What ``vacuum(root, keep, grace_seconds)`` would remove, removing nothing (its dry run)."""
    root = Path(root)
    numbers = version_numbers(root)
    if not numbers:
        raise StoreError(f"{root}: not a versioned store (no {META}/log)")
    if keep is not None and keep < 1:
        raise StoreError(f"--keep must be >= 1 (the latest version is always kept), got {keep}")
    now = time.time()
    tagged = set(tags(root).values())
    candidates = [] if keep is None else [n for n in numbers[:-keep] if n not in tagged]
    expire = [n for n in candidates if _age(log_path(root, n), now) >= grace_seconds]
    expired_trees = [read_entry(root, n)["tree"] for n in expire]
    dead, claims = _uncommitted(root, grace_seconds)
    # an expired version's tree is no longer referenced once its entry is gone, but sweep_uncommitted
    # runs after the expiry: list each tree once
    return VacuumPlan(root, expire, expired_trees + [t for t in dead if t not in expired_trees], claims)


def vacuum(root: str | os.PathLike, keep: int | None = None, grace_seconds: float = GRACE_SECONDS) -> list[str]:
    """Remove uncommitted trees and expire versions beyond the ``keep`` latest; return what was done.

    Never removes the latest version, a tagged one, one committed less than ``grace_seconds`` ago, or a
    tree a live writer (this host) is building. Files shared with kept versions survive (hard links).
    ``plan_vacuum`` says what this would remove, and how much space that frees, without removing it.
    """
    root = Path(root)
    plan = plan_vacuum(root, keep, grace_seconds)
    done = []
    for n in plan.expire:
        tree = tree_path(root, read_entry(root, n))
        os.unlink(log_path(root, n))  # invisible first, then its tree
        shutil.rmtree(tree, ignore_errors=True)
        done.append(f"expired version {n}")
    done += sweep_uncommitted(root, grace_seconds)
    checkout(root)
    return done
