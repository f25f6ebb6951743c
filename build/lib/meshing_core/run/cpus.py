"""How many CPUs this process may really use.

``os.cpu_count()`` reports the host's cores; a Kubernetes pod limited to 2 CPUs on a 64-core node
would start 64 meshing processes and be throttled to a crawl. The answer here is the smaller of
the CPU affinity set and the cgroup CPU quota (v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us`` /
``cpu.cfs_period_us``), rounded up, and at least 1.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _quota_v2(text: str) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` line ("max 100000" or "200000 100000")."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) > 1 else 100000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _own_cgroup_dirs(root: Path, proc_cgroup: Path, controller: str | None) -> list[Path]:
    """This process's cgroup directory and its ancestors (a limit may sit on any of them)."""
    dirs: list[Path] = []
    text = _read(proc_cgroup) or ""
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, rel = fields
        if controller is None and controllers != "":
            continue
        if controller is not None and controller not in controllers.split(","):
            continue
        base = root if controller is None else _v1_dir(root, controllers)
        if base is None:
            continue
        current = base / rel.lstrip("/")
        while True:
            dirs.append(current)
            if current == base:
                break
            current = current.parent
    if not dirs:  # inside a container the namespace root is the own cgroup
        dirs.append(root if controller is None else (_v1_dir(root, "cpu") or root / "cpu"))
    return dirs


def _v1_dir(root: Path, controllers: str) -> Path | None:
    for name in (controllers, "cpu,cpuacct", "cpuacct,cpu", "cpu"):
        if (root / name).is_dir():
            return root / name
    return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The tightest CPU quota over this process's cgroups (v2, else v1), or None if unlimited."""
    limits: list[float] = []
    for directory in _own_cgroup_dirs(root, proc_cgroup, None):
        text = _read(directory / "cpu.max")
        if text is not None and (value := _quota_v2(text)) is not None:
            limits.append(value)
    if not limits:
        for directory in _own_cgroup_dirs(root, proc_cgroup, "cpu"):
            quota = _read(directory / "cpu.cfs_quota_us")
            period = _read(directory / "cpu.cfs_period_us")
            try:
                q, p = int(quota or -1), int(period or 0)
            except ValueError:
                continue
            if q > 0 and p > 0:
                limits.append(q / p)
    return min(limits) if limits else None


def available_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """CPUs to use: min(affinity, ceil(cgroup quota)), at least 1."""
    count = _affinity()
    limit = cgroup_cpu_limit(root, proc_cgroup)
    if limit is not None:
        count = min(count, max(1, math.ceil(limit - 1e-9)))
    return max(1, count)
