"""The PyChunkedGraph stand-in (``tools/pcg_standin``) against the embedded graph it wraps.

One table is made from the example dataset's graph file; its answers are compared with
``EmbeddedGraph`` before the edits, between the merge and the split, and after the split.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from meshing_core import ids
from meshing_core.config import load_config
from meshing_core.graph.embedded import EmbeddedGraph
from meshing_core.store.paths import local_path
from tools.pcg_standin import (
    STANDIN_ROOT,
    activate,
    create_table,
    deactivate,
    read_calls,
    standin_environment,
)

GRAPH_ID = "example_standin"
PHASES = ("before", "between", "after")


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


@pytest.fixture(scope="module")
def pcg(example_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    config = load_config(example_dir / "graph.yaml")
    graph_file = local_path(config.graph_path)
    tables = tmp_path_factory.mktemp("pcg-standin-tables")
    calls = tables / "calls.txt"
    table = create_table(
        tables, GRAPH_ID, graph_file, watershed=config.watershed, chunk_size=config.chunk_size
    )
    activate(tables, calls)
    emb = EmbeddedGraph(graph_file, read_only=True)
    try:
        from pychunkedgraph.graph import ChunkedGraph, attributes

        base, merge, split = emb.history()
        yield SimpleNamespace(
            cg=ChunkedGraph(graph_id=GRAPH_ID),
            ChunkedGraph=ChunkedGraph,
            attributes=attributes,
            emb=emb,
            config=config,
            graph_file=graph_file,
            tables=tables,
            table=table,
            calls=calls,
            history=(base, merge, split),
            times={
                "before": (base + merge) / 2,
                "between": (merge + split) / 2,
                "after": split + 3600.0,
            },
        )
    finally:
        emb.close()
        deactivate()


def _chunks(emb: EmbeddedGraph, layer: int):
    bounds = emb.meta.layer_chunk_bounds(layer)
    return itertools.product(*(range(b) for b in bounds))


def _alive(emb: EmbeddedGraph, t: float, lowest: int = 1) -> np.ndarray:
    found = [
        emb.chunk_nodes(layer, coords, t)
        for layer in range(lowest, emb.meta.n_layers + 1)
        for coords in _chunks(emb, layer)
    ]
    return np.concatenate(found)


def _node_rows(emb: EmbeddedGraph, sql: str, *params) -> list[int]:
    return [row[0] for row in emb.conn.execute(sql, params)]


# -- meta ---------------------------------------------------------------------------------------
def test_pychunkedgraph_standin_meta_matches_the_embedded_graph(pcg):
    meta, mine = pcg.cg.meta, pcg.emb.meta
    assert pcg.cg.graph_id == GRAPH_ID
    assert meta.layer_count == mine.n_layers
    assert meta.bitmasks == mine.codec.bitmasks
    start = np.asarray(mine.voxel_offset)
    assert np.array_equal(meta.voxel_bounds, np.stack([start, start + mine.volume_size], axis=1))
    assert np.array_equal(meta.voxel_counts, mine.volume_size)
    assert tuple(float(r) for r in meta.resolution) == mine.resolution
    assert list(meta.graph_config.CHUNK_SIZE) == list(mine.chunk_size)
    assert pcg.config.watershed == meta.data_source.WATERSHED
    assert meta.data_source.CV_MIP == 0
    assert meta.custom_data == {} and meta.READ_ONLY is False
    for layer in range(2, mine.n_layers):
        assert tuple(meta.layer_chunk_bounds[layer]) == mine.layer_chunk_bounds(layer)
    assert mine.n_layers not in meta.layer_chunk_bounds  # as in PyChunkedGraph
    assert meta.layer_chunk_counts[-1] == 1
    graph = meta.dataset_info["graph"]
    assert graph["bounding_box"] == [2048, 2048, 512]  # PyChunkedGraph's fixed value
    assert graph["n_layers"] == mine.n_layers and graph["spatial_bit_masks"] == meta.bitmasks
    assert meta.dataset_info["data_dir"] == pcg.config.watershed


def test_pychunkedgraph_standin_id_helpers_match_the_codec(pcg):
    cg, codec = pcg.cg, pcg.emb.meta.codec
    for layer, coords in ((1, (3, 2, 1)), (2, (6, 3, 3)), (3, (2, 1, 1)), (5, (0, 0, 0))):
        chunk = cg.get_chunk_id(layer=layer, x=coords[0], y=coords[1], z=coords[2])
        assert isinstance(chunk, np.uint64) and int(chunk) == codec.chunk_id(layer, *coords)
        node = cg.get_node_id(np.uint64(17), chunk_id=chunk)
        assert int(node) == codec.node_id(layer, *coords, 17)
        assert node == cg.get_node_id(
            np.uint64(17), layer=layer, x=coords[0], y=coords[1], z=coords[2]
        )
        assert cg.get_chunk_layer(node) == layer
        assert tuple(cg.get_chunk_coordinates(node)) == coords
        assert cg.get_segment_id(node) == 17
        assert int(cg.get_segment_id_limit(node)) == codec.max_segment_id(layer)
        assert cg.get_chunk_id(node_id=node) == chunk
    nodes = np.array([codec.node_id(2, 1, 2, 3, 5), codec.node_id(4, 1, 0, 1, 9)], dtype=np.uint64)
    assert cg.get_chunk_layers(nodes).tolist() == [2, 4]
    assert cg.get_chunk_ids_from_node_ids(nodes).tolist() == [
        codec.chunk_id(2, 1, 2, 3),
        codec.chunk_id(4, 1, 0, 1),
    ]
    with pytest.raises(ValueError):
        cg.get_chunk_id(layer=5, x=2)  # one bit per axis at the root layer


# -- reads against the embedded graph ------------------------------------------------------------
@pytest.mark.parametrize("phase", PHASES)
def test_pychunkedgraph_standin_roots_and_ancestors_match_embedded(pcg, phase):
    cg, emb = pcg.cg, pcg.emb
    t = pcg.times[phase]
    when = _utc(t)
    alive = _alive(emb, t)
    assert ids.layers_of(alive).min() == 1  # supervoxels are included
    roots = cg.get_roots(alive, time_stamp=when)
    assert roots.dtype == np.uint64
    assert np.array_equal(roots, emb.roots(alive, t))
    for layer in range(2, emb.meta.n_layers + 1):
        expected = emb.ancestors(alive, layer, t)
        got = cg.get_roots(alive, time_stamp=when, stop_layer=layer, ceil=False)
        assert np.array_equal(got, expected), layer
        lifted = cg.get_roots(alive, time_stamp=when, stop_layer=layer)  # ceil: never below
        at_layer = ids.layers_of(expected) == layer
        assert np.array_equal(lifted[at_layer], expected[at_layer])
        below = ids.layers_of(alive) < layer
        assert np.all(ids.layers_of(lifted[below]) >= layer)
    for node in alive[:: max(1, alive.size // 7)]:
        assert cg.get_root(node, time_stamp=when) == roots[alive == node][0]
        chain = cg.get_root(node, time_stamp=when, get_all_parents=True)
        if ids.layer_of(node) < emb.meta.n_layers:
            assert chain[-1] == roots[alive == node][0]
            assert np.all(np.diff(ids.layers_of(chain)) > 0)


@pytest.mark.parametrize("phase", PHASES)
def test_pychunkedgraph_standin_range_read_chunk_sees_every_node_created_by_then(pcg, phase):
    cg, emb, child = pcg.cg, pcg.emb, pcg.attributes.Hierarchy.Child
    t = pcg.times[phase]
    for layer in range(2, emb.meta.n_layers + 1):
        for coords in _chunks(emb, layer):
            chunk = emb.meta.chunk_id(layer, coords)
            rows = cg.range_read_chunk(np.uint64(chunk), properties=child, time_stamp=_utc(t))
            assert all(isinstance(k, np.uint64) for k in rows)
            assert set(emb.chunk_nodes(layer, coords, t).tolist()) <= set(rows)
            created = _node_rows(
                emb,
                "SELECT id FROM nodes WHERE id BETWEEN ? AND ? AND created <= ?",
                chunk,
                chunk + emb.meta.codec.max_segment_id(layer),
                t,
            )
            assert sorted(rows) == created  # superseded nodes too, nothing created later
            kids = emb.children(created)
            for node, cells in rows.items():
                assert len(cells) == 1 and cells[0].timestamp <= _utc(t)
                assert np.array_equal(cells[0].value, kids[int(node)])
    parent = pcg.attributes.Hierarchy.Parent
    for coords in list(_chunks(emb, 1))[:5]:
        chunk = emb.meta.chunk_id(1, coords)
        rows = cg.range_read_chunk(np.uint64(chunk), properties=parent, time_stamp=_utc(t))
        expected = emb.parents(emb.chunk_nodes(1, coords, t).tolist(), t)
        assert {int(k): int(cells[0].value) for k, cells in rows.items()} == expected


def test_pychunkedgraph_standin_edits_supersede_roots(pcg):
    cg, emb, hierarchy = pcg.cg, pcg.emb, pcg.attributes.Hierarchy
    base, merge, split = pcg.history
    root_layer = emb.meta.n_layers
    old_roots = _node_rows(
        emb, "SELECT id FROM nodes WHERE layer = ? AND expired = ?", root_layer, merge
    )
    merged = _node_rows(
        emb, "SELECT id FROM nodes WHERE layer = ? AND created = ?", root_layer, merge
    )
    split_roots = _node_rows(
        emb, "SELECT id FROM nodes WHERE layer = ? AND created = ?", root_layer, split
    )
    assert len(old_roots) == 2 and len(merged) == 1 and len(split_roots) == 2
    asked = [*old_roots, *merged, *split_roots]
    latest = {
        phase: cg.is_latest_roots(asked, time_stamp=_utc(pcg.times[phase])).tolist()
        for phase in PHASES
    }
    assert latest["before"] == [True, True, False, False, False]
    assert latest["between"] == [False, False, True, False, False]
    assert latest["after"] == [False, False, False, True, True]

    # a layer-2 node superseded by the merge still leads to its old root after the merge
    superseded = _node_rows(emb, "SELECT id FROM nodes WHERE layer = 2 AND expired = ?", merge)[0]
    old_root = emb.roots(np.array([superseded], dtype=np.uint64), pcg.times["before"])[0]
    between = _utc(pcg.times["between"])
    got = cg.get_roots(np.array([superseded], dtype=np.uint64), time_stamp=between)
    assert got.tolist() == [old_root] and int(old_root) in old_roots
    assert cg.get_root(superseded, time_stamp=between) == old_root
    supervoxel = cg.get_children(np.uint64(superseded))[0]
    assert cg.get_roots([supervoxel], time_stamp=between)[0] == merged[0]

    # the supervoxel's parent history, newest first
    history = cg.get_parents(np.array([supervoxel]), current=False)[0]
    stamps = [stamp for _, stamp in history]
    assert stamps == sorted(stamps, reverse=True) and stamps[-1] == _utc(base)
    assert history[-1][0] == superseded and len(history) == 3
    assert cg.get_parent(supervoxel, time_stamp=between) == history[1][0]

    rows = cg.client.read_nodes(
        node_ids=asked, properties=[hierarchy.NewParent, hierarchy.FormerParent]
    )
    assert rows[np.uint64(old_roots[0])][hierarchy.NewParent][0].value.tolist() == merged
    assert rows[np.uint64(old_roots[0])][hierarchy.NewParent][0].timestamp == _utc(merge)
    assert rows[np.uint64(merged[0])][hierarchy.FormerParent][0].value.tolist() == old_roots
    assert rows[np.uint64(merged[0])][hierarchy.NewParent][0].value.tolist() == split_roots
    assert hierarchy.NewParent not in rows[np.uint64(split_roots[0])]

    stamps = cg.get_node_timestamps([superseded, merged[0]], return_numpy=False)
    assert stamps == [_utc(base), _utc(merge)]


def test_pychunkedgraph_standin_children_parents_and_edge_cases(pcg):
    cg, emb = pcg.cg, pcg.emb
    t = pcg.times["after"]
    when = _utc(t)
    layer2 = emb.chunk_nodes(2, (0, 0, 0), t)[:4]
    children = cg.get_children(layer2)
    assert list(children) == list(layer2) and all(isinstance(k, np.uint64) for k in children)
    for node, kids in emb.children(layer2.tolist()).items():
        assert (
            np.array_equal(children[np.uint64(node)], kids)
            and children[np.uint64(node)].dtype == np.uint64
        )
    as_ints = cg.get_children([int(n) for n in layer2])
    assert all(type(k) is int for k in as_ints)
    assert np.array_equal(cg.get_children(layer2[0]), children[layer2[0]])
    assert np.array_equal(
        cg.get_children(layer2, flatten=True), np.concatenate(list(children.values()))
    )
    unknown = np.uint64(emb.meta.codec.node_id(2, 0, 0, 0, 999_999))
    assert cg.get_children(unknown).size == 0 and cg.get_children([unknown])[unknown].size == 0

    supervoxels = children[layer2[0]]
    assert np.array_equal(
        cg.get_parents(supervoxels, time_stamp=when), np.full(supervoxels.size, layer2[0])
    )
    root = cg.get_roots(layer2[:1], time_stamp=when)[0]
    with pytest.raises(KeyError):
        cg.get_parents(np.array([supervoxels[0], root]), time_stamp=when)
    assert (
        cg.get_parents(np.array([supervoxels[0], root]), time_stamp=when, fail_to_zero=True)[1] == 0
    )
    assert cg.get_parents(np.array([root]), time_stamp=when).size == 0  # no row at all: empty
    assert cg.get_parent(root, time_stamp=when) is None
    # 0 stays 0; nodes at or above stop_layer are returned unchanged
    mixed = np.array([0, supervoxels[0], root], dtype=np.uint64)
    assert cg.get_roots(mixed, time_stamp=when).tolist() == [0, root, root]
    assert cg.get_roots(np.array([root, layer2[0]]), stop_layer=2, time_stamp=when).tolist() == [
        root,
        layer2[0],
    ]
    # before the graph existed nothing has a parent
    assert cg.get_parents(supervoxels, time_stamp=_utc(pcg.history[0] - 60)).size == 0
    assert cg.is_latest_roots([root], time_stamp=_utc(pcg.history[0] - 60)).tolist() == [False]
    # the id client: highest segment allocated in the chunk, whatever its time
    chunk = emb.meta.chunk_id(2, (0, 0, 0))
    highest = max(
        _node_rows(
            emb,
            "SELECT id FROM nodes WHERE id BETWEEN ? AND ?",
            chunk,
            chunk + emb.meta.codec.max_segment_id(2),
        )
    )
    assert cg.id_client.get_max_node_id(np.uint64(chunk)) == highest
    empty_chunk = np.uint64(emb.meta.codec.chunk_id(2, 100, 100, 100))
    assert cg.id_client.get_max_node_id(empty_chunk) == empty_chunk


# -- counting, meta writes, environment ---------------------------------------------------------
def test_pychunkedgraph_standin_counts_outermost_calls_once(pcg):
    cg, emb = pcg.cg, pcg.emb
    when = _utc(pcg.times["between"])
    supervoxels = emb.chunk_nodes(1, (0, 0, 0), pcg.times["between"])
    before = read_calls(pcg.calls)
    cg.get_roots(supervoxels, time_stamp=when)  # loops get_parents: one call
    cg.get_roots(supervoxels, time_stamp=when, stop_layer=3, ceil=False)
    cg.get_root(supervoxels[0], time_stamp=when)
    cg.range_read_chunk(cg.get_chunk_id(layer=2), pcg.attributes.Hierarchy.Child, time_stamp=when)
    cg.id_client.get_max_node_id(cg.get_chunk_id(layer=2))
    cg.get_parents(supervoxels, time_stamp=when)
    cg.get_chunk_layers(supervoxels)  # id helpers and meta are not counted
    _ = cg.meta.bitmasks, cg.meta.layer_count
    added = read_calls(pcg.calls) - before
    assert added == {
        "get_roots": 2,
        "get_root": 1,
        "range_read_chunk": 1,
        "get_max_node_id": 1,
        "get_parents": 1,
    }
    pcg.ChunkedGraph(graph_id=GRAPH_ID)
    assert (read_calls(pcg.calls) - before)["read_graph_meta"] == 1


def test_pychunkedgraph_standin_unknown_graph_raises_key_error(pcg):
    with pytest.raises(KeyError):
        pcg.ChunkedGraph(graph_id="no_such_graph")


def test_pychunkedgraph_standin_update_meta_persists_custom_data(pcg):
    table = create_table(
        pcg.tables, "example_meta", pcg.graph_file, watershed=pcg.config.watershed,
        chunk_size=pcg.config.chunk_size, custom_data={"note": 1},
    )  # fmt: skip
    cg = pcg.ChunkedGraph(graph_id="example_meta")
    assert cg.meta.custom_data == {"note": 1}
    cg.meta.custom_data["mesh"] = {"dir": "graphene_meshes", "max_layer": np.int64(5)}
    cg.update_meta(cg.meta, overwrite=True)
    stored = json.loads((table / "meta.json").read_text())
    assert stored["custom_data"]["mesh"] == {"dir": "graphene_meshes", "max_layer": 5}
    assert sorted(p.name for p in table.iterdir()) == ["graph.sqlite", "meta.json"]
    again = pcg.ChunkedGraph(graph_id="example_meta")
    assert again.meta.custom_data["mesh"]["max_layer"] == 5
    assert again.meta.graph_config == cg.meta.graph_config  # ROOT_LOCK_EXPIRY round-trips
    assert again.meta.dataset_info["mesh"] == "graphene_meshes"


def test_pychunkedgraph_standin_environment_for_subprocesses(pcg, tmp_path):
    calls = tmp_path / "calls.txt"
    env = standin_environment(pcg.tables, calls)
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(STANDIN_ROOT)
    assert env["PCG_STANDIN_TABLES"] == str(pcg.tables)
    assert env["BIGTABLE_PROJECT"] and env["BIGTABLE_INSTANCE"]
    assert json.loads(Path(env["GOOGLE_APPLICATION_CREDENTIALS"]).read_text()) == {
        "type": "standin"
    }
    node = int(pcg.emb.chunk_nodes(2, (0, 0, 0), pcg.times["after"])[0])
    script = (
        "import numpy as np, pychunkedgraph\n"
        "from pychunkedgraph.graph import ChunkedGraph\n"
        f"cg = ChunkedGraph(graph_id={GRAPH_ID!r})\n"
        f"print(pychunkedgraph.__version__, int(cg.get_roots(np.array([{node}], dtype=np.uint64))[0]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True,
        text=True, check=True, timeout=120,
    )  # fmt: skip
    version, root = out.stdout.split()
    assert version == "standin-c1b7740"
    assert int(root) == pcg.emb.roots(np.array([node], dtype=np.uint64), pcg.history[2] + 1)[0]
    assert read_calls(calls) == {"read_graph_meta": 1, "get_roots": 1}


def test_pychunkedgraph_standin_activate_nests_and_deactivate_restores(pcg, tmp_path):
    tables_before = os.environ["PCG_STANDIN_TABLES"]
    on_path = sys.path.count(str(STANDIN_ROOT))
    activate(tmp_path / "other")
    assert os.environ["PCG_STANDIN_TABLES"] == str(tmp_path / "other")
    assert sys.path[0] == str(STANDIN_ROOT)
    import pychunkedgraph

    assert Path(pychunkedgraph.__file__).resolve().is_relative_to(STANDIN_ROOT)
    deactivate()
    assert os.environ["PCG_STANDIN_TABLES"] == tables_before  # the module fixture's activation
    assert not any(m.split(".")[0] == "pychunkedgraph" for m in sys.modules)
    assert sys.path.count(str(STANDIN_ROOT)) == on_path
