"""Stitching tasks give freed arrays back to the system at once (``run.memory``)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A 24 MB array freed raises glibc's mmap threshold; ten 16 MB arrays then come from the heap,
# and freeing nine of them below the tenth leaves their pages with the process.
_PROBE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from meshing_core.run.memory import unmap_large_arrays

    if sys.argv[1] == "fixed":
        assert unmap_large_arrays()

    def rss_mib():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    first = np.ones(3_000_000)
    del first
    base = rss_mib()
    arrays = [np.ones(2_000_000) for _ in range(10)]
    del arrays[:-1]
    print(rss_mib() - base)
    """
)


def _left_resident(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], cwd=REPO, check=True, capture_output=True, text=True
    )
    return float(out.stdout)


@pytest.mark.skipif(
    not Path("/proc/self/status").exists() or platform.libc_ver()[0] != "glibc",
    reason="glibc's malloc on Linux (what the workers run)",
)
def test_freed_large_arrays_leave_the_process_once_the_threshold_is_fixed() -> None:
    held_by_default = _left_resident("default")
    held_when_fixed = _left_resident("fixed")
    assert held_when_fixed < 20  # the one array still alive (15.3 MiB)
    assert held_by_default > 100  # what stitching used to keep after each stage


def test_stitching_tasks_fix_the_threshold(monkeypatch) -> None:
    import meshing_core.run.chunk as chunk

    calls = []
    monkeypatch.setattr(chunk, "unmap_large_arrays", lambda: calls.append(True))
    monkeypatch.setattr(chunk, "_publish", lambda context, coords: "done")
    for layer in (2, 3):
        context = chunk.ChunkContext(None, layer, 0.0, None, None)
        assert chunk.run_chunk(context, (0, 0, 0)) == "done"
    assert calls == [True]  # layer 3 only
