"""Run a command, measured: wall time, peak RSS, and optionally inside a child memory cgroup with a limit.

``run_measured(cmd, limit_bytes=...)`` creates a child of this process's own memory cgroup, starts the
command in it, waits for it with ``os.wait4`` (its ``ru_maxrss``), and reports the cgroup's peak charge and
whether the OOM killer fired; the cgroup is removed afterwards (left-over processes in it are killed first).

- cgroup v1 (``/sys/fs/cgroup/memory/<own path>``, as on this project's machines): ``memory.limit_in_bytes``,
  peak ``memory.max_usage_in_bytes``, OOM kills from ``memory.oom_control``.
- cgroup v2 (``<cgroup2 mount>/<own path>``): ``memory.max``, peak ``memory.peak`` (kernel >= 5.19; else the
  largest ``memory.current`` sampled), OOM kills from ``memory.events``.

The charge is anonymous memory plus the page cache the cgroup faulted in: memory-mapped file pages count,
and the kernel reclaims them (they page) when the limit is reached; anonymous memory past the limit gets
the process killed. Where no cgroup can be made (no memory controller, not root, a v2 parent that cannot
delegate it) ``CgroupError`` says so in one line.

``preload=("torch", ...)`` (for ``[python, "-m", module, *args]`` commands) imports those modules *before*
the process joins the cgroup: memory charged before a move stays with the old cgroup (v1 without
``move_charge_at_immigrate``, and always on v2), so the limit then bounds what the command allocates
beyond the interpreter and its imports (torch's are ~300 MB of relocated library data, the same at every
data size). ``ru_maxrss`` still counts everything.

Also a command: ``python -m bench.memlimit --limit 512M [--preload torch] -- CMD ...`` prints one line.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from loaders.memory import CGROUP_V1
from loaders.memory import cgroup2_mount as _cgroup2_mount
from loaders.memory import own_cgroup_paths as _own_paths
from loaders.memory import read_int as _read_int

__all__ = ["CgroupError", "MemoryCgroup", "Measured", "drop_page_cache", "parse_bytes", "run_measured"]

_counter = itertools.count()
_PREFIX = "fstore-memlimit-"
# joins the cgroup by writing its own pid, then becomes the command (exec keeps the pid)
_JOIN_SH = 'echo $$ > "$0" && exec "$@"'
# imports the preload modules, joins the cgroup, then runs the module as __main__
_JOIN_PY = ("import importlib, os, runpy, sys\n"
            "for m in filter(None, sys.argv[1].split(',')): importlib.import_module(m)\n"
            "with open(sys.argv[2], 'w') as f: f.write(str(os.getpid()))\n"
            "sys.argv = [sys.argv[3], *sys.argv[4:]]\n"
            "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n")


class CgroupError(RuntimeError):
    """No child memory cgroup can be made here (the message is one line saying why)."""


def parse_bytes(text: str | int) -> int:
    """'512M', '2G', '1.5GiB', '300000000' -> bytes (K/M/G/T are powers of 1024)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", str(text), re.I)
    if not m:
        raise ValueError(f"not a size: {text!r} (e.g. 512M, 2G, 300000000)")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " "))


