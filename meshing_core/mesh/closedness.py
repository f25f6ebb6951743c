"""Is a mesh closed and edge-manifold? Counted from the definitions, cheap enough to run per fragment.

A triangle mesh is closed where every edge is shared by exactly two triangles; an edge used by
one triangle is open (a hole's rim), by three or more non-manifold (sheets meeting along a line).
Counting follows what any reader sees after welding: exactly coincident vertices are merged
first (fragments and chunk pieces repeat the points they share) and triangles with a repeated
vertex dropped. A fragment is legitimately open where it is cut by the box it was meshed in (a
chunk's faces, or the volume's); ``open_ok_box`` names that box, with a tolerance for the
quantisation that moved the cut.

Used by meshing itself (each layer counts the fragments that fail, reported by ``status``) and
by the tests that compare every object with a raw marching cubes of its voxels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EdgeDefects:
    """Edges used once away from the allowed box faces, and edges used by more than two triangles."""

    open: int
    nonmanifold: int

    @property
    def closed(self) -> bool:
        return self.open == 0 and self.nonmanifold == 0

    def __add__(self, other: EdgeDefects) -> EdgeDefects:
        return EdgeDefects(self.open + other.open, self.nonmanifold + other.nonmanifold)


def weld(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices with exact duplicates merged, and the triangles that still have three corners."""
    points = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    tris = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(points) == 0 or len(tris) == 0:
        return points[:0], tris[:0]
    unique, inverse = np.unique(points, axis=0, return_inverse=True)
    tris = inverse.reshape(-1)[tris]
    keep = (tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 0] != tris[:, 2])
    return unique, tris[keep]


def edge_uses(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each undirected edge (sorted vertex pair) and how many triangles use it."""
    tris = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    edges.sort(axis=1)
    if len(edges) == 0:
        return edges, np.zeros(0, dtype=np.int64)
    width = int(edges.max()) + 1
    keys, counts = np.unique(edges[:, 0] * width + edges[:, 1], return_counts=True)
    return np.stack([keys // width, keys % width], axis=1), counts


def edge_defects(
    vertices: np.ndarray,
    faces: np.ndarray,
    open_ok_box: tuple[Sequence[float], Sequence[float]] | None = None,
    tolerance: float = 0.0,
) -> EdgeDefects:
    """Open and non-manifold edges of a mesh after welding coincident vertices.

    An open edge whose two ends both lie within ``tolerance`` of the same face of
    ``open_ok_box`` (low corner, high corner; nm) is where the mesh was cut, and not counted.
    """
    points, tris = weld(vertices, faces)
    if len(tris) == 0:
        return EdgeDefects(0, 0)
    edges, counts = edge_uses(tris)
    rims = edges[counts == 1]
    if open_ok_box is not None and len(rims):
        lo = np.asarray(open_ok_box[0], dtype=np.float64)
        hi = np.asarray(open_ok_box[1], dtype=np.float64)
        ends = points[rims]  # (n, 2, 3)
        tol = float(tolerance) + 1e-6
        on_lo = (np.abs(ends - lo) <= tol).all(axis=1)
        on_hi = (np.abs(ends - hi) <= tol).all(axis=1)
        rims = rims[~(on_lo | on_hi).any(axis=1)]
    return EdgeDefects(int(len(rims)), int(np.count_nonzero(counts > 2)))


@dataclass
class ClosednessTally:
    """Fragments checked while meshing one chunk, and how many were not closed and manifold."""

    checked: int = 0
    unclosed: int = 0

    def add(self, defects: EdgeDefects) -> None:
        self.checked += 1
        if not defects.closed:
            self.unclosed += 1
