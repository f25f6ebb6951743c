"""Geometry of layer-2 meshes: seams, error bound, grid, edits over time.

Run on the example built from the real gala crop and on the synthetic volume it falls back to
without the gala files.
"""

from __future__ import annotations

from dataclasses import dataclass

import DracoPy
import igl
import numpy as np
import pytest
import zmesh

from meshing_core.config import load_config
from meshing_core.graph import open_graph
from meshing_core.mesh.layer2 import chunk_grid, chunk_labels
from meshing_core.mesh.simplify import mesh_labels
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


def _raw_meshes(config, geometry, labels, coords) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The chunk's meshes before draco, from its resolved labels: the steps ``mesh_chunk`` takes."""
    nodes = np.unique(labels)
    nodes = nodes[nodes != 0]
    compact = np.searchsorted(nodes, labels).astype(np.uint32) + 1
    compact[labels == 0] = 0
    meshes = mesh_labels(
        compact, geometry.resolution, geometry.chunk_offset_nm(coords), float(config.max_error)
    )
    return {int(nodes[k - 1]): mesh for k, mesh in meshes.items()}


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``values[i]`` where ``query == keys[i]`` (``keys`` sorted, every query present)."""
    return values[np.searchsorted(keys, query)]


@dataclass
class Slab:
    """The shared slab (the right chunk's first voxel layer = the left chunk's overlap layer).

    Computed here from the watershed and the graph alone, following DESIGN.md's overlap rule:
    the right chunk labels each voxel with its own layer-2 node; the left chunk labels it with
    its in-chunk node of the same ancestor at the overlap layer, or 0 when it has none. Voxels
    whose ancestor several in-chunk nodes share are resolved by voxel connectivity
    (``test_layer2_overlap`` covers that); they are marked ``ambiguous`` and compared nowhere.
    """

    right_node: np.ndarray  # layer-2 id in the right chunk (0: background)
    left_node: np.ndarray  # in-chunk node of the left chunk that labels it (0: none)
    root: np.ndarray  # root of right_node at the timestamp (0: background)
    ambiguous: np.ndarray  # bool


def _shared_slab(graph, svs_a, inner_a, svs_b, inner_b, a, axis: int, ts: float) -> Slab:
    n = [int(v) for v in inner_b]
    box = [slice(0, n[i]) for i in range(3)]
    at_b, at_a = list(box), list(box)
    at_b[axis], at_a[axis] = 0, int(inner_a[axis])
    slab = np.asarray(svs_b[tuple(at_b)], dtype=np.uint64)
    assert np.array_equal(np.asarray(svs_a[tuple(at_a)], dtype=np.uint64), slab)
    svs = np.unique(slab)
    l2 = graph.l2_ids(svs, ts)
    right_node = _lookup(svs, l2, slab)

    layer = graph.meta.overlap_layer(a)
    inside = np.unique(svs_a[: inner_a[0], : inner_a[1], : inner_a[2]])
    inside = np.unique(graph.l2_ids(inside[inside != 0], ts))
    inside_anc = graph.ancestors(inside, layer, ts)
    nodes = np.unique(right_node[right_node != 0])
    anc = graph.ancestors(nodes, layer, ts)
    roots = graph.roots(nodes, ts)
    label = np.zeros(len(nodes), dtype=np.uint64)
    several = np.zeros(len(nodes), dtype=bool)
    for i, ancestor in enumerate(anc.tolist()):
        candidates = inside[inside_anc == ancestor]
        label[i] = candidates[0] if len(candidates) == 1 else 0
        several[i] = len(candidates) > 1
    keys = np.concatenate([np.zeros(1, dtype=np.uint64), nodes])

    def at(values: np.ndarray, zero) -> np.ndarray:
        values = np.asarray(values)
        return _lookup(
            keys, np.concatenate([np.array([zero], dtype=values.dtype), values]), right_node
        )

    return Slab(right_node, at(label, 0), at(roots, 0), at(several, False))


def _same_labelling(slab: Slab, root: int) -> bool:
    """Both chunks label the same slab voxels ``root``, split into nodes the same way.

    Then marching cubes puts the same vertices on the plane for ``root`` from both sides (they
    are locked through simplification): in-slab edges between a voxel of one of its nodes and
    any other label.
    """
    right = slab.root == root
    left = (slab.left_node != 0) & right
    if not np.array_equal(left, right) or slab.ambiguous[right].any():
        return False
    pairs = np.unique(np.stack([slab.right_node[right], slab.left_node[right]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_seams_match_per_object(meshed) -> None:
    """Per root, the vertices on a shared chunk plane are the same from both chunks.

    The rule guarantees this only for roots that both chunks label on the same slab voxels: an
    object whose piece on the right side of the plane has no in-chunk node of the same
    overlap-layer ancestor on the left is 0 in the left chunk's overlap, and only the right chunk
    closes it on the plane (the ChunkedGraph's own meshing does the same). Those roots are
    compared; they must be most roots crossing the plane. Compared before quantisation (exact
    floats), then through draco: each such vertex, snapped to the shared grid, is a decoded
    vertex of both chunks' fragments of that root.
    """
    config, graph, ts, fragments = meshed
    geometry = mip_geometry(graph.meta, config.watershed, config.mip)
    checked = compared_total = 0
    for a, b in PAIRS:
        axis = next(i for i in range(3) if a[i] != b[i])
        start_b, _, _ = geometry.chunk_box(b)
        plane = float(start_b[axis] * geometry.resolution[axis])
        svs_a, inner_a = read_chunk(config.watershed, geometry, a)
        svs_b, inner_b = read_chunk(config.watershed, geometry, b)
        labels_a = chunk_labels(graph, svs_a, inner_a, a, ts)
        labels_b = chunk_labels(graph, svs_b, inner_b, b, ts)
        slab = _shared_slab(graph, svs_a, inner_a, svs_b, inner_b, a, axis, ts)

        # The code under test labels the left chunk's overlap slab as the rule says.
        at_a = [slice(0, int(v)) for v in inner_b]
        at_a[axis] = int(inner_a[axis])
        coded = labels_a[tuple(at_a)]
        clear = ~slab.ambiguous
        assert np.array_equal(coded[clear], slab.left_node[clear]), (a, b)

        raw_a = _raw_meshes(config, geometry, labels_a, a)
        raw_b = _raw_meshes(config, geometry, labels_b, b)
        assert set(raw_a) == set(fragments[a]) and set(raw_b) == set(fragments[b])
        nodes = sorted(set(raw_a) | set(raw_b))
        roots = dict(
            zip(nodes, graph.roots(np.array(nodes, dtype=np.uint64), ts).tolist(), strict=True)
        )
        limit = (start_b + geometry.block_shape - 1) * geometry.resolution
        left = _on_plane(raw_a, roots, axis, plane, limit)
        right = _on_plane(raw_b, roots, axis, plane, limit)

        crossing = set(np.unique(slab.root).tolist()) - {0}
        compared = sorted(r for r in crossing if _same_labelling(slab, r))
        assert compared and 2 * len(compared) > len(crossing), (a, b, len(compared), crossing)
        assert set(left) | set(right) <= crossing, (a, b)
        grid = chunk_grid(geometry, b)
        assert chunk_grid(geometry, a).bin_size == grid.bin_size
        for root in compared:
            vertices = left.get(root, set())
            assert vertices == right.get(root, set()), (a, b, root)
            snapped = set(map(tuple, grid.snap(np.array(sorted(vertices))).tolist()))
            for side in (a, b):
                decoded: set[tuple[float, float, float]] = set()
                for node, blob in fragments[side].items():
                    if roots[node] == root:
                        decoded.update(map(tuple, _decode(blob)[0].tolist()))
                assert snapped <= decoded, (side, root)
            checked += len(vertices)
        compared_total += len(compared)
    assert compared_total >= len(PAIRS)
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
