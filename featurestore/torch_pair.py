"""torch and torchaudio must come from the same release: torchaudio's compiled extension loads only with
the torch it was built against (torchaudio 2.11.1 beside torch 2.11.0 fails with an undefined symbol).

Every fstore module that needs torchaudio imports it through :func:`import_torchaudio`, so a broken pair
gives one line that names both versions and the fix (:class:`BrokenInstallError`, which the CLI prints
as one line and exit 1), never the 40-line chain of the extension loader. ``fstore doctor`` reports the
same line. Versions are read from package metadata, so diagnosing imports neither package.
"""

from __future__ import annotations

import importlib
import sys
from importlib import metadata
from types import ModuleType, TracebackType

from .store.errors import FstoreError


class BrokenInstallError(FstoreError, ImportError):
    """An installed package that cannot work with another one; the message says which and the fix."""


def installed(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def release(version: str) -> str:
    """``2.11.0+cu130`` -> ``2.11.0``: the public release a local build belongs to."""
    return version.split("+", 1)[0]


def pinned(name: str) -> str | None:
    """The exact version fstore's own requirements pin ``name`` to (``torch==2.11.0`` -> 2.11.0)."""
    try:
        requirements = metadata.requires("fstore") or []
    except metadata.PackageNotFoundError:
        return None
    for requirement in requirements:
        head = requirement.split(";", 1)[0].replace(" ", "")
        if head.startswith(f"{name}==") and "*" not in head:
            return head.split("==", 1)[1]
    return None


def pair_fix(torch_version: str) -> str:
    """What to install so that torchaudio matches ``torch_version`` (or the pinned pair when fstore has
    never been tested with that torch)."""
    torch_pin, audio_pin = pinned("torch"), pinned("torchaudio")
    if torch_pin and audio_pin and release(torch_version) != torch_pin:
        return (f"install torch=={torch_pin} torchaudio=={audio_pin} (the tested pair), "
                "or run `make`, which installs from the lock")
    return f"install torchaudio=={release(torch_version)}, or run `make`, which installs from the lock"


def pair_problem() -> str | None:
    """One line when the installed torchaudio is not from the installed torch's release, else None."""
    torch_version, audio_version = installed("torch"), installed("torchaudio")
    if torch_version is None or audio_version is None:
        missing = "torch" if torch_version is None else "torchaudio"
        return f"{missing} is not installed: run `make`, which installs from the lock"
    if release(torch_version) != release(audio_version):
        return (f"torchaudio {release(audio_version)} cannot load with torch {release(torch_version)}: "
                f"{pair_fix(torch_version)}")
    return None


def load_problem(error: BaseException) -> str:
    """The one line for a torchaudio that failed to import, whatever the versions say."""
    mismatch = pair_problem()
    if mismatch:
        return mismatch
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    torch_version = installed("torch") or "?"
    return (f"torchaudio {installed('torchaudio')} does not load with torch {release(torch_version)} ({first}): "
            f"{pair_fix(torch_version)}")


def import_torchaudio(submodule: str = "") -> ModuleType:
    """``torchaudio`` (or ``torchaudio.<submodule>``), or :class:`BrokenInstallError` with one line."""
    name = f"torchaudio.{submodule}" if submodule else "torchaudio"
    try:
        return importlib.import_module(name)
    except (OSError, ImportError, RuntimeError) as e:  # RuntimeError: torchaudio's own CUDA-version check
        _print_uncaught_as_one_line()
        raise BrokenInstallError(load_problem(e)) from None


def _print_uncaught_as_one_line() -> None:
    """A script that imports fstore (``from loaders import SessionBatches``) and never catches the error
    still shows the one line: an uncaught BrokenInstallError prints ``fstore: <line>``, no traceback.
    Installed only once the pair has failed; every other exception keeps the previous hook."""
    previous = sys.excepthook
    if getattr(previous, "_fstore_one_line", False):
        return

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if isinstance(value, BrokenInstallError):
            print(f"fstore: {value}", file=sys.stderr)
        else:
            previous(kind, value, tb)

    hook._fstore_one_line = True  # type: ignore[attr-defined]
    sys.excepthook = hook
