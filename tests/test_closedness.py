"""The closedness check (from the definitions) and the defects simplification must not add."""

from __future__ import annotations

import numpy as np
import pytest
import zmesh
from test_simplify import ANISO, neurites

from meshing_core.mesh.closedness import ClosednessTally, edge_defects
from meshing_core.mesh.simplify import mesh_labels


def cube(offset=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """A closed unit cube (12 triangles, outward)."""
    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=np.float64)
    f = np.array(
        [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
         [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
    )  # fmt: skip
    return v + np.asarray(offset), f


def test_counts_follow_the_definitions():
    v, f = cube()
    assert edge_defects(v, f).closed
    # a hole: one triangle gone leaves its three edges used once
    assert edge_defects(v, f[1:]).open == 3
    # the same cube split into unwelded duplicates still counts as closed (welding first)
    dup_v = np.concatenate([v, v])
    dup_f = np.concatenate([f[:6], f[6:] + 8])
    assert edge_defects(dup_v, dup_f).closed
    # two cubes sharing one edge: that edge is used by four triangles
    v2, f2 = cube((1.0, 1.0, 0.0))
    both = edge_defects(np.concatenate([v, v2]), np.concatenate([f, f2 + 8]))
    assert both.nonmanifold == 1 and both.open == 0
    # a cube cut open on the face x = 1 is open there, and only there
    cut = f[~(v[f][:, :, 0] == 1).all(axis=1)]
    assert edge_defects(v, cut).open == 4
    assert edge_defects(v, cut, ((-5, -5, -5), (1.0, 5, 5)), 0.0).closed
    assert edge_defects(v, cut, ((-5, -5, -5), (1.2, 5, 5)), 0.1).open == 4
    tally = ClosednessTally()
    tally.add(edge_defects(v, f))
    tally.add(edge_defects(v, f[1:]))
    assert (tally.checked, tally.unclosed) == (2, 1)


@pytest.mark.parametrize("max_error", [40.0, 10.0])
def test_simplification_adds_no_open_or_nonmanifold_edge(max_error):
    """meshoptimizer's collapses can fold sheets onto one edge; the kernel repairs that.

    Measured before the repair on these neurites at 40 nm: 12 of 52 labels had 18 non-manifold
    edges the raw marching cubes did not have.
    """
    labels = neurites((96, 96, 24), 40, seed=3)
    res = np.asarray(ANISO)
    box = (np.zeros(3), (np.asarray(labels.shape) - 1) * res)
    mesher = zmesh.Mesher(ANISO)
    mesher.mesh(labels)
    meshes = mesh_labels(labels, ANISO, (0, 0, 0), max_error)
    assert len(meshes) >= 30
    for label, (vertices, faces) in meshes.items():
        raw = mesher.get(label, reduction_factor=0, voxel_centered=False)
        before = edge_defects(raw.vertices, raw.faces, box, 1e-3)
        after = edge_defects(vertices, faces, box, 1e-3)
        assert after.open <= before.open and after.nonmanifold <= before.nonmanifold, label


def test_triangles_flattened_onto_a_line_are_split_away_not_left_or_dropped():
    """A triangle whose corners snap onto one line has no area; removing it alone opens a hole."""
    from meshing_core.mesh.draco_grid import split_flat

    a, b, c, d = [0, 0, 0], [6, 0, 0], [0, 6, 0], [0, 0, 6]
    m = [3, 0, 0]  # on the edge a-b: the triangle (a, b, m) below is flat
    vertices = np.array([a, b, c, d, m], dtype=np.float64)
    faces = np.array([[0, 4, 2], [4, 1, 2], [0, 1, 4], [0, 3, 1], [1, 3, 2], [2, 3, 0]])
    directed = {tuple(e) for f in faces.tolist() for e in zip(f, f[1:] + f[:1], strict=True)}
    assert len(directed) == 3 * len(faces)  # consistently oriented ...
    assert edge_defects(vertices, faces).closed  # ... and closed, with one zero-area triangle
    fixed = split_flat(vertices, faces)
    corners = vertices[fixed]
    areas = np.linalg.norm(
        np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
    )
    assert (areas > 0).all() and len(fixed) == len(faces)
    assert edge_defects(vertices, fixed).closed
    directed = {tuple(e) for f in fixed.tolist() for e in zip(f, f[1:] + f[:1], strict=True)}
    assert len(directed) == 3 * len(fixed)  # orientation kept
    before = vertices[faces]
    area_before = np.linalg.norm(
        np.cross(before[:, 1] - before[:, 0], before[:, 2] - before[:, 0]), axis=1
    )
    assert np.isclose(areas.sum(), area_before.sum())  # the same surface


def test_stored_fragments_have_no_zero_area_triangle_and_stay_closed(gala_dir):
    """Real supervoxels through simplification and the draco grid: nothing flat is stored."""
    import h5py

    from meshing_core.mesh.draco_grid import collapse_on_grid, layer2_grid

    with h5py.File(gala_dir / "train-ws.lzf.h5", "r") as handle:
        block = np.ascontiguousarray(handle["stack"][:17, :33, :33].transpose(2, 1, 0))
    res = (10.0, 10.0, 10.0)
    grid = layer2_grid((32, 32, 16), res, (0, 0, 0))
    box = (np.zeros(3), (np.asarray(block.shape) - 1) * 10.0)
    flat_before = 0
    for label, (vertices, faces) in mesh_labels(
        block.astype(np.uint32), res, (0, 0, 0), 10.0
    ).items():
        snapped = grid.snap(vertices)[faces.astype(np.int64)]
        cross = np.cross(snapped[:, 1] - snapped[:, 0], snapped[:, 2] - snapped[:, 0])
        flat_before += int(np.count_nonzero(~cross.any(axis=1)))
        stored, tris = collapse_on_grid(vertices, faces, grid)
        corners = stored[tris.astype(np.int64)]
        area = np.linalg.norm(
            np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
        )
        assert (area > 0).all(), label
        before = edge_defects(grid.snap(vertices), faces, box, grid.bin_size)
        after = edge_defects(stored, tris, box, grid.bin_size)
        assert after.open <= before.open and after.nonmanifold <= before.nonmanifold, label
    assert flat_before > 0  # the case occurs on this block


def test_grid_points_hash_without_collisions_so_welding_never_takes_the_slow_path(monkeypatch):
    """Grid points (integers times a bin, as float64 bit patterns) vary in few bits; the row
    hash must still separate them, or every large mesh falls back to np.unique(axis=0)."""
    import meshing_core.mesh.closedness as closedness

    real_unique = np.unique

    def no_row_unique(*args, **kwargs):
        assert kwargs.get("axis") is None, "unique_rows fell back: the row hash collided"
        return real_unique(*args, **kwargs)

    monkeypatch.setattr(closedness.np, "unique", no_row_unique)
    rng = np.random.default_rng(3)
    points = rng.integers(0, 4000, size=(600_000, 3)) * 3.0 - 6000.0
    points = np.concatenate([points, points[::7], -0.0 * points[:5]])
    unique, inverse = closedness.unique_rows(points)
    assert np.array_equal(unique[inverse], points + 0.0)
    assert len(unique) == len(real_unique(points + 0.0, axis=0))
    ids = np.arange(len(points)) % 1000  # small integer ids, as triangle corners are
    keys = closedness.row_keys([ids, ids // 10, ids % 7])
    assert len(real_unique(keys)) == len(
        real_unique(np.stack([ids, ids // 10, ids % 7], 1), axis=0)
    )
