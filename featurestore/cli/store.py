"""Commands on any store: ``info``, ``validate``, ``versions``, ``tag``, ``vacuum``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import user_errors

VERSION = click.option("--version", "version", default=None, metavar="V",
                       help="A version number or tag (default: the latest).")


@click.command()
@click.argument("store", type=click.Path(path_type=Path))
@VERSION
@click.option("--json", "as_json", is_flag=True, help="Print the manifest's tables as JSON.")
@user_errors
def info(store: Path, version: str | None, as_json: bool) -> None:
    """Schema, sizes and per-column quantization errors of STORE (or of one of its versions)."""
    from ..store import Store
    from ..store.info import describe

    s = Store(store, version=version)
    if as_json:
        click.echo(json.dumps(s.tables, indent=1))
        return
    if s.version is not None:
        click.echo(f"{store}: version {s.version} ({s.manifest.get('op')} at {s.manifest.get('time')})")
    for line in describe(s):
        click.echo(line)


@click.command()
@click.argument("store", type=click.Path(path_type=Path))
@VERSION
@click.option("--no-checksums", is_flag=True, help="Check structure only (faster).")
@click.option("--caches", is_flag=True, help="Also check every loader cache under STORE/cache in full.")
@user_errors
def validate(store: Path, version: str | None, no_checksums: bool, caches: bool) -> None:
    """Verify checksums and structural invariants of STORE (exit 1 on any problem)."""
    from ..store import Store

    s = Store(store, version=version)
    problems = s.validate(checksums=not no_checksums)
    if caches and not problems:
        from loaders.cache_check import validate_caches

        checked, cache_problems = validate_caches(s)
        problems += cache_problems
        click.echo(f"{store}: {checked} loader cache(s) checked")
    if problems:
        for p in problems[:50]:
            click.echo(f"{store}: {p}", err=True)
        raise click.ClickException(f"{store}: {len(problems)} problem(s)")
    click.echo(f"{store}: valid" + (f" (version {s.version})" if s.version is not None else ""))


@click.command()
@click.argument("store", type=click.Path(path_type=Path))
@user_errors
def versions(store: Path) -> None:
    """List STORE's kept versions: number, time, what changed, rows per table, tags."""
    from ..store import StoreError
    from ..store import versions as v
    from ..store.remote import S3Store, as_url, is_remote

    if is_remote(store):
        remote = S3Store(as_url(store))
        v = _RemoteLog(remote)
        store = remote.url
    numbers = v.version_numbers(store)
    if not numbers:
        raise StoreError(f"{store}: not a versioned store (no {v.META}/log)")
    by_version: dict[int, list[str]] = {}
    for name, n in v.tags(store).items():
        by_version.setdefault(n, []).append(name)
    click.echo(f"{'version':>7}  {'time':<25} {'op':<10} rows")
    for n in numbers:
        e = v.read_entry(store, n)
        rows = ", ".join(f"{t}={r}" for t, r in e.get("rows", {}).items())
        tagged = f"  tags: {', '.join(by_version[n])}" if n in by_version else ""
        latest = "  (latest)" if n == numbers[-1] else ""
        click.echo(f"{n:>7}  {e.get('time', '?'):<25} {e.get('op', '?'):<10} {rows}{tagged}{latest}")


@click.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.argument("name")
@VERSION
@user_errors
def tag(store: Path, name: str, version: str | None) -> None:
    """Name a version of STORE NAME for good (tags never move; vacuum never expires a tagged version)."""
    from ..store import versions as v
    from ..store.remote import S3Store, as_url, is_remote

    if is_remote(store):
        remote = S3Store(as_url(store))
        n, store = remote.tag(name, version), remote.url
    else:
        n = v.tag(store, name, version)
    click.echo(f"{store}: tag {name} -> version {n}")


@click.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--keep", type=click.IntRange(min=1), default=None,
              help="Expire versions older than the KEEP latest (default: expire none).")
@click.option("--grace-hours", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Never expire a version committed less than this long ago (readers may still use it).")
@user_errors
def vacuum(store: Path, keep: int | None, grace_hours: float) -> None:
    """Remove uncommitted leftovers of killed writers and expire old versions of STORE.

    Never removes the latest version, a tagged one, or one younger than the grace period."""
    from ..store import versions as v
    from ..store.remote import S3Store, as_url, is_remote

    if is_remote(store):
        remote = S3Store(as_url(store))
        for line in remote.vacuum(keep, grace_hours * 3600):
            click.echo(f"{remote.url}: {line}")
        click.echo(f"{remote.url}: versions kept: {remote.version_numbers()}")
        return
    done = v.vacuum(store, keep=keep, grace_seconds=grace_hours * 3600)
    for line in done:
        click.echo(f"{store}: {line}")
    click.echo(f"{store}: {len(done)} change(s); versions kept: {v.version_numbers(store)}")


class _RemoteLog:
    """The few ``versions`` functions ``fstore versions`` uses, on an S3 store."""

    def __init__(self, remote) -> None:
        self.remote = remote
        self.META = "_fstore"

    def version_numbers(self, _store) -> list[int]:
        return self.remote.version_numbers()

    def read_entry(self, _store, n: int) -> dict:
        return self.remote.read_entry(n)

    def tags(self, _store) -> dict:
        return self.remote.tags()


COMMANDS = [info, validate, versions, tag, vacuum]
