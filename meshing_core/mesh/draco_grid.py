"""Draco quantisation grids that line up across chunks.

Draco stores each vertex as ``origin + q * range / (2**bits - 1)``. If every chunk uses an integer
bin size and an origin that is a multiple of that bin, a vertex on a plane shared by two chunks
snaps to the same point from both sides, and the stitcher (and cloud-volume's de-duplication, via
``uniform_draco_grid_size``) can merge them exactly. The rules are the ChunkedGraph's (see
DESIGN.md "Draco grid"); grids built here are what readers of existing datasets expect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import DracoPy
import numpy as np

# Level 7 saves only 3-6% over level 1 on these meshes and costs time; the ChunkedGraph uses 1.
COMPRESSION_LEVEL = 1


@dataclass(frozen=True)
class DracoGrid:
    """A quantisation grid: ``bits`` per axis, bins of ``bin_size`` nm from ``origin``."""

    bits: int
    bin_size: float
    range: float
    origin: np.ndarray

    def snap(self, vertices: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Vertices moved to their nearest grid point, as Draco's encoder rounds them.

        ``out``: a float64 array to write into (``vertices`` itself to snap in place).
        """
        if out is None:
            out = np.array(vertices, dtype=np.float64)  # one copy, then in place
        elif out is not vertices:
            out[...] = vertices
        out -= self.origin
        out /= self.bin_size
        out += 0.5
        np.floor(out, out=out)
        out *= self.bin_size
        out += self.origin
        return out

    def stored_ids(self, vertex_sets: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per set of vertices (nm), an id per vertex, equal exactly where Draco stores one point.

        A layer-2 chunk has thousands of small meshes; one sort over all of them replaces a
        sort per mesh. Ids are dense within a set (not in first-occurrence order).
        """
        sizes = [len(v) for v in vertex_sets]
        if sum(sizes) == 0:
            return [np.zeros(0, dtype=np.int64) for _ in sizes]
        bins = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1, 3) for v in vertex_sets])
        bins -= self.origin  # the same operations, in the same order, as ``snap``
        bins /= self.bin_size
        bins += 0.5
        np.floor(bins, out=bins)
        cells = bins.astype(np.int64)
        del bins
        cells -= cells.min(axis=0)
        span = cells.max(axis=0) + 1
        if len(sizes) * int(np.prod(span, dtype=object)) >= 2**62:  # no room for one key
            return [_dense_ids(self.snap(v)) for v in vertex_sets]
        key = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
        for axis in (2, 1, 0):
            key *= span[axis]
            key += cells[:, axis]
        del cells
        _, inverse = np.unique(key, return_inverse=True)
        inverse = inverse.reshape(-1)
        out, start = [], 0
        for size in sizes:
            ids = inverse[start : start + size]
            out.append(ids - ids.min() if size else ids)
            start += size
        return out


def _dense_ids(points: np.ndarray) -> np.ndarray:
    from meshing_core.mesh.closedness import unique_rows

    return unique_rows(points)[1].astype(np.int64)


def _bits_bin_range(min_range: float, max_bin: float) -> tuple[int, float, float]:
    """Smallest bit count (then bin) whose range covers ``min_range`` plus one spare bin."""
    if min_range <= 0 or max_bin <= 0:
        raise ValueError(f"draco grid needs a positive range and bin, got {min_range}, {max_bin}")
    bits = math.ceil(math.log2(min_range / max_bin + 1))
    while True:
        bins = 2**bits - 1
        bin_size = float(math.ceil(min_range / bins))
        grid_range = bin_size * bins
        if grid_range >= min_range + bin_size:
            return bits, bin_size, grid_range
        if bin_size == max_bin:  # no room to widen the bin: one more bit, recompute
            bits += 1
            continue
        bin_size += 1
        return bits, bin_size, bin_size * bins


def _max_bin(resolution_nm: np.ndarray) -> float:
    # A bin no wider than the smallest voxel edge / sqrt(2) keeps distinct voxel corners apart.
    return float(max(1.0, math.floor(float(resolution_nm.min()) / math.sqrt(2))))


def layer2_grid(
    block_shape_vox: Sequence[int],
    resolution_nm: Sequence[float],
    chunk_offset_nm: Sequence[float],
) -> DracoGrid:
    """The grid of a layer-2 chunk: the chunk and its one-voxel margin on every side must fit.

    The bin is the ChunkedGraph's (from the chunk plus its +1 voxel overlap), so readers that
    de-duplicate on it see the lattice they expect. The origin is one voxel further down, as a
    chunk closes objects it owns there (``overlap``), and bits are added while the range does
    not reach the margin's far side: same bin, same lattice.
    """
    shape = np.asarray(block_shape_vox, dtype=np.float64)
    res = np.asarray(resolution_nm, dtype=np.float64)
    offset = np.asarray(chunk_offset_nm, dtype=np.float64)
    bits, bin_size, grid_range = _bits_bin_range(float(np.max((shape + 1) * res)), _max_bin(res))
    low = offset - res
    origin = low - np.mod(low, bin_size)
    reach = float(np.max(offset + (shape + 1) * res - origin)) + bin_size
    return _widened(bits, bin_size, grid_range, origin, reach)


def requantised_grid(
    block_shape_vox: Sequence[int],
    resolution_nm: Sequence[float],
    chunk_offset_nm: Sequence[float],
    old_bin: float,
) -> DracoGrid:
    """The grid of a higher-layer chunk holding children quantised with bins of ``old_bin``.

    The bin is the ChunkedGraph's (the chunk padded by one old bin on each side, as child
    vertices snapped to the old grid may sit up to one old bin outside it). The origin is one
    voxel further down, where layer-2 meshes close objects they own (``overlap``), and bits
    are added while the range does not reach the far side: same bin, same lattice.
    """
    shape = np.asarray(block_shape_vox, dtype=np.float64)
    res = np.asarray(resolution_nm, dtype=np.float64)
    offset = np.asarray(chunk_offset_nm, dtype=np.float64)
    min_range = float(np.max(shape * res)) + 2 * float(old_bin)
    bits, bin_size, grid_range = _bits_bin_range(min_range, _max_bin(res))
    shifted = offset - res - float(old_bin)
    origin = shifted - np.mod(shifted, bin_size)
    reach = float(np.max(offset + shape * res + float(old_bin) - origin)) + bin_size
    return _widened(bits, bin_size, grid_range, origin, reach)


def _widened(
    bits: int, bin_size: float, grid_range: float, origin: np.ndarray, reach: float
) -> DracoGrid:
    """The grid with bits added (same bin, same lattice) until its range covers ``reach``."""
    while grid_range < reach:
        bits += 1
        grid_range = bin_size * (2**bits - 1)
    return DracoGrid(bits=bits, bin_size=bin_size, range=grid_range, origin=origin)


def collapse_on_grid(
    vertices: np.ndarray,
    faces: np.ndarray,
    grid: DracoGrid,
    *,
    walls: bool = False,
    overwrite: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The mesh as the grid stores it, without the triangles quantisation would flatten.

    Snapping to the grid can put both ends of an edge on one grid point; the triangles on that
    edge then have no area (a thin tip rounding together). Vertices the grid puts on one point
    are merged (as any reader welding the mesh sees them; along an edge this is an edge
    collapse, so no hole opens) and the triangles left with a repeated corner dropped.
    Snapping can also put three corners on one line: such a triangle is removed by splitting
    its long edge at the middle corner (``split_flat``). With ``walls``, triangles present with
    both windings go too (``merge.drop_walls``: where stitched children touch). Positions are
    the snapped ones Draco would store anyway; the vertices come out distinct. ``overwrite``:
    float64 ``vertices`` may be snapped in place (a stitch's largest array, not copied).
    """
    from meshing_core.mesh.closedness import weld
    from meshing_core.mesh.merge import drop_walls

    snapped = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    snapped = grid.snap(snapped, out=snapped if overwrite else None)
    points, tris = weld(snapped, faces)
    del snapped
    if walls:
        points, tris = drop_walls(points, tris, welded=True)
    return points, split_flat(points, tris).astype(np.uint32, copy=False)


