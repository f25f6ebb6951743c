"""The read-only graphene server, judged by the clients labs use: cloud-volume and caveclient.

One server (``graphene_url``) over the example meshed to its root layer after both edits, plus
a second dataset meshed between the merge and the split (the state at that timestamp).
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from cloudvolume import CloudVolume
from test_export import read_back, triangle_set, vertex_multiset

from meshing_core import ids
from meshing_core.config import load_config
from meshing_core.datasets.example import MERGE_AT, SPLIT_AT
from meshing_core.graph import open_graph
from meshing_core.mesh.export import export_mesh
from meshing_core.run.lifecycle import run_graph

TABLE = "example"
TOKEN = {"token": "0123abcd"}  # cloud-volume insists on a token; the server ignores it
BETWEEN = MERGE_AT + 43_200.0  # half a day after the merge, half a day before the split


def graphene(base: str, **kwargs) -> CloudVolume:
    return CloudVolume(
        f"graphene://{base}/segmentation/table/{TABLE}", secrets=TOKEN, progress=False, **kwargs
    )


def supervoxels(folder: Path) -> np.ndarray:
    config = load_config(folder)
    volume = np.asarray(CloudVolume(config.watershed, progress=False)[:, :, :])
    found = np.unique(volume)
    return found[found != 0].astype(np.uint64)


class GraphTruth:
    """What the graph itself says, at the timestamp a dataset was meshed at."""

    def __init__(self, folder: Path, timestamp: float):
        self.config = load_config(folder)
        self.graph = open_graph(self.config)
        self.timestamp = timestamp
        self.svs = supervoxels(folder)
        l2 = self.graph.l2_ids(self.svs, timestamp)
        self.l2 = dict(zip(self.svs.tolist(), l2.tolist(), strict=True))
        roots = self.graph.roots(l2, timestamp)
        self.root = dict(zip(self.svs.tolist(), roots.tolist(), strict=True))

    def roots(self) -> list[int]:
        return sorted(set(self.root.values()))

    def leaves(self, root: int) -> list[int]:
        return sorted(sv for sv, r in self.root.items() if r == root)


@pytest.fixture(scope="module")
def truth(meshed_example: Path) -> GraphTruth:
    from conftest import SERVED_AT_OFFSET

    found = GraphTruth(meshed_example, SPLIT_AT + SERVED_AT_OFFSET)
    yield found
    found.graph.close()


def test_info_is_the_graphs_with_a_served_data_dir(graphene_url: str, truth: GraphTruth):
    cv = graphene(graphene_url)
    assert cv.meta.cloudpath == f"{graphene_url}/data/{TABLE}"
    assert cv.meta.info["graph"]["n_layers"] == truth.graph.meta.n_layers
    assert 1 in cv.meta.info["app"]["supported_api_versions"]
    # the data dir is this server: the watershed read over HTTP equals the file's voxels
    local = CloudVolume(truth.config.watershed, progress=False)
    assert np.array_equal(np.asarray(cv[0:64, 0:64, 0:16]), np.asarray(local[0:64, 0:64, 0:16]))


def test_cloudvolume_roots_and_leaves(graphene_url: str, truth: GraphTruth):
    cv = graphene(graphene_url)
    roots = cv.get_roots(truth.svs)
    assert roots.tolist() == [truth.root[s] for s in truth.svs.tolist()]
    l2 = cv.get_roots(truth.svs[:50], stop_layer=2)
    assert l2.tolist() == [truth.l2[s] for s in truth.svs[:50].tolist()]
    for root in truth.roots()[:10]:
        leaves = cv.get_leaves(root, cv.meta.bounds(0), 0)
        assert sorted(np.asarray(leaves).tolist()) == truth.leaves(root)


def test_cloudvolume_meshes_equal_export_mesh(graphene_url: str, truth: GraphTruth, tmp_path: Path):
    cv = graphene(graphene_url)
    roots = truth.roots()
    assert len(roots) >= 20
    for root in roots:
        served = cv.mesh.get(root)[root]
        out = tmp_path / f"{root}.ply"
        export_mesh(truth.config, out, node=root, timestamp=truth.timestamp)
        vertices, faces = read_back(out)
        assert np.array_equal(vertex_multiset(served.vertices), vertex_multiset(vertices)), root
        assert triangle_set(served.vertices, served.faces) == triangle_set(vertices, faces), root


def test_manifest_lists_the_fragments_an_independent_reader_finds(
    graphene_url: str, truth: GraphTruth
):
    """The manifest's nodes are the highest ones cloud-volume's own shard reader finds, walking
    the graph's children here (not the server's walk): nothing missing, nothing extra."""
    from meshing_core.store.verify import graphene_reader

    reader = graphene_reader(truth.config, truth.graph)
    url = f"{graphene_url}/meshing/api/v1/table/{TABLE}/manifest"
    for root in truth.roots():
        expected, frontier = [], [root]
        while frontier:
            stored = reader.mesh.exists(frontier)
            expected += [n for n in frontier if stored.get(n) is not None]
            below = [n for n in frontier if stored.get(n) is None and ids.layer_of(n) > 2]
            kids = truth.graph.children(below) if below else {}
            frontier = [int(c) for v in kids.values() for c in v]
        answer = requests.get(f"{url}/{root}:0", params={"verify": "1", "return_seg_ids": "1"})
        assert sorted(answer.json()["seg_ids"]) == sorted(expected), root


def test_concurrent_clients_get_the_same_answers(
    meshed_example: Path, truth: GraphTruth, tmp_path: Path
):
    """Many threads on a fresh server (cold shard cache, a graph connection per thread) get the
    answers one client gets."""
    from concurrent.futures import ThreadPoolExecutor

    from tools.graphene_server import graphene_server

    roots = truth.roots()
    with graphene_server(meshed_example, "--no-viewer", log=tmp_path / "serve.log") as base:
        url = f"{base}/meshing/api/v1/table/{TABLE}/manifest"

        def manifest(root: int) -> list[str]:
            return requests.get(f"{url}/{root}:0", params={"verify": "1"}).json()["fragments"]

        with ThreadPoolExecutor(16) as pool:
            together = list(pool.map(manifest, roots * 4))
        alone = [manifest(r) for r in roots]
        assert together == alone * 4
        body = gzip.compress(truth.svs.astype("<u8").tobytes())  # as cloud-volume sends many ids
        answer = requests.post(
            f"{base}/segmentation/api/v1/table/{TABLE}/roots_binary",
            data=body,
            headers={"Content-Encoding": "gzip"},
        )
        found = np.frombuffer(answer.content, dtype="<u8")
        assert found.tolist() == [truth.root[s] for s in truth.svs.tolist()]


def test_caveclient_agrees_with_the_graph(graphene_url: str, truth: GraphTruth):
    from caveclient.chunkedgraph import ChunkedGraphClient

    client = ChunkedGraphClient(server_address=graphene_url, table_name=TABLE)
    svs = truth.svs[:: max(1, len(truth.svs) // 40)]
    for sv in svs[:8].tolist():
        assert int(client.get_root_id(sv)) == truth.root[sv]
        assert int(client.get_root_id(sv, level2=True)) == truth.l2[sv]
    assert [int(r) for r in client.get_roots(svs)] == [truth.root[s] for s in svs.tolist()]
    roots = truth.roots()[:6]
    for root in roots[:3]:
        assert sorted(int(v) for v in client.get_leaves(root)) == truth.leaves(root)
        children = truth.graph.children([root])[root]
        assert sorted(int(c) for c in client.get_children(root)) == sorted(children.tolist())
    many = client.get_leaves_many(roots)
    assert {int(k): sorted(int(v) for v in vs) for k, vs in many.items()} == {
        r: truth.leaves(r) for r in roots
    }
    assert list(client.is_latest_roots(roots)) == [True] * len(roots)


def test_caveclient_leaves_within_bounds(graphene_url: str, truth: GraphTruth):
    from caveclient.chunkedgraph import ChunkedGraphClient

    client = ChunkedGraphClient(server_address=graphene_url, table_name=TABLE)
    meta = truth.graph.meta

    def chunks(root: int) -> set[tuple[int, int, int]]:
        return {ids.chunk_coords(meta.codec, sv) for sv in truth.leaves(root)}

    root = max(truth.roots(), key=lambda r: len(chunks(r)))
    start, stop = meta.chunk_voxel_box(1, min(chunks(root)))  # one chunk the object crosses
    box = np.stack([start, stop], axis=1)
    inside = sorted(int(v) for v in client.get_leaves(root, bounds=box))
    expected = []
    for sv in truth.leaves(root):
        start, stop = meta.chunk_voxel_box(1, ids.chunk_coords(meta.codec, sv))
        if np.all(start < box[:, 1]) and np.all(box[:, 0] < stop):
            expected.append(sv)
    assert inside == expected and 0 < len(inside) < len(truth.leaves(root))


# -- the state between the two edits ------------------------------------------------------------
@pytest.fixture(scope="module")
def merged_state(example_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The example meshed between the merge and the split, and a server over it."""
    from tools.graphene_server import graphene_server

    folder = tmp_path_factory.mktemp("between") / "example"
    shutil.copytree(example_dir, folder)
    run_graph(load_config(folder), timestamp=BETWEEN, workers=1, progress=False)
    log = folder.parent / "serve.log"
    with graphene_server(folder, log=log) as base:
        yield folder, base


