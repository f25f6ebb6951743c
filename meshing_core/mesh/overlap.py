"""The voxels around a layer-2 chunk, and which chunk meshes each cube of a seam.

A layer-2 chunk is read with one voxel more on every side (where the volume has one). Marching
cubes works on cubes of 2x2x2 voxel centres; a cube on a seam has corners in two to eight
chunks, and every one of them sees the whole cube. For each object (root at the timestamp) such
a cube is meshed by exactly one chunk, its *owner*: the chunk holding the cube's first corner
of that object in x, then y, then z order. Every chunk computes the same owner from the same
voxels, so each piece of an object's surface is made once, by a chunk that has a node of that
object at the cube, and the pieces of neighbouring chunks meet on the cube faces they share
(marching cubes on a face depends on that face's four corners only). An object that has no
voxel on one side of a plane is closed by the chunk on the other side: the cube is its.

Margin voxels are labelled for marching cubes with an own node of the same object among the own
voxels they share a cube with (face neighbours first, then edges, then corners; the smallest id
on ties), else 0. In a cube a chunk owns, every corner of the object shares the cube with an own
voxel of it, so the cube is meshed from the true voxels. Triangles in cubes a chunk does not own
are dropped (``owned_faces``). Two own nodes of one object that meet are joined by walls that
stitching removes (``merge.drop_walls``). All of this is numpy on the input alone (deterministic).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Neighbour offsets sharing a cube with a voxel, nearest first: faces, edges, corners.
_RINGS = [
    [d for d in itertools.product((-1, 0, 1), repeat=3) if sum(map(abs, d)) == n] for n in (1, 2, 3)
]
#: Cube corner offsets in x, then y, then z order (the ownership order).
_CORNERS = np.array(list(itertools.product((0, 1), repeat=3)), dtype=np.int64)


@dataclass(frozen=True)
class OwnBox:
    """Where a chunk's own voxels sit in the array read with its margin: ``[low, low + inner)``."""

    low: tuple[int, int, int]
    inner: tuple[int, int, int]

    def mask(self, shape: Sequence[int]) -> np.ndarray:
        own = np.zeros(tuple(shape), dtype=bool)
        own[tuple(slice(lo, lo + n) for lo, n in zip(self.low, self.inner, strict=True))] = True
        return own


def margin_labels(l2: np.ndarray, roots: np.ndarray, box: OwnBox) -> np.ndarray:
    """Labels to mesh: own voxels keep their layer-2 node; margin voxels as the module says.

    ``l2`` holds layer-2 ids (0: background) and ``roots`` their roots, voxel by voxel.
    """
    labels = np.asarray(l2, dtype=np.uint64)
    own = box.mask(labels.shape)
    out = np.where(own, labels, np.uint64(0))
    todo = np.argwhere(~own & (roots != 0))
    shape = np.asarray(labels.shape, dtype=np.int64)
    for ring in _RINGS:
        if len(todo) == 0:
            break
        want = roots[tuple(todo.T)]
        best = np.zeros(len(todo), dtype=np.uint64)
        for step in ring:
            nbr = todo + np.asarray(step, dtype=np.int64)
            inside = np.all((nbr >= 0) & (nbr < shape), axis=1)
            index = np.flatnonzero(inside)
            at = tuple(nbr[index].T)
            ok = own[at] & (roots[at] == want[index])
            hit = index[ok]
            value = labels[at][ok]
            current = best[hit]
            best[hit] = np.where((current == 0) | (value < current), value, current)
        found = best != 0
        out[tuple(todo[found].T)] = best[found]
        todo = todo[~found]
    return out


def owned_faces(
    vertices: np.ndarray,
    faces: np.ndarray,
    resolution: Sequence[float],
    roots: np.ndarray,
    root: int,
    box: OwnBox,
) -> np.ndarray:
    """Which triangles of one node's raw mesh lie in cubes this chunk owns for its ``root``.

    ``vertices`` are marching-cubes positions in nm from the array's first voxel centre (zmesh,
    ``voxel_centered=False``); each triangle lies in one cube, found from its centroid.
    """
    tris = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(tris) == 0:
        return np.zeros(0, dtype=bool)
    low = np.asarray(box.low, dtype=np.int64)
    high = low + np.asarray(box.inner, dtype=np.int64)  # own voxels: [low, high)
    # A triangle's cube is the lowest voxel-grid floor of its corners (they lie on the cube's
    # edges); when every corner's floor is inside the chunk's interior cubes, so is the cube:
    # a per-vertex test settles most triangles without touching their corners' coordinates.
    points = np.asarray(vertices, dtype=np.float64) / np.asarray(resolution)

    def interior(cells: np.ndarray) -> np.ndarray:  # cubes owned, with their lower neighbours
        return np.all((cells >= low + 1) & (cells + 1 < high), axis=1)

    inner = interior(np.floor(points).astype(np.int64))
    keep = np.ones(len(tris), dtype=bool)
    edge = np.flatnonzero(~inner[tris].all(axis=1))
    if len(edge) == 0:
        return keep
    grid = points[tris[edge]].mean(axis=1)
    cube = np.floor(grid).astype(np.int64)
    inside = interior(cube)
    edge, grid, cube = edge[~inside], grid[~inside], cube[~inside]
    if len(edge) == 0:
        return keep
    keep[edge] = _owns(cube, roots, root, low, high)
    # A triangle lying in a cube face belongs to the cube on either side of it: kept when
    # either is owned (the stitcher keeps one copy of a triangle two chunks both made).
    on_face = np.abs(grid - np.round(grid)) < 1e-6
    for axis in range(3):
        pick = np.flatnonzero(on_face[:, axis])
        if len(pick):
            other = cube[pick].copy()
            other[:, axis] -= 1
            keep[edge[pick]] |= _owns(other, roots, root, low, high)
    return keep


def _owns(cube: np.ndarray, roots: np.ndarray, root: int, low: np.ndarray, high: np.ndarray):
    """For each cube (its first corner), whether the chunk owns it for ``root``."""
    shape = np.asarray(roots.shape, dtype=np.int64)
    corners = cube[:, np.newaxis, :] + _CORNERS[np.newaxis, :, :]  # (n, 8, 3)
    clipped = np.minimum(np.maximum(corners, 0), shape - 1)
    inside = np.all(corners == clipped, axis=2)
    of_root = inside & (roots[tuple(np.moveaxis(clipped, 2, 0))] == np.uint64(root))
    first = np.argmax(of_root, axis=1)  # the first corner of the object, in x-y-z order
    owner = corners[np.arange(len(cube)), first]
    return np.all((owner >= low) & (owner < high), axis=1) & of_root.any(axis=1)
