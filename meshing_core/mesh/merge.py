"""Merging child meshes into one, joining them where they meet on the child-chunk planes.

Children of one node live in different child chunks (or are disconnected inside one), so they
touch only on the planes between the child chunks. After re-quantisation both sides of such a
plane carry the same vertex positions there; those duplicates are merged and nothing else is.

A caveat of quantisation, documented rather than hidden: a vertex lying less than half a bin
inside a child chunk snaps onto the plane too (with 10 nm voxels and 6 nm bins, a vertex half a
voxel inside does), and it is then merged with any vertex that landed on the very same point.
The merged points are identical, so the geometry does not change; triangles that collapse to a
line or a point are dropped, and vertices no triangle uses any more are removed.

Walls: two nodes of one object can touch without being joined at their own layer (the graph
joins them higher up, or an edit merged two objects that touch). Each node's mesh is closed, so
where they touch both carry the wall between them, and the merged mesh would hold two sheets
there. Layer 2 keeps such walls identical on both sides, and ``drop_walls`` removes every
triangle that appears twice (same three points), leaving the object's outer surface.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def concatenate(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One vertex and one face array from several meshes (faces re-indexed)."""
    if not parts:
        return np.zeros((0, 3), dtype=np.float64), np.zeros((0, 3), dtype=np.uint32)
    counts = np.cumsum([0] + [len(v) for v, _ in parts])
    vertices = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1, 3) for v, _ in parts])
    faces = np.concatenate(
        [np.asarray(f, dtype=np.int64).reshape(-1, 3) + counts[i] for i, (_, f) in enumerate(parts)]
    )
    return vertices, faces


def merge_on_planes(
    parts: Sequence[tuple[np.ndarray, np.ndarray]], planes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Merge meshes, de-duplicating only vertices on one of the axis-aligned ``planes``.

    ``planes[a]`` is the coordinate of the plane normal to axis ``a``. Vertices must already be
    on a common lattice (exact comparison). Output order is deterministic: off-plane vertices in
    input order, then the unique on-plane points sorted.
    """
    vertices, faces = concatenate(parts)
    if len(vertices) == 0:
        return vertices, faces.astype(np.uint32)
    on_plane = (vertices == np.asarray(planes, dtype=np.float64)[np.newaxis, :]).any(axis=1)
    off_idx = np.flatnonzero(~on_plane)
    on_idx = np.flatnonzero(on_plane)
    remap = np.empty(len(vertices), dtype=np.int64)
    remap[off_idx] = np.arange(len(off_idx))
    if len(on_idx):
        unique, inverse = np.unique(vertices[on_idx], axis=0, return_inverse=True)
        remap[on_idx] = len(off_idx) + inverse.reshape(-1)
        merged = np.concatenate([vertices[off_idx], unique])
    else:
        merged = vertices[off_idx]
    faces = remap[faces]
    return drop_degenerate(merged, faces)


def drop_walls(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weld exactly coincident vertices and remove walls: triangles present with both windings.

    On the same three points, each triangle wound one way cancels one wound the other way (a
    wall's two sides); what is left keeps one copy of the winding that had more (a triangle two
    parts both carry the same way is one piece of surface, not a wall).
    """
    from meshing_core.mesh.closedness import weld

    points, tris = weld(vertices, faces)
    if len(tris) == 0:
        return points, tris.astype(np.uint32)
    key = np.sort(tris, axis=1)
    first_corner = np.argmin(tris, axis=1)
    rows = np.arange(len(tris))
    after = tris[rows, (first_corner + 1) % 3]  # the corner following the smallest one
    winding = np.where(after == key[:, 1], 1, -1)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    net = np.zeros(len(first), dtype=np.int64)
    np.add.at(net, inverse, winding)
    # per group, the first triangle wound the way the net count says
    chosen = np.full(len(first), -1, dtype=np.int64)
    wanted = np.sign(net)[inverse] == winding
    order = rows[wanted][::-1]
    chosen[inverse[order]] = order  # written last = the first in input order
    keep = chosen[chosen >= 0]
    return drop_degenerate(points, tris[np.sort(keep)])


def drop_degenerate(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove triangles with a repeated vertex and vertices no triangle uses."""
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    keep = (
        (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    )
    faces = faces[keep]
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.reshape(-1)] = True
    index = np.cumsum(used) - 1
    return vertices[used], index[faces].astype(np.uint32)
