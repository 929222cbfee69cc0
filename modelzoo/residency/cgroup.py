"""The memory a container may use, from its cgroup (v2 or v1).

``/proc/meminfo`` shows the host's memory, not the container's: a 16 GiB container on a
256 GiB host that budgets from MemAvailable is OOM-killed. The limit comes from the
cgroup the process is in::

    v2  <root>/<path>/memory.max  memory.current  memory.stat:inactive_file   (path: "0::/path")
    v1  <root>/memory/<path>/memory.limit_in_bytes  memory.usage_in_bytes
        memory.stat:total_inactive_file                                      ("N:memory:/path")

Every level from the process's cgroup up to the mount root is read and the tightest
limit wins (a pod's limit sits above the container's). The page cache is charged to the
cgroup too, so its reclaimable part (inactive files) counts as available, as kubelet's
working-set figure does. Stdlib only: the A1111 adapter reads this inside the WebUI.
"""

from __future__ import annotations

import os
from pathlib import Path

from .memory import MemoryReading

UNLIMITED = 1 << 62  # cgroup v1 writes "no limit" as 9223372036854771712


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text == "max":
        return UNLIMITED
    try:
        return int(text)
    except ValueError:
        return None


def _stat(path: Path, key: str) -> int:
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    return 0


def _own_cgroup(proc_cgroup: Path, v2: bool) -> str:
    """The process's cgroup path for the memory controller ("/" when unknown)."""
    try:
        lines = proc_cgroup.read_text(encoding="utf-8").splitlines()
    except OSError:
        return "/"
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if (v2 and controllers == "") or (not v2 and "memory" in controllers.split(",")):
            return path or "/"
    return "/"


def cgroup_memory(root: str | os.PathLike[str] = "/sys/fs/cgroup",
                  proc_cgroup: str | os.PathLike[str] = "/proc/self/cgroup"
                  ) -> MemoryReading | None:
    """The memory left to this process's cgroup and its limit, or None without a limit.

    ``total`` is the tightest limit from the process's cgroup up to the mount root, and
    ``free`` the least room left on any limited level: limit - (usage - inactive files).
    """
    base = Path(root)
    v2 = (base / "cgroup.controllers").is_file()
    if v2:
        mount, limit_f, usage_f, inactive = base, "memory.max", "memory.current", "inactive_file"
    else:
        mount = base / "memory"
        limit_f, usage_f = "memory.limit_in_bytes", "memory.usage_in_bytes"
        inactive = "total_inactive_file"
    rel = _own_cgroup(Path(proc_cgroup), v2).strip("/")
    # Inside a container the mount root often *is* the process's cgroup and the path
    # from /proc names a folder that is not mounted: then only the root is read.
    levels = [mount / rel] if rel and (mount / rel).is_dir() else []
    if levels:
        here = levels[0]
        while here != mount:
            here = here.parent
            levels.append(here)
    else:
        levels = [mount]
    total: int | None = None
    free: int | None = None
    for level in levels:
        limit = _read_int(level / limit_f)
        if limit is None or limit >= UNLIMITED:
            continue
        usage = _read_int(level / usage_f) or 0
        used = max(0, usage - _stat(level / "memory.stat", inactive))
        room = max(0, limit - used)
        total = limit if total is None else min(total, limit)
        free = room if free is None else min(free, room)
    if total is None or free is None:
        return None
    return MemoryReading(free=min(free, total), total=total)