#: Rounds of ``split_flat`` (a split can leave a neighbour flat in turn; chains are short).
MAX_FLAT_ROUNDS = 8


_BLOCK = 1 << 16  # triangles per block when looking for flat ones (bounded memory)


def _flat_triangles(vertices: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Indices of triangles whose three corners lie on one line (exact on grid coordinates)."""
    found = []
    for start in range(0, len(tris), _BLOCK):
        block = tris[start : start + _BLOCK]
        a = vertices[block[:, 0]]
        u = vertices[block[:, 1]] - a
        w = vertices[block[:, 2]] - a
        flat = ~np.cross(u, w).any(axis=1)
        found.append(np.flatnonzero(flat) + start)
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def split_flat(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Triangles without the ones whose three (distinct) corners lie on one line.

    A flat triangle (a, c, b) with b between a and c goes with the triangle (c, a, d) across its
    long edge, replaced by (c, b, d) and (b, a, d): the same surface, every edge still used as
    often as before, no zero area. On an open rim (no triangle across a-c) it is just removed:
    its two short edges lie along the rim it was on. Exact on grid coordinates.
    """
    tris = np.asarray(faces).reshape(-1, 3)
    for _ in range(MAX_FLAT_ROUNDS):
        flat = _flat_triangles(vertices, tris)
        if len(flat) == 0:
            break
        # directed edges of the triangles that touch a flat one (the neighbours looked up)
        touched = np.zeros(len(vertices), dtype=bool)
        touched[tris[flat].reshape(-1)] = True
        near = np.flatnonzero(touched[tris].any(axis=1))
        del touched
        owner: dict[tuple[int, int], int] = {}
        for index, (a, b, c) in zip(near.tolist(), tris[near].tolist(), strict=True):
            owner[(a, b)] = owner[(b, c)] = owner[(c, a)] = index
        drop: set[int] = set()
        added: list[list[int]] = []
        for index in flat.tolist():
            if index in drop:
                continue
            tri = tris[index].tolist()
            lengths = [float(np.sum((vertices[tri[k]] - vertices[tri[(k + 1) % 3]]) ** 2))
                       for k in range(3)]  # fmt: skip
            k = int(np.argmax(lengths))  # the long edge runs tri[k] -> tri[k+1]
            a, c, b = tri[k], tri[(k + 1) % 3], tri[(k + 2) % 3]
            across = owner.get((c, a))
            if across is not None and across in drop:
                continue  # its neighbour changed this round already: next round
            # a flat neighbour (two flat triangles on one line) is split the same way: both
            # halves are flat again, one corner shorter, and their outer neighbours split them
            drop.add(index)
            if across is None:
                continue
            drop.add(across)
            other = tris[across].tolist()
            d = next(v for v in other if v not in (a, c))
            added += [[c, b, d], [b, a, d]]  # (c, a, d) split at b, its orientation kept
        keep = np.ones(len(tris), dtype=bool)
        keep[np.fromiter(drop, dtype=np.int64, count=len(drop))] = False
        tris = np.concatenate([tris[keep], np.asarray(added, dtype=tris.dtype).reshape(-1, 3)])
    return tris


def encode_draco(vertices: np.ndarray, faces: np.ndarray, grid: DracoGrid) -> bytes:
    """Draco bytes of one mesh quantised on ``grid`` (same input, same bytes), triangles as given.

    Meshing hands it ``collapse_on_grid``'s output, so no stored triangle has zero area; the
    seed recipe in the bench hands it raw meshes (plain Draco).
    """
    verts = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1, 3)
    tris = np.ascontiguousarray(faces, dtype=np.uint32).reshape(-1, 3)
    if len(verts):
        low = verts.min(axis=0) - grid.origin
        high = verts.max(axis=0) - grid.origin
        if low.min() < -grid.bin_size / 2 or high.max() > grid.range + grid.bin_size / 2:
            raise ValueError(
                f"mesh spans {verts.min(axis=0)}..{verts.max(axis=0)} nm, outside its draco grid "
                f"{grid.origin}+{grid.range} nm"
            )
    return DracoPy.encode(
        verts,
        tris,
        quantization_bits=int(grid.bits),
        compression_level=COMPRESSION_LEVEL,
        quantization_range=float(grid.range),
        quantization_origin=np.asarray(grid.origin, dtype=np.float64).tolist(),
        create_metadata=True,
    )
