"""The graph protocol's contract, run against every backend.

``embedded`` is the SQLite file ``build-graph`` writes; ``pychunkedgraph`` is our PyChunkedGraph
backend wired to the stand-in (``tools/pcg_standin``: PyChunkedGraph's API at the backend's
commit over a copy of the same graph). The example graph has a merge (2021-03-02) and a split
(2021-03-03) of two objects, so every query is asked before, between and after them. The
expectations are properties of a ChunkedGraph checked against the raw graph rows, plus one
test that both backends answer every query identically.
"""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from meshing_core import ids
from meshing_core.config import load_config
from meshing_core.errors import MeshingError
from meshing_core.graph import open_graph
from meshing_core.run.checks import iter_chunks
from meshing_core.store.paths import local_path
from meshing_core.timestamps import parse_timestamp
from tools.pcg_datasets import to_pychunkedgraph

TIMES = {
    name: parse_timestamp(text)
    for name, text in {
        "base": "2021-03-01T12:00:00Z",
        "merge_instant": "2021-03-02T00:00:00Z",  # the edit's own time: the merge is in effect
        "merged": "2021-03-02T12:00:00Z",
        "split": "2021-03-03T12:00:00Z",
    }.items()
}
BACKENDS = ("embedded", "pychunkedgraph")


