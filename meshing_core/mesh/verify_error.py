"""Measured simplification error: distance from raw marching-cubes vertices to a mesh surface.

The bound we promise (every raw vertex within ``max_error`` nm of the simplified surface) is a
measurement, not an estimate: simplifiers' own error figures are quadric estimates that can be
exceeded, so the kernel checks with exact point-to-triangle distances (libigl's AABB tree).

An exact query costs ~1-2 us per point, as much as the simplification itself, so
``far_vertices`` certifies most points without one. Distance to a surface is 1-Lipschitz:
``d(q) <= d(r) + |q - r|``. Raw vertices are binned into small cubes; each cube's representative
``r`` (a vertex the simplified mesh kept, so ``d(r) = 0``, if the cube has one) gets an exact
distance, and every other vertex of the cube is certified by that inequality. Only vertices it
cannot certify get their own exact query. The decision "farther than max_error" is always made
by an exact query on the mesh alone, so it never depends on the other meshes of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import igl
import numpy as np

from meshing_core.mesh.closedness import first_and_inverse

#: Cube edge, as a fraction of max_error: the Lipschitz slack is at most sqrt(3) times this.
CELL_FRACTION = 1.0
#: Margin (relative) below max_error for certification; the rest goes to an exact query.
_CERTIFY_MARGIN = 1e-6


def squared_distances(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Squared distance of each point to the nearest triangle of (vertices, faces)."""
    if len(points) == 0:
        return np.zeros(0, dtype=np.float64)
    if len(faces) == 0:
        return np.full(len(points), np.inf)
    sqr, _, _ = igl.point_mesh_squared_distance(
        np.ascontiguousarray(points, dtype=np.float64),
        np.ascontiguousarray(vertices, dtype=np.float64),
        np.ascontiguousarray(faces, dtype=np.int64),
    )
    return sqr


