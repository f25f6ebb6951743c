"""Draco grid maths (hand-computed cases) and alignment of decoded vertices."""

from __future__ import annotations

import DracoPy
import numpy as np
import pytest

from meshing_core.mesh.draco_grid import (
    _bits_bin_range,
    collapse_on_grid,
    encode_draco,
    layer2_grid,
    requantised_grid,
    split_flat,
)


def test_layer2_grid_anisotropic_hand_computed() -> None:
    # min_range = max(33*4, 33*4, 17*40) = 680; max_bin = floor(4/sqrt 2) = 2
    # bits = ceil(log2(680/2 + 1)) = 9; bin = ceil(680/511) = 2; range = 1022 >= 682
    grid = layer2_grid((32, 32, 16), (4, 4, 40), (1001, 2003, 400))
    assert (grid.bits, grid.bin_size, grid.range) == (9, 2.0, 1022.0)
    # origin one voxel below the chunk (its margin), on the lattice: low - low % bin
    assert grid.origin.tolist() == [996.0, 1998.0, 360.0]
    # the range still reaches the +1 overlap above: 400 + 17 * 40 + bin - 360 = 722 <= 1022


def test_layer2_grid_typical_mip2_block() -> None:
    # min_range = 65*40 = 2600; max_bin = floor(8/sqrt 2) = 5; bits = ceil(log2(521)) = 10
    # bin = ceil(2600/1023) = 3; range = 3069 >= 2603
    grid = layer2_grid((64, 64, 64), (8, 8, 40), (512, 1024, 2560))
    assert (grid.bits, grid.bin_size, grid.range) == (10, 3.0, 3069.0)
    assert grid.origin.tolist() == [504.0, 1014.0, 2520.0]  # (offset - res) down to the lattice


def test_bin_grows_by_one_when_range_too_tight() -> None:
    # bits = ceil(log2(6/3 + 1)) = 2 -> 3 bins; bin = 2, range 6 < 6 + 2: bin 3, range 9
    assert _bits_bin_range(6, 3) == (2, 3.0, 9.0)


def test_bits_grow_when_bin_is_already_max() -> None:
    # bits = ceil(log2(6/2 + 1)) = 2; bin = 2 == max_bin and range 6 < 8: one more bit,
    # 7 bins: bin = ceil(6/7) = 1, range 7 >= 6 + 1
    assert _bits_bin_range(6, 2) == (3, 1.0, 7.0)


def test_requantised_grid_hand_computed() -> None:
    # layer-3 block 64x64x32 at 4x4x40, old bin 2: min_range = max(256, 256, 1280) + 4 = 1284
    # bits = ceil(log2(1284/2 + 1)) = 10; bin = ceil(1284/1023) = 2; range 2046 >= 1286
    grid = requantised_grid((64, 64, 32), (4, 4, 40), (1001, 2003, 400), old_bin=2)
    assert (grid.bits, grid.bin_size, grid.range) == (10, 2.0, 2046.0)
    # origin = low - low % bin with low = offset - res - old_bin (the layer-2 margin below)
    assert grid.origin.tolist() == [994.0, 1996.0, 358.0]


def test_bits_are_added_when_the_margin_does_not_fit() -> None:
    # one voxel of 10 nm: min_range = 2 * 10 = 20, max_bin 7 -> the ChunkedGraph's rule gives
    # bits 3, bin 4, range 28. The margin: origin 0 (10 - 10), reach 10 + 20 + 4 = 34 > 28, so
    # one more bit with the same bin: range 4 * 15 = 60
    assert _bits_bin_range(20, 7) == (3, 4.0, 28.0)
    grid = layer2_grid((1, 1, 1), (10, 10, 10), (10, 10, 10))
    assert (grid.bits, grid.bin_size, grid.range) == (4, 4.0, 60.0)
    assert grid.origin.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("offset", [(0, 0, 0), (1001, 2003, 400), (123457, 98765, 43210)])
def test_decoded_vertices_sit_on_the_grid(offset: tuple[int, int, int]) -> None:
    grid = layer2_grid((32, 32, 16), (4, 4, 40), offset)
    rng = np.random.default_rng(7)
    span = np.array([33 * 4, 33 * 4, 17 * 40])
    vertices = (rng.random((198, 3)) * span + np.asarray(offset)).astype(np.float32)
    faces = np.arange(198, dtype=np.uint32).reshape(-1, 3)
    mesh = DracoPy.decode(encode_draco(vertices, faces, grid))
    points = np.asarray(mesh.points, dtype=np.float64)
    steps = (points - grid.origin) / grid.bin_size
    assert np.array_equal(steps, np.round(steps))  # origin + k * bin exactly
    # and each input vertex went to its nearest grid point
    assert set(map(tuple, points)) == set(map(tuple, grid.snap(vertices)))
    assert mesh.encoding_options.quantization_bits == grid.bits
    assert mesh.encoding_options.quantization_range == grid.range


def test_shared_plane_snaps_identically_from_both_chunks() -> None:
    res, block = (4, 4, 40), (32, 32, 16)
    left = layer2_grid(block, res, (0, 0, 0))
    right = layer2_grid(block, res, (32 * 4, 0, 0))
    rng = np.random.default_rng(3)
    plane = np.column_stack(
        [np.full(50, 128.0), rng.random(50) * 128, rng.random(50) * 640]
    ).astype(np.float32)
    assert np.array_equal(left.snap(plane), right.snap(plane))


