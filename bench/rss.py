"""Peak resident memory of this process.

``getrusage().ru_maxrss`` is useless in a freshly spawned child on Linux: it carries over the
parent's resident size at fork time. ``VmHWM`` in ``/proc/self/status`` is this process's own
high-water mark.
"""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mib() -> float:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
