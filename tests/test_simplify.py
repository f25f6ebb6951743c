"""The meshing kernel: measured error bound, identical seams, determinism, empty input."""

from __future__ import annotations

import h5py
import igl
import numpy as np
import pytest
import scipy.ndimage as ndi
import zmesh

from meshing_core.errors import MeshingError
from meshing_core.mesh import meshopt_ffi, simplify
from meshing_core.mesh.simplify import KernelInputError, mesh_labels
from meshing_core.mesh.verify_error import far_vertices

ANISO = (8.0, 8.0, 40.0)


def neurites(shape: tuple[int, int, int], count: int, seed: int) -> np.ndarray:
    """Dense neurite-like labels: random wandering tubes, every voxel given its nearest tube."""
    rng = np.random.default_rng(seed)
    skeleton = np.zeros(shape, dtype=np.uint64)
    limit = np.asarray(shape)
    for label in range(1, count + 1):
        point = rng.uniform(0, 1, 3) * limit
        step = rng.normal(size=3)
        for _ in range(300):
            step += rng.normal(scale=0.2, size=3)
            step /= np.linalg.norm(step)
            point = point + step * np.array([1.5, 1.5, 0.3])
            voxel = np.floor(point).astype(int)
            if (voxel < 0).any() or (voxel >= limit).any():
                break
            skeleton[tuple(voxel)] = label + 1000  # ids not 1..n on purpose
    _, nearest = ndi.distance_transform_edt(skeleton == 0, sampling=ANISO, return_indices=True)
    return np.ascontiguousarray(skeleton[tuple(nearest)])


@pytest.fixture(scope="module")
def synthetic() -> np.ndarray:
    return neurites((96, 96, 24), 40, seed=3)


@pytest.fixture(scope="module")
def gala_labels(gala_dir) -> np.ndarray:
    with h5py.File(gala_dir / "train-ws.lzf.h5", "r") as f:
        zyx = f["stack"][:, :64, :80]
    return np.ascontiguousarray(zyx.transpose(2, 1, 0).astype(np.uint64))


def raw_meshes(labels: np.ndarray, resolution) -> dict[int, zmesh.Mesh]:
    """Unsimplified marching-cubes meshes, by an independent zmesh call."""
    mesher = zmesh.Mesher(resolution)
    mesher.mesh(labels)
    return {
        int(i): mesher.get(int(i), reduction_factor=0, voxel_centered=False)
        for i in mesher.ids()
        if i
    }


def worst_deviation(labels, resolution, offset, meshes, max_error) -> float:
    """Largest distance (nm) of any raw MC vertex to its label's mesh, via libigl directly."""
    raw = raw_meshes(labels, resolution)
    assert set(meshes) == {k for k, m in raw.items() if len(m.faces)}
    worst = 0.0
    for label, (vertices, faces) in meshes.items():
        assert vertices.dtype == np.float32 and faces.dtype == np.uint32
        assert faces.max() < len(vertices)
        points = raw[label].vertices.astype(np.float64) + np.asarray(offset, dtype=np.float64)
        sqr, _, _ = igl.point_mesh_squared_distance(
            points, vertices.astype(np.float64), faces.astype(np.int64)
        )
        worst = max(worst, float(np.sqrt(sqr.max())))
    return worst


@pytest.mark.parametrize("max_error", [40.0, 10.0])
def test_bound_holds_on_synthetic_neurites(synthetic, max_error):
    offset = (1024.0, 2048.0, 400.0)
    meshes = mesh_labels(synthetic, ANISO, offset, max_error)
    assert len(meshes) >= 30
    assert worst_deviation(synthetic, ANISO, offset, meshes, max_error) <= max_error + 1e-6
    raw_faces = sum(len(m.faces) for m in raw_meshes(synthetic, ANISO).values())
    ours = sum(len(f) for _, f in meshes.values())
    assert ours < raw_faces / 5  # it did simplify


def test_bound_holds_on_gala(gala_labels):
    resolution = (8.0, 8.0, 8.0)
    meshes = mesh_labels(gala_labels, resolution, (0, 0, 0), 16.0)
    assert len(meshes) > 20
    assert worst_deviation(gala_labels, resolution, (0, 0, 0), meshes, 16.0) <= 16.0 + 1e-6


