"""Reading a layer-2 chunk of the watershed at the mesh mip.

The watershed holds layer-1 (supervoxel) ids. A chunk is read with one extra voxel in +x, +y, +z
(clipped to the volume) so that meshes of neighbouring chunks meet on a shared plane. Missing
chunk files are an error here, never silently zeros: a zero-filled hole would ship holes in
meshes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from meshing_core.errors import MeshingError
from meshing_core.graph.protocol import GraphMeta
from meshing_core.mesh.overlap import OwnBox

log = logging.getLogger(__name__)

OVERLAP_VOX = 1


class WatershedError(MeshingError):
    """The watershed cannot be read (missing info, missing or broken chunk files)."""


@dataclass(frozen=True)
class MipGeometry:
    """Where layer-2 chunks sit at the mesh mip. Voxel quantities are at ``mip``."""

    mip: int
    resolution: np.ndarray  # nm per voxel at mip
    voxel_offset: np.ndarray
    volume_size: np.ndarray
    block_shape: np.ndarray  # layer-2 chunk size at mip

    def chunk_box(self, coords: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start, inner stop, stop with the +1 overlap) of a layer-2 chunk, clipped."""
        end = self.voxel_offset + self.volume_size
        start = self.voxel_offset + np.asarray(coords, dtype=np.int64) * self.block_shape
        inner = np.minimum(start + self.block_shape, end)
        outer = np.minimum(start + self.block_shape + OVERLAP_VOX, end)
        return start, inner, outer

    def chunk_offset_nm(self, coords: Sequence[int]) -> np.ndarray:
        """World position (nm) of the chunk's first voxel corner, as the ChunkedGraph places it."""
        start, _, _ = self.chunk_box(coords)
        return start.astype(np.float64) * self.resolution


@functools.lru_cache(maxsize=8)
def open_watershed(cloudpath: str, mip: int):  # -> CloudVolume
    """A reader of the watershed at ``mip`` that raises on missing chunks (cached per process)."""
    from cloudvolume import CloudVolume  # heavy import, only where used

    try:
        cv = CloudVolume(
            cloudpath, mip=mip, fill_missing=False, bounded=True, progress=False, parallel=1
        )
    except Exception as exc:  # noqa: BLE001 - any failure to open is a data problem to report
        raise WatershedError(
            f"cannot open the watershed {cloudpath} at mip {mip} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}): check graph.yaml 'watershed' and 'mesh.mip'"
        ) from exc
    return cv


def block_shape_at_mip(
    chunk_size: Sequence[int], base_resolution: Sequence[float], mip_resolution: Sequence[float]
) -> np.ndarray:
    """Layer-2 chunk size in voxels of a mip: chunk size // (res(mip) // res(0)).

    The one place this is computed (setup's mesh info and meshing both call it), with integer
    downsampling factors as the ChunkedGraph's meshing does, so the two can never disagree.
    """
    res = np.asarray(mip_resolution, dtype=np.float64)
    base = np.asarray(base_resolution, dtype=np.float64)
    factor = np.maximum(np.floor_divide(res, base).astype(np.int64), 1)
    block = np.asarray(chunk_size, dtype=np.int64) // factor
    if np.any(block < 1):
        raise WatershedError(
            f"resolution {res.tolist()} is coarser than a graph chunk {list(chunk_size)} "
            f"(base resolution {base.tolist()}): mesh at a lower mip"
        )
    return block


def mip_geometry(meta: GraphMeta, cloudpath: str, mip: int) -> MipGeometry:
    """Chunk geometry at ``mip``: block shape from ``block_shape_at_mip``."""
    cv = open_watershed(cloudpath, mip)
    res = np.asarray(cv.meta.resolution(mip), dtype=np.float64)
    block = block_shape_at_mip(meta.chunk_size, cv.meta.resolution(0), res)
    return MipGeometry(
        mip=mip,
        resolution=res,
        voxel_offset=np.asarray(cv.meta.voxel_offset(mip), dtype=np.int64),
        volume_size=np.asarray(cv.meta.volume_size(mip), dtype=np.int64),
        block_shape=block,
    )


@dataclass(frozen=True)
class ChunkBlock:
    """Supervoxels of a layer-2 chunk with one voxel more on every side the volume has."""

    supervoxels: np.ndarray
    box: OwnBox  # where the chunk's own voxels sit in ``supervoxels``
    origin: np.ndarray  # voxel (at the mip) of ``supervoxels[0, 0, 0]``

    def offset_nm(self, resolution: np.ndarray) -> np.ndarray:
        """World position (nm) of the array's first voxel."""
        return self.origin.astype(np.float64) * resolution


def read_chunk(cloudpath: str, geometry: MipGeometry, coords: Sequence[int]) -> ChunkBlock:
    """Supervoxel ids of a chunk with its one-voxel margin (see ``overlap``)."""
    from cloudvolume.exceptions import EmptyVolumeException

    start, inner, outer = geometry.chunk_box(coords)
    if np.any(inner <= start):
        raise WatershedError(
            f"chunk {tuple(int(c) for c in coords)} lies outside the watershed {cloudpath}"
        )
    first = np.maximum(start - OVERLAP_VOX, geometry.voxel_offset)
    cv = open_watershed(cloudpath, geometry.mip)
    box = f"{first.tolist()}..{outer.tolist()}"
    try:
        cutout = cv.download(
            [slice(int(a), int(b)) for a, b in zip(first, outer, strict=True)], mip=geometry.mip
        )
    except EmptyVolumeException as exc:
        raise WatershedError(
            f"watershed chunk file(s) missing for layer-2 chunk {tuple(int(c) for c in coords)} "
            f"(voxels {box} at mip {geometry.mip}) under {cloudpath}: restore them "
            f"or re-run the ingest ({str(exc).splitlines()[0] if str(exc) else 'empty volume'})"
        ) from exc
    except MeshingError:
        raise
    except Exception as exc:  # noqa: BLE001 - decode / IO failures name the chunk and path
        raise WatershedError(
            f"cannot read watershed for layer-2 chunk {tuple(int(c) for c in coords)} "
            f"(voxels {box} at mip {geometry.mip}) under {cloudpath}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    own = OwnBox(
        low=tuple(int(v) for v in (start - first)),  # type: ignore[arg-type]
        inner=tuple(int(v) for v in (inner - start)),  # type: ignore[arg-type]
    )
    return ChunkBlock(np.asarray(cutout)[..., 0], own, first)
