"""Shared fixtures: the real gala crop, and the example dataset built once per test session."""

from __future__ import annotations

import shutil
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


# -- the example meshed to its root layer, and the read-only server over it ----------------------
SERVED_AT_OFFSET = 1.0  # the served example is meshed this long after its last edit (the split)


@pytest.fixture(scope="session")
def meshed_example(example_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example meshed to the root layer after both edits; tests must not modify it."""
    from meshing_core.config import load_config
    from meshing_core.datasets.example import SPLIT_AT
    from meshing_core.run.lifecycle import run_graph

    folder = tmp_path_factory.mktemp("served") / "example"
    shutil.copytree(example_dir, folder)
    run_graph(load_config(folder), timestamp=SPLIT_AT + SERVED_AT_OFFSET, workers=1, progress=False)
    return folder


@pytest.fixture(scope="session")
def graphene_url(meshed_example: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m meshing_core serve` over ``meshed_example`` on a free loopback port."""
    from tools.graphene_server import graphene_server

    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    with graphene_server(meshed_example, log=log) as base:
        yield base


# -- PyChunkedGraph: the stand-in of its API, over copies of embedded graphs -------------------
@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The stand-in's tables folder, active in this process and the subprocesses it starts
    (PYTHONPATH, PCG_STANDIN_TABLES and dummy BigTable credentials); undone at the end."""
    from tools.pcg_standin import activate, deactivate

    tables = tmp_path_factory.mktemp("pcg-tables")
    activate(tables)
    yield tables
    deactivate()


# -- S3: moto's server on loopback, one per session (cloud-files and boto3 keep clients that
# -- remember the endpoint, so every test module must see the same one) -------------------------
S3_BUCKET = "meshes"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on loopback; stopped at the end."""
    from moto.server import ThreadedMotoServer

    from tools.airflow_env import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()  # returns once the server listens
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture()
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The standard AWS environment pointing at moto (subprocesses inherit it), with the bucket."""
    import boto3

    for name, value in {
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MESHING_CACHE": str(tmp_path / "cache"),
    }.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3")
    if S3_BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=S3_BUCKET)
    return f"s3://{S3_BUCKET}"


# -- SQS: a real moto_server on loopback ------------------------------------------------------
@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    """A ``moto_server`` process on 127.0.0.1; stopped at the end."""
    from tools.moto_sqs import moto_server

    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture()
def sqs(sqs_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> object:
    """The standard AWS environment pointing at moto (worker subprocesses inherit it)."""
    from tools.moto_sqs import sqs_environment

    for name, value in sqs_environment(sqs_endpoint).items():
        monkeypatch.setenv(name, value)
    from meshing_core.queue.sqs import sqs_client

    return sqs_client()


# -- a real browser (Debian chromium through Playwright) ----------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright
    from ui_support import launch_chromium

    with sync_playwright() as playwright:
        launched = launch_chromium(playwright)
        yield launched
        launched.close()


# -- Airflow: a migrated metadata DB per test module ---------------------------------------------
@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An AIRFLOW_HOME with its SQLite metadata DB migrated (for ``dag.test`` runs)."""
    from tools.airflow_env import airflow_env, migrate_db

    home = tmp_path_factory.mktemp("airflow-home")
    migrate_db(airflow_env(home), home / "migrate.log", timeout=300)
    return home
