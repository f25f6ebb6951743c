"""Running `python -m meshing_core` as a user does: a real subprocess from the repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, check: bool = True, quiet: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run one command; with ``check`` a non-zero exit fails the test, showing stderr's tail."""
    command = [sys.executable, "-m", "meshing_core", *args, *(["-q"] if quiet else [])]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc
