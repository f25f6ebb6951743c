"""Shared fixtures: the real gala crop, and the example dataset built once per test session."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GALA = REPO.parent / "shared" / "data" / "gala"


@pytest.fixture(scope="session")
def gala_dir() -> Path:
    """The real FIB-SEM crop (train files only are used by tests)."""
    if not (GALA / "train-ws.lzf.h5").exists():
        pytest.skip("the shared gala crop is not beside this clone")
    return GALA


@pytest.fixture(scope="session")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example dataset (gala train crop + two edits), built once; tests must not modify it."""
    from meshing_core.datasets.example import build_example

    out = tmp_path_factory.mktemp("example")
    build_example(out, progress=False)
    return out


@pytest.fixture()
def example_copy(example_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the example dataset that a test may modify."""
    target = tmp_path / "example"
    shutil.copytree(example_dir, target)
    return target


@pytest.fixture(scope="session")
def example_from(request: pytest.FixtureRequest):
    """``example_from(source, root)``: the example at ``root`` built from "gala" or "synthetic".

    "gala" copies the session's ``example_dir`` (skipping without the crop); "synthetic" builds
    what a clone without the gala files builds (the fallback volume).
    """
    from meshing_core.datasets import example

    def build(source: str, root: Path) -> Path:
        if source == "gala":
            request.getfixturevalue("gala_dir")  # skips without the crop
            shutil.copytree(request.getfixturevalue("example_dir"), root)
        else:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(example, "GALA", root.parent / "no-gala-here")
                example.build_example(root, progress=False)
        return root

    return build


# -- SQS: a real moto_server on loopback ------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    """A ``moto_server`` process on 127.0.0.1; stopped at the end."""
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        server.kill()
        pytest.fail("moto_server did not listen within 30 s")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture()
def sqs(sqs_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> object:
    """The standard AWS environment pointing at moto (worker subprocesses inherit it)."""
    for name, value in {
        "AWS_ENDPOINT_URL_SQS": sqs_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    from meshing_core.queue.sqs import sqs_client

    return sqs_client()
