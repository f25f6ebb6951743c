"""Draco grids of every mesh layer, and re-quantisation of child meshes through them.

Every chunk of one layer shares one bin size, and every chunk origin is a multiple of it, so a
layer's grids are all the same global lattice ``k * bin``. A child mesh stitched into a layer-L
chunk is snapped onto the lattice of each layer between its own and L (as the ChunkedGraph's
stitcher does), so vertices that met on a shared plane at a lower layer still meet after the
move, and both sides of a child-chunk boundary land on the same quantised plane.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from meshing_core.graph.protocol import GraphMeta
from meshing_core.ids import FANOUT
from meshing_core.mesh.draco_grid import DracoGrid, layer2_grid, requantised_grid
from meshing_core.mesh.watershed import MipGeometry, block_shape_at_mip


def snap(vertices: np.ndarray, bin_size: float) -> np.ndarray:
    """Vertices rounded to the nearest point of the lattice ``k * bin_size`` (half up)."""
    return np.floor(np.asarray(vertices, dtype=np.float64) / bin_size + 0.5) * bin_size


@dataclass(frozen=True)
class LayerGrids:
    """Block shapes, bins and chunk grids of layers 2..``top`` at the mesh mip."""

    meta: GraphMeta
    geometry: MipGeometry
    bins: dict[int, float]

    def block(self, layer: int) -> np.ndarray:
        """Voxels per axis of a layer-``layer`` chunk at the mesh mip (ChunkedGraph rule)."""
        size = np.asarray(self.meta.chunk_size, dtype=np.int64) * FANOUT ** (int(layer) - 2)
        return block_shape_at_mip(size, self.meta.resolution, self.geometry.resolution)

    def offset_nm(self, layer: int, coords: Sequence[int]) -> np.ndarray:
        """World position (nm) of a chunk's first voxel corner."""
        start = self.geometry.voxel_offset + np.asarray(coords, dtype=np.int64) * self.block(layer)
        return start.astype(np.float64) * self.geometry.resolution

    def grid(self, layer: int, coords: Sequence[int]) -> DracoGrid:
        """The draco grid a chunk's fragments are encoded on."""
        res = self.geometry.resolution
        if int(layer) == 2:
            return layer2_grid(self.block(2), res, self.offset_nm(2, coords))
        return requantised_grid(
            self.block(layer), res, self.offset_nm(layer, coords), self.bins[int(layer) - 1]
        )

    def requantise(self, vertices: np.ndarray, from_layer: int, to_layer: int) -> np.ndarray:
        """Snap onto the lattices of layers ``from_layer``..``to_layer`` in turn.

        Snapping onto the fragment's own layer first removes draco's float32 decoding noise, so
        equal quantised points compare equal exactly.
        """
        out = np.asarray(vertices, dtype=np.float64)
        for layer in range(int(from_layer), int(to_layer) + 1):
            out = snap(out, self.bins[layer])
        return out

    def cut_box(self, layer: int, coords: Sequence[int]) -> tuple[np.ndarray, np.ndarray, float]:
        """Where a chunk's fragments may be open: its box (nm, clipped to the volume), and how
        far from its faces (nm) an open rim may lie.

        Layer-2 meshes own the seam cubes of some objects and not of others (``overlap``), so
        their rims lie within a voxel of the chunk's faces, moved by up to half a bin of each
        grid between layer 2 and ``layer``. At the volume's end the box stops at its last voxel.
        """
        res = self.geometry.resolution
        lo = self.offset_nm(layer, coords)
        last = (self.geometry.voxel_offset + self.geometry.volume_size - 1).astype(np.float64)
        hi = np.minimum(lo + self.block(layer) * res, last * res)
        snaps = sum(self.bins[k] for k in range(2, int(layer) + 1)) / 2.0
        return lo, hi, float(res.max()) + float(snaps)

    def mid_planes(self, layer: int, coords: Sequence[int]) -> np.ndarray:
        """Per axis, where the plane between a chunk's two halves lands on the layer-(L-1) lattice.

        A vertex that lay exactly on that plane in its layer-2 mesh went through the draco grid
        of every layer below ``layer``; the plane position goes through the same chain.
        """
        child_corner = np.asarray(coords, dtype=np.int64) * FANOUT + 1
        plane = self.offset_nm(int(layer) - 1, child_corner)
        return self.requantise(plane[np.newaxis, :], 2, int(layer) - 1)[0]


def layer_grids(meta: GraphMeta, geometry: MipGeometry, top_layer: int) -> LayerGrids:
    """Bins of layers 2..``top_layer``: layer 2's, then each re-quantised from the one below."""
    res = geometry.resolution
    zero = np.zeros(3)
    partial = LayerGrids(meta=meta, geometry=geometry, bins={})
    bins = {2: layer2_grid(partial.block(2), res, zero).bin_size}
    for layer in range(3, int(top_layer) + 1):
        bins[layer] = requantised_grid(partial.block(layer), res, zero, bins[layer - 1]).bin_size
    return LayerGrids(meta=meta, geometry=geometry, bins=bins)
