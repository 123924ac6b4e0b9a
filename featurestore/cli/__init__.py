"""``fstore``: the command line, thin over the library API that training scripts call directly.

Each dataset family registers its own commands in its module (``COMMANDS``: group name -> command);
adding a family is one module and one entry in :data:`FAMILIES`. Shared options and the error policy
live in :mod:`.common`.
"""

from __future__ import annotations

import click

from . import bench, doctor, fsd, melon, speakers, spotify, store, yandex
from .common import lean_exit, lean_ingest_process, run

FAMILIES = (spotify, yandex, fsd, speakers, melon)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fstore")
def main() -> None:
    """fstore: an 8-bit quantized feature store and GPU-ready loaders for music and audio ML."""


@main.group()
def synth() -> None:
    """Write synthetic raw data in the exact public formats (with planted, learnable signal)."""


@main.group()
def ingest() -> None:
    """Stream raw public-format files into a store; every ingest commits a new immutable version."""
    lean_ingest_process()
    lean_exit()


@main.group()
def train() -> None:
    """Train models straight from a store."""


@main.group()
def evaluate() -> None:
    """Score trained models on a store's test split (table + --metrics-json)."""


@main.group()
def split() -> None:
    """Make an offline validation split (questions and answers) from a raw release's train file."""


GROUPS = {"synth": synth, "ingest": ingest, "train": train, "evaluate": evaluate, "split": split}
for _family in FAMILIES:
    for _group, _command in _family.COMMANDS.items():
        GROUPS[_group].add_command(_command)
for _command in store.COMMANDS:
    main.add_command(_command)
main.add_command(bench.bench)
main.add_command(doctor.doctor)

__all__ = ["FAMILIES", "main", "run"]
