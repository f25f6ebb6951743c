"""Give freed memory back to the system at once in tasks that build large meshes.

glibc serves large allocations (numpy arrays above 128 KiB) with ``mmap`` and unmaps them when
freed, but the first such free raises its threshold (up to 32 MiB), after which arrays below it
come from the heap and their pages mostly stay with the process. A stitching task frees arrays
of tens of MiB stage after stage (weld, walls, flat triangles) before draco's encoder allocates
its own: measured on a 28 MiB node mesh, the task's peak was 36 MiB higher for it. Fixing the
threshold keeps every large array on ``mmap``; elsewhere (not glibc) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import cache

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
THRESHOLD_BYTES = 128 * 1024  # glibc's own default, now fixed


@cache
def unmap_large_arrays() -> bool:
    """Fix glibc's mmap threshold for this process (once); False where there is no glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, THRESHOLD_BYTES))
    except (OSError, AttributeError, TypeError):
        ok = False
    log.debug("fixed malloc's mmap threshold at %d bytes: %s", THRESHOLD_BYTES, ok)
    return ok
