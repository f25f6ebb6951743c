"""Bad requests to the read-only graphene server: a 4xx JSON message, never a traceback, never a
file outside the dataset; write endpoints refused; CORS only for the origins named."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from meshing_core import ids
from meshing_core.config import load_config
from meshing_core.graph import open_graph

TABLE = "example"
SEG = f"/segmentation/api/v1/table/{TABLE}"


def get_json_error(response: requests.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"message"} and body["message"]
    assert "Traceback" not in response.text and "\n" not in body["message"]
    assert not response.history  # never a redirect
    return body["message"]


@pytest.fixture(scope="module")
def a_root(meshed_example: Path) -> int:
    graph = open_graph(load_config(meshed_example))
    try:
        meta = graph.meta
        nodes = graph.chunk_nodes(meta.n_layers, (0, 0, 0), graph.history()[-1] + 10)
        return int(nodes[0])
    finally:
        graph.close()


def test_unknown_ids(graphene_url: str, a_root: int):
    layer2_unused = ids.IdCodec(5, 10).chunk_id(2, 0, 0, 0) + 999_999
    message = get_json_error(requests.get(f"{graphene_url}{SEG}/node/{layer2_unused}/root"), 404)
    assert str(layer2_unused) in message and "unknown node" in message
    message = get_json_error(requests.get(f"{graphene_url}{SEG}/node/12abc/leaves"), 400)
    assert "12abc" in message
    # an id of another table: a layer this graph does not have
    foreign = (9 << 56) | 5
    message = get_json_error(requests.get(f"{graphene_url}{SEG}/node/{foreign}/children"), 404)
    assert "not a node of table" in message
    url = f"{graphene_url}/meshing/api/v1/table/{TABLE}/manifest/{layer2_unused}:0"
    assert "unknown node" in get_json_error(requests.get(url), 404)
    body = np.array([a_root, layer2_unused - 999_999 + 1], dtype="<u8").tobytes()
    response = requests.post(f"{graphene_url}{SEG}/roots_binary", data=body[:-3])
    assert "multiple of 8" in get_json_error(response, 400)
    body = np.array([a_root, foreign], dtype="<u8").tobytes()
    response = requests.post(f"{graphene_url}{SEG}/roots_binary", data=body)
    assert str(foreign) in get_json_error(response, 404)
    # a JSON float has lost an id's low bits already: refused, not rounded
    response = requests.post(f"{graphene_url}{SEG}/is_latest_roots", json={"node_ids": [1.5e17]})
    assert "integers or strings" in get_json_error(response, 400)


def test_unknown_table_and_endpoint(graphene_url: str, a_root: int):
    message = get_json_error(requests.get(f"{graphene_url}/segmentation/table/other/info"), 404)
    assert "other" in message and TABLE in message
    url = f"{graphene_url}/segmentation/api/v1/table/other/node/{a_root}/root"
    get_json_error(requests.get(url), 404)
    get_json_error(requests.get(f"{graphene_url}/segmentation/api/v1/nothing"), 404)


def test_malformed_query_values(graphene_url: str, a_root: int):
    leaves = f"{graphene_url}{SEG}/node/{a_root}/leaves"
    for bounds in ("0-10_0-10", "a-b_0-1_0-1", "10-0_0-10_0-10"):
        message = get_json_error(requests.get(leaves, params={"bounds": bounds}), 400)
        assert "bounds" in message
    message = get_json_error(requests.get(leaves, params={"stop_layer": "9"}), 400)
    assert "layer" in message
    root = f"{graphene_url}{SEG}/node/{a_root}/root"
    message = get_json_error(requests.get(root, params={"timestamp": "yesterday"}), 400)
    assert "timestamp" in message
    message = get_json_error(requests.post(f"{graphene_url}{SEG}/is_latest_roots", data="{"), 400)
    assert "JSON" in message
    message = get_json_error(requests.post(f"{graphene_url}{SEG}/is_latest_roots", json=[1]), 400)
    assert "node_ids" in message


def test_byte_ranges(graphene_url: str, meshed_example: Path):
    name = "graphene_meshes/info"
    local = (meshed_example / "watershed" / name).read_bytes()
    url = f"{graphene_url}/data/{TABLE}/{name}"
    whole = requests.get(url)
    assert whole.status_code == 200 and whole.content == local
    part = requests.get(url, headers={"Range": "bytes=5-14"})
    assert part.status_code == 206 and part.content == local[5:15]
    assert part.headers["content-range"] == f"bytes 5-14/{len(local)}"
    tail = requests.get(url, headers={"Range": "bytes=-7"})
    assert tail.status_code == 206 and tail.content == local[-7:]
    past = requests.get(url, headers={"Range": f"bytes={len(local)}-{len(local) + 9}"})
    assert str(len(local)) in get_json_error(past, 416)
    assert past.headers["content-range"] == f"bytes */{len(local)}"
    for ignored in ("lines=1-2", "bytes=9-3", "bytes=x"):  # not a byte range: the whole file
        response = requests.get(url, headers={"Range": ignored})
        assert response.status_code == 200 and response.content == local, ignored
    head = requests.head(url, headers={"Range": "bytes=5-14"})
    assert head.status_code == 206 and head.content == b""
    assert head.headers["content-range"] == f"bytes 5-14/{len(local)}"
    assert requests.get(f"{graphene_url}/data/{TABLE}/no/such/file").status_code == 404


def test_paths_outside_the_dataset(graphene_url: str, meshed_example: Path, tmp_path: Path):
    assert (meshed_example / "graph.sqlite").exists()  # beside the watershed, not in it
    outside = meshed_example / "watershed" / "escape"
    outside.symlink_to(meshed_example / "graph.yaml")
    paths = ("../graph.yaml", "..%2Fgraph.yaml", "%2E%2E/graph.sqlite", "escape", "a/../../x")
    try:
        for path in paths:
            status, body = _raw_get(graphene_url, f"/data/{TABLE}/{path}")
            assert status in (400, 404), (path, status, body)
            assert b"name: example" not in body and b"SQLite" not in body
    finally:
        outside.unlink()


def _raw_get(base: str, path: str) -> tuple[int, bytes]:
    """A GET sent byte for byte (requests would normalise the dots away)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_write_endpoints_are_refused(graphene_url: str, a_root: int):
    for operation in ("merge", "split", "undo", "redo"):
        response = requests.post(f"{graphene_url}{SEG}/{operation}", json={"x": 1})
        assert "read-only" in get_json_error(response, 405)
    response = requests.delete(f"{graphene_url}{SEG}/node/{a_root}/root")
    assert "read-only" in get_json_error(response, 405)