def drop_page_cache(paths: Sequence[str | Path]) -> None:
    """Ask the kernel to drop these files' cached pages (written back first: DONTNEED drops clean pages
    only), so that the next reader faults them in, and is charged for them, again. Pages still mapped by a
    process stay."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _parent_dir() -> tuple[int, Path]:
    """(cgroup version, this process's own memory cgroup folder), or CgroupError."""
    v1, v2 = _own_paths()
    root_v1 = CGROUP_V1
    if v1 is not None and (root_v1 / "memory.limit_in_bytes").exists():
        return 1, root_v1 / v1.lstrip("/")
    mount = _cgroup2_mount()
    if v2 is not None and mount is not None:
        own = mount / v2.lstrip("/")
        try:
            available = (own / "cgroup.controllers").read_text().split()
        except OSError:
            available = []
        if "memory" in available:
            return 2, own
        raise CgroupError(f"cannot limit memory: cgroup v2 at {own} has no memory controller "
                          "(delegate it, e.g. run under `systemd-run --scope -p Delegate=yes`)")
    raise CgroupError("cannot limit memory: no cgroup memory controller is mounted "
                      "(neither /sys/fs/cgroup/memory nor a cgroup2 file system)")


def _field(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return int(v)
    except (OSError, ValueError):
        pass
    return 0


class MemoryCgroup:
    """A child memory cgroup of this process's own, limited to ``limit_bytes``; ``close()`` removes it."""

    def __init__(self, limit_bytes: int):
        if limit_bytes <= 0:
            raise ValueError(f"limit must be > 0 bytes, got {limit_bytes}")
        self.version, parent = _parent_dir()
        self.limit_bytes = limit_bytes
        _sweep(parent)
        self.path = parent / f"{_PREFIX}{os.getpid()}-{next(_counter)}"
        try:
            if self.version == 2:
                self._delegate(parent)
            self.path.mkdir()
        except OSError as e:
            raise CgroupError(f"cannot create memory cgroup {self.path}: {e.strerror or e} "
                              "(needs root, or a cgroup delegated to this user)") from None
        try:
            limit_file = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
            (self.path / limit_file).write_text(str(limit_bytes))
            if self.version == 1:  # a memsw limit, where the kernel has one, stops swapping around the limit
                memsw = self.path / "memory.memsw.limit_in_bytes"
                if memsw.exists():
                    memsw.write_text(str(limit_bytes))
            else:
                swap = self.path / "memory.swap.max"
                if swap.exists():
                    swap.write_text("0")
        except OSError as e:
            self.close()
            raise CgroupError(f"cannot set a memory limit on {self.path}: {e.strerror or e}") from None
        self._sampled = 0

    @staticmethod
    def _delegate(parent: Path) -> None:
        control = parent / "cgroup.subtree_control"
        if "memory" in control.read_text().split():
            return
        try:
            control.write_text("+memory")
        except OSError as e:
            raise CgroupError(f"cannot enable the memory controller for children of {parent}: "
                              f"{e.strerror or e} (a v2 cgroup holding processes cannot delegate; run under "
                              "`systemd-run --scope -p Delegate=yes`)") from None

    @property
    def procs(self) -> Path:
        """Write a pid here to move that process into the cgroup."""
        return self.path / "cgroup.procs"

    def sample(self) -> None:
        """Record the current charge (v2 kernels without memory.peak are sampled)."""
        if self.version == 2:
            self._sampled = max(self._sampled, _read_int(self.path / "memory.current"))

    def peak(self) -> int:
        """Largest charge seen, bytes."""
        if self.version == 1:
            return _read_int(self.path / "memory.max_usage_in_bytes")
        peak = self.path / "memory.peak"
        return _read_int(peak) if peak.exists() else self._sampled

    def oom_kills(self) -> int:
        if self.version == 1:
            return _field(self.path / "memory.oom_control", "oom_kill")
        return _field(self.path / "memory.events", "oom_kill")

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in self.procs.read_text().split()]
        except OSError:
            return []

    def close(self) -> None:
        """Kill what the command left in the cgroup (its own processes only), then remove the cgroup."""
        for _ in range(100):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)

    def __enter__(self) -> MemoryCgroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sweep(parent: Path) -> None:
    """Remove empty cgroups left by helpers whose process died before cleaning up."""
    try:
        children = list(parent.glob(_PREFIX + "*"))
    except OSError:
        return
    for child in children:
        pid = child.name[len(_PREFIX):].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            try:
                child.rmdir()
            except OSError:
                pass


