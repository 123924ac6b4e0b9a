"""``fstore doctor``: what this installation is, one line each, and one line per problem with its fix.

Each check is a small function that returns its report line and any problems; one that fails in an
unexpected way becomes a problem line itself, so the doctor always finishes. Nothing here prints a
secret: AWS settings are listed by name only.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import click

from ..torch_pair import installed, release

Check = tuple[str, list[str]]  # (report line, problems: each one line naming the fix)
REINSTALL = "run `make`, which installs from the lock"


def check_python() -> Check:
    problems = []
    if sys.version_info < (3, 11):
        problems.append(f"Python {platform.python_version()} is too old: fstore needs 3.11 or newer (zarr 3)")
    return f"python: {platform.python_version()} ({sys.executable})", problems


def check_fstore() -> Check:
    where = Path(__file__).resolve().parents[2]
    version = installed("fstore")
    if version is None:
        return f"fstore: not installed, running from {where}", [f"fstore is not installed: {REINSTALL}"]
    return f"fstore: {version} ({where})", []


@functools.cache
def torchaudio_load_error() -> str | None:
    """Loading is the test: a pair from two releases may load (torchaudio 2.11.1 with torch 2.15 does) or
    not (with torch 2.11.0 it does not)."""
    from ..torch_pair import BrokenInstallError, import_torchaudio

    try:
        import_torchaudio()
    except BrokenInstallError as e:
        return str(e)
    return None


def check_torch_pair() -> Check:
    torch_version, audio_version = installed("torch"), installed("torchaudio")
    error = torchaudio_load_error()
    if error:
        return f"torch: {torch_version}, torchaudio: {audio_version} (extension does not load)", [error]
    return f"torch: {torch_version}, torchaudio: {audio_version} (extension loads)", []


def check_cuda() -> Check:
    import torch

    built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    if not torch.cuda.is_available():
        return f"cuda: no device ({built})", []
    devices = []
    for i in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(i)
        devices.append(f"{i}: {torch.cuda.get_device_name(i)} (sm_{major}{minor})")
    return f"cuda: {len(devices)} device(s) ({built}): " + ", ".join(devices), []


def check_numba() -> Check:
    import numba
    from numba.np.ufunc import parallel

    try:
        parallel._launch_threads()
        layer = numba.threading_layer()
    except Exception as e:  # no usable layer: numba says why
        return f"numba: {numba.__version__}, threading layer: none", [f"numba has no threading layer ({e})"]
    setting = numba.config.THREADING_LAYER
    return f"numba: {numba.__version__}, threading layer: {layer} (NUMBA_THREADING_LAYER={setting})", []


def check_requirements() -> Check:
    """Every installed requirement of fstore satisfies setup.cfg's range (extras: only those installed)."""
    from packaging.requirements import Requirement

    core = ("polars", "zarr", "numcodecs", "pyarrow", "numpy")
    line = ", ".join(f"{name} {installed(name)}" for name in core)
    problems = []
    said = {"torch", "torchaudio"} if torchaudio_load_error() else set()  # check_torch_pair has said it
    for text in metadata.requires("fstore") or []:
        req = Requirement(text)
        if req.name in said:
            continue
        extra = req.marker is not None and "extra" in str(req.marker)
        if req.marker is not None and not extra and not req.marker.evaluate():
            continue
        version = installed(req.name)
        if version is None:
            if not extra:
                problems.append(f"{req.name} is not installed (fstore needs {req}): {REINSTALL}")
        elif not req.specifier.contains(release(version), prereleases=True):
            problems.append(f"{req.name} {version} is outside fstore's range {req.name}{req.specifier}: {REINSTALL}")
    return line, problems


def check_codecs() -> Check:
    """Each fstore quantizer resolves through numcodecs' own entry-point registry to its codec class, as
    it does in a process that reads a store without importing fstore."""
    from numcodecs import registry
    from numcodecs.abc import Codec

    registry.run_entrypoints()
    names = sorted(name for name in registry.entries if name.startswith("fstore."))
    problems = []
    for name in names:
        try:
            cls = registry.entries[name].load()
            if not (isinstance(cls, type) and issubclass(cls, Codec) and cls.codec_id == name):
                raise TypeError(f"entry point gives {cls!r}, not a numcodecs Codec with codec_id {name!r}")
        except Exception as e:
            problems.append(f"codec {name} does not load ({type(e).__name__}: {e}): {REINSTALL}")
    if not names:
        problems.append(f"no fstore codecs are registered (numcodecs.codecs entry point): {REINSTALL}")
    return "codecs: " + (", ".join(names) or "none") + " (numcodecs.codecs entry point)", problems


def check_cache() -> Check:
    from ..store.remote import default_cache

    cache = default_cache()
    origin = "$FSTORE_CACHE" if "FSTORE_CACHE" in os.environ else "default; set $FSTORE_CACHE to move it"
    if not cache.exists():
        return f"cache: {cache} ({origin}): empty", []
    size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file() and not f.is_symlink())
    return f"cache: {cache} ({origin}): {size / 1e6:,.1f} MB", []


def check_aws() -> Check:
    names = sorted(k for k in os.environ if k.startswith("AWS_"))
    if not names:
        return "aws: no AWS_* settings (s3:// stores use boto3's defaults: ~/.aws, instance roles)", []
    return "aws: set (values not shown): " + ", ".join(names), []


CHECKS: tuple[Callable[[], Check], ...] = (check_python, check_fstore, check_torch_pair, check_cuda, check_numba,
                                            check_requirements, check_codecs, check_cache, check_aws)


def run_checks() -> tuple[list[str], list[str]]:
    lines, problems = [], []
    for check in CHECKS:
        try:
            line, found = check()
        except Exception as e:  # a check that cannot run is itself a problem, and the others still run
            name = check.__name__.removeprefix("check_")
            line, found = f"{name}: check failed", [f"{name}: {type(e).__name__}: {e}"]
        lines.append(line)
        problems += found
    return lines, problems


@click.command()
def doctor() -> None:
    """Print this installation (Python, fstore, torch and torchaudio, CUDA, numba, polars, zarr,
    numcodecs, pyarrow, codecs, cache, AWS settings by name); exit 1 with one line per problem and
    its fix."""
    lines, problems = run_checks()
    for line in lines:
        click.echo(line)
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    if problems:
        raise SystemExit(1)
    click.echo("no problems found")