@pytest.fixture(scope="module")
def configs(example_dir: Path, standin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The example's config per backend (the PyChunkedGraph one on a copy of the dataset)."""
    copy = tmp_path_factory.mktemp("pcg-contract") / "example"
    shutil.copytree(example_dir, copy)
    return {
        "embedded": load_config(example_dir / "graph.yaml"),
        "pychunkedgraph": load_config(to_pychunkedgraph(copy, standin, "example_contract")),
    }


@pytest.fixture(scope="module", params=BACKENDS)
def graph(request: pytest.FixtureRequest, configs: dict):
    reader = open_graph(configs[request.param])
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def rows(configs: dict) -> dict:
    """The raw rows of the example graph: supervoxels, nodes (id, created, expired), children."""
    path = local_path(configs["embedded"].graph_path)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        svs = np.array([r[0] for r in conn.execute("SELECT id FROM supervoxels")], np.uint64)
        nodes = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, created, expired FROM nodes")}
        edges = conn.execute("SELECT parent, child FROM children").fetchall()
    return {"supervoxels": np.sort(svs), "nodes": nodes, "edges": edges}


def _alive(rows: dict, node: int, t: float) -> bool:
    created, expired = rows["nodes"][node]
    return created <= t and (expired is None or expired > t)


def _chunks(graph, layer: int):
    return list(iter_chunks((0, 0, 0), tuple(graph.meta.layer_chunk_bounds(layer))))


def _descendants(graph, node: int) -> set[int]:
    found, frontier = set(), [int(node)]
    while frontier:
        kids = graph.children(frontier)
        frontier = [int(c) for k in kids.values() for c in k if ids.layer_of(int(c)) >= 2]
        found.update(int(c) for k in kids.values() for c in k)
    return found


def test_contract_meta_matches_the_graph_and_the_id_layout(graph, configs):
    meta = graph.meta
    config = configs["embedded"]
    assert meta.n_layers == config.n_layers == 5
    assert tuple(meta.chunk_size) == tuple(config.chunk_size)
    assert tuple(meta.volume_size) == (200, 100, 50) and tuple(meta.voxel_offset) == (0, 0, 0)
    assert tuple(meta.resolution) == (10.0, 10.0, 10.0)
    assert meta.codec.bitmasks == {1: 10, 2: 10, 3: 2, 4: 1, 5: 1}
    assert tuple(meta.layer_chunk_bounds(2)) == (7, 4, 4)


@pytest.mark.parametrize("when", list(TIMES))
def test_contract_l2_ids_map_every_supervoxel_into_its_own_chunk(graph, rows, when):
    t = TIMES[when]
    svs = rows["supervoxels"]
    grid = np.concatenate([svs, np.zeros(1, np.uint64)]).reshape(1, -1)  # 0: background
    l2 = graph.l2_ids(grid, t)
    assert l2.shape == grid.shape and l2.dtype == np.uint64 and l2[0, -1] == 0
    l2 = l2[0, :-1]
    assert {ids.layer_of(int(n)) for n in l2} == {2}
    codec = graph.meta.codec
    for sv, node in zip(svs, l2, strict=True):
        assert ids.chunk_coords(codec, int(sv)) == ids.chunk_coords(codec, int(node))
    assert all(_alive(rows, int(n), t) for n in np.unique(l2))
    kids = graph.children(np.unique(l2).tolist())
    assert all(int(s) in set(kids[int(n)].tolist()) for s, n in zip(svs, l2, strict=True))


@pytest.mark.parametrize("layer", [2, 3, 4, 5])
def test_contract_chunk_nodes_are_the_alive_nodes_of_the_chunk(graph, rows, layer):
    for t in TIMES.values():
        listed = []
        for coords in _chunks(graph, layer):
            nodes = graph.chunk_nodes(layer, coords, t)
            assert nodes.dtype == np.uint64 and np.all(np.diff(nodes.astype(np.int64)) > 0)
            chunk = graph.meta.chunk_id(layer, coords)
            assert all(ids.chunk_id_of(graph.meta.codec, int(n)) == chunk for n in nodes)
            listed.extend(int(n) for n in nodes)
        expected = sorted(
            n for n in rows["nodes"] if ids.layer_of(n) == layer and _alive(rows, n, t)
        )
        assert sorted(listed) == expected


def test_contract_children_are_sorted_arrays_and_unknown_nodes_have_none(graph, rows):
    t = TIMES["merged"]
    nodes = [int(n) for c in _chunks(graph, 3) for n in graph.chunk_nodes(3, c, t)]
    unknown = graph.meta.chunk_id(2, (0, 0, 0)) + 999_999
    kids = graph.children([*nodes, unknown])
    assert list(kids) == [*nodes, unknown] and kids[unknown].size == 0
    expected: dict[int, list[int]] = {}
    for parent, child in rows["edges"]:
        expected.setdefault(parent, []).append(child)
    for node in nodes:
        assert kids[node].dtype == np.uint64
        assert kids[node].tolist() == sorted(expected[node])


def test_contract_ancestors_stop_at_the_layer_and_skip_layers(graph):
    t = TIMES["merged"]
    n = graph.meta.n_layers
    l2 = np.array([int(x) for c in _chunks(graph, 2) for x in graph.chunk_nodes(2, c, t)],
                  dtype=np.uint64)  # fmt: skip
    skipped = 0
    for layer in range(2, n + 1):
        up = graph.ancestors(l2, layer, t)
        assert up.shape == l2.shape and all(ids.layer_of(int(a)) <= layer for a in up)
        assert np.array_equal(graph.ancestors(up, layer, t), up)  # nothing higher within layer
        for a in np.unique(up):
            below = _descendants(graph, int(a)) | {int(a)}
            assert set(l2[up == a].tolist()) <= below  # an ancestor of each node it stands for
        skipped += int(np.sum([ids.layer_of(int(a)) < layer for a in up]))
    assert np.array_equal(graph.ancestors(l2, n, t), graph.roots(l2, t))
    assert skipped > 0  # parents skip layers in this graph: the stop layer is a ceiling
    assert np.array_equal(graph.ancestors(np.zeros(3, np.uint64), 3, t), np.zeros(3, np.uint64))


def test_contract_roots_follow_the_merge_and_the_split(graph, rows):
    counts = {
        when: np.unique(graph.roots(graph.l2_ids(rows["supervoxels"], t), t)).size
        for when, t in TIMES.items()
    }
    assert counts == {"base": 41, "merge_instant": 40, "merged": 40, "split": 41}
    roots = graph.roots(graph.l2_ids(rows["supervoxels"], TIMES["split"]), TIMES["split"])
    assert {ids.layer_of(int(r)) for r in roots} == {graph.meta.n_layers}


def test_contract_a_superseded_node_keeps_its_old_root(graph, rows):
    """PyChunkedGraph never deletes a parent: a node replaced by the merge still reaches the
    root it had, which is itself superseded (not the merged object's root)."""
    base, merged = TIMES["base"], TIMES["merged"]
    replaced = [
        n for n in rows["nodes"]
        if ids.layer_of(n) == 2 and _alive(rows, n, base) and not _alive(rows, n, merged)
    ]  # fmt: skip
    assert replaced, "the merge replaces layer-2 nodes"
    node = np.array(replaced[:1], dtype=np.uint64)
    old_root = int(graph.roots(node, base)[0])
    assert int(graph.roots(node, merged)[0]) == old_root
    assert _alive(rows, old_root, base) and not _alive(rows, old_root, merged)


def test_contract_max_chunk_node_count_bounds_every_chunk_at_every_time(graph):
    from meshing_core.store.sharding import minishard_bits_for

    for layer in range(2, graph.meta.n_layers + 1):
        biggest = max(
            len(graph.chunk_nodes(layer, c, t))
            for c in _chunks(graph, layer)
            for t in TIMES.values()
        )
        bound = graph.max_chunk_node_count(layer)
        assert biggest <= bound <= 4 * biggest
        assert minishard_bits_for(bound) == minishard_bits_for(biggest)


def test_contract_a_time_before_the_graph_is_refused(graph, rows):
    with pytest.raises(MeshingError, match="no layer-2 parent"):
        graph.l2_ids(rows["supervoxels"][:5], TIMES["base"] - 3 * 86400)


def test_contract_custom_data_round_trips_and_persists(request, configs, tmp_path, example_dir):
    """set_custom_data replaces the whole block; a new reader sees it (written to the graph)."""
    for backend in BACKENDS:
        if backend == "embedded":
            copy = tmp_path / "embedded"
            shutil.copytree(example_dir, copy)
            config = load_config(copy / "graph.yaml")
        else:
            config = configs["pychunkedgraph"]
        first = open_graph(config)
        before = first.custom_data()
        first.set_custom_data({"mesh": {"dir": "graphene_meshes", "mip": 0}, "note": [1, 2]})
        first.close()
        second = open_graph(config)
        assert second.custom_data() == {
            "mesh": {"dir": "graphene_meshes", "mip": 0},
            "note": [1, 2],
        }
        second.set_custom_data(before)
        second.close()


def test_contract_dataset_info_is_what_cloud_volume_graphene_takes(graph):
    from cloudvolume import CloudVolume

    info = graph.dataset_info()
    assert info["app"]["supported_api_versions"] == [0, 1]
    assert info["graph"]["n_layers"] == graph.meta.n_layers
    masks = {int(k): int(v) for k, v in info["graph"]["spatial_bit_masks"].items()}
    assert masks == graph.meta.codec.bitmasks
    cv = CloudVolume(
        f"graphene://https://localhost/segmentation/table/{graph.meta.graph_id}",
        info=info,
        secrets={"token": "contract"},
        progress=False,
    )
    assert cv.meta.n_layers == graph.meta.n_layers
    assert list(cv.meta.graph_chunk_size) == list(graph.meta.chunk_size)


def test_pychunkedgraph_backend_answers_every_query_like_the_embedded_one(configs, rows):
    embedded, pcg = (open_graph(configs[b]) for b in BACKENDS)
    try:
        assert dataclasses.replace(pcg.meta, graph_id=embedded.meta.graph_id) == embedded.meta
        for t in TIMES.values():
            assert np.array_equal(embedded.l2_ids(rows["supervoxels"], t),
                                  pcg.l2_ids(rows["supervoxels"], t))  # fmt: skip
            for layer in range(2, embedded.meta.n_layers + 1):
                nodes = []
                for coords in _chunks(embedded, layer):
                    mine = embedded.chunk_nodes(layer, coords, t)
                    assert np.array_equal(mine, pcg.chunk_nodes(layer, coords, t))
                    nodes.extend(int(n) for n in mine)
                array = np.array(nodes, dtype=np.uint64)
                assert np.array_equal(embedded.roots(array, t), pcg.roots(array, t))
                for stop in range(layer, embedded.meta.n_layers + 1):
                    assert np.array_equal(embedded.ancestors(array, stop, t),
                                          pcg.ancestors(array, stop, t))  # fmt: skip
                mine, theirs = embedded.children(nodes), pcg.children(nodes)
                assert all(np.array_equal(mine[n], theirs[n]) for n in nodes)
    finally:
        embedded.close()
        pcg.close()
