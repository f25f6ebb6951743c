"""The example dataset: gala train crop, 5 layers, one root per majority object, two edits."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np
from cloudvolume import CloudVolume

from meshing_core import ids
from meshing_core.config import load_config
from meshing_core.datasets import example
from meshing_core.graph import open_graph
from meshing_core.graph.embedded import EmbeddedGraph
from meshing_core.store.paths import to_cloudpath


def _gala(gala_dir: Path, name: str) -> np.ndarray:
    with h5py.File(gala_dir / name, "r") as handle:
        return handle["stack"][()].transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)


def _expected_objects(ws: np.ndarray, gt: np.ndarray) -> int:
    """Objects under the majority rule, counted one supervoxel at a time."""
    objects = set()
    for sv in np.unique(ws):
        labels = np.bincount(gt[ws == sv].ravel())
        labels[0] = 0 if labels[1:].any() else labels[0]
        best = int(np.argmax(labels))
        objects.add(("gt", best) if best else ("sv", int(sv)))
    return len(objects)


def test_example_config_and_layers(example_dir: Path):
    config = load_config(example_dir)
    assert config.n_layers == 5 and config.chunk_size == (32, 32, 16)
    assert config.max_error == 10.0 and config.mip == 0
    assert [p.name for p in example_dir.rglob("*.yaml")] == ["graph.yaml"]
    graph = open_graph(config)
    assert graph.meta.volume_size == (200, 100, 50)
    assert graph.meta.layer_chunk_bounds(2) == (7, 4, 4)
    ws_info = CloudVolume(config.watershed, progress=False).info
    assert ws_info["mesh"] == "graphene_meshes"
    assert "mesh" not in CloudVolume(to_cloudpath(example_dir / "source" / "segmentation")).info


def test_example_roots_match_majority_objects(example_dir: Path, gala_dir: Path):
    graph = EmbeddedGraph(example_dir / "graph.sqlite")
    expected = _expected_objects(
        _gala(gala_dir, "train-ws.lzf.h5"), _gala(gala_dir, "train-gt.lzf.h5")
    )
    history = graph.history()
    assert len(history) == 3
    roots = [len(graph.chunk_nodes(5, (0, 0, 0), t)) for t in history]
    assert roots == [expected, expected - 1, expected]
    assert expected == 41  # the gala train crop's 203 supervoxels fall into 41 majority objects


def test_example_edits_merge_then_split(example_dir: Path):
    graph = EmbeddedGraph(example_dir / "graph.sqlite")
    t0, t1, t2 = graph.history()
    lines = (example_dir / "source" / "edits.jsonl").read_text().splitlines()
    a, b = json.loads(lines[0])["supervoxels"]
    rows = graph.conn.execute(
        "SELECT id, original FROM supervoxels WHERE original IN (?, ?) ORDER BY id", (a, b)
    ).fetchall()
    piece_a = next(i for i, o in rows if o == a)
    piece_b = next(i for i, o in rows if o == b)
    probe = np.array([piece_a, piece_b], dtype=np.uint64)
    r0, r1, r2 = (graph.roots(probe, t).tolist() for t in (t0, t1, t2))
    assert r0[0] != r0[1] and r1[0] == r1[1] and r2[0] != r2[1]
    assert not set(r2) & set(r0 + r1)  # the split makes new roots, not the old ones back
    assert all(ids.layer_of(r) == 5 for r in r0 + r1 + r2)


def test_every_layer1_id_maps_back_to_the_gala_supervoxel(example_dir: Path, gala_dir: Path):
    graph = EmbeddedGraph(example_dir / "graph.sqlite")
    ws = CloudVolume(to_cloudpath(example_dir / "watershed"), progress=False)
    layer1 = np.asarray(ws[0:200, 0:100, 0:50][..., 0])
    present = np.unique(layer1)
    assert present[0] != 0  # gala supervoxels cover every voxel
    original = graph.original_ids(present.tolist())
    assert len(original) == present.size
    assert graph.node_counts(graph.history()[0])[1] == present.size
    lut_keys = np.array(sorted(original), dtype=np.uint64)
    lut_values = np.array([original[k] for k in lut_keys.tolist()], dtype=np.uint64)
    restored = lut_values[np.searchsorted(lut_keys, layer1)]
    np.testing.assert_array_equal(restored, _gala(gala_dir, "train-ws.lzf.h5").astype(np.uint64))
    # layer-1 ids never cross a chunk: each id's chunk coordinates match where it lies
    for x, y, z in [(0, 0, 0), (199, 99, 49), (100, 40, 20)]:
        assert ids.chunk_coords(graph.meta.codec, int(layer1[x, y, z])) == (
            x // 32,
            y // 32,
            z // 16,
        )


def test_example_falls_back_to_synthetic_without_gala(tmp_path: Path, monkeypatch, caplog):
    monkeypatch.setattr(example, "GALA", tmp_path / "no-gala")
    with caplog.at_level(logging.WARNING, logger="meshing_core.datasets.example"):
        config_path = example.build_example(tmp_path / "out", progress=False)
    assert "gala data not found" in caplog.text and "synthetic" in caplog.text
    config = load_config(config_path)
    assert config.n_layers == 5 and config.name == "example"
    graph = open_graph(config)
    assert len(graph.history()) == 3