@dataclass(frozen=True)
class Measured:
    """One command's costs (``max_rss_bytes``: see ``run_measured``); ``peak_bytes`` / ``oom_killed`` are
    the cgroup's (None / False without a limit)."""

    returncode: int
    wall_s: float
    max_rss_bytes: int
    timed_out: bool = False
    limit_bytes: int | None = None
    peak_bytes: int | None = None
    oom_killed: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def _own_hwm() -> int:
    """This process's peak RSS so far, bytes (VmHWM)."""
    return _field_kb(Path("/proc/self/status"), "VmHWM:")


def _field_kb(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _module_command(cmd: Sequence[str]) -> tuple[str, str, list[str]]:
    if len(cmd) < 3 or cmd[1] != "-m":
        raise ValueError(f"preload needs a [python, '-m', module, ...] command, got {list(cmd)[:3]}")
    return cmd[0], cmd[2], list(cmd[3:])


def run_measured(cmd: Sequence[str], *, limit_bytes: int | None = None, preload: Sequence[str] = (),
                 stdout: IO | int | None = None, stderr: IO | int | None = None, cwd: str | Path | None = None,
                 env: dict[str, str] | None = None, timeout: float | None = None) -> Measured:
    """Run ``cmd`` to its end (killed after ``timeout`` seconds), measured; in a limited cgroup if
    ``limit_bytes`` is given (CgroupError, one line, when none can be made)."""
    cmd = [str(c) for c in cmd]
    cgroup = MemoryCgroup(limit_bytes) if limit_bytes is not None else None
    try:
        if cgroup is not None and preload:
            python, module, args = _module_command(cmd)
            cmd = [python, "-c", _JOIN_PY, ",".join(preload), str(cgroup.procs), module, *args]
        elif cgroup is not None:
            cmd = ["/bin/sh", "-c", _JOIN_SH, str(cgroup.procs), *cmd]
        elif preload:
            _module_command(cmd)
        parent_hwm = _own_hwm()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, cwd=cwd, env=env, start_new_session=True)
        status_file = Path(f"/proc/{proc.pid}/status")
        timed_out, status, usage, sampled = False, 0, None, 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            sampled = max(sampled, _field_kb(status_file, "VmHWM:"))
            if cgroup is not None:
                cgroup.sample()
            if timeout is not None and time.perf_counter() - t0 > timeout:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
        # Linux folds the forking process's peak RSS into the child's ru_maxrss at exec (the vfork'd mm is
        # the parent's): above the parent's own peak it is the command's; below it, use the command's VmHWM
        # sampled while it ran (every 20 ms)
        ru = usage.ru_maxrss * 1024
        max_rss = ru if ru > parent_hwm or sampled == 0 else sampled
        return Measured(returncode=proc.returncode, wall_s=wall, max_rss_bytes=max_rss,
                        timed_out=timed_out, limit_bytes=limit_bytes,
                        peak_bytes=cgroup.peak() if cgroup is not None else None,
                        oom_killed=cgroup is not None and cgroup.oom_kills() > 0)
    finally:
        if cgroup is not None:
            cgroup.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memlimit", description=__doc__.split("\n")[0])
    p.add_argument("--limit", required=True, help="memory limit, e.g. 512M, 2G")
    p.add_argument("--preload", default="", help="modules imported before joining (python -m commands)")
    p.add_argument("--timeout", type=float, default=None, help="seconds")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        p.error("no command given")
    try:
        m = run_measured(cmd, limit_bytes=parse_bytes(a.limit), preload=[s for s in a.preload.split(",") if s],
                         timeout=a.timeout)
    except CgroupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exit {m.returncode}, {m.wall_s:.1f} s, peak {m.peak_bytes / 2**20:.0f} MB in the cgroup "
          f"(limit {m.limit_bytes / 2**20:.0f} MB), max RSS {m.max_rss_bytes / 2**20:.0f} MB, "
          f"OOM killer {'fired' if m.oom_killed else 'did not fire'}")
    return 0 if m.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
