"""`python -m meshing_core serve` as a child process on a free loopback port (tests and bench).

Started, waited for (bounded), and stopped with SIGINT then SIGKILL; its output goes to a log
file that is quoted when it does not come up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from tools.airflow_env import free_port

READY = "/segmentation/api/versions"


@contextlib.contextmanager
def graphene_server(
    graph: str | Path,
    *args: str,
    log: Path,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Serve ``graph`` (graph.yaml or folder) with extra CLI ``args``; yield the base URL."""
    port = free_port()
    command = [sys.executable, "-m", "meshing_core", "serve", "--graph", str(graph)]
    command += ["--port", str(port), *args]
    base = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    try:
        wait_ready(process, base + READY, log, timeout)
        yield base
    finally:
        stop(process)


def wait_ready(process: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    """Until ``url`` answers 200 (bounded); the server's log in the error otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}): {log.read_text()}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"the server did not answer within {timeout:.0f} s: {log.read_text()}")


def stop(process: subprocess.Popen, grace: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(grace)
