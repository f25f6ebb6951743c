"""A synthetic 5-layer dataset of long neurites crossing many chunks, meshed to its root layer.

Judges: tensorstore and cloud-volume's graphene reader read every fragment of every layer; each
long object's exported mesh and a whole-object marching cubes agree both ways.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import igl
import numpy as np
import pytest
import zmesh
from cloudvolume import CloudVolume

from meshing_core.config import GraphConfig, load_config
from meshing_core.datasets.synthetic import (
    neurite_volume,
    write_agglomeration_csv,
    write_precomputed_segmentation,
)
from meshing_core.graph import open_graph
from meshing_core.ingest.builder import build_graph
from meshing_core.mesh.export import export_mesh
from meshing_core.run.lifecycle import run_graph
from meshing_core.store.sharding import ShardReader, bytes_source
from meshing_core.store.verify import graphene_reader, read_back_tensorstore

SHAPE = (128, 128, 64)
RESOLUTION = (8.0, 8.0, 40.0)
CHUNK = (16, 16, 8)  # 8 x 8 x 8 layer-2 chunks: 5 layers
TIMESTAMP = 1700000000.0


@dataclass
class Meshed:
    out: Path
    config: GraphConfig


@pytest.fixture(scope="module")
def meshed(tmp_path_factory: pytest.TempPathFactory) -> Meshed:
    work = tmp_path_factory.mktemp("synthetic5")
    volume, agglomeration = neurite_volume(SHAPE, seed=3)
    source = "file://" + str(work / "source")
    write_precomputed_segmentation(source, volume, RESOLUTION, chunk_size=(64, 64, 32))
    write_agglomeration_csv(work / "agglomeration.csv", agglomeration)
    out = work / "dataset"
    build_graph(
        source, work / "agglomeration.csv", out, CHUNK, created_at=TIMESTAMP - 10, progress=False
    )
    config = load_config(out / "graph.yaml")
    assert config.n_layers == 5
    summary = run_graph(config, timestamp=TIMESTAMP, workers=1, progress=False)
    assert [r.layer for r in summary.layers] == [2, 3, 4, 5]
    return Meshed(out, config)


def _shards(meshed: Meshed) -> list[Path]:
    root = meshed.out / "watershed" / meshed.config.mesh_dir / "initial"
    return sorted(root.rglob("*.shard"))


def test_every_fragment_of_every_layer_reads_back(meshed: Meshed):
    info = json.loads((meshed.out / "watershed" / meshed.config.mesh_dir / "info").read_text())
    graph = open_graph(meshed.config)
    try:
        cv = graphene_reader(meshed.config, graph)
        layers_seen = set()
        for shard in _shards(meshed):
            layer = int(shard.parent.name)
            spec = info["sharding"][str(layer)]
            ours = dict(ShardReader(bytes_source(shard.read_bytes()), spec).items())
            assert ours, shard
            assert read_back_tensorstore(shard, spec, ours) == ours
            meshes = cv.mesh.get_meshes_on_bypass(list(ours))
            assert set(meshes) == set(ours)
            assert all(len(m.faces) > 0 for m in meshes.values())
            layers_seen.add(layer)
        assert layers_seen == {2, 3, 4, 5}
    finally:
        graph.close()


def _long_roots(meshed: Meshed, roots: np.ndarray, how_many: int = 3) -> list[int]:
    """The objects spanning the most layer-2 chunks (long neurites)."""
    spans = []
    for root in np.unique(roots[roots != 0]):
        where = np.argwhere(roots == root)
        chunks = {tuple(c) for c in (where // np.array(CHUNK)).tolist()}
        spans.append((len(chunks), int(root)))
    spans.sort(reverse=True)
    assert spans[0][0] >= 8, "the synthetic volume should hold objects crossing many chunks"
    return [root for _, root in spans[:how_many]]


def test_long_objects_agree_with_whole_object_marching_cubes(meshed: Meshed, tmp_path: Path):
    graph = open_graph(meshed.config)
    try:
        supervoxels = np.asarray(CloudVolume(meshed.config.watershed, progress=False)[:, :, :])
        supervoxels = supervoxels[..., 0]
        l2 = graph.l2_ids(supervoxels, TIMESTAMP)
        present = np.unique(l2[l2 != 0])
        root_of = dict(zip(present.tolist(), graph.roots(present, TIMESTAMP).tolist(), strict=True))
        roots = np.vectorize(lambda n: root_of.get(int(n), 0), otypes=[np.uint64])(l2)
    finally:
        graph.close()
    bound = meshed.config.max_error + float(np.linalg.norm(RESOLUTION))
    for root in _long_roots(meshed, roots):
        report = export_mesh(
            meshed.config, tmp_path / f"{root}.ply", node=root, timestamp=TIMESTAMP
        )
        assert report.max_meshed_layer == 5
        vertices, faces = igl.read_triangle_mesh(str(tmp_path / f"{root}.ply"))
        mesher = zmesh.Mesher(RESOLUTION)
        mesher.mesh((roots == np.uint64(root)).astype(np.uint8))
        raw = mesher.get(1, reduction_factor=0, voxel_centered=False)
        raw_vertices = np.asarray(raw.vertices, dtype=np.float64)
        raw_faces = np.asarray(raw.faces, dtype=np.int64)
        ours_to_raw, _, _ = igl.point_mesh_squared_distance(vertices, raw_vertices, raw_faces)
        raw_to_ours, _, _ = igl.point_mesh_squared_distance(raw_vertices, vertices, faces)
        assert np.sqrt(ours_to_raw.max()) <= bound, root
        assert np.sqrt(raw_to_ours.max()) <= bound, root
