"""Seams: margin labels and cube ownership (``meshing_core.mesh.overlap``).

The judge is a marching cubes of the whole volume: the chunks' kept triangles, put together,
must be exactly its triangles, each made by one chunk.
"""

from __future__ import annotations

import numpy as np
import pytest
import zmesh

from meshing_core.mesh.overlap import OwnBox, margin_labels, owned_faces


def test_margin_voxels_take_an_own_node_of_their_object() -> None:
    l2 = np.zeros((3, 3, 1), dtype=np.uint64)
    roots = np.zeros_like(l2)
    l2[0, :, 0] = [10, 11, 12]  # own column x = 0 (own box: x < 2)
    roots[0, :, 0] = [100, 100, 300]
    l2[1, :, 0] = [13, 0, 0]
    roots[1, :, 0] = [300, 0, 0]
    l2[2, :, 0] = [20, 21, 22]  # margin column x = 2: a neighbour chunk's nodes
    roots[2, :, 0] = [300, 100, 400]
    out = margin_labels(l2, roots, OwnBox(low=(0, 0, 0), inner=(2, 3, 1)))
    assert out[:2].tolist() == l2[:2].tolist()  # own voxels keep their node
    # (2,0): root 300, face neighbour (1,0) is 13 of root 300 -> 13
    # (2,1): root 100, no own face neighbour of 100; the edge neighbours (1,0)/(1,2) are not
    #        100 either; nothing in its cubes -> 0
    # (2,2): root 400: no own voxel of it anywhere -> 0
    assert out[2, :, 0].tolist() == [13, 0, 0]


def test_margin_voxels_prefer_faces_then_edges_then_the_smallest_id() -> None:
    l2 = np.zeros((3, 3, 3), dtype=np.uint64)
    roots = np.zeros_like(l2)
    box = OwnBox(low=(1, 1, 1), inner=(2, 2, 2))  # margin: x = 0 or y = 0 or z = 0
    l2[1, 1, 1], roots[1, 1, 1] = 7, 5  # own, the corner neighbour of (0, 0, 0)
    l2[0, 0, 0], roots[0, 0, 0] = 99, 5
    l2[0, 1, 1], roots[0, 1, 1] = 98, 5  # face neighbour of (1, 1, 1), x margin
    out = margin_labels(l2, roots, box)
    assert out[0, 0, 0] == 7  # only a corner neighbour: still shares a cube with it
    assert out[0, 1, 1] == 7
    l2[1, 2, 1], roots[1, 2, 1] = 3, 5  # a second own node: an edge neighbour of (0, 1, 1)
    l2[0, 2, 1], roots[0, 2, 1] = 97, 5
    out = margin_labels(l2, roots, box)
    assert out[0, 1, 1] == 7  # its face neighbour beats the edge neighbour 3
    assert out[0, 2, 1] == 3  # face neighbour (1, 2, 1)


def _triangles(labels: np.ndarray, label: int, origin, keep=None) -> set:
    mesher = zmesh.Mesher((1.0, 1.0, 1.0))
    mesher.mesh(np.ascontiguousarray(labels, dtype=np.uint32))
    if label not in mesher.ids():
        return set()
    mesh = mesher.get(label, reduction_factor=0, voxel_centered=False)
    faces = mesh.faces if keep is None else mesh.faces[keep(mesh.vertices, mesh.faces)]
    points = mesh.vertices.astype(np.float64) + np.asarray(origin, dtype=np.float64)
    return {tuple(sorted(map(tuple, points[f].tolist()))) for f in faces}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_seam_cube_is_meshed_once_by_one_chunk(seed: int) -> None:
    """Three chunks along x and two along y; objects with and without voxels on each side."""
    rng = np.random.default_rng(seed)
    volume = rng.integers(0, 4, size=(12, 8, 5)).astype(np.uint64)  # roots = labels here
    volume[4:, :, :][volume[4:, :, :] == 3] = 0  # object 3 lies in the first x chunk only
    volume[:8, :, :][volume[:8, :, :] == 2] = 1  # object 2 only beyond x = 8
    chunk = np.array([4, 4, 5])
    kept: dict[int, list[set]] = {k: [] for k in (1, 2, 3)}
    for cx in range(3):
        for cy in range(2):
            start = np.array([cx, cy, 0]) * chunk
            first = np.maximum(start - 1, 0)
            stop = np.minimum(start + chunk + 1, volume.shape)
            block = volume[tuple(slice(a, b) for a, b in zip(first, stop, strict=True))]
            box = OwnBox(
                low=tuple(int(v) for v in start - first),
                inner=tuple(int(v) for v in np.minimum(chunk, volume.shape - start)),
            )
            labels = margin_labels(block, block, box)
            for obj in kept:
                kept[obj].append(
                    _triangles(
                        labels, obj, first,
                        lambda v, f, obj=obj, block=block, box=box: owned_faces(
                            v, f, (1, 1, 1), block, obj, box
                        ),
                    )
                )  # fmt: skip
    for obj, pieces in kept.items():
        whole = _triangles(volume, obj, (0, 0, 0))
        assert whole, obj
        assert set().union(*pieces) == whole, obj
        assert sum(len(p) for p in pieces) == len(whole), obj  # none made twice
