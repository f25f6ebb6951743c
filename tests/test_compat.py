"""Compatibility: readers we did not write must read what we store.

tensorstore (independent C++ sharded reader) must return every fragment byte for byte;
cloud-volume's graphene mesh source, built offline as the ChunkedGraph builds it, must return
every mesh; cloud-volume's ShardingSpecification must agree with us on every minishard.
"""

from __future__ import annotations

import DracoPy
import numpy as np
import pytest
from test_store_support import T0, T1, cube, draco_cube, make_dataset, write_cube_shards

from meshing_core import ids
from meshing_core.config import load_config
from meshing_core.graph import open_graph
from meshing_core.run.setup import setup_meshes
from meshing_core.store import files, layout, verify
from meshing_core.store.sharding import encode_shard, mesh_shard_spec

CODEC = ids.IdCodec(n_layers=6, spatial_bits=10)


def same_geometry(vertices: np.ndarray, corners: np.ndarray, tolerance: float = 0.05) -> bool:
    """Draco may reorder or add vertices: compare the sets of positions."""
    got = np.unique(np.round(np.asarray(vertices, dtype=np.float64), 3), axis=0)
    want = np.unique(np.asarray(corners, dtype=np.float64), axis=0)
    if got.shape != want.shape:
        return False
    return bool(np.abs(got - want).max() <= tolerance)


def draco_fragments(
    n: int, layer: int = 2, coords=(3, 1, 2)
) -> dict[int, tuple[bytes, np.ndarray]]:
    offset = np.array(coords, dtype=np.float64) * np.array([256 * 8, 256 * 8, 64 * 40])
    out = {}
    for segment in range(1, n + 1):
        node = CODEC.node_id(layer, *coords, segment * 37)
        corners = cube(node, offset)
        out[node] = (draco_cube(corners), corners)
    return out


@pytest.mark.parametrize(("bits", "count"), [(0, 40), (1, 300), (3, 700), (6, 900)])
def test_tensorstore_reads_every_fragment_byte_for_byte(tmp_path, bits, count):
    spec = mesh_shard_spec(bits)
    meshes = draco_fragments(count)
    fragments = {k: v[0] for k, v in meshes.items()}
    chunk = ids.chunk_id_of(CODEC, next(iter(fragments)))
    cloudpath = "file://" + str(tmp_path / "graphene_meshes")
    name = layout.shard_key(CODEC, chunk)
    files.write_atomic(cloudpath, name, encode_shard(fragments, spec))
    shard_file = tmp_path / "graphene_meshes" / name

    absent = CODEC.node_id(2, 3, 1, 2, 5)  # same chunk, never written
    read = verify.read_back_tensorstore(shard_file, spec, [*fragments, absent])
    assert read == fragments
    assert verify.tensorstore_keys(shard_file, spec) == sorted(fragments)
    for key, data in read.items():
        decoded = DracoPy.decode(data)
        assert same_geometry(decoded.points, meshes[key][1])


@pytest.mark.parametrize("bits", [0, 1, 2, 5, 9, 12])
def test_cloudvolume_agrees_with_our_minishard_numbers(bits):
    rng = np.random.default_rng(bits)
    node_ids = [
        CODEC.node_id(layer, x, y, z, int(s))
        for layer in range(2, 7)
        for (x, y, z) in [(0, 0, 0), (1, 0, 1)]
        for s in rng.integers(1, 2**20, 100)
    ]
    random_keys = rng.integers(0, 2**64 - 1, 500, dtype=np.uint64, endpoint=True).tolist()
    assert verify.minishard_disagreements(mesh_shard_spec(bits), node_ids + random_keys) == []


@pytest.fixture(scope="module")
def meshed_dataset(tmp_path_factory):
    """The hand-built dataset after setup, with a draco cube per node of every chunk at T1."""
    config = make_dataset(tmp_path_factory.mktemp("compat") / "ds", big_chunk_nodes=1500)
    setup_meshes(config)
    sharding = files.read_json(config.mesh_cloudpath, "info")["sharding"]
    graph = open_graph(config)
    written = write_cube_shards(config, graph, T1, sharding)
    yield config, graph, written
    graph.close()


def test_graphene_reader_returns_every_mesh(meshed_dataset):
    config, graph, written = meshed_dataset
    assert {ids.layer_of(n) for n in written} == {2, 3, 4}
    assert any(spec["minishard_bits"] > 0 for spec in files.read_json(
        config.mesh_cloudpath, "info")["sharding"].values())  # fmt: skip

    meshes = verify.read_back_graphene(config, graph, list(written))

    assert sorted(meshes) == sorted(written)
    for node, corners in written.items():
        assert meshes[node].segid == node
        assert same_geometry(meshes[node].vertices, corners), node


def test_graphene_reader_names_the_shards_we_wrote(meshed_dataset):
    config, graph, written = meshed_dataset
    cv = verify.graphene_reader(config, graph)
    assert type(cv.mesh).__name__ == "GrapheneShardedMeshSource"
    assert cv.mesh.meta.info == files.read_json(config.mesh_cloudpath, "info")
    codec = graph.meta.codec
    for node in list(written)[::50]:
        layer = ids.layer_of(node)
        filename, minishard = cv.mesh.readers[layer].compute_shard_location(node)
        assert filename == layout.shard_name(codec, ids.chunk_id_of(codec, node))
        spec = mesh_shard_spec(cv.mesh.meta.info["sharding"][str(layer)]["minishard_bits"])
        assert verify.minishard_disagreements(spec, [node]) == []


def test_graphene_reader_misses_nodes_that_were_not_meshed(meshed_dataset):
    config, graph, _ = meshed_dataset
    retired = int(graph.chunk_nodes(2, (1, 1, 1), T0)[0])  # replaced by the edit at T1
    assert retired not in set(graph.chunk_nodes(2, (1, 1, 1), T1).tolist())
    cv = verify.graphene_reader(config, graph)
    assert cv.mesh.get_meshes_on_bypass([retired], allow_missing=True) == {}
    with pytest.raises(IndexError):
        cv.mesh.get_meshes_on_bypass([retired])


def test_example_dataset_setup_and_read_back(example_copy):
    """On the real example dataset (gala crop): setup, cube shards per node, read back."""
    config = load_config(example_copy)
    setup_meshes(config)
    info = files.read_json(config.mesh_cloudpath, "info")
    graph = open_graph(config)
    try:
        timestamp = graph.history()[-1]
        written = write_cube_shards(config, graph, timestamp, info["sharding"])
        sample = sorted(written)[:: max(1, len(written) // 300)]
        meshes = verify.read_back_graphene(config, graph, sample)
        assert sorted(meshes) == sample
        assert all(same_geometry(meshes[n].vertices, written[n]) for n in sample)
    finally:
        graph.close()
