"""Peak resident memory of this process.

``getrusage().ru_maxrss`` is useless in a freshly spawned child on Linux: it carries over the
parent's resident size at fork time. ``VmHWM`` in ``/proc/self/status`` is this process's own
high-water mark.
"""

from __future__ import annotations

import resource
from pathlib import Path


def _status_mib(field: str) -> float | None:
    """A ``/proc/self/status`` size field in MiB; None where there is no such file."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return None


def peak_rss_mib() -> float:
    peak = _status_mib("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if peak is None else peak


def current_rss_mib() -> float:
    """Resident size now (``VmRSS``), the baseline a task's peak is measured from."""
    return _status_mib("VmRSS") or 0.0
