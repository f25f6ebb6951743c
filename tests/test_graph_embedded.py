"""The embedded backend on a hand-built graph: 2 layer-2 chunks, one root that a split replaces."""

from pathlib import Path

import numpy as np
import pytest

from meshing_core.errors import MeshingError
from meshing_core.graph.embedded import EmbeddedGraph, GraphFileError
from meshing_core.graph.protocol import GraphMeta

T0, T1 = 1000.0, 2000.0


@pytest.fixture()
def graph(tmp_path: Path) -> EmbeddedGraph:
    meta = GraphMeta("tiny", 3, 10, (4, 4, 4), (0, 0, 0), (8, 4, 4), (8.0, 8.0, 40.0))
    g = EmbeddedGraph(tmp_path / "g.sqlite", create=True)
    c = meta.codec
    a, b = c.node_id(1, 0, 0, 0, 1), c.node_id(1, 1, 0, 0, 1)
    la, lb = c.node_id(2, 0, 0, 0, 1), c.node_id(2, 1, 0, 0, 1)
    root, ra, rb = (c.node_id(3, 0, 0, 0, s) for s in (1, 2, 3))
    g.add_nodes([(a, 1, T0), (b, 1, T0), (la, 2, T0), (lb, 2, T0), (root, 3, T0)])
    g.add_nodes([(ra, 3, T1), (rb, 3, T1)])
    g.expire_nodes([root], T1)
    g.add_children([(la, a), (lb, b), (root, la), (root, lb), (ra, la), (rb, lb)])
    g.add_supervoxels([(a, 7), (b, 7)])
    g.write_meta(meta, [T0, T1])
    g.commit()
    g.ids = dict(a=a, b=b, la=la, lb=lb, root=root, ra=ra, rb=rb)  # type: ignore[attr-defined]
    return g


def test_queries_follow_time(graph):
    i = graph.ids
    svs = np.array([[i["a"], 0], [i["b"], i["a"]]], dtype=np.uint64)
    assert graph.l2_ids(svs, T0).tolist() == [[i["la"], 0], [i["lb"], i["la"]]]
    assert graph.roots(np.array([i["la"], i["lb"]]), T0).tolist() == [i["root"]] * 2
    assert graph.roots(np.array([i["la"], i["lb"]]), T1).tolist() == [i["ra"], i["rb"]]
    assert graph.chunk_nodes(3, (0, 0, 0), T0).tolist() == [i["root"]]
    assert graph.chunk_nodes(3, (0, 0, 0), T1 + 1).tolist() == [i["ra"], i["rb"]]
    assert graph.chunk_nodes(2, (1, 0, 0), T1).tolist() == [i["lb"]]
    assert graph.ancestors(np.array([i["a"]]), 2, T0).tolist() == [i["la"]]
    assert graph.ancestors(np.array([i["a"]]), 3, T0).tolist() == [i["root"]]
    assert graph.children([i["root"]])[i["root"]].tolist() == [i["la"], i["lb"]]
    assert graph.max_chunk_node_count(3) == 2
    assert graph.max_chunk_node_count(2) == 1
    assert graph.node_counts(T0) == {1: 2, 2: 2, 3: 1}
    assert graph.original_ids([i["a"], i["b"]]) == {i["a"]: 7, i["b"]: 7}
    assert graph.history() == [T0, T1]


def test_supervoxel_unknown_at_time_is_named(graph):
    with pytest.raises(MeshingError, match="has no layer-2 parent"):
        graph.l2_ids(np.array([graph.ids["a"]], dtype=np.uint64), T0 - 1)


def test_missing_or_foreign_file(tmp_path):
    with pytest.raises(GraphFileError, match="not found: build it"):
        EmbeddedGraph(tmp_path / "nope.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(GraphFileError, match="not an embedded graph file"):
        EmbeddedGraph(junk)