def test_isotropic_voxels_ask_meshoptimizer_for_more_of_the_bound(gala_labels):
    """On isotropic voxels a larger target keeps fewer triangles; the bound is still measured."""
    assert simplify.target_fraction_for((10.0, 10.0, 10.0)) == simplify.ISOTROPIC_TARGET_FRACTION
    assert simplify.target_fraction_for(ANISO) == simplify.DEFAULT_TARGET_FRACTION
    resolution = (10.0, 10.0, 10.0)
    chosen = mesh_labels(gala_labels, resolution, (0, 0, 0), 10.0)
    cautious = mesh_labels(gala_labels, resolution, (0, 0, 0), 10.0, target_fraction=0.375)
    triangles = [sum(len(f) for _, f in m.values()) for m in (chosen, cautious)]
    assert triangles[0] < 0.85 * triangles[1], triangles
    assert worst_deviation(gala_labels, resolution, (0, 0, 0), chosen, 10.0) <= 10.0 + 1e-6


@pytest.mark.parametrize("target", [10.0, 80.0])
def test_far_vertices_matches_brute_force(synthetic, target):
    """The batched, mostly-certified check finds exactly the vertices a plain query finds."""
    batch, expected = [], []
    for raw in raw_meshes(synthetic, ANISO).values():
        vertices = np.ascontiguousarray(raw.vertices, dtype=np.float32)
        faces = np.ascontiguousarray(raw.faces, dtype=np.uint32)
        kept = meshopt_ffi.simplify(vertices, faces, target)
        points = vertices.astype(np.float64)
        sqr, _, _ = igl.point_mesh_squared_distance(points, points, kept.astype(np.int64))
        batch.append((vertices, kept))
        expected.append(np.flatnonzero(sqr > 40.0**2))
    found = far_vertices(batch, 40.0)
    assert sum(len(e) for e in expected) > (0 if target < 40 else 100)
    for mine, theirs in zip(found, expected, strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_bound_holds_when_repairs_run_out(synthetic, monkeypatch):
    monkeypatch.setattr(simplify, "MAX_REPAIR_ROUNDS", 0)
    meshes = mesh_labels(synthetic, ANISO, (0, 0, 0), 40.0)
    raw = raw_meshes(synthetic, ANISO)
    for label, (_, faces) in meshes.items():
        assert len(faces) == len(raw[label].faces)  # kept raw: error zero
    assert worst_deviation(synthetic, ANISO, (0, 0, 0), meshes, 40.0) == 0.0


def test_zero_error_keeps_the_raw_surface(synthetic):
    meshes = mesh_labels(synthetic[:40, :40, :10], ANISO, (0, 0, 0), 0.0)
    raw = raw_meshes(synthetic[:40, :40, :10], ANISO)
    for label, (vertices, faces) in meshes.items():
        assert len(faces) == len(raw[label].faces)
        assert len(vertices) == len(raw[label].vertices)


def test_vertices_are_absolute_nm():
    labels = np.zeros((10, 10, 6), dtype=np.uint64)
    labels[2:5, 3:7, 1:3] = 7
    meshes = mesh_labels(labels, ANISO, (1000.0, 2000.0, 4000.0), 0.0)  # unsimplified
    vertices, faces = meshes[7]
    assert len(faces) > 0
    # voxel_centered=False: the surface runs half-way between voxel corners at index * resolution
    np.testing.assert_allclose(vertices.min(axis=0), [1000 + 1.5 * 8, 2000 + 2.5 * 8, 4000 + 20])
    np.testing.assert_allclose(vertices.max(axis=0), [1000 + 4.5 * 8, 2000 + 6.5 * 8, 4000 + 100])


def _plane_vertices(vertices: np.ndarray, axis: int, value: float) -> set[tuple]:
    on = np.abs(vertices[:, axis] - value) < 1e-3
    return {tuple(v) for v in vertices[on].tolist()}


def _plane_border_edges(vertices, faces, axis: int, value: float) -> set[frozenset]:
    """Edges used by one triangle only (the open border) with both ends on the plane."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    border = unique[counts == 1]
    on = np.abs(vertices[:, axis] - value) < 1e-3
    border = border[on[border].all(axis=1)]
    return {frozenset((tuple(vertices[a]), tuple(vertices[b]))) for a, b in border.tolist()}


@pytest.mark.parametrize("axis", [0, 2])
def test_seams_identical_across_a_split(synthetic, axis):
    """Mesh two halves (the first with a +1 voxel overlap): shared-plane geometry must match."""
    split = synthetic.shape[axis] // 2
    low = np.take(synthetic, np.arange(0, split + 1), axis=axis)
    high = np.take(synthetic, np.arange(split, synthetic.shape[axis]), axis=axis)
    high_offset = np.zeros(3)
    high_offset[axis] = split * ANISO[axis]
    a = mesh_labels(low, ANISO, (0, 0, 0), 40.0)
    b = mesh_labels(high, ANISO, high_offset, 40.0)
    plane = split * ANISO[axis]
    shared = 0
    for label in sorted(set(a) | set(b)):
        va = _plane_vertices(a[label][0], axis, plane) if label in a else set()
        vb = _plane_vertices(b[label][0], axis, plane) if label in b else set()
        assert va == vb, f"label {label}: seam vertices differ"
        if va:
            ea = _plane_border_edges(*a[label], axis, plane)
            eb = _plane_border_edges(*b[label], axis, plane)
            assert ea == eb and ea, f"label {label}: seam edges differ"
        shared += len(va)
    assert shared > 100
    # and the halves were really simplified, not left raw
    assert (
        sum(len(f) for _, f in a.values())
        < sum(len(m.faces) for m in raw_meshes(low, ANISO).values()) / 5
    )


def test_deterministic_and_independent_of_other_labels(synthetic):
    first = mesh_labels(synthetic, ANISO, (8.0, 8.0, 40.0), 40.0)
    again = mesh_labels(synthetic.copy(order="F"), ANISO, (8.0, 8.0, 40.0), 40.0)
    assert list(first) == sorted(first) == list(again)
    for label in first:
        np.testing.assert_array_equal(first[label][0], again[label][0])
        np.testing.assert_array_equal(first[label][1], again[label][1])
    # one label alone, and all labels renumbered in reverse order: the same mesh
    label = sorted(first)[len(first) // 2]
    alone = mesh_labels(np.where(synthetic == label, label, 0), ANISO, (8.0, 8.0, 40.0), 40.0)
    ids = np.unique(synthetic)
    renumbered = np.zeros(int(ids.max()) + 1, dtype=np.uint32)
    renumbered[ids] = np.arange(len(ids), 0, -1, dtype=np.uint32)
    reordered = mesh_labels(renumbered[synthetic], ANISO, (8.0, 8.0, 40.0), 40.0)
    for other in (alone[label], reordered[int(renumbered[label])]):
        np.testing.assert_array_equal(first[label][0], other[0])
        np.testing.assert_array_equal(first[label][1], other[1])


def test_empty_inputs():
    assert mesh_labels(np.zeros((8, 8, 8), dtype=np.uint64), ANISO, (0, 0, 0), 40.0) == {}
    assert mesh_labels(np.zeros((0, 4, 4), dtype=np.uint64), ANISO, (0, 0, 0), 40.0) == {}
    # one label filling the block has no surface inside it
    assert mesh_labels(np.full((6, 6, 6), 5, dtype=np.uint32), ANISO, (0, 0, 0), 40.0) == {}


@pytest.mark.parametrize(
    "labels, resolution, max_error, match",
    [
        (np.zeros((4, 4), dtype=np.uint64), ANISO, 40.0, "3-d"),
        (np.zeros((4, 4, 4), dtype=np.float32), ANISO, 40.0, "integer"),
        (np.zeros((4, 4, 4), dtype=np.uint64), (8.0, 0.0, 40.0), 40.0, "resolution"),
        (np.zeros((4, 4, 4), dtype=np.uint64), ANISO, -1.0, "max_error"),
        (np.full((4, 4, 4), -1, dtype=np.int64), ANISO, 40.0, "non-negative"),
    ],
)
def test_bad_input_is_a_one_line_user_error(labels, resolution, max_error, match):
    with pytest.raises(KernelInputError, match=match) as err:
        mesh_labels(labels, resolution, (0, 0, 0), max_error)
    assert isinstance(err.value, MeshingError) and "\n" not in str(err.value)


def test_a_triangle_flattened_into_a_seam_plane_is_repaired() -> None:
    """Simplification may press a surface into the chunk's own first voxel layer, where the
    neighbour chunk's surface reaches too: such a triangle counts as damage, a raw one does not."""
    res = np.array([8.0, 8.0, 40.0])
    shape = (6, 6, 6)  # a chunk of 4 voxels per axis and its margin: own layers at 1 and 4
    grid = np.array([[1, 0, 0], [1, 2, 0], [1, 0, 2], [2.5, 2, 2], [1, 3, 3]], dtype=float)
    vertices = (grid * res).astype(np.float32)
    planes = simplify.seam_planes(vertices, shape, res)
    assert planes is not None and planes.tolist() == [1, 1, 1, 0, 1]  # x = 1: bit 0
    raw = np.array([[0, 1, 3], [1, 2, 3], [2, 0, 3], [1, 4, 2]], dtype=np.uint32)
    simplified = np.array([[0, 1, 2], [1, 4, 2]], dtype=np.uint32)  # (0, 1, 2) is new, in x = 1
    locked = np.zeros(len(vertices), dtype=np.uint8)
    found = simplify.topology_damage(vertices, raw, simplified, locked, planes=planes)
    assert {0, 1, 2} <= set(found.tolist())
    # the raw mesh's own triangle in that plane, (1, 4, 2), is not damage
    assert simplify.topology_damage(vertices, raw, raw, locked, planes=planes).size == 0
