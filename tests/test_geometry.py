"""Geometry of layer-2 meshes: seams, error bound, grid, edits over time.

Run on the example built from the real gala crop and on the synthetic volume it falls back to
without the gala files.
"""

from __future__ import annotations

import DracoPy
import igl
import numpy as np
import pytest
import zmesh

from meshing_core.config import load_config
from meshing_core.graph import open_graph
from meshing_core.mesh.closedness import edge_uses, weld
from meshing_core.mesh.layer2 import chunk_grid, chunk_labels
from meshing_core.mesh.overlap import owned_faces
from meshing_core.mesh.watershed import mip_geometry, read_chunk
from meshing_core.run.layer import mesh_layer
from meshing_core.run.setup import setup_meshes
from meshing_core.store import files
from meshing_core.store.layout import chunk_shard_name as shard_name
from meshing_core.store.layout import initial_dir as shard_dir
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


@pytest.fixture(scope="module", params=["gala", "synthetic"])
def dataset(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, example_from):
    """The example dataset, from the real gala crop and from the synthetic fallback."""
    root = example_from(
        request.param, tmp_path_factory.mktemp(f"geometry-{request.param}") / "example"
    )
    config = load_config(root)
    assert config.name == "example"
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


def test_neighbouring_chunks_meet_without_cracks(meshed) -> None:
    """Per object, the fragments of two chunks sharing a face leave no open edge on that face.

    Each seam cube is meshed by one chunk (``mesh.overlap``); the pieces meet on cube faces.
    Checked on the shared face away from its borders (there a third chunk takes part),
    after draco, as a viewer reads the fragments (exactly coincident vertices welded).
    """
    config, graph, ts, fragments = meshed
    geometry = mip_geometry(graph.meta, config.watershed, config.mip)
    res = geometry.resolution
    band = float(res.max()) + chunk_grid(geometry, PAIRS[0][0]).bin_size
    crossing = 0
    for a, b in PAIRS:
        axis = next(i for i in range(3) if a[i] != b[i])
        start, inner, _ = geometry.chunk_box(b)
        plane = float(start[axis] * res[axis])
        lo, hi = start * res + band, inner * res - band  # the shared face's interior
        nodes = np.array(sorted(set(fragments[a]) | set(fragments[b])), dtype=np.uint64)
        root_of = dict(zip(nodes.tolist(), graph.roots(nodes, ts).tolist(), strict=True))
        by_root: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for side in (a, b):
            for node, blob in fragments[side].items():
                by_root.setdefault(root_of[node], []).append(_decode(blob))
        for parts in by_root.values():
            counts = np.cumsum([0] + [len(v) for v, _ in parts])
            points, tris = weld(
                np.concatenate([v for v, _ in parts]),
                np.concatenate([f + counts[i] for i, (_, f) in enumerate(parts)]),
            )
            edges, uses = edge_uses(tris)
            ends = points[edges[uses == 1]]  # (n, 2, 3)
            near = np.all(np.abs(ends[:, :, axis] - plane) <= band, axis=1)
            others = [i for i in range(3) if i != axis]
            inside = np.all(
                [(ends[:, :, o] > lo[o]).all(axis=1) & (ends[:, :, o] < hi[o]).all(axis=1)
                 for o in others], axis=0,
            )  # fmt: skip
            assert not np.any(near & inside), (a, b, ends[near & inside][:3].tolist())
            crossing += bool(np.any(np.abs(points[:, axis] - plane) <= band))
    assert crossing >= len(PAIRS)  # objects really cross the shared faces


def test_error_bound_both_ways_and_grid_alignment(meshed) -> None:
    """Each fragment against the raw marching cubes of the cubes its chunk owns, both ways."""
    config, graph, ts, fragments = meshed
    geometry = mip_geometry(graph.meta, config.watershed, config.mip)
    for coords in [(2, 1, 1), (4, 2, 1)]:
        grid = chunk_grid(geometry, coords)
        bound = float(config.max_error) + grid.bin_size
        block = read_chunk(config.watershed, geometry, coords)
        chunk = chunk_labels(graph, block, ts)
        offset = block.offset_nm(geometry.resolution)
        mesher = zmesh.Mesher(tuple(float(r) for r in geometry.resolution))
        mesher.mesh(chunk.labels)
        assert set(fragments[coords]) <= {int(i) for i in mesher.ids()} - {0}
        assert len(fragments[coords]) >= 0.9 * (len(mesher.ids()) - 1)
        for node, blob in fragments[coords].items():
            raw = mesher.get(node, normals=False, reduction_factor=0, max_error=0,
                             voxel_centered=False)  # fmt: skip
            owned = owned_faces(
                raw.vertices, raw.faces, geometry.resolution, chunk.roots,
                chunk.root_of[node], chunk.box,
            )  # fmt: skip
            raw_f = raw.faces[owned].astype(np.int64)
            raw_v = raw.vertices.astype(np.float64) + offset
            used = np.unique(raw_f)
            points, faces = _decode(blob)
            steps = (points - grid.origin) / grid.bin_size
            assert np.array_equal(steps, np.round(steps)), node
            d_raw, _, _ = igl.point_mesh_squared_distance(raw_v[used], points, faces)
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
    block = read_chunk(config.watershed, geometry, coords)
    seen = {}
    for ts in (before, after):
        mesh_layer(
            config, 2, chunk_start=coords, chunk_end=tuple(v + 1 for v in coords), timestamp=ts,
            workers=1, progress=False,
        )  # fmt: skip
        keys = set(_fragments(config, graph.meta, coords))
        nodes = set(graph.chunk_nodes(2, coords, ts).tolist())
        present = set(np.unique(chunk_labels(graph, block, ts).labels).tolist()) - {0}
        assert keys <= nodes
        assert keys == nodes & present
        seen[ts] = keys
    assert seen[before] != seen[after]
    assert seen[before] - seen[after]  # retired ids gone from the post-edit shard
    assert seen[after] - seen[before]  # and new ids in it
