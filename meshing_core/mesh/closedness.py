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

from collections.abc import Iterable, Sequence
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
    tris = np.asarray(faces).reshape(-1, 3)
    if len(points) == 0 or len(tris) == 0:
        return points[:0], np.zeros((0, 3), dtype=np.int64)
    unique, inverse = unique_rows(points)
    tris = inverse[tris]  # int32 / int64 as the vertex count needs
    del inverse
    proper = three_corners(tris)
    return unique, tris if proper.all() else tris[proper]


def three_corners(tris: np.ndarray) -> np.ndarray:
    """Which triangles have three distinct corners (the others have no area to store)."""
    return (tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 0] != tris[:, 2])


_SEED = np.uint64(0x9E3779B97F4A7C15)
_FMIX = (np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))
_SHIFT = np.uint64(33)


def _fmix(key: np.ndarray, scratch: np.ndarray) -> None:
    """MurmurHash3's 64-bit finaliser, in place: every input bit moves every output bit.

    Needed because the rows hashed are float bit patterns and small ids, whose low bits are
    mostly zero: a plain multiply-and-xor leaves too few bits varying (collisions, then the
    slow fallback, on every large mesh)."""
    for mix in (*_FMIX, None):
        np.right_shift(key, _SHIFT, out=scratch)
        key ^= scratch
        if mix is not None:
            key *= mix


def row_keys(columns: Iterable[np.ndarray]) -> np.ndarray:
    """One 64-bit hash per row of three integer (or float bit-pattern) columns.

    ``columns`` may be a generator: one column is alive at a time.
    """
    key = scratch = None
    for column in columns:
        if key is None:
            key = column.astype(np.uint64, copy=True)
            key ^= _SEED
            scratch = np.empty_like(key)
        else:
            key ^= column.astype(np.uint64, copy=False)
        _fmix(key, scratch)
    return key


def unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of an (n, 3) array (first occurrence order) and each row's index among them.

    ``np.unique(axis=0)`` sorts whole rows and copies them several times; on meshes of millions
    of vertices that was most of a stitch's time and memory. Rows are hashed to one 64-bit key
    instead (a 1-d sort), and a collision, however unlikely, is detected and falls back.
    """
    data = np.ascontiguousarray(rows)
    if data.dtype.kind == "f":  # hash the bits, -0.0 and 0.0 as one point (a column at a time)
        view = np.uint64 if data.dtype.itemsize == 8 else np.uint32
        key = row_keys((data[:, axis] + 0.0).view(view) for axis in range(3))
    else:
        key = row_keys([data[:, 0], data[:, 1], data[:, 2]])
    index_type = np.int32 if len(data) < 2**31 else np.int64
    first, inverse = first_and_inverse(key, index_type)
    del key
    for axis in range(3):  # a hash collision: the slow, sure way
        if not np.array_equal(data[first[inverse], axis], data[:, axis]):
            unique, inverse = np.unique(data, axis=0, return_inverse=True)
            return unique, inverse.reshape(-1).astype(index_type)
    order = np.argsort(first)  # first-occurrence order (distinct values), independent of hashing
    rank = np.empty(len(order), dtype=index_type)
    rank[order] = np.arange(len(order), dtype=index_type)
    return data[first[order]], rank[inverse]


def first_and_inverse(
    key: np.ndarray, index_type: type = np.int64
) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct key's first position, and each position's distinct key (in key order).

    ``np.unique(return_index=True)`` sorts stably (mergesort), several times slower than the
    introsort used here; the first position of each run is found with a minimum instead.
    """
    if len(key) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=index_type)
    order = np.argsort(key)
    ordered = key[order]
    starts = np.empty(len(ordered), dtype=bool)
    starts[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    del ordered
    first = np.minimum.reduceat(order, np.flatnonzero(starts))
    group = np.cumsum(starts, dtype=index_type)
    group -= 1
    inverse = np.empty(len(key), dtype=index_type)
    inverse[order] = group
    return first, inverse


def edge_uses(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each undirected edge (sorted vertex pair) and how many triangles use it."""
    tris = np.asarray(faces).reshape(-1, 3)
    if len(tris) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
    width = np.int64(int(tris.max()) + 1)
    keys = _sorted_edge_keys(tris, width)
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    counts = np.diff(np.append(starts, len(keys)))
    keys = keys[starts]
    return np.stack([keys // width, keys % width], axis=1), counts


def edge_defects(
    vertices: np.ndarray,
    faces: np.ndarray,
    open_ok_box: tuple[Sequence[float], Sequence[float]] | None = None,
    tolerance: float = 0.0,
    *,
    welded: bool = False,
) -> EdgeDefects:
    """Open and non-manifold edges of a mesh after welding coincident vertices.

    An open edge whose two ends both lie within ``tolerance`` of the same face of
    ``open_ok_box`` (low corner, high corner; nm) is where the mesh was cut, and not counted.
    ``welded``: the vertices are distinct already (as ``collapse_on_grid`` returns them).
    """
    if welded:
        points, tris = np.asarray(vertices), np.asarray(faces).reshape(-1, 3)
    else:
        points, tris = weld(vertices, faces)
    if len(tris) == 0:
        return EdgeDefects(0, 0)
    width = np.int64(len(points))
    keys = _sorted_edge_keys(tris, width)
    same = keys[1:] == keys[:-1]  # neighbours in sorted order that are one edge
    alone = np.ones(len(keys), dtype=bool)
    alone[1:] &= ~same
    alone[:-1] &= ~same
    rims = keys[alone]
    del alone
    runs3 = same[1:] & same[:-1]  # three in a row: an edge used three times or more
    nonmanifold = int(np.count_nonzero(runs3[1:] & ~runs3[:-1])) + int(
        bool(len(runs3)) and runs3[0]
    )
    del keys, same, runs3
    if open_ok_box is not None and len(rims):
        lo = np.asarray(open_ok_box[0], dtype=np.float64)
        hi = np.asarray(open_ok_box[1], dtype=np.float64)
        ends = points[np.stack([rims // width, rims % width], axis=1)]  # (n, 2, 3)
        tol = float(tolerance) + 1e-6
        on_lo = (np.abs(ends - lo) <= tol).all(axis=1)
        on_hi = (np.abs(ends - hi) <= tol).all(axis=1)
        rims = rims[~(on_lo | on_hi).any(axis=1)]
    return EdgeDefects(int(len(rims)), nonmanifold)


def _sorted_edge_keys(tris: np.ndarray, width: np.int64) -> np.ndarray:
    """``low * width + high`` of every triangle edge, sorted (one column pair at a time)."""
    keys = np.empty(3 * len(tris), dtype=np.int64)
    for k in range(3):
        a = tris[:, k].astype(np.int64)
        b = tris[:, (k + 1) % 3].astype(np.int64)
        part = keys[k * len(tris) : (k + 1) * len(tris)]
        np.minimum(a, b, out=part)
        part *= width
        part += np.maximum(a, b)
    keys.sort()
    return keys


@dataclass
class ClosednessTally:
    """Fragments checked while meshing one chunk, and how many were not closed and manifold."""

    checked: int = 0
    unclosed: int = 0

    def add(self, defects: EdgeDefects) -> None:
        self.checked += 1
        if not defects.closed:
            self.unclosed += 1
