"""Stores on S3 (``s3://bucket/prefix``): the same versions, with objects addressed by content.

S3 has no rename and no hard links, so a remote store keeps, under its prefix::

    _fstore/log/00000007.json    version 7: the same entry as on disk (manifest + version fields)
    _fstore/objects/<sha256>     every file of every version, named by its checksum (stored once)
    _fstore/staging/<token>/...  scratch of one distributed ingest in flight (its parts), removed when it
                                 ends; ``vacuum`` removes what a killed driver left, after the grace period

- A commit uploads the files the new version adds (an append uploads only what it changed: the rest
  is already there under the same checksum; a distributed ingest's chunks were uploaded by the tasks
  that encoded them, ``put_object_bytes``, and are only checked to be there), then claims its log entry with a conditional put
  (``If-None-Match: *``): of two writers, one gets the number, the other fails with one line.
- A reader materializes a version locally: objects are downloaded once into ``cache_dir/objects``
  (verified against their sha256), and the version is a folder of hard links to them, opened as a
  local store. ``cache_limit`` bounds the objects kept: the least recently used ones that the
  version being opened does not need are evicted first.
Endpoint and credentials come from the standard AWS variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``), as boto3 reads them.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from .errors import StoreError
from .versions import CommitConflict, check_tag_name


def default_cache() -> Path:
    """Where remote stores are materialized unless ``cache_dir`` says: $FSTORE_CACHE or ~/.cache/fstore."""
    return Path(os.environ.get("FSTORE_CACHE", Path.home() / ".cache" / "fstore"))


def is_remote(path: str | os.PathLike) -> bool:
    return as_url(path).startswith("s3://")


def as_url(path: str | os.PathLike) -> str:
    """``s3://b/p`` back from a ``Path`` (which folds ``//`` into ``/``)."""
    s = str(path)
    return "s3://" + s[4:] if s.startswith("s3:/") and not s.startswith("s3://") else s