def max_deviation(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> float:
    """Worst distance (same units as the inputs) of any point to the mesh surface."""
    sqr = squared_distances(points, vertices, faces)
    return float(np.sqrt(sqr.max())) if len(sqr) else 0.0


def far_vertices(
    meshes: Sequence[tuple[np.ndarray, np.ndarray]], max_error: float
) -> list[np.ndarray]:
    """For each (vertices, kept_faces): sorted indices of vertices farther than ``max_error``
    from the surface of ``kept_faces`` (which index into ``vertices``)."""
    empty = [np.zeros(0, dtype=np.int64) for _ in meshes]
    sizes = np.array([len(v) for v, _ in meshes], dtype=np.int64)
    if not meshes or sizes.sum() == 0:
        return empty
    limit = float(max_error)
    certain = limit * (1.0 - _CERTIFY_MARGIN)
    cell = max(limit * CELL_FRACTION, 1e-9)
    batch = _ShiftedMeshes(meshes, limit)
    points, starts = batch.points, batch.starts
    kept = np.zeros(len(points), dtype=bool)
    kept[batch.faces.reshape(-1)] = True
    removed = np.flatnonzero(~kept)
    if len(removed) == 0:
        return empty

    # Cubes (never shared by two meshes: they are ``limit`` apart). Each cube's representative
    # is its first removed vertex: its nearest triangle is a good candidate for its neighbours;
    # a kept vertex of the cube, if any, also bounds them (distance 0 plus the gap).
    key = np.zeros(len(points), dtype=np.int64)
    for axis in range(3):
        column = np.floor(points[:, axis] / cell).astype(np.int64)
        key = key * (int(column.max()) + 1) + column
    cubes = key[removed]
    first, inverse = first_and_inverse(cubes)
    cubes = cubes[first]
    reps = removed[first]
    sqr, tri = batch.squared_distances(reps)

    # 1) Lipschitz from the representative: d(q) <= d(r) + |q - r|.
    bound = np.sqrt(sqr)[inverse] + np.linalg.norm(points[removed] - points[reps[inverse]], axis=1)
    todo = np.flatnonzero(~(bound <= certain))
    del bound
    # 2) a point of the representative's nearest triangle.
    if len(todo):
        t = tri[inverse[todo]]
        ok = t >= 0
        near = np.full(len(todo), np.inf)
        near[ok] = _distance_to_a_point_of(points[removed[todo[ok]]], points, batch.faces[t[ok]])
        todo = todo[~(near <= certain)]
    # 3) a kept vertex of the same cube.
    kept_idx = np.flatnonzero(kept)
    if len(todo) and len(kept_idx):
        kept_cubes = key[kept_idx]
        kept_first = first_and_inverse(kept_cubes)[0]
        kept_cubes = kept_cubes[kept_first]
        mine = cubes[inverse[todo]]
        where = np.minimum(np.searchsorted(kept_cubes, mine), len(kept_cubes) - 1)
        has = kept_cubes[where] == mine
        gap = np.full(len(todo), np.inf)
        k = kept_idx[kept_first[where[has]]]
        gap[has] = np.linalg.norm(points[removed[todo[has]]] - points[k], axis=1)
        todo = todo[~(gap <= certain)]
    unsure = removed[todo]
    # 4) exact, all meshes in one query; only razor-edge results are re-decided per mesh,
    # unshifted, so no decision depends on the other meshes of the batch.
    far = np.zeros(0, dtype=np.int64)
    if len(unsure):
        dist = np.sqrt(batch.squared_distances(unsure)[0])
        beyond = limit * (1.0 + _CERTIFY_MARGIN)
        far = unsure[dist > beyond]
        unsure = unsure[(dist > certain) & (dist <= beyond)]

    out: list[np.ndarray] = []
    cuts = np.searchsorted(unsure, starts)
    far_cuts = np.searchsorted(far, starts)
    for i, (vertices, faces) in enumerate(meshes):
        local = unsure[cuts[i] : cuts[i + 1]] - starts[i]
        if len(local):
            sqr_i = squared_distances(vertices[local], vertices, np.asarray(faces).reshape(-1, 3))
            local = local[sqr_i > limit * limit]
        bad = far[far_cuts[i] : far_cuts[i + 1]] - starts[i]
        out.append(np.union1d(bad, local) if len(local) else bad)
    return out


def _distance_to_a_point_of(q: np.ndarray, vertices: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Distance from each q to a point of its triangle: its projection, clamped into the
    triangle. Never below the true distance (so a valid upper bound); NaN for degenerate ones."""
    a = vertices[tris[:, 0]]
    ab = vertices[tris[:, 1]] - a
    ac = vertices[tris[:, 2]] - a
    aq = q - a
    d00 = np.einsum("ij,ij->i", ab, ab)
    d01 = np.einsum("ij,ij->i", ab, ac)
    d11 = np.einsum("ij,ij->i", ac, ac)
    d20 = np.einsum("ij,ij->i", aq, ab)
    d21 = np.einsum("ij,ij->i", aq, ac)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / (d00 * d11 - d01 * d01)
        v = np.clip((d11 * d20 - d01 * d21) * inv, 0.0, None)
        w = np.clip((d00 * d21 - d01 * d20) * inv, 0.0, None)
        u = np.clip(1.0 - v - w, 0.0, None)
        total = u + v + w
        v /= total
        w /= total
    point = a + v[:, None] * ab + w[:, None] * ac
    return np.linalg.norm(q - point, axis=1)


class _ShiftedMeshes:
    """All meshes of a batch in one frame and one libigl AABB tree, built once, queried twice.

    Meshes are moved apart along x by more than their extent plus twice ``limit``, so a point
    within ``limit`` of any surface is within it of its own mesh's surface; beyond that the
    result only needs to exceed ``limit``, which it does. (Rounding from the shift is ~1e-9 nm:
    callers certify with a margin and decide edge cases with an unshifted query.)
    """

    def __init__(self, meshes: Sequence[tuple[np.ndarray, np.ndarray]], limit: float):
        sizes = [len(v) for v, _ in meshes]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.points = np.empty((int(self.starts[-1]), 3), dtype=np.float64)
        lo = np.full(3, np.inf)
        hi = np.full(3, -np.inf)
        for vertices, _ in meshes:
            if len(vertices):
                lo = np.minimum(lo, vertices.min(axis=0))
                hi = np.maximum(hi, vertices.max(axis=0))
        width = float(hi[0] - lo[0]) + 4.0 * limit + 1.0
        faces = []
        for i, (vertices, kept) in enumerate(meshes):
            a, b = self.starts[i], self.starts[i + 1]
            self.points[a:b] = vertices
            self.points[a:b] -= lo
            self.points[a:b, 0] += i * width
            faces.append(np.asarray(kept, dtype=np.int64).reshape(-1, 3) + a)
        self.faces = np.ascontiguousarray(np.concatenate(faces))
        self.tree = None
        if len(self.faces):
            self.tree = igl.AABB()
            self.tree.init(self.points, self.faces)

    def squared_distances(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Squared distances and nearest triangles (-1: none) of ``points[query]``."""
        if self.tree is None or len(query) == 0:
            return np.full(len(query), np.inf), np.full(len(query), -1, dtype=np.int64)
        sqr, tri, _ = self.tree.squared_distance(
            self.points, self.faces, np.ascontiguousarray(self.points[query])
        )
        return sqr, tri.astype(np.int64)
