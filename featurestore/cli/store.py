"""Commands on any store: ``info``, ``validate``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import user_errors


@click.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest's tables as JSON.")
@user_errors
def info(store: Path, as_json: bool) -> None:
    """Schema, sizes and per-column quantization errors of STORE."""
    from ..store import Store
    from ..store.info import describe

    s = Store(store)
    if as_json:
        click.echo(json.dumps(s.tables, indent=1))
        return
    for line in describe(s):
        click.echo(line)


@click.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--no-checksums", is_flag=True, help="Check structure only (faster).")
@user_errors
def validate(store: Path, no_checksums: bool) -> None:
    """Verify checksums and structural invariants of STORE (exit 1 on any problem)."""
    from ..store import Store

    problems = Store(store).validate(checksums=not no_checksums)
    if problems:
        for p in problems[:50]:
            click.echo(f"{store}: {p}", err=True)
        raise click.ClickException(f"{store}: {len(problems)} problem(s)")
    click.echo(f"{store}: valid")


COMMANDS = [info, validate]