def test_no_cors_unless_asked(graphene_url: str):
    origin = {"Origin": "https://viewer.example.org"}
    response = requests.get(f"{graphene_url}/segmentation/api/versions", headers=origin)
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_cors_for_named_origins(meshed_example: Path, tmp_path: Path, a_root: int):
    from tools.graphene_server import graphene_server

    allowed = "https://viewer.example.org"
    args = ("--allow-origin", allowed, "--allow-origin", "http://localhost:9000")
    with graphene_server(meshed_example, *args, log=tmp_path / "serve.log") as base:
        for url, status in (
            (f"{base}/segmentation/table/{TABLE}/info", 200),
            (f"{base}{SEG}/node/77/root", 404),  # errors carry the header too
            (f"{base}/data/{TABLE}/graphene_meshes/info", 200),
        ):
            response = requests.get(url, headers={"Origin": allowed, "Range": "bytes=0-3"})
            assert response.status_code in (status, 206), url
            assert response.headers["access-control-allow-origin"] == allowed
            assert "content-range" in response.headers["access-control-expose-headers"].lower()
        preflight = requests.options(
            f"{base}/data/{TABLE}/graphene_meshes/info",
            headers={
                "Origin": allowed,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "range",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == allowed
        assert "range" in preflight.headers["access-control-allow-headers"].lower()
        other = requests.get(
            f"{base}/segmentation/api/versions", headers={"Origin": "https://evil.example.com"}
        )
        assert "access-control-allow-origin" not in other.headers


def test_cli_refuses_bad_settings(meshed_example: Path):
    def serve(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "meshing_core", "serve", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    done = serve("--graph", str(meshed_example), "--allow-origin", "https://a.org/path")
    assert done.returncode == 2 and "not an origin" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = serve("--graph", str(meshed_example), "--port", str(port))
    assert done.returncode == 2 and "--port" in done.stderr
    done = serve("--graph", str(meshed_example / "missing"))
    assert done.returncode == 2 and done.stderr.startswith("error:")


def test_a_graph_not_meshed_yet(example_dir: Path, tmp_path: Path):
    """Graph lookups work before any run; the manifest says what to run."""
    from tools.graphene_server import graphene_server

    log = tmp_path / "serve.log"
    with graphene_server(example_dir, "--no-viewer", log=log) as base:
        graph = open_graph(load_config(example_dir), read_only=True)
        try:
            meta = graph.meta
            root = int(graph.chunk_nodes(meta.n_layers, (0, 0, 0), graph.history()[-1])[0])
        finally:
            graph.close()
        response = requests.get(f"{base}/meshing/api/v1/table/{TABLE}/manifest/{root}:0")
        assert "meshing_core run" in get_json_error(response, 404)
        assert requests.get(f"{base}{SEG}/node/{root}/children").status_code == 200
    assert "nothing is meshed" in log.read_text()
