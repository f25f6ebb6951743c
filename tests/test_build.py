"""The graph builder on a hand-checkable 16x8x4 volume (chunk 4x4x2: 4x2x2 chunks, 4 layers)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from cloudvolume import CloudVolume

from meshing_core import ids
from meshing_core.config import load_config
from meshing_core.datasets.synthetic import write_precomputed_segmentation
from meshing_core.graph.embedded import EmbeddedGraph
from meshing_core.ingest.builder import BuildError, build_graph
from meshing_core.store.paths import to_cloudpath

CHUNK = (4, 4, 2)
T0, T1, T2 = 1000.0, 2000.0, 3000.0
CODEC = ids.IdCodec(4, 10)


def hand_volume() -> np.ndarray:
    """Supervoxels placed so each hierarchy rule shows up once (see the comments)."""
    vol = np.zeros((16, 8, 4), dtype=np.uint64, order="F")
    vol[2:6, 0:2, 0:2] = 1  # crosses the x=4 face: pieces in chunks (0,0,0), (1,0,0) -> layer 3
    vol[6:10, 4:6, 0:1] = 2  # crosses x=8: chunks (1,1,0), (2,1,0) -> joined at layer 4
    vol[13:15, 5:7, 2:4] = 3  # inside chunk (3,1,1): skips layer 3
    vol[0:1, 6:8, 2:4] = 4  # object 200 with sv 5, never touching it
    vol[12:13, 0:1, 0:1] = 5
    vol[8:10, 0:2, 2:4] = 6  # object 300: 6, 7, 10 touch inside chunk (2,0,1)
    vol[10:12, 0:2, 2:4] = 7
    vol[8:12, 2:3, 2:4] = 10
    vol[12:14, 0:2, 2:4] = 8  # unlisted: its own object, touches 7 across x=12
    vol[2:4, 2:4, 0:2] = 9  # object 400: touches sv 1 inside chunk (0,0,0)
    return vol


AGGLOMERATION = (
    "supervoxel,object\n1,100\n2,150\n3,170\n4,200\n5,200\n6,300\n7,300\n10,300\n9,400\n"
)


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, Path | str]:
    seg = to_cloudpath(tmp_path / "seg")
    write_precomputed_segmentation(seg, hand_volume(), (10, 10, 10), chunk_size=(8, 8, 4))
    agg = tmp_path / "agg.csv"
    agg.write_text(AGGLOMERATION)
    return {"seg": seg, "agg": agg, "dir": tmp_path}


def build(inputs, out: Path, **kwargs) -> EmbeddedGraph:
    kwargs.setdefault("created_at", T0)
    kwargs.setdefault("progress", False)
    build_graph(inputs["seg"], inputs["agg"], out, CHUNK, **kwargs)
    return EmbeddedGraph(out / "graph.sqlite", watershed=to_cloudpath(out / "watershed"))


def l1(coords, seg: int) -> int:
    return CODEC.node_id(1, *coords, seg)


def pieces_of(graph: EmbeddedGraph, original: int) -> list[int]:
    rows = graph.conn.execute(
        "SELECT id FROM supervoxels WHERE original = ? ORDER BY id", (original,)
    ).fetchall()
    return [r[0] for r in rows]


def root(graph: EmbeddedGraph, node: int, t: float) -> int:
    return int(graph.roots(np.array([node], dtype=np.uint64), t)[0])


def test_layer1_ids_are_ranks_per_chunk_and_written_as_watershed(inputs, tmp_path):
    graph = build(inputs, tmp_path / "out")
    assert graph.meta.n_layers == 4
    assert pieces_of(graph, 1) == [l1((0, 0, 0), 1), l1((1, 0, 0), 1)]
    # chunk (2,0,1) holds 6, 7, 10 -> segments 1, 2, 3 in original order
    assert pieces_of(graph, 6) == [l1((2, 0, 1), 1)]
    assert pieces_of(graph, 10) == [l1((2, 0, 1), 3)]
    # chunk (0,0,0) holds 1 and 9
    assert pieces_of(graph, 9) == [l1((0, 0, 0), 2)]
    ws = CloudVolume(to_cloudpath(tmp_path / "out" / "watershed"), progress=False)
    assert ws.info["mesh"] == "graphene_meshes"
    assert list(ws.info["scales"][0]["chunk_sizes"][0]) == list(CHUNK)
    data = np.asarray(ws[0:16, 0:8, 0:4][..., 0])
    assert data[3, 0, 0] == l1((0, 0, 0), 1) and data[4, 0, 0] == l1((1, 0, 0), 1)
    assert data[0, 0, 0] == 0
    original = graph.original_ids(np.unique(data[data > 0]).tolist())
    restored = np.vectorize(lambda v: original.get(int(v), 0), otypes=[np.uint64])(data)
    np.testing.assert_array_equal(restored, hand_volume())
    # every id is a node; background never is
    n_nodes = graph.conn.execute("SELECT COUNT(*) FROM nodes WHERE layer = 1").fetchone()[0]
    assert n_nodes == len(original)
    assert graph.conn.execute("SELECT COUNT(*) FROM nodes WHERE id = 0").fetchone()[0] == 0


def test_hierarchy_skips_layers_and_has_one_root_per_object(inputs, tmp_path):
    graph = build(inputs, tmp_path / "out")
    top = graph.chunk_nodes(4, (0, 0, 0), T0)
    assert len(top) == 7  # objects 100, 150, 170, 200, 300, 400 and unlisted sv 8
    assert all(ids.layer_of(r) == 4 for r in top)
    kids = lambda n: graph.children([n])[n].tolist()  # noqa: E731

    a, b = pieces_of(graph, 1)  # across the x=4 face: one layer-3 node, root above it
    l2a, l2b = graph.l2_ids(np.array([a, b], dtype=np.uint64), T0).tolist()
    assert l2a != l2b
    l3 = graph.ancestors(np.array([l2a, l2b], dtype=np.uint64), 3, T0).tolist()
    assert l3[0] == l3[1] and ids.layer_of(l3[0]) == 3
    assert kids(l3[0]) == sorted([l2a, l2b])
    assert kids(root(graph, a, T0)) == [l3[0]]

    c, d = pieces_of(graph, 2)  # across x=8: joined directly at layer 4
    l2c, l2d = graph.l2_ids(np.array([c, d], dtype=np.uint64), T0).tolist()
    assert kids(root(graph, c, T0)) == sorted([l2c, l2d])

    (e,) = pieces_of(graph, 3)  # one chunk: layer 2 straight under the root
    assert kids(root(graph, e, T0)) == [int(graph.l2_ids(np.array([e], dtype=np.uint64), T0)[0])]

    # object 200: two supervoxels far apart are still one root
    (f,), (g,) = pieces_of(graph, 4), pieces_of(graph, 5)
    assert root(graph, f, T0) == root(graph, g, T0)
    # object 300: one layer-2 node with three supervoxels; 8 touches it but is another object
    six, seven, ten = pieces_of(graph, 6)[0], pieces_of(graph, 7)[0], pieces_of(graph, 10)[0]
    l2 = graph.l2_ids(np.array([six, seven, ten], dtype=np.uint64), T0).tolist()
    assert len(set(l2)) == 1 and kids(l2[0]) == sorted([six, seven, ten])
    (eight,) = pieces_of(graph, 8)
    assert root(graph, eight, T0) != root(graph, six, T0)
    # ids of a chunk are ranked from 1 by smallest child
    chunk2 = graph.chunk_nodes(2, (0, 0, 0), T0).tolist()
    assert [ids.segment_id(CODEC, n) for n in chunk2] == [1, 2]


def test_merge_then_split_make_new_nodes_at_edit_time(inputs, tmp_path):
    edits = tmp_path / "edits.jsonl"
    edits.write_text(
        '{"timestamp": "1970-01-01T00:33:20Z", "op": "merge", "supervoxels": [1, 9]}\n'
        '{"timestamp": 3000, "op": "split", "supervoxels": [9, 1]}\n'
    )
    graph = build(inputs, tmp_path / "out", edits=edits)
    assert graph.history() == [T0, T1, T2]
    a0, a1 = pieces_of(graph, 1)
    (nine,) = pieces_of(graph, 9)
    probe = np.array([a0, nine], dtype=np.uint64)
    before, merged, split = (graph.l2_ids(probe, t).tolist() for t in (T0, T1, T2))
    assert before[0] != before[1]
    # they touch inside chunk (0,0,0): the merge makes one new layer-2 node there
    assert merged[0] == merged[1] and merged[0] not in before
    assert (
        graph.conn.execute("SELECT created FROM nodes WHERE id = ?", (merged[0],)).fetchone()[0]
        == T1
    )
    for old in before:
        assert (
            graph.conn.execute("SELECT expired FROM nodes WHERE id = ?", (old,)).fetchone()[0] == T1
        )
    assert graph.chunk_nodes(2, (0, 0, 0), T1).tolist() == [merged[0]]
    assert root(graph, a0, T1) == root(graph, nine, T1) == root(graph, a1, T1)
    assert len(graph.chunk_nodes(4, (0, 0, 0), T1)) == 6
    # split: new ids again (never the pre-merge ones), two roots
    assert split[0] != split[1] and not set(split) & set(before + merged)
    assert root(graph, a0, T2) != root(graph, nine, T2)
    assert len(graph.chunk_nodes(4, (0, 0, 0), T2)) == 7
    # untouched objects keep their nodes through both edits
    (e,) = pieces_of(graph, 3)
    assert root(graph, e, T0) == root(graph, e, T2)
    # and past queries still see the past
    assert graph.l2_ids(probe, T1 - 0.5).tolist() == before
    counts = [graph.node_counts(t) for t in (T0, T1, T2)]
    assert counts[0] == counts[2] and counts[1][2] == counts[0][2] - 1


def test_merge_of_pieces_that_do_not_touch_joins_smallest_pieces(inputs, tmp_path):
    edits = tmp_path / "edits.jsonl"
    edits.write_text('{"timestamp": 2000, "op": "merge", "supervoxels": [3, 5]}\n')
    graph = build(inputs, tmp_path / "out", edits=edits)
    (three,), (five,), (four,) = pieces_of(graph, 3), pieces_of(graph, 5), pieces_of(graph, 4)
    assert root(graph, three, T0) != root(graph, five, T0)
    assert root(graph, three, T1) == root(graph, five, T1) == root(graph, four, T1)
    # chunks (3,1,1) and (3,0,0) differ only in y/z bit 0: the merge lands at layer 3
    joined = graph.ancestors(np.array([three, five], dtype=np.uint64), 3, T1).tolist()
    assert joined[0] == joined[1] and ids.layer_of(joined[0]) == 3


def test_downsampled_scale_is_mode_pooled_layer1(inputs, tmp_path):
    import tinybrain

    build(inputs, tmp_path / "out", mip=1)
    path = to_cloudpath(tmp_path / "out" / "watershed")
    full = np.asarray(CloudVolume(path, mip=0, progress=False)[0:16, 0:8, 0:4][..., 0])
    half = CloudVolume(path, mip=1, progress=False)
    assert list(half.resolution) == [20, 20, 10]  # isotropic: z kept at the first step
    assert list(half.info["scales"][1]["chunk_sizes"][0]) == [2, 2, 2]
    expected = tinybrain.downsample_segmentation(full, (2, 2, 1))[0]
    np.testing.assert_array_equal(np.asarray(half[0:8, 0:4, 0:4][..., 0]), expected)
    config = load_config(tmp_path / "out")
    assert config.mip == 1 and config.max_error == 20.0


def test_same_inputs_give_identical_outputs(inputs, tmp_path):
    edits = tmp_path / "edits.jsonl"
    edits.write_text('{"timestamp": 2000, "op": "merge", "supervoxels": [3, 8]}\n')
    outs = [tmp_path / "a", tmp_path / "b"]
    graphs = [build(inputs, out, edits=edits, name="same", mip=1) for out in outs]

    def rows(graph: EmbeddedGraph) -> list:
        conn = graph.conn
        return [
            conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("meta", "nodes", "children", "supervoxels")
        ]

    assert rows(graphs[0]) == rows(graphs[1])
    files = [sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) for out in outs]
    assert files[0] == files[1]
    for rel in files[0]:
        if rel.name != "graph.sqlite":
            assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel
    # rebuilding in place is allowed and gives the same graph
    again = build(inputs, outs[0], edits=edits, name="same", mip=1)
    assert rows(again) == rows(graphs[1])
    assert sorted(p.name for p in outs[0].glob("*.yaml")) == ["graph.yaml"]


def _error(inputs, out, match: str, agg=None, **kwargs) -> None:
    with pytest.raises(BuildError, match=match) as info:
        build_graph(
            kwargs.pop("seg", inputs["seg"]),
            agg if agg is not None else inputs["agg"],
            out,
            kwargs.pop("chunk_size", CHUNK),
            progress=False,
            **kwargs,
        )
    assert "\n" not in str(info.value)
    assert not (out / "graph.yaml").exists()
    assert not list(out.glob(".build-*")) if out.exists() else True


def test_errors_are_one_line(inputs, tmp_path):
    out = tmp_path / "out"
    _error(inputs, out, "segmentation .* not found", seg=to_cloudpath(tmp_path / "missing"))
    for dtype in ("float32", "int32"):
        bad = to_cloudpath(tmp_path / f"bad-{dtype}")
        write_precomputed_segmentation(
            bad, np.ones((4, 4, 2), dtype=dtype), (1, 1, 1), chunk_size=(4, 4, 2)
        )
        _error(inputs, out, f"data type {dtype}: supervoxels must be unsigned", seg=bad)
    agg = tmp_path / "unknown.csv"
    agg.write_text("1,100\n99,100\n")
    _error(inputs, out, r"names 1 supervoxel\(s\) not in the segmentation \(first: 99\)", agg=agg)
    agg.write_text("1,100\n2,x\n")
    _error(inputs, out, "line 2", agg=agg)
    for size in ((0, 4, 2), (4, -1, 2)):
        _error(inputs, out, "chunk size .* invalid", chunk_size=size)
    _error(inputs, out, "not divisible by the mip 3", mip=3)
    edits = tmp_path / "edits.jsonl"
    cases = {
        "not json\n": "line 1: not valid JSON",
        '{"timestamp": 2000, "op": "glue", "supervoxels": [1, 9]}\n': "line 1: op must be",
        '{"timestamp": 2000, "op": "merge", "supervoxels": [1]}\n': "line 1: supervoxels must be",
        '{"timestamp": "yesterday", "op": "merge", "supervoxels": [1, 9]}\n': "line 1: malformed timestamp",
        '{"timestamp": 3000, "op": "merge", "supervoxels": [1, 9]}\n\n'
        '{"timestamp": 2000, "op": "split", "supervoxels": [1, 9]}\n': "line 3: timestamp is not after",
        '{"timestamp": 500, "op": "merge", "supervoxels": [1, 9]}\n': "line 1: timestamp is not after the graph's creation",
        '{"timestamp": 2000, "op": "merge", "supervoxels": [1, 77]}\n': "line 1: supervoxel 77 is not in the segmentation",
        '{"timestamp": 2000, "op": "merge", "supervoxels": [6, 7]}\n': "line 1: merge of 6 and 7: they are already one object",
        '{"timestamp": 2000, "op": "split", "supervoxels": [6, 7]}\n': "line 1: split of 6 and 7 leaves them connected",
        '{"timestamp": 2000, "op": "split", "supervoxels": [1, 9]}\n': "line 1: split of 1 and 9: they are in different objects",
    }
    for text, match in cases.items():
        edits.write_text(text)
        _error(inputs, out, match, edits=edits, created_at=T0)


def test_out_dir_with_another_dataset_is_refused(inputs, tmp_path):
    out = tmp_path / "out"
    build(inputs, out)
    other = to_cloudpath(tmp_path / "other")
    write_precomputed_segmentation(other, hand_volume(), (10, 10, 10), chunk_size=(8, 8, 4))
    with pytest.raises(BuildError, match="holds a different dataset"):
        build_graph(other, inputs["agg"], out, CHUNK, progress=False)
    assert (out / "graph.yaml").exists()  # the refused build left the old dataset whole


def test_no_agglomeration_and_split_that_disconnects(inputs, tmp_path):
    graph = build({**inputs, "agg": None}, tmp_path / "plain")
    # every supervoxel its own object: 10 roots
    assert len(graph.chunk_nodes(4, (0, 0, 0), T0)) == 10
    edits = tmp_path / "edits.jsonl"
    edits.write_text('{"timestamp": 2000, "op": "split", "supervoxels": [4, 5]}\n')
    graph = build(inputs, tmp_path / "out", edits=edits)
    (four,), (five,) = pieces_of(graph, 4), pieces_of(graph, 5)
    assert root(graph, four, T0) == root(graph, five, T0)
    assert root(graph, four, T1) != root(graph, five, T1)
    provenance = json.loads((tmp_path / "out" / "build.json").read_text())
    assert provenance["segmentation"] == inputs["seg"] and provenance["chunk_size"] == list(CHUNK)
    with sqlite3.connect(tmp_path / "out" / "graph.sqlite") as conn:
        history = json.loads(
            conn.execute("SELECT value FROM meta WHERE key='history'").fetchone()[0]
        )
    assert history == [T0, T1]
