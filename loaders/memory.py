"""How much memory this process may fill: the machine's available memory and its memory cgroup's limit.

Also where a process's own cgroup lives (v1 memory controller or v2 unified), which ``bench/memlimit.py``
uses to make a limited child of it."""

from __future__ import annotations

from pathlib import Path

CGROUP_V1 = Path("/sys/fs/cgroup/memory")


def own_cgroup_paths() -> tuple[str | None, str | None]:
    """(v1 memory controller path, v2 unified path) of this process, from /proc/self/cgroup."""
    v1 = v2 = None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        hid, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            v1 = path
        elif hid == "0" and controllers == "":
            v2 = path
    return v1, v2


def cgroup2_mount() -> Path | None:
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2":
                return Path(left.split()[4])
    except (OSError, IndexError):
        pass
    return None


def read_int(path: Path, default: int = 0) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def memory_limit() -> int:
    """The smaller of the machine's available memory (MemAvailable: free plus reclaimable page cache) and
    this process's memory cgroup limit (v1 or v2; none: no bound from it)."""
    unbounded = 1 << 62
    available = unbounded
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    v1, v2 = own_cgroup_paths()
    limits = []
    if v1 is not None:
        limits.append(read_int(CGROUP_V1 / v1.lstrip("/") / "memory.limit_in_bytes", unbounded))
    mount = cgroup2_mount()
    if v2 is not None and mount is not None:  # "max" (no limit) reads as the default
        limits.append(read_int(mount / v2.lstrip("/") / "memory.max", unbounded))
    return min([available, *limits])
