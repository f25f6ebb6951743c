"""A ``moto_server`` on loopback standing in for SQS (tests and benches start and stop it)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tools.airflow_env import free_port

# the standard AWS environment pointing a client at the server (keys are moto's dummies)
FAKE_KEYS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def moto_server(start_timeout_s: float = 30.0) -> Iterator[str]:
    """Run ``moto_server`` on a free 127.0.0.1 port; yields its endpoint URL."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"moto_server did not listen within {start_timeout_s:.0f} s")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def sqs_environment(endpoint: str) -> dict[str, str]:
    """Environment variables that point boto3 (and our workers) at ``endpoint``."""
    return {"AWS_ENDPOINT_URL_SQS": endpoint, **FAKE_KEYS}
