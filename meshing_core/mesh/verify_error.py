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

#: Cube edge, as a fraction of max_error: the Lipschitz slack is at most sqrt(3) times this.
CELL_FRACTION = 0.5
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
    if not meshes:
        return []
    limit = float(max_error)
    cell = max(limit * CELL_FRACTION, 1e-9)
    verts = [np.asarray(v, dtype=np.float64) for v, _ in meshes]
    faces = [np.asarray(f, dtype=np.int64).reshape(-1, 3) for _, f in meshes]
    sizes = np.array([len(v) for v in verts], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    total = int(starts[-1])
    if total == 0:
        return [np.zeros(0, dtype=np.int64) for _ in meshes]
    points = np.concatenate(verts)
    owner = np.repeat(np.arange(len(meshes), dtype=np.int64), sizes)
    kept = np.zeros(total, dtype=bool)
    for i, f in enumerate(faces):
        kept[f.reshape(-1) + starts[i]] = True

    # Cubes per mesh; kept vertices first so they become representatives (distance 0).
    order = np.concatenate([np.flatnonzero(kept), np.flatnonzero(~kept)])
    cube = np.floor(points[order] / cell).astype(np.int64)
    cube -= cube.min(axis=0)
    span = cube.max(axis=0) + 1
    key = ((owner[order] * span[0] + cube[:, 0]) * span[1] + cube[:, 1]) * span[2] + cube[:, 2]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    rep = np.empty(total, dtype=np.int64)
    rep[order] = order[first][inverse]

    rep_dist = np.zeros(total, dtype=np.float64)
    reps = np.unique(rep)
    reps = reps[~kept[reps]]
    if len(reps):
        rep_dist[reps] = np.sqrt(_batched_squared_distances(points, reps, faces, starts, limit))
    bound = rep_dist[rep] + np.linalg.norm(points - points[rep], axis=1)
    unsure = np.flatnonzero(~kept & (bound > limit * (1.0 - _CERTIFY_MARGIN)))

    out: list[np.ndarray] = []
    cuts = np.searchsorted(unsure, starts)
    for i in range(len(meshes)):
        local = unsure[cuts[i] : cuts[i + 1]] - starts[i]
        if len(local):
            sqr = squared_distances(verts[i][local], verts[i], faces[i])
            local = local[sqr > limit * limit]
        out.append(local)
    return out


def _batched_squared_distances(
    points: np.ndarray,
    query: np.ndarray,
    faces: Sequence[np.ndarray],
    starts: np.ndarray,
    limit: float,
) -> np.ndarray:
    """Squared distances of ``points[query]`` to their own mesh, in one libigl call.

    Meshes are moved apart along x by more than their extent plus twice ``limit``, so a point
    within ``limit`` of any surface is within it of its own mesh's surface; beyond that the
    result only needs to exceed ``limit``, which it does. (Rounding from the shift is ~1e-9 nm:
    callers certify with a margin and decide edge cases with an unshifted query.)
    """
    lo = points.min(axis=0)
    width = float(points[:, 0].max() - lo[0]) + 4.0 * limit + 1.0
    mesh_of = np.searchsorted(starts, np.arange(len(points)), side="right") - 1
    shifted = points - lo
    shifted[:, 0] += mesh_of * width
    all_faces = np.concatenate([f + starts[i] for i, f in enumerate(faces)])
    if len(all_faces) == 0:
        return np.full(len(query), np.inf)
    sqr = squared_distances(shifted[query], shifted, all_faces)
    # A mesh with no faces: its points are no nearer than the gap to the other meshes.
    return sqr