def merge_pair(folder: Path, graph) -> np.ndarray:
    first = json.loads((folder / "source" / "edits.jsonl").read_text().splitlines()[0])
    originals = set(first["supervoxels"])
    pieces = [sv for sv, original in graph.original_ids(supervoxels(folder)).items()
              if original in originals]  # fmt: skip
    return np.array(sorted(pieces), dtype=np.uint64)


def test_state_between_edits(merged_state, graphene_url: str, tmp_path: Path):
    folder, base = merged_state
    truth = GraphTruth(folder, BETWEEN)
    try:
        pair = merge_pair(folder, truth.graph)
        merged = {truth.root[int(s)] for s in pair}
        assert len(merged) == 1  # the merge holds at this time
        (root,) = merged
        cv = graphene(base)
        assert set(cv.get_roots(pair).tolist()) == {root}
        served = cv.mesh.get(root)[root]
        export_mesh(truth.config, tmp_path / "m.ply", node=root, timestamp=BETWEEN)
        vertices, _ = read_back(tmp_path / "m.ply")
        assert np.array_equal(vertex_multiset(served.vertices), vertex_multiset(vertices))
        # the server meshed after the split answers for that time when asked, and says the
        # merged root is no longer the latest
        late = graphene(graphene_url)
        assert set(late.get_roots(pair, timestamp=BETWEEN).tolist()) == {root}
        assert len(set(late.get_roots(pair).tolist())) == 2
        from caveclient.chunkedgraph import ChunkedGraphClient

        client = ChunkedGraphClient(server_address=graphene_url, table_name=TABLE)
        assert list(client.is_latest_roots([root])) == [False]
    finally:
        truth.graph.close()