def test_encoding_is_deterministic_and_rejects_out_of_grid_meshes() -> None:
    grid = layer2_grid((32, 32, 16), (4, 4, 40), (0, 0, 0))
    vertices = np.array([[0, 0, 0], [100, 0, 0], [0, 100, 0]], dtype=np.float32)
    faces = np.array([[0, 1, 2]], dtype=np.uint32)
    assert encode_draco(vertices, faces, grid) == encode_draco(vertices, faces, grid)
    with pytest.raises(ValueError, match="outside its draco grid"):
        encode_draco(vertices + 5000, faces, grid)


def _edge_uses(points: np.ndarray, faces: np.ndarray) -> tuple[int, int, int]:
    """(open edges, non-manifold edges, zero-area faces) after merging coincident points."""
    _, inverse = np.unique(points, axis=0, return_inverse=True)
    tris = inverse.reshape(-1)[faces.astype(np.int64)]
    flat = (tris[:, 0] == tris[:, 1]) | (tris[:, 1] == tris[:, 2]) | (tris[:, 0] == tris[:, 2])
    tris = tris[~flat]
    edges = np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1)
    _, uses = np.unique(edges, axis=0, return_counts=True)
    return int((uses == 1).sum()), int((uses > 2).sum()), int(flat.sum())


def test_triangles_flattened_by_the_grid_are_collapsed_not_stored() -> None:
    """A closed surface whose thin tips round together on the grid: Draco of the raw mesh
    stores zero-area triangles; ours stores none and stays closed and manifold."""
    import zmesh

    labels = np.zeros((12, 12, 12), dtype=np.uint32)
    labels[3:9, 3:9, 3:9] = 1
    labels[6, 6, 9:11] = 1  # a one-voxel-thin spike
    labels[2, 4, 4] = 1
    mesher = zmesh.Mesher((10, 10, 10))
    mesher.mesh(labels)
    mesh = mesher.get(1, reduction_factor=0, voxel_centered=False)
    vertices, faces = mesh.vertices.astype(np.float64), mesh.faces
    assert _edge_uses(vertices, faces) == (0, 0, 0)  # marching cubes: closed, manifold
    grid = layer2_grid((11, 11, 11), (10, 10, 10), (0, 0, 0))
    coarse = type(grid)(grid.bits, grid.bin_size * 2, grid.range * 2, grid.origin)  # 8 nm bins
    plain = DracoPy.decode(encode_draco(vertices, faces, coarse))
    plain_uses = _edge_uses(np.asarray(plain.points).reshape(-1, 3), np.asarray(plain.faces))
    assert plain_uses[2] > 0  # the grid flattens some triangles
    ours = DracoPy.decode(encode_draco(*collapse_on_grid(vertices, faces, coarse), coarse))
    points, tris = np.asarray(ours.points).reshape(-1, 3), np.asarray(ours.faces).reshape(-1, 3)
    assert _edge_uses(points, tris) == (0, 0, 0)
    assert len(tris) < len(faces)


def test_two_flat_triangles_on_one_line_are_split_by_their_outer_neighbours() -> None:
    """Two flat triangles sharing their long edge (four grid points on one line, seen at layer 4
    of the gala crop): neither can be split by the other alone; both go, no edge count moves."""
    from meshing_core.mesh.closedness import edge_uses

    line = [54.0, 55.8, 52.8, 55.2]  # y of corners 0..3, all at x = z = 0
    points = np.array([[0.0, y, 0.0] for y in line] + [[1, 54.5, 0], [-1, 54.5, 0]])
    flat = [[0, 1, 2], [1, 3, 2]]  # long edges 1 -> 2 and 2 -> 1
    outer = [[1, 0, 4], [0, 2, 4], [3, 1, 5], [2, 3, 5]]  # across their short edges
    faces = np.array(flat + outer)
    tris = split_flat(points, faces)
    corners = points[tris]
    area = np.linalg.norm(
        np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
    )
    assert (area > 0).all()
    assert np.bincount(edge_uses(tris)[1]).tolist() == np.bincount(edge_uses(faces)[1]).tolist()


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two id arrays group the same positions together (ids themselves may differ)."""
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def test_stored_ids_group_exactly_the_vertices_draco_stores_as_one_point() -> None:
    grid = layer2_grid((64, 64, 64), (8, 8, 40), (512, 1024, 2560))
    rng = np.random.default_rng(7)
    sets = []
    for size in (0, 1, 500, 3000):
        # half-voxel positions (as marching cubes makes them), many a bin's width apart
        points = grid.origin + rng.integers(0, 200, size=(size, 3)) * np.array([4.0, 4.0, 20.0])
        points[: size // 3] += grid.bin_size / 2  # exactly on a rounding boundary
        sets.append(points)
    ids = grid.stored_ids(sets)
    assert [len(i) for i in ids] == [len(s) for s in sets]
    for points, got in zip(sets, ids, strict=True):
        if len(points) == 0:
            continue
        snapped = grid.snap(points)
        _, expected = np.unique(snapped, axis=0, return_inverse=True)
        assert _same_partition(got, expected.reshape(-1))
        assert got.min() == 0 and got.max() == len(np.unique(snapped, axis=0)) - 1
