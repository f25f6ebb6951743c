"""Stitching layers 3..5 of the example dataset: shards, geometry, errors, limits.

Every test runs twice: on the example built from the real gala crop, and on the synthetic volume
the example falls back to on a clone without the gala files (their meshes differ in shape: the
synthetic one has one-voxel-thin tips that quantisation collapses, see the union test).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import DracoPy
import numpy as np
import pytest
from scipy.spatial import cKDTree

from meshing_core import ids
from meshing_core.config import load_config
from meshing_core.errors import MeshingError
from meshing_core.graph import open_graph
from meshing_core.mesh import fragments as fragments_module
from meshing_core.mesh.layer_grids import layer_grids
from meshing_core.mesh.merge import concatenate, drop_walls
from meshing_core.mesh.stitch import DEFAULT_MAX_TRIANGLES, max_triangles_of, node_mesh
from meshing_core.mesh.watershed import mip_geometry
from meshing_core.run.layer import ChunkFailuresError, mesh_layer
from meshing_core.run.setup import setup_meshes
from meshing_core.store import files
from meshing_core.store.layout import chunk_shard_name as shard_name
from meshing_core.store.layout import initial_dir as shard_dir
from meshing_core.store.sharding import ShardReader
from meshing_core.store.verify import read_back_graphene, read_back_tensorstore

TOP = 5


@pytest.fixture(scope="module", params=["gala", "synthetic"])
def meshed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, example_from):
    """The example (gala, or its synthetic fallback) meshed at layers 2..5 once, after both edits."""
    root = example_from(
        request.param, tmp_path_factory.mktemp(f"stitch-{request.param}") / "example"
    )
    config = load_config(root)
    setup_meshes(config)
    graph = open_graph(config)
    ts = max(graph.history()) + 1.0
    reports = {
        layer: mesh_layer(config, layer, timestamp=ts, workers=1, progress=False)
        for layer in range(2, TOP + 1)
    }
    return root, config, graph, ts, reports


def _sharding(config) -> dict:
    return files.read_json(config.mesh_cloudpath, "info")["sharding"]


def _reader(config, meta, layer, coords) -> ShardReader:
    spec = _sharding(config)[str(layer)]
    source = files.range_source(shard_dir(config, layer), shard_name(meta, layer, coords))
    return ShardReader(source, spec)


def _decode(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    mesh = DracoPy.decode(blob)
    return np.asarray(mesh.points, dtype=np.float64), np.asarray(mesh.faces).reshape(-1, 3)


def _stitched(config, graph) -> dict[int, tuple[int, tuple[int, int, int], bytes]]:
    """Every stitched fragment: node -> (layer, chunk coords, bytes)."""
    meta = graph.meta
    out = {}
    for layer in range(3, TOP + 1):
        for coords in np.ndindex(*meta.layer_chunk_bounds(layer)):
            reader = _reader(config, meta, layer, coords)
            if reader.exists():
                for node, blob in reader.items():
                    out[node] = (layer, tuple(int(c) for c in coords), blob)
    return out


def _layer2_descendants(graph, node: int) -> list[int]:
    if ids.layer_of(node) == 2:
        return [node]
    kids = graph.children([node])[node]
    return [d for child in kids for d in _layer2_descendants(graph, int(child))]


def _shard_bytes(config, meta, layers=range(3, TOP + 1)) -> dict[tuple, bytes | None]:
    return {
        (layer, coords): files.read_file(shard_dir(config, layer), shard_name(meta, layer, coords))
        for layer in layers
        for coords in np.ndindex(*meta.layer_chunk_bounds(layer))
    }


def test_every_layer_is_meshed_and_keys_are_the_multi_child_nodes(meshed) -> None:
    _, config, graph, ts, reports = meshed
    meta = graph.meta
    stitched = _stitched(config, graph)
    for layer in range(3, TOP + 1):
        report = reports[layer]
        assert report.fragments > 0 and report.skipped_nodes == []
        assert report.chunks == int(np.prod(meta.layer_chunk_bounds(layer)))
        assert report.fragments == sum(1 for v in stitched.values() if v[0] == layer)
    for coords in np.ndindex(*meta.layer_chunk_bounds(3)):
        alive = [int(n) for n in graph.chunk_nodes(3, coords, ts)]
        kids = graph.children(alive)
        multi = {n for n in alive if len(kids[n]) > 1}
        keys = {n for n, v in stitched.items() if v[:2] == (3, tuple(coords))}
        assert keys == multi  # single-child nodes get no fragment; every multi-child one does
    for node, (layer, coords, blob) in stitched.items():
        vertices, faces = _decode(blob)
        assert len(faces) > 0 and faces.max() < len(vertices), node
        grid = layer_grids(meta, mip_geometry(meta, config.watershed, config.mip), layer).grid(
            layer, coords
        )
        steps = (vertices - grid.origin) / grid.bin_size
        assert np.allclose(steps, np.round(steps), atol=1e-3), node


def test_independent_readers_return_every_stitched_fragment(meshed) -> None:
    _, config, graph, _, _ = meshed
    meta = graph.meta
    stitched = _stitched(config, graph)
    meshes = read_back_graphene(config, graph, list(stitched))
    assert set(meshes) == set(stitched)
    for node, (_, _, blob) in stitched.items():
        vertices, _ = _decode(blob)
        got = np.asarray(meshes[node].vertices, dtype=np.float64)
        assert len(meshes[node].faces) > 0
        assert np.array_equal(np.unique(got, axis=0), np.unique(vertices, axis=0)), node
    for layer in range(3, TOP + 1):
        coords = next(c for n, (lay, c, _) in stitched.items() if lay == layer)
        path = f"{shard_dir(config, layer)}/{shard_name(meta, layer, coords)}"
        keys = [n for n, v in stitched.items() if v[:2] == (layer, coords)]
        back = read_back_tensorstore(path, _sharding(config)[str(layer)], keys)
        assert back == {n: stitched[n][2] for n in keys}


def _drift(bins: dict[int, float], layer: int) -> float:
    """How far (nm, per axis) stitching up to ``layer`` may move a layer-2 vertex.

    A layer-2 vertex lies on the lattice ``k * bins[2]``; stitching snaps it onto the lattice of
    each layer 3..``layer`` in turn (the last snap is draco's, on the chunk grid, whose origin is
    a multiple of its bin). A snap moves a point by at most half a bin per axis, and not at all
    when the previous lattice is a sub-lattice of the new one (same or multiple bin).
    """
    return sum(
        0.0 if bins[lay - 1] % bins[lay] == 0 else bins[lay] / 2 for lay in range(3, layer + 1)
    )


def test_stitched_mesh_is_the_union_of_its_layer2_meshes(meshed) -> None:
    _, config, graph, _, _ = meshed
    meta = graph.meta
    grids = layer_grids(meta, mip_geometry(meta, config.watershed, config.mip), TOP)
    noise = 1e-3  # draco decodes to float32
    for node, (layer, _, blob) in _stitched(config, graph).items():
        vertices, faces = _decode(blob)
        parts = []
        for leaf in _layer2_descendants(graph, node):
            reader = _reader(config, meta, 2, ids.chunk_coords(meta.codec, leaf))
            blob2 = reader.get(leaf) if reader.exists() else None
            if blob2 is not None:
                parts.append(_decode(blob2))
        union, union_faces = concatenate(parts)
        # triangles of zero area after quantisation (a one-voxel-thin tip collapses to a
        # segment) are dropped where they lie on a mid-plane, and so are corners only they used
        corners = grids.requantise(union, 2, layer)[union_faces]
        flat = (
            np.all(corners[:, 0] == corners[:, 1], axis=1)
            | np.all(corners[:, 1] == corners[:, 2], axis=1)
            | np.all(corners[:, 0] == corners[:, 2], axis=1)
        )
        # walls: a triangle two touching nodes of one object both carry (same three points)
        _, welded = np.unique(corners.reshape(-1, 3), axis=0, return_inverse=True)
        keys = np.sort(welded.reshape(-1, 3), axis=1)
        _, which, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        wall = counts[which.reshape(-1)] % 2 == 0
        surface = union[np.unique(union_faces[~flat & ~wall])]
        bound = _drift(grids.bins, layer) + noise  # per axis
        assert cKDTree(union).query(vertices, p=np.inf)[0].max() <= bound, node
        assert cKDTree(vertices).query(surface, p=np.inf)[0].max() <= bound, node
        # only triangles of zero area and walls go: nothing else is lost
        assert len(union_faces) - (flat | wall).sum() <= len(faces) <= len(union_faces), node


def test_a_tip_collapsed_onto_a_mid_plane_goes_and_its_area_stays() -> None:
    """The synthetic example's case: a thin tube's end cap, snapped flat onto the y mid-plane."""
    plane = np.array([1602.0, 318.0, 162.0])
    # layer-2 vertices 1..3 all snapped to (1878, 318, 318), 4 and 5 to (1890, 318, 318)
    tip = np.array(
        [[1896, 312, 318], [1878, 318, 318], [1878, 318, 318], [1878, 318, 318]]
        + [[1890, 318, 318], [1890, 318, 318], [1902, 318, 318]],
        dtype=np.float64,
    )
    cap = np.array([[2, 3, 1], [3, 2, 4], [5, 3, 4], [0, 5, 4], [0, 4, 6]])
    del plane  # every coincident vertex is welded, on the mid-plane as elsewhere
    vertices, faces = drop_walls(tip, cap)
    kept = {tuple(sorted(map(tuple, vertices[f].tolist()))) for f in faces}
    assert kept == {((1890, 318, 318), (1896, 312, 318), (1902, 318, 318))}
    assert [1878, 318, 318] not in vertices.tolist()  # 12 nm from every vertex left


def test_no_duplicate_vertices_left_on_the_stitched_chunk_planes(meshed) -> None:
    _, config, graph, ts, _ = meshed
    meta = graph.meta
    sharding = _sharding(config)
    geometry = mip_geometry(meta, config.watershed, config.mip)
    grids = layer_grids(meta, geometry, TOP)
    merged_any = split = 0
    for node, (layer, coords, blob) in _stitched(config, graph).items():
        planes = grids.mid_planes(layer, coords)
        vertices, faces = node_mesh(graph, config, node, ts, sharding)
        on = (vertices == planes).any(axis=1)
        assert on.any(), node
        assert len(np.unique(vertices[on], axis=0)) == on.sum(), node
        # the plain union of the children would have had duplicates there
        sources = [int(s) for s in graph.children([node])[node]]
        raw = []
        for leaf in sorted(d for s in sources for d in _layer2_descendants(graph, s)):
            reader = _reader(config, meta, 2, ids.chunk_coords(meta.codec, leaf))
            blob2 = reader.get(leaf) if reader.exists() else None
            if blob2 is not None:
                raw.append(grids.requantise(_decode(blob2)[0], 2, layer - 1))
        raw_all = np.concatenate(raw)
        raw_on = raw_all[(raw_all == planes).any(axis=1)]
        merged_any += len(raw_on) - len(np.unique(raw_on, axis=0))
        # draco's edgebreaker may split a few vertices (where the merged surface pinches or
        # flips) into copies when decoding: the same positions, few of them
        decoded = grids.requantise(_decode(blob)[0], layer, layer)
        decoded_on = decoded[(decoded == planes).any(axis=1)]
        unique_on = np.unique(decoded_on, axis=0)
        assert np.array_equal(unique_on, np.unique(vertices[on], axis=0)), node
        split += len(decoded_on) - len(unique_on)
    assert merged_any > 100  # the merge really joined the children on the planes
    assert split * 10 < merged_any  # draco's copies are few next to what the merge removed


def test_reruns_in_a_process_pool_give_identical_bytes(meshed) -> None:
    _, config, graph, ts, reports = meshed
    meta = graph.meta
    before = _shard_bytes(config, meta)
    for layer in range(3, TOP + 1):
        again = mesh_layer(config, layer, timestamp=ts, workers=2, progress=False)
        assert (again.fragments, again.bytes) == (reports[layer].fragments, reports[layer].bytes)
    assert _shard_bytes(config, meta) == before


def test_stitching_reads_byte_ranges_never_whole_shards(meshed, monkeypatch) -> None:
    _, config, graph, ts, _ = meshed
    reads: list[tuple[str, int, int]] = []
    original = files.range_source

    def recording(cloudpath: str, name: str):
        read = original(cloudpath, name)

        def wrapped(start: int, stop: int):
            reads.append((f"{cloudpath}/{name}", start, stop))
            return read(start, stop)

        return wrapped

    monkeypatch.setattr(fragments_module.files, "range_source", recording)
    mesh_layer(config, TOP, timestamp=ts, workers=1, progress=False)
    assert reads
    sizes = {path: len(files.read_file(*path.rsplit("/", 1))) for path, _, _ in reads}
    for path, start, stop in reads:
        assert stop - start < sizes[path], path  # no read takes a whole shard
    assert sum(stop - start for _, start, stop in reads) < sum(sizes.values())


def _fresh(meshed, tmp_path: Path):
    root = meshed[0]
    target = tmp_path / "copy"
    shutil.copytree(root, target)
    config = load_config(target)
    return config, open_graph(config)


def test_corrupt_child_shard_fails_only_its_parent_with_a_named_error(meshed, tmp_path) -> None:
    ts = meshed[3]
    config, graph = _fresh(meshed, tmp_path)
    meta = graph.meta
    before = _shard_bytes(config, meta, layers=[3])
    child = (2, 1, 1)
    parent = ids.parent_chunk(child, 2, 3)
    name = shard_name(meta, 2, child)
    data = files.read_file(shard_dir(config, 2), name)
    files.write_atomic(shard_dir(config, 2), name, data[: len(data) // 2])
    files.delete_file(shard_dir(config, 3), shard_name(meta, 3, parent))
    for coords in np.ndindex(*meta.layer_chunk_bounds(3)):
        run = dict(chunk_start=coords, chunk_end=tuple(c + 1 for c in coords))
        if tuple(coords) != parent:
            mesh_layer(config, 3, timestamp=ts, workers=1, progress=False, **run)
            continue
        with pytest.raises(ChunkFailuresError) as exc:
            mesh_layer(config, 3, timestamp=ts, workers=1, progress=False, **run)
        assert isinstance(exc.value.__cause__, MeshingError)
        text = str(exc.value)
        assert "\n" not in text
        assert f"layer-3 chunk {list(parent)}" in text and name in text, text
    after = _shard_bytes(config, meta, layers=[3])
    assert after.pop((3, parent)) is None
    before.pop((3, parent))
    assert after == before


def test_missing_child_shard_is_a_named_error(meshed, tmp_path) -> None:
    ts = meshed[3]
    config, graph = _fresh(meshed, tmp_path)
    meta = graph.meta
    name = shard_name(meta, 3, (0, 0, 0))
    files.delete_file(shard_dir(config, 3), name)
    with pytest.raises(ChunkFailuresError) as exc:
        mesh_layer(config, 4, chunk_end=(1, 1, 1), timestamp=ts, workers=1, progress=False)
    assert isinstance(exc.value.__cause__, MeshingError)
    text = str(exc.value)
    assert "layer-4 chunk [0, 0, 0]" in text and name in text and "mesh layer 3" in text, text


def test_layer2_chunk_with_nodes_but_no_surface_is_not_missing_work(meshed) -> None:
    _, config, graph, ts, _ = meshed
    meta = graph.meta
    bare = [
        c
        for c in np.ndindex(*meta.layer_chunk_bounds(2))
        if len(graph.chunk_nodes(2, c, ts)) and not _reader(config, meta, 2, c).exists()
    ]
    assert bare  # a thin slab at the crop's edge: its nodes have no surface at mip 0
    for coords in bare:  # ...and their parents were stitched all the same
        assert _reader(config, meta, 3, ids.parent_chunk(coords, 2, 3)).exists()


def test_nodes_over_the_size_limit_are_skipped_and_reported(meshed, tmp_path) -> None:
    ts = meshed[3]
    config, graph = _fresh(meshed, tmp_path)
    assert max_triangles_of(config) == DEFAULT_MAX_TRIANGLES
    full = _stitched(config, graph)
    limit = max(len(_decode(mesh[2])[1]) for mesh in full.values()) - 1  # the largest goes over
    small = replace(
        config, raw={**config.raw, "mesh": {**config.raw["mesh"], "max_triangles": limit}}
    )
    assert max_triangles_of(small) == limit
    skipped: list[int] = []
    for layer in range(3, TOP + 1):
        skipped += mesh_layer(small, layer, timestamp=ts, workers=1, progress=False).skipped_nodes
    assert skipped
    kept = _stitched(small, graph)
    assert not set(skipped) & set(kept)
    assert set(kept) | set(skipped) == set(full)
    for node in kept:  # untouched nodes are byte-identical to the unlimited run
        assert kept[node][2] == full[node][2]
        assert len(_decode(kept[node][2])[1]) <= limit
    sharding = _sharding(config)
    for node in skipped:
        assert node_mesh(graph, small, node, ts, sharding) is None
        # an ancestor of a skipped node is never written half-way
        parent = graph.parents([node], ts).get(node)
        while parent is not None:
            assert parent not in kept
            parent = graph.parents([parent], ts).get(parent)
    bad = replace(config, raw={**config.raw, "mesh": {**config.raw["mesh"], "max_triangles": 0}})
    with pytest.raises(MeshingError, match="mesh.max_triangles is .*: give a whole number >= 1"):
        mesh_layer(bad, 3, timestamp=ts, workers=1, progress=False)
