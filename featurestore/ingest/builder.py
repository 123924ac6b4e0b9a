"""The store builder: what every ingest does around its encoding, written once.

A dataset's ingest only says how to encode its tables (into ``builder.root``); the builder owns:
- staging and commit: everything is written into a fresh version tree inside the store
  (``STORE/_fstore/trees/<id>``, invisible to readers), and ``_commit`` publishes it as the next
  version with one exclusive create of its log entry (``store/versions.py``): a kill at any instant
  leaves the previous version or the new one, and of two writers racing for the same version exactly
  one wins, the other fails with one line;
- dictionaries (``dicts/<name>.parquet``) and id lists (``ids/<table>.parquet``), written at commit;
- the manifest (tables, sources, per-file checksums), written last;
- progress bars and the closing ``IngestSummary``;
- failure: any exception removes the staging directory and leaves an existing store untouched; a full
  disk (or quota, read-only file system) becomes one ``StoreError`` naming the store; for a full disk
  or quota it adds ``fstore vacuum STORE --keep 1 --grace-hours 0`` and the space that would free
  (``versions.plan_vacuum``, its dry run), when that is more than nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
from tqdm import tqdm

from ..store import versions
from ..store.chunks import LocalGroup
from ..store.dictionary import Dictionary, IdListWriter
from ..store.errors import FstoreError, StoreError
from ..store.manifest import sha256_file, write_manifest
from ..store.remote import S3Store, as_url, is_remote

if TYPE_CHECKING:
    import zarr

DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def human_bytes(n: int) -> str:
    """``1.2 GB``, ``340 kB``, ``512 bytes`` (decimal units, as the summary's MB)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} byte{'s' * (n != 1)}"


@dataclass
class IngestSummary:
    """What an ingest wrote; ``lines()`` is what ``fstore ingest`` prints. Counts come from the manifest."""

    dataset: str
    files: int = 0
    raw_bytes: int = 0
    tables: dict = field(default_factory=dict)
    bytes_on_disk: int = 0
    frame_bytes: int = 0
    seconds: float = 0.0
    notes: list = field(default_factory=list)
    row_unit: str = "sessions"  # what a row of a ragged table is, for lines()
    skipped: int = 0  # raw files not read: an append found them ingested before, with the same content

    def _of(self, kind: str, key: str) -> dict[str, int]:
        return {n: t[key] for n, t in self.tables.items() if t["kind"] == kind}

    @property
    def tracks(self) -> int:
        return sum(self._of("feature_table", "rows").values())

    @property
    def sessions(self) -> dict[str, int]:
        return self._of("ragged", "rows")

    @property
    def events(self) -> dict[str, int]:
        return self._of("ragged", "events")

    @property
    def clips(self) -> dict[str, int]:
        return self._of("frames", "clips")

    @property
    def frames(self) -> dict[str, int]:
        return self._of("frames", "frames")

    @property
    def bins(self) -> int:
        return max(self._of("frames", "bins").values(), default=0)

    @property
    def total_events(self) -> int:
        return sum(self.events.values())

    @property
    def total_frames(self) -> int:
        return sum(self.frames.values())

    def lines(self) -> list[str]:
        out = [f"files          {self.files} ({self.raw_bytes / 1e6:.1f} MB raw)"]
        if self.skipped:
            out.append(f"skipped        {self.skipped} file{'s' * (self.skipped != 1)}: already ingested with the "
                       "same content")
        if self.clips:
            out += self._frame_lines()
        else:
            out += self._session_lines()
        return out + [f"note           {n}" for n in self.notes]

    def _session_lines(self) -> list[str]:
        ev = max(self.total_events, 1)
        tables = self._of("feature_table", "rows")
        return [
            *[f"{k:<14} {n}" for k, n in tables.items()],
            *[f"{k:<14} {self.sessions[k]} {self.row_unit}, {self.events[k]} events" for k in self.sessions],
            f"bytes on disk  {self.bytes_on_disk / 1e6:.2f} MB ({self.bytes_on_disk / ev:.2f} bytes/event, "
            f"raw CSV {self.raw_bytes / ev:.1f} bytes/event)",
            f"seconds        {self.seconds:.2f} ({self.total_events / max(self.seconds, 1e-9):,.0f} events/s)",
        ]

    def _frame_lines(self) -> list[str]:
        n = max(self.total_frames, 1)
        f32 = 4 * self.bins
        per = self.bytes_on_disk / n
        return [
            *[f"{k:<14} {self.clips[k]} clips, {self.frames[k]} frames" for k in self.clips],
            f"bins           {self.bins} per frame (float32: {f32} bytes/frame)",
            f"bytes on disk  {self.bytes_on_disk / 1e6:.2f} MB: {per:.1f} bytes/frame in all "
            f"({self.frame_bytes / n:.1f} in frame arrays), {f32 / max(per, 1e-9):.2f}x smaller than float32",
            f"seconds        {self.seconds:.2f} ({self.total_frames / max(self.seconds, 1e-9):,.0f} frames/s)",
        ]


def file_sources(raw_dir: Path, paths: list[Path], checksums: bool = True) -> list[dict]:
    """Manifest source entries, one per file, with its sha256 unless ``checksums`` is off."""
    return [{"path": str(p.relative_to(raw_dir)), "bytes": p.stat().st_size,
             **({"sha256": sha256_file(p)} if checksums else {})} for p in paths]


REBASE_ATTEMPTS = 5  # an append that loses the commit race this many times in a row gives up


def with_rebase(store_path: str | Path, append: Callable[[], IngestSummary],
                attempts: int = REBASE_ATTEMPTS) -> IngestSummary:
    """Run ``append`` (one whole append: it reads the latest version, builds on it, commits); when another
    writer commits first, run it again on the new latest version: the same checks decide whether the two
    conflict (a session, clip or file in both; a track id both add; a track the new version no longer
    resolves), and then the append fails with one line naming the version it conflicts with."""
    lost: versions.CommitConflict | None = None
    for _ in range(attempts):
        try:
            summary = append()
        except versions.CommitConflict as e:
            lost = e
            continue
        except FstoreError as e:
            if lost is None:
                raise
            raise StoreError(f"{as_url(store_path)}: this append cannot be rebased on version {lost.number} "
                             f"({lost.op or 'a commit'}, made while it ran): {e}") from None
        if lost is not None:
            summary.notes.append(f"lost the commit race to version {lost.number}: rebased and committed on it")
        return summary
    raise StoreError(f"{as_url(store_path)}: this append lost the commit race {attempts} times in a row "
                     f"(last to version {lost.number}); nothing was written, try again")


def refuse_existing(store_path: str | Path, overwrite: bool) -> None:
    """Fail fast, before any reading, when the target holds a store or other files (the commit checks
    again: of two ingests to one new path, one commits, the other fails). Leftovers of killed ingests
    (uncommitted trees only) are no store."""
    if is_remote(store_path):
        if S3Store(as_url(store_path)).version_numbers() and not overwrite:
            raise StoreError(f"{as_url(store_path)}: already exists (pass --overwrite to replace it)")
        return
    if versions.has_store(store_path) and not overwrite:
        raise StoreError(f"{store_path}: already exists (pass --overwrite to replace it)")


class StoreBuilder:
    """``with StoreBuilder(path, dataset) as b:`` encode tables into ``b.root``, register them with
    ``b.table``, then ``b.finish(sources)``; leaving the block commits the store.

    Dictionaries (``b.dictionary``) and id lists (``b.ids`` / ``b.write_ids``) are written at commit.
    """

    def __init__(self, store_path: str | Path, dataset: str, *, overwrite: bool = False, progress: bool = True,
                 files: int = 0, raw_bytes: int = 0, notes: list[str] | None = None, append: bool = False):
        if append and overwrite:
            raise StoreError("--append and --overwrite exclude each other")
        self.append = append
        if not append:
            refuse_existing(store_path, overwrite)
        self.remote = S3Store(as_url(store_path)) if is_remote(store_path) else None
        self.path = Path(store_path) if self.remote is None else as_url(store_path)
        self.overwrite, self.progress = overwrite, progress
        self.summary = IngestSummary(dataset, files=files, raw_bytes=raw_bytes, notes=list(notes or []))
        self.tables: dict[str, dict] = {}
        self._dicts: dict[str, Dictionary] = {}
        self._adopted: dict[str, int] = {}  # vocabulary sizes as adopted from the parent
        self._ids: dict[str, IdListWriter] = {}
        self._uploaded: dict[str, dict] = {}  # files tasks put straight into the remote store's objects
        self._sources: list[dict] | None = None
        self._extra: dict = {}
        self._bars = contextlib.ExitStack()
        self._on_failure: list[Callable[[], None]] = []
        self._t0 = time.perf_counter()
        self._root: zarr.Group | None = None

    # --- inside the block ---------------------------------------------------------------------
    def __enter__(self) -> StoreBuilder:
        if self.remote is not None:  # built in a local folder, uploaded at commit
            numbers = self.remote.version_numbers()
            self.parent = numbers[-1] if numbers else None
            if self.append and self.parent is None:
                raise StoreError(f"{self.path}: no store to append to (ingest it first, without --append)")
            self._local = Path(tempfile.mkdtemp(prefix="fstore-s3-build-"))
            self.stage = self._local / f"{int(time.time())}-{os.getpid()}-{secrets.token_hex(4)}"
            self.stage.mkdir()
            return self._open_stage()
        if not self.append:
            refuse_existing(self.path, self.overwrite)
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.path}: not a directory; remove it or pass another store path")
        self.parent = versions.resolve(self.path, None) if self.path.is_dir() else None  # version this extends
        if self.append and self.parent is None:
            raise StoreError(f"{self.path}: no versioned store to append to (ingest it first, without --append)")
        self.stage = versions.new_tree(self.path)
        if self.path.is_dir():
            versions.sweep_uncommitted(self.path)  # leftovers of killed writers (never a live one's)
        return self._open_stage()

    def _open_stage(self) -> StoreBuilder:
        if self.append:
            self._start_from_parent()
            return self
        self.tree = LocalGroup.create(self.stage)
        (self.stage / "dicts").mkdir()
        (self.stage / "ids").mkdir()
        return self

    def _start_from_parent(self) -> None:
        """An append starts from the parent version's tree, hard-linked: nothing is copied, and every
        later write replaces a file (zarr writes aside and renames; ids and dictionaries are unlinked
        first), so the parent's files are never modified."""
        from ..store import Store

        self.parent_store = Store(self.path, version=self.parent)
        src = self.parent_store.data_dir  # the version's files (local tree, root checkout or S3 objects)
        for rel in self.parent_store.manifest["files"]:
            (self.stage / rel).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src / rel, self.stage / rel)
            except OSError:  # another file system (an S3 store's local cache): copy
                shutil.copyfile(src / rel, self.stage / rel)
        self.tree = LocalGroup(self.stage)
        self.tables = {k: dict(v) for k, v in self.parent_store.tables.items()}
        self._parent_sources = list(self.parent_store.manifest.get("sources", []))

    @property
    def root(self) -> zarr.Group:
        """The staging tree as a ``zarr.Group`` (opened on first use). ``tree`` is the same folder as a
        ``chunks.LocalGroup``: the writers of ``store/`` write there without importing zarr."""
        if self._root is None:
            import zarr  # not imported by an ingest whose writers use ``tree`` only (0.13 s)

            self._root = zarr.open_group(self.stage, mode="r+", zarr_format=3)
        return self._root

    def bar(self, total: int, unit: str, desc: str) -> tqdm:
        """A progress bar, closed when the build ends (shown only with ``progress``)."""
        return self._bars.enter_context(tqdm(total=total, unit=unit, unit_scale=unit == "B", desc=desc,
                                                disable=not self.progress))

    def on_failure(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (e.g. a writer's ``abort``) before the staging directory is removed."""
        self._on_failure.append(callback)

    def dictionary(self, name: str, values: list[str] | None = None) -> Dictionary:
        """The vocabulary ``dicts/<name>.parquet``, created on first use (with ``values``, in order)."""
        if name not in self._dicts:
            self._dicts[name] = Dictionary(values)
        return self._dicts[name]

    def adopt_dictionary(self, name: str, d: Dictionary) -> None:
        """Use the parent version's vocabulary ``d`` (an append): it grows; written again only if it did."""
        self._dicts[name] = d
        self._adopted[name] = len(d)

    def ids(self, table: str) -> IdListWriter:
        """The streaming writer of ``ids/<table>.parquet`` (row number = code), closed at commit. In an
        append, the parent version's ids come first (its file is moved aside in the staging tree, where it
        is a hard link: the parent's own file is never written)."""
        if table in self._ids:
            return self._ids[table]
        path = self.stage / "ids" / f"{table}.parquet"
        first = None
        if path.exists():
            first = path.with_name(f".{path.name}.parent")
            os.replace(path, first)
        self._ids[table] = IdListWriter(path, first=first)
        return self._ids[table]

    def write_ids(self, table: str, ids: list[str] | pl.Series) -> None:
        self.ids(table).append(ids if isinstance(ids, pl.Series) else pl.Series(ids, dtype=pl.Utf8))

    def uploaded(self, entries: dict[str, dict]) -> None:
        """Files of the new version that tasks uploaded to the remote store's objects themselves (relative
        path -> ``{"bytes", "sha256"}``): listed in the manifest, checked (not uploaded) at commit."""
        if self.remote is None:
            raise StoreError(f"{self.path}: only a remote store takes pre-uploaded files")
        self._uploaded.update(entries)

    def table(self, name: str, meta: dict) -> None:
        """Register a finished table's metadata for the manifest."""
        self.tables[name] = meta

    def finish(self, sources: list[dict], **extra) -> None:
        """The raw sources (and extra manifest fields); the store is committed when the block ends."""
        self._sources, self._extra = sources, extra

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            try:
                self._commit()
                return False
            except BaseException as e:  # noqa: BLE001 - cleaned up and re-raised (translated) below
                exc = e
        self._abort(exc)
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            hint = self._vacuum_hint(exc.errno)
            raise StoreError(f"{self.path}: cannot write the store ({exc.strerror}); nothing was written"
                             + (f". {hint}" if hint else "")) from None
        if exc is not None and exc_type is None:
            raise exc
        return False

    def _vacuum_hint(self, err: int) -> str:
        """For a full disk or quota on a local store: the vacuum that would free space, and how much
        (``versions.plan_vacuum``, a dry run); nothing when it would free nothing."""
        if err not in (errno.ENOSPC, errno.EDQUOT) or self.remote is not None:
            return ""
        try:
            if not versions.version_numbers(self.path):
                return ""
            freed = versions.plan_vacuum(self.path, keep=1, grace_seconds=0).freed_bytes()
        except (OSError, FstoreError):  # a hint only: the disk error is what is reported
            return ""
        if freed <= 0:
            return ""
        return f"`fstore vacuum {shlex.quote(str(self.path))} --keep 1 --grace-hours 0` would free {human_bytes(freed)}."

    # --- the two ways out ---------------------------------------------------------------------
    def _commit(self) -> None:
        """Close ids, write dictionaries and the manifest, then publish the staging directory."""
        if self._sources is None:
            raise RuntimeError("StoreBuilder: finish(sources) was not called")
        for w in self._ids.values():
            w.close()
        for name, d in self._dicts.items():
            path = self.stage / "dicts" / f"{name}.parquet"
            if self._adopted.get(name) == len(d) and path.exists():
                continue  # unchanged: the parent's file (a hard link) stays shared
            path.unlink(missing_ok=True)  # it may be a hard link to the parent's: never write through it
            d.write(path)
        sources = [*getattr(self, "_parent_sources", []), *self._sources]
        manifest = write_manifest(self.stage, self.summary.dataset, self.tables, sources, self._extra,
                                  uploaded=self._uploaded)
        self._bars.close()
        op = "append" if self.append else "ingest" if self.parent is None and not self.overwrite else "overwrite"
        if self.remote is not None:
            self.version = self.remote.commit(self.stage, manifest, op, self.parent, frozenset(self._uploaded))
            shutil.rmtree(self._local, ignore_errors=True)
        else:
            self.version = versions.commit(self.path, self.stage, manifest, op, self.parent)
        s = self.summary
        s.tables = self.tables
        s.bytes_on_disk = sum(f["bytes"] for f in manifest["files"].values())
        s.frame_bytes = sum(f["bytes"] for n, f in manifest["files"].items() if "/frames/c/" in n)
        s.seconds = time.perf_counter() - self._t0

    def _abort(self, exc: BaseException) -> None:
        try:
            self._bars.close()
            for callback in reversed(self._on_failure):
                with contextlib.suppress(Exception):  # the original error is the one to report
                    callback()
        finally:
            with contextlib.suppress(BaseException):
                if self.remote is not None:
                    shutil.rmtree(self._local, ignore_errors=True)
                else:
                    versions.drop_tree(self.path, self.stage)  # and the store folder, if it holds nothing else
