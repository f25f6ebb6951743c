"""The server over a PyChunkedGraph graph (the stand-in of its API): `serve --cg_name NAME`
answers from PyChunkedGraph's reads what it answers from the embedded graph."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from cli_support import run_cli
from cloudvolume import CloudVolume
from test_export import read_back, vertex_multiset

from meshing_core.config import load_config
from meshing_core.datasets.example import MERGE_AT
from meshing_core.graph import open_graph
from meshing_core.mesh.export import export_mesh
from tools.graphene_server import graphene_server
from tools.pcg_datasets import to_pychunkedgraph

TS = MERGE_AT + 43_200.0  # between the merge and the split


def test_serve_a_pychunkedgraph_graph(example_dir: Path, standin: Path, tmp_path: Path):
    dataset = tmp_path / "example_serve"
    shutil.copytree(example_dir, dataset)
    pcg_yaml = to_pychunkedgraph(dataset, standin, "example_serve")
    run_cli("run", "--graph", str(pcg_yaml), "--timestamp", str(TS), quiet=True)
    embedded = load_config(example_dir)  # the same graph, read from the example's own file
    graph = open_graph(embedded, read_only=True)
    try:
        volume = CloudVolume(embedded.watershed, progress=False)
        svs = np.unique(np.asarray(volume[:, :, :]))[1:]
        roots = graph.roots(graph.l2_ids(svs, TS), TS)
    finally:
        graph.close()
    source = "pychunkedgraph:example_serve"
    with graphene_server(source, "--no-viewer", log=tmp_path / "serve.log") as base:
        cv = CloudVolume(
            f"graphene://{base}/segmentation/table/example_serve",
            secrets={"token": "0123abcd"},
            progress=False,
        )
        assert cv.get_roots(svs).tolist() == roots.tolist()
        biggest = np.unique(roots, return_counts=True)
        root = int(biggest[0][np.argmax(biggest[1])])
        mesh = cv.mesh.get(root)[root]
    export_mesh(load_config(pcg_yaml), tmp_path / "m.ply", node=root)
    vertices, _ = read_back(tmp_path / "m.ply")
    assert len(vertices) > 100
    assert np.array_equal(vertex_multiset(mesh.vertices), vertex_multiset(vertices))
