"""The HTTP floor under ``serve_vs_bypass``: a bare ASGI app answering cloud-volume's requests
from memory (every manifest precomputed, every file read once), on the same uvicorn.

No server can answer faster than this one, so ``serve floor_vs_bypass`` says how much of the
ratio is cloud-volume's own per-request cost (a manifest request on a fresh connection, then a
ranged read, per root) rather than the server's. Run as uvicorn's factory
``bench.serve_floor:build`` with ``SERVE_FLOOR_GRAPH`` naming the graph.yaml.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from meshing_core.store.paths import local_path


def build() -> Any:
    from bench.serve import roots_and_fragments
    from meshing_core.config import load_config
    from meshing_core.serve.meshing_api import fragment_name
    from meshing_core.serve.served import ServedGraph

    graph_yaml = Path(os.environ["SERVE_FLOOR_GRAPH"])
    config = load_config(graph_yaml)
    served = ServedGraph(config)
    shards = served.shards()
    assert shards is not None
    manifests: dict[str, bytes] = {}
    for root, nodes in roots_and_fragments(graph_yaml).items():
        found = [shards.locate(n) for n in nodes]
        body = {"fragments": [fragment_name(f, False) for f in found], "seg_ids": nodes}
        manifests[f"{root}:0"] = json.dumps(body).encode()
    info = dict(served.dataset_info)
    root_dir = local_path(config.watershed)
    assert root_dir is not None
    files: dict[str, bytes] = {}
    table = served.table
    manifest_prefix = f"/meshing/api/v1/table/{table}/manifest/"
    data_prefix = f"/data/{table}/"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        path = scope["path"]
        status, body, headers = 200, b"", [(b"content-type", b"application/json")]
        if path.startswith(manifest_prefix):
            body = manifests[path[len(manifest_prefix) :]]
        elif path.startswith(data_prefix) and (root_dir / path[len(data_prefix) :]).is_file():
            name = path[len(data_prefix) :]
            if name not in files:
                files[name] = (root_dir / name).read_bytes()  # the mesh info and the shards
            data = files[name]
            ranges = dict(scope["headers"]).get(b"range")
            if ranges:
                start, end = (int(v) for v in ranges.decode()[6:].split("-"))
                body, status = data[start : end + 1], 206
                headers.append((b"content-range", f"bytes {start}-{end}/{len(data)}".encode()))
            else:
                body = data
        elif path.endswith("/info"):
            host = dict(scope["headers"])[b"host"].decode()
            body = json.dumps({**info, "data_dir": f"http://{host}{data_prefix}".rstrip("/"),
                               "app": {"supported_api_versions": [0, 1]}}).encode()  # fmt: skip
        else:
            status = 404
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app
