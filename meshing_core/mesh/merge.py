"""Putting child meshes together: one vertex and face array, walls removed, degenerates dropped.

Children of one node live in different child chunks (or are disconnected inside one). After
re-quantisation both sides of a child-chunk plane carry the same vertex positions there; storing
welds every exactly coincident vertex (``closedness.weld``), on the planes as elsewhere. A
caveat of quantisation, documented rather than hidden: a vertex lying less than half a bin from
another (with 10 nm voxels and 6 nm bins, a vertex half a voxel inside a plane and one on it)
lands on the very same point and is merged with it; the geometry does not change, triangles
that collapse to a line or a point are dropped, and vertices no triangle uses are removed.

Walls: two nodes of one object can touch without being joined at their own layer (the graph
joins them higher up, or an edit merged two objects that touch). Each node's mesh is closed, so
where they touch both carry the wall between them, and the merged mesh would hold two sheets
there. Layer 2 keeps such walls identical on both sides, and ``drop_walls`` removes every
triangle present with both windings, leaving the object's outer surface.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from meshing_core.mesh.closedness import row_keys, three_corners, weld


def concatenate(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One vertex and one face array from several meshes (faces re-indexed, 32-bit if they fit)."""
    if not parts:
        return np.zeros((0, 3), dtype=np.float64), np.zeros((0, 3), dtype=np.uint32)
    counts = np.cumsum([0] + [len(v) for v, _ in parts])
    index_type = np.uint32 if counts[-1] < 2**32 else np.int64
    vertices = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1, 3) for v, _ in parts])
    faces = np.empty((sum(len(f) for _, f in parts), 3), dtype=index_type)
    at = 0
    for i, (_, f) in enumerate(parts):
        block = faces[at : at + len(f)]
        block[:] = np.asarray(f).reshape(-1, 3)
        block += index_type(counts[i])
        at += len(f)
    return vertices, faces


def drop_walls(
    vertices: np.ndarray, faces: np.ndarray, *, welded: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Weld exactly coincident vertices and remove walls: triangles present with both windings.

    On the same three points, each triangle wound one way cancels one wound the other way (a
    wall's two sides); what is left keeps one copy of the winding that had more (a triangle two
    parts both carry the same way is one piece of surface, not a wall). ``welded``: the
    vertices are already distinct (no weld needed).
    """
    if welded:
        points, tris = vertices, np.asarray(faces).reshape(-1, 3)
    else:
        points, tris = weld(vertices, faces)
    if len(tris) == 0:
        return points, tris.astype(np.uint32)
    key = _triangle_keys(tris)
    ordered = np.sort(key)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    del ordered
    if len(repeated) == 0:  # no triangle twice (the usual case): nothing to cancel
        return drop_degenerate(points, tris)
    # only the few triangles whose key repeats are looked at closely (found block by block)
    suspects = np.concatenate(
        [np.flatnonzero(_among(key[start : start + _BLOCK], repeated)) + start
         for start in range(0, len(key), _BLOCK)]
    )  # fmt: skip
    del key
    corners = np.stack(list(_sorted_corners(tris[suspects])), axis=1)
    first_corner = np.argmin(tris[suspects], axis=1)
    after = tris[suspects, (first_corner + 1) % 3]  # the corner following the smallest one
    winding = np.where(after == corners[:, 1], 1, -1)
    _, group = np.unique(corners, axis=0, return_inverse=True)
    group = group.reshape(-1)
    net = np.zeros(int(group.max()) + 1, dtype=np.int64)
    np.add.at(net, group, winding)
    chosen = np.full(len(net), -1, dtype=np.int64)
    wanted = np.flatnonzero(np.sign(net)[group] == winding)[::-1]
    chosen[group[wanted]] = wanted  # written last = the first in input order
    keep = np.ones(len(tris), dtype=bool)
    keep[suspects] = False
    keep[suspects[chosen[chosen >= 0]]] = True
    return drop_degenerate(points, tris[keep])


_BLOCK = 1 << 18  # triangles per block when looking up repeated keys (bounded memory)


def _among(keys: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Which ``keys`` are in the sorted, non-empty ``table``."""
    at = np.searchsorted(table, keys)
    np.minimum(at, len(table) - 1, out=at)
    return table[at] == keys


def _triangle_keys(tris: np.ndarray) -> np.ndarray:
    """One 64-bit key per triangle, equal for triangles on the same three points.

    Corner ids below 2**21 are packed exactly (smallest << 42 | middle << 21 | largest, built in
    place: the memory of one key column); larger meshes hash the sorted corners."""
    if len(tris) == 0 or int(tris.max()) >= 1 << 21:
        return row_keys(_sorted_corners(tris))
    corners = _sorted_corners(tris)
    key = next(corners).astype(np.uint64)
    for column in corners:
        key <<= np.uint64(21)
        key |= column.astype(np.uint64, copy=False)
    return key


def _sorted_corners(tris: np.ndarray) -> Iterator[np.ndarray]:
    """A triangle's corners, smallest first, as three columns made one at a time."""
    yield tris.min(axis=1)
    middle = tris.sum(axis=1, dtype=np.int64)
    middle -= tris.min(axis=1)
    middle -= tris.max(axis=1)
    yield middle
    del middle
    yield tris.max(axis=1)


def drop_degenerate(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove triangles with a repeated vertex and vertices no triangle uses."""
    faces = np.asarray(faces).reshape(-1, 3)
    keep = three_corners(faces)
    if not keep.all():
        faces = faces[keep]
    del keep
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.reshape(-1)] = True
    if used.all():
        return vertices, faces.astype(np.uint32, copy=False)
    index = np.cumsum(used, dtype=np.uint32 if len(vertices) < 2**32 else np.int64)
    index -= 1  # used vertices only are looked up: no wrap-around
    return vertices[used], index[faces]
