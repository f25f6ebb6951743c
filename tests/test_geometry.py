"""Geometry of layer-2 meshes on the real example: seams, error bound, grid, edits over time."""

from __future__ import annotations

import shutil
from pathlib import Path

import DracoPy
import igl
import numpy as np
import pytest
import zmesh

from meshing_core.config import load_config
from meshing_core.graph.embedded import open_graph
from meshing_core.mesh.layer2 import chunk_grid, chunk_labels
from meshing_core.mesh.simplify import mesh_labels
from meshing_core.mesh.watershed import mip_geometry, read_chunk
from meshing_core.run.layer import mesh_layer, shard_dir, shard_name
from meshing_core.store import files
from meshing_core.store.setup import setup_meshes
from meshing_core.store.sharding import ShardReader, bytes_source

# Chunks checked: interior ones, so every face has a neighbour.
PAIRS = [
    ((2, 1, 1), (3, 1, 1)),
    ((2, 1, 1), (2, 2, 1)),
    ((2, 1, 1), (2, 1, 2)),
    ((4, 2, 0), (4, 2, 1)),
]


def _decode(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    mesh = DracoPy.decode(blob)
    return np.asarray(mesh.points, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64)


def _fragments(config, meta, coords) -> dict[int, bytes]:
    data = files.read_file(shard_dir(config, 2), shard_name(meta, 2, coords))
    if data is None:
        return {}
    spec = files.read_json(config.mesh_cloudpath, "info")["sharding"]["2"]
    return dict(ShardReader(bytes_source(data), spec).items())


@pytest.fixture(scope="module")
def dataset(example_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("geometry") / "example"
    shutil.copytree(example_dir, root)
    config = load_config(root)
    setup_meshes(config)
    graph = open_graph(config)
    return config, graph


@pytest.fixture(scope="module")
def meshed(dataset):
    """The chunks of ``PAIRS`` meshed after both edits."""
    config, graph = dataset
    ts = max(graph.history()) + 1.0
    chunks = sorted({c for pair in PAIRS for c in pair})
    for c in chunks:
        mesh_layer(
            config, 2, chunk_start=c, chunk_end=tuple(v + 1 for v in c), timestamp=ts,
            workers=1, progress=False,
        )  # fmt: skip
    return config, graph, ts, {c: _fragments(config, graph.meta, c) for c in chunks}


def _raw_meshes(config, graph, geometry, coords, ts) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The chunk's meshes before draco: the same steps ``mesh_chunk`` takes."""
    svs, inner = read_chunk(config.watershed, geometry, coords)
    labels = chunk_labels(graph, svs, inner, coords, ts)
    nodes = np.unique(labels)
    nodes = nodes[nodes != 0]
    compact = np.searchsorted(nodes, labels).astype(np.uint32) + 1
    compact[labels == 0] = 0
    meshes = mesh_labels(
        compact, geometry.resolution, geometry.chunk_offset_nm(coords), float(config.max_error)
    )
    return {int(nodes[k - 1]): mesh for k, mesh in meshes.items()}


def _on_plane(
    meshes: dict[int, tuple[np.ndarray, np.ndarray]],
    roots: dict[int, int],
    axis: int,
    plane: float,
    limit: np.ndarray,
) -> dict[int, set[tuple[float, float, float]]]:
    """Vertices on the plane, up to ``limit`` on the other axes.

    Beyond the last in-chunk voxel row of another axis, the plane's voxels belong to a third
    chunk (the shells of both chunks), which each chunk labels by its own graph view; only
    the face the two chunks really share must match.
    """
    out: dict[int, set[tuple[float, float, float]]] = {}
    others = [i for i in range(3) if i != axis]
    for node, (vertices, _) in meshes.items():
        keep = vertices[:, axis] == np.float32(plane)
        for o in others:
            keep &= vertices[:, o] <= np.float32(limit[o])
        on = vertices[keep].astype(np.float64)
        if len(on):
            out.setdefault(roots[node], set()).update(map(tuple, on.tolist()))
    return out


def test_seams_match_per_object(meshed) -> None:
    """Per root, the vertices on a shared chunk plane are the same from both chunks.

    Compared before quantisation (exact floats), then through draco: each such vertex, snapped to
    the shared grid, is a decoded vertex of both chunks' fragments of that root.
    """
    config, graph, ts, fragments = meshed
    geometry = mip_geometry(graph.meta, config.watershed, config.mip)
    checked = 0
    for a, b in PAIRS:
        axis = next(i for i in range(3) if a[i] != b[i])
        start_b, _, _ = geometry.chunk_box(b)
        plane = float(start_b[axis] * geometry.resolution[axis])
        raw_a = _raw_meshes(config, graph, geometry, a, ts)
        raw_b = _raw_meshes(config, graph, geometry, b, ts)
        assert set(raw_a) == set(fragments[a]) and set(raw_b) == set(fragments[b])
        nodes = sorted(set(raw_a) | set(raw_b))
        roots = dict(
            zip(nodes, graph.roots(np.array(nodes, dtype=np.uint64), ts).tolist(), strict=True)
        )
        limit = (start_b + geometry.block_shape - 1) * geometry.resolution
        left = _on_plane(raw_a, roots, axis, plane, limit)
        right = _on_plane(raw_b, roots, axis, plane, limit)
        assert left.keys() == right.keys(), (a, b)
        grid = chunk_grid(geometry, b)
        assert chunk_grid(geometry, a).bin_size == grid.bin_size
        for root, vertices in left.items():
            assert vertices == right[root], (a, b, root)
            snapped = set(map(tuple, grid.snap(np.array(sorted(vertices))).tolist()))
            for side in (a, b):
                decoded: set[tuple[float, float, float]] = set()
                for node, blob in fragments[side].items():
                    if roots[node] == root:
                        decoded.update(map(tuple, _decode(blob)[0].tolist()))
                assert snapped <= decoded, (side, root)
            checked += len(vertices)
    assert checked > 100  # the planes really are crossed by objects


def test_error_bound_both_ways_and_grid_alignment(meshed) -> None:
    config, graph, ts, fragments = meshed
    geometry = mip_geometry(graph.meta, config.watershed, config.mip)
    for coords in [(2, 1, 1), (4, 2, 1)]:
        grid = chunk_grid(geometry, coords)
        bound = float(config.max_error) + grid.bin_size
        svs, inner = read_chunk(config.watershed, geometry, coords)
        labels = chunk_labels(graph, svs, inner, coords, ts)
        offset = geometry.chunk_offset_nm(coords)
        mesher = zmesh.Mesher(tuple(float(r) for r in geometry.resolution))
        mesher.mesh(labels)
        assert set(fragments[coords]) == {int(i) for i in mesher.ids()} - {0}
        for node, blob in fragments[coords].items():
            raw = mesher.get(node, normals=False, reduction_factor=0, max_error=0,
                             voxel_centered=False)  # fmt: skip
            raw_v = raw.vertices.astype(np.float64) + offset
            raw_f = raw.faces.astype(np.int64)
            points, faces = _decode(blob)
            steps = (points - grid.origin) / grid.bin_size
            assert np.array_equal(steps, np.round(steps)), node
            d_raw, _, _ = igl.point_mesh_squared_distance(raw_v, points, faces)
            assert np.sqrt(d_raw.max()) <= bound, (node, np.sqrt(d_raw.max()))
            d_dec, _, _ = igl.point_mesh_squared_distance(points, raw_v, raw_f)
            assert np.sqrt(d_dec.max()) <= bound, (node, np.sqrt(d_dec.max()))


def _changed_chunk(graph, before: float, after: float) -> tuple[int, int, int]:
    for coords in np.ndindex(*graph.meta.layer_chunk_bounds(2)):
        old = graph.chunk_nodes(2, coords, before)
        new = graph.chunk_nodes(2, coords, after)
        if not np.array_equal(old, new):
            return tuple(int(c) for c in coords)  # type: ignore[return-value]
    raise AssertionError("the example's edits changed no layer-2 chunk")


def test_meshing_before_and_after_an_edit_uses_the_ids_of_that_time(dataset) -> None:
    config, graph = dataset
    history = graph.history()
    assert len(history) >= 2
    before = (history[0] + history[1]) / 2
    after = max(history) + 1.0
    coords = _changed_chunk(graph, before, after)
    geometry = mip_geometry(graph.meta, config.watershed, config.mip)
    svs, inner = read_chunk(config.watershed, geometry, coords)
    seen = {}
    for ts in (before, after):
        mesh_layer(
            config, 2, chunk_start=coords, chunk_end=tuple(v + 1 for v in coords), timestamp=ts,
            workers=1, progress=False,
        )  # fmt: skip
        keys = set(_fragments(config, graph.meta, coords))
        nodes = set(graph.chunk_nodes(2, coords, ts).tolist())
        present = set(np.unique(chunk_labels(graph, svs, inner, coords, ts)).tolist()) - {0}
        assert keys <= nodes
        assert keys == nodes & present
        seen[ts] = keys
    assert seen[before] != seen[after]
    assert seen[before] - seen[after]  # retired ids gone from the post-edit shard
    assert seen[after] - seen[before]  # and new ids in it