class S3Store:
    """One remote store: its log and its objects."""

    def __init__(self, url: str):
        import boto3

        self.url = as_url(url).rstrip("/")
        bucket, _, prefix = self.url[len("s3://"):].partition("/")
        if not bucket:
            raise StoreError(f"{url}: expected s3://bucket/prefix")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.s3 = boto3.client("s3")

    @staticmethod
    @functools.cache
    def shared(url: str) -> S3Store:
        """One ``S3Store`` (one boto3 client: about 50 ms to make) per url and process, for tasks."""
        return S3Store(url)

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, "_fstore", *parts) if p)

    # --- scratch objects and pre-uploaded files (a distributed ingest) --------------------------
    def put(self, key: str, data: bytes) -> None:
        """Write the object ``_fstore/<key>`` (whole: an S3 put is atomic)."""
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self.key(key), Body=data)
        except Exception as e:  # noqa: BLE001
            raise StoreError(f"{self.url}: cannot write {self.key(key)} ({_reason(e)})") from None

    def get(self, key: str) -> bytes:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=self.key(key))["Body"].read()
        except Exception as e:  # noqa: BLE001
            raise StoreError(f"{self.url}: cannot read {self.key(key)} ({_reason(e)})") from None

    def exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=self.key(key))
            return True
        except Exception:  # noqa: BLE001 - 404 (or unreadable): not there
            return False

    def delete(self, keys: Iterable[str]) -> None:
        """Delete the objects ``_fstore/<key>`` (missing ones are no error)."""
        self._delete([self.key(k) for k in keys])

    def delete_under(self, folder: str) -> int:
        """Delete every object under ``_fstore/<folder>/``; returns how many."""
        keys = [o["Key"] for o in self._list(folder)]
        self._delete(keys)
        return len(keys)

    def _delete(self, full_keys: list[str]) -> None:
        for i in range(0, len(full_keys), 1000):  # DeleteObjects takes up to 1,000 keys
            self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in full_keys[i : i + 1000]],
                                                               "Quiet": True})

    def put_object_bytes(self, data: bytes) -> dict:
        """Store ``data`` as a content-addressed object (idempotent: a rerun writes the same key with the
        same bytes); returns its manifest entry ``{"bytes", "sha256"}``."""
        sha = hashlib.sha256(data).hexdigest()
        self.put(f"objects/{sha}", data)
        return {"bytes": len(data), "sha256": sha}

    def _list(self, folder: str) -> list[dict]:
        out, token = [], None
        while True:
            kw = {"Bucket": self.bucket, "Prefix": self.key(folder) + "/"}
            if token:
                kw["ContinuationToken"] = token
            try:
                page = self.s3.list_objects_v2(**kw)
            except Exception as e:  # noqa: BLE001 - botocore's errors: one line naming the store
                raise StoreError(f"{self.url}: cannot list ({_reason(e)})") from None
            out += page.get("Contents", [])
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]

    def version_numbers(self) -> list[int]:
        names = [o["Key"].rsplit("/", 1)[-1] for o in self._list("log")]
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def read_entry(self, number: int) -> dict:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.key("log", f"{number:08d}.json"))["Body"].read()
        except Exception as e:  # noqa: BLE001
            raise StoreError(f"{self.url}: no version {number} ({_reason(e)})") from None
        return json.loads(body)

    def _entry_or_none(self, number: int) -> dict:
        try:
            return self.read_entry(number)
        except StoreError:
            return {}

    def resolve(self, version: int | str | None) -> int:
        """The version number ``version`` (a number, a tag, or None: the latest) names."""
        numbers = self.version_numbers()
        if not numbers:
            raise StoreError(f"{self.url}: not an fstore store (no {self.key('log')}/)")
        if version is None:
            return numbers[-1]
        if not str(version).isdigit():
            named = self.tags()
            if version not in named:
                raise StoreError(f"{self.url}: no tag {version!r} (tags: {sorted(named) or 'none'})")
            version = named[version]
        if int(version) not in numbers:
            raise StoreError(f"{self.url}: no version {version} (have {numbers})")
        return int(version)

    def tags(self) -> dict[str, int]:
        """Tag name -> version number (``_fstore/tags/<name>`` objects holding the number)."""
        out = {}
        for o in self._list("tags"):
            name = o["Key"].rsplit("/", 1)[-1]
            try:
                text = self.s3.get_object(Bucket=self.bucket, Key=o["Key"])["Body"].read().decode().strip()
            except Exception:  # noqa: BLE001 - removed since it was listed: no tag
                continue
            if text.isdigit():
                out[name] = int(text)
        return dict(sorted(out.items()))

    def tag(self, name: str, version: int | str | None = None) -> int:
        """Name a version (default: the latest) for good: created once with a conditional put, never moved."""
        check_tag_name(name)
        number = self.resolve(version)
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self.key("tags", name), Body=f"{number}\n".encode(),
                               IfNoneMatch="*")
        except Exception as e:  # noqa: BLE001
            if "PreconditionFailed" in str(e) or "412" in str(e):
                raise StoreError(f"{self.url}: tag {name!r} already names version {self.tags().get(name)}") from None
            raise StoreError(f"{self.url}: cannot write tag {name!r} ({_reason(e)})") from None
        return number

    def object_keys(self) -> dict[str, dict]:
        return {o["Key"].rsplit("/", 1)[-1]: o for o in self._list("objects")}

    # --- writing ---------------------------------------------------------------------------------
    def commit(self, tree: Path, manifest: dict, op: str, parent: int | None,
               uploaded: frozenset[str] = frozenset()) -> int:
        """Upload the objects ``tree`` adds, then claim version ``parent + 1`` with a conditional put.
        ``uploaded``: files of the manifest that are not in ``tree`` (tasks put their objects already)."""
        have = set(self.object_keys())
        for rel, f in manifest["files"].items():
            if rel in uploaded:
                if f["sha256"] not in have:
                    raise StoreError(f"{self.url}: object {f['sha256'][:12]} ({rel}) was not uploaded; "
                                     "nothing was committed")
            elif f["sha256"] not in have:
                self.s3.upload_file(str(tree / rel), self.bucket, self.key("objects", f["sha256"]))
                have.add(f["sha256"])
        number = (parent or 0) + 1
        rows = {name: t.get("rows") for name, t in manifest.get("tables", {}).items()}
        entry = {**manifest, "version": number, "parent": parent, "tree": tree.name, "op": op, "rows": rows,
                 "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self.key("log", f"{number:08d}.json"),
                               Body=json.dumps(entry, indent=1, sort_keys=True).encode(), IfNoneMatch="*")
        except Exception as e:  # noqa: BLE001
            if "PreconditionFailed" in str(e) or "412" in str(e):
                what = ("already exists: another ingest created it first" if parent is None
                        else "changed while this commit ran: another writer committed")
                other = self._entry_or_none(number)
                raise CommitConflict(f"{self.url}: {what} (version {number}, {other.get('op')} at "
                                     f"{other.get('time')}); nothing was committed", number, other.get("op")) from None
            raise StoreError(f"{self.url}: commit failed ({_reason(e)})") from None
        return number

    def vacuum(self, keep: int | None, grace_seconds: float) -> list[str]:
        numbers = self.version_numbers()
        if not numbers:
            raise StoreError(f"{self.url}: not an fstore store")
        done = []
        now = time.time()
        logs = {int(o["Key"].rsplit("/", 1)[-1][:-5]): o for o in self._list("log") if o["Key"].endswith(".json")}
        tagged = set(self.tags().values())  # a tagged version is never expired
        expire = [] if keep is None else [n for n in numbers[:-keep] if n not in tagged]
        for n in expire:
            if now - logs[n]["LastModified"].timestamp() >= grace_seconds:
                self.s3.delete_object(Bucket=self.bucket, Key=logs[n]["Key"])
                done.append(f"expired version {n}")
        # scratch of distributed ingests whose driver was killed: an ingest's staging (one token) goes only
        # when its newest object is older than the grace period, so a long-running ingest keeps its parts
        staging: dict[str, list[dict]] = {}
        for o in self._list("staging"):
            staging.setdefault(o["Key"][len(self.key("staging")) + 1 :].split("/", 1)[0], []).append(o)
        stale = [o["Key"] for objs in staging.values()
                 if now - max(o["LastModified"].timestamp() for o in objs) >= grace_seconds for o in objs]
        self._delete(stale)
        if stale:
            done.append(f"removed {len(stale)} staging objects of ingests that did not finish")
        wanted = {f["sha256"] for n in self.version_numbers() for f in self.read_entry(n)["files"].values()}
        for sha, o in self.object_keys().items():
            # young objects may belong to a commit in flight: only the grace period protects them
            if sha not in wanted and now - o["LastModified"].timestamp() >= grace_seconds:
                self.s3.delete_object(Bucket=self.bucket, Key=o["Key"])
                done.append(f"removed unreferenced object {sha[:12]}")
        return done

    # --- reading ---------------------------------------------------------------------------------
    def materialize(self, version: int | str | None, cache_dir: str | os.PathLike | None = None,
                    cache_limit: int | None = None) -> tuple[Path, dict]:
        """A local folder holding the version (hard links into the object cache), and its entry."""
        number = self.resolve(version)
        entry = self.read_entry(number)
        root = Path(cache_dir or default_cache()) / hashlib.sha256(self.url.encode()).hexdigest()[:16]
        objects = root / "objects"
        objects.mkdir(parents=True, exist_ok=True)
        need = {f["sha256"]: f["bytes"] for f in entry["files"].values()}
        if cache_limit is not None and sum(need.values()) > cache_limit:
            raise StoreError(f"{self.url}: version {number} holds {sum(need.values()):,} bytes, more than "
                             f"cache_limit={cache_limit:,}: raise the limit to read it")
        if cache_limit is not None:
            _evict(objects, keep=set(need), limit=max(cache_limit - sum(need.values()), 0))
        for sha in need:
            local = objects / sha
            if local.exists():
                os.utime(local)  # recently used
                continue
            tmp = objects / f".{sha}.{os.getpid()}-{secrets.token_hex(4)}"
            try:
                self.s3.download_file(self.bucket, self.key("objects", sha), str(tmp))
            except Exception as e:  # noqa: BLE001
                tmp.unlink(missing_ok=True)
                raise StoreError(f"{self.url}: object {sha[:12]} of version {number} unreadable ({_reason(e)})") from None
            with open(tmp, "rb") as f:
                if hashlib.file_digest(f, "sha256").hexdigest() != sha:
                    tmp.unlink()
                    raise StoreError(f"{self.url}: object {sha[:12]} does not match its checksum (damaged store)")
            os.replace(tmp, local)
        folder = root / "versions" / f"{number:08d}-{entry['tree']}"
        if not (folder / "manifest.json").is_file():
            tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            for rel, f in entry["files"].items():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                os.link(objects / f["sha256"], tmp / rel)
            (tmp / "manifest.json").write_text(json.dumps(entry))
            try:
                os.replace(tmp, folder)
            except OSError:  # another process materialized it first
                shutil.rmtree(tmp, ignore_errors=True)
        return folder, entry


def _evict(objects: Path, keep: set[str], limit: int) -> None:
    """Remove least recently used objects (not in ``keep``) until the rest fit in ``limit`` bytes.
    A version folder's hard link keeps an evicted object's bytes until that folder goes: the versions
    folder of an evicted object is removed too, and rebuilt from the cache on its next open."""
    entries = [(p.stat().st_mtime, p.stat().st_size, p) for p in objects.iterdir() if not p.name.startswith(".")]
    total = sum(s for _, s, p in entries if p.name not in keep)
    for _, size, p in sorted(entries):
        if total <= limit:
            break
        if p.name in keep:
            continue
        p.unlink(missing_ok=True)
        total -= size
    versions = objects.parent / "versions"
    for folder in versions.iterdir() if versions.is_dir() else []:
        with open(folder / "manifest.json") if (folder / "manifest.json").is_file() else open(os.devnull) as f:
            text = f.read()
        files = json.loads(text)["files"].values() if text else []
        if any(not (objects / x["sha256"]).exists() for x in files):
            shutil.rmtree(folder, ignore_errors=True)


def _reason(e: Exception) -> str:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return first[:200]
