"""The server over a dataset on object storage (moto's S3 on loopback): the graph fetched to the
cache, the watershed's chunks and the shards read from the bucket, by byte range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import requests
from cli_support import run_cli
from cloudvolume import CloudVolume
from test_export import read_back, vertex_multiset
from test_object_storage import _build, inputs  # noqa: F401  (a fixture)

from meshing_core.config import load_config
from meshing_core.graph import open_graph
from meshing_core.mesh.export import export_mesh
from tools.graphene_server import graphene_server

TS = "2021-03-02T00:00:00Z"


def test_serve_a_dataset_on_s3(s3: str, inputs, tmp_path: Path):  # noqa: F811
    url = f"{s3}/served"
    _build(inputs, url)
    run_cli("run", "--graph", f"{url}/graph.yaml", "--timestamp", TS, "--workers", "1")
    config = load_config(f"{url}/graph.yaml")
    graph = open_graph(config)
    try:
        ts = graph.history()[-1] + 86_400
        svs = np.unique(np.asarray(CloudVolume(config.watershed, progress=False)[:, :, :]))[1:]
        roots = np.unique(graph.roots(graph.l2_ids(svs, ts), ts)).tolist()
    finally:
        graph.close()
    with graphene_server(f"{url}/graph.yaml", "--no-viewer", log=tmp_path / "s.log") as base:
        info = requests.get(f"{base}/segmentation/table/{config.name}/info").json()
        cv = CloudVolume(
            f"graphene://{base}/segmentation/table/{config.name}",
            secrets={"token": "0123abcd"},
            progress=False,
        )
        local = CloudVolume(config.watershed, progress=False)
        assert np.array_equal(np.asarray(cv[:, :, :]), np.asarray(local[:, :, :]))
        for root in roots[:5]:
            served = cv.mesh.get(root)[root]
            export_mesh(config, tmp_path / "m.ply", node=root)
            vertices, _ = read_back(tmp_path / "m.ply")
            assert np.array_equal(vertex_multiset(served.vertices), vertex_multiset(vertices))
        mesh_info = requests.get(f"{info['data_dir']}/{info['mesh']}/info")
        part = requests.get(
            f"{info['data_dir']}/{info['mesh']}/info", headers={"Range": "bytes=2-9"}
        )
        assert part.status_code == 206 and part.content == mesh_info.content[2:10]
