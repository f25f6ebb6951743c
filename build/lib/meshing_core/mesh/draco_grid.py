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

    def snap(self, vertices: np.ndarray) -> np.ndarray:
        """Vertices moved to their nearest grid point, as Draco's encoder rounds them."""
        rel = (np.asarray(vertices, dtype=np.float64) - self.origin) / self.bin_size
        return np.floor(rel + 0.5) * self.bin_size + self.origin


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
    """The grid of a layer-2 chunk (the chunk plus its +1 voxel overlap must fit)."""
    shape = np.asarray(block_shape_vox, dtype=np.float64)
    res = np.asarray(resolution_nm, dtype=np.float64)
    offset = np.asarray(chunk_offset_nm, dtype=np.float64)
    min_range = float(np.max((shape + 1) * res))
    bits, bin_size, grid_range = _bits_bin_range(min_range, _max_bin(res))
    origin = offset - np.mod(offset, bin_size)
    return DracoGrid(bits=bits, bin_size=bin_size, range=grid_range, origin=origin)


def requantised_grid(
    block_shape_vox: Sequence[int],
    resolution_nm: Sequence[float],
    chunk_offset_nm: Sequence[float],
    old_bin: float,
) -> DracoGrid:
    """The grid of a higher-layer chunk holding children quantised with bins of ``old_bin``.

    The range is padded by one old bin on each side, because child vertices snapped to the old
    grid may sit up to one old bin outside the chunk.
    """
    shape = np.asarray(block_shape_vox, dtype=np.float64)
    res = np.asarray(resolution_nm, dtype=np.float64)
    offset = np.asarray(chunk_offset_nm, dtype=np.float64)
    min_range = float(np.max(shape * res)) + 2 * float(old_bin)
    bits, bin_size, grid_range = _bits_bin_range(min_range, _max_bin(res))
    shifted = offset - float(old_bin)
    origin = shifted - np.mod(shifted, bin_size)
    return DracoGrid(bits=bits, bin_size=bin_size, range=grid_range, origin=origin)


def encode_draco(vertices: np.ndarray, faces: np.ndarray, grid: DracoGrid) -> bytes:
    """Draco bytes of one mesh quantised on ``grid`` (same input, same bytes)."""
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
