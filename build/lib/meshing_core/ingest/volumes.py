"""The precomputed layers the builder reads (the input supervoxels) and writes (the watershed).

The input is read one layer-2 chunk at a time through cloud-volume, so any ``file://``,
``gs://`` or ``s3://`` path works and memory stays bounded by one chunk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from meshing_core.ingest.errors import BuildError

log = logging.getLogger(__name__)

UNSIGNED = ("uint8", "uint16", "uint32", "uint64")


@dataclass(frozen=True)
class SourceVolume:
    """Geometry of the input segmentation at mip 0 and a chunk reader."""

    cloudpath: str
    voxel_offset: tuple[int, int, int]
    volume_size: tuple[int, int, int]
    resolution: tuple[float, float, float]
    dtype: str
    cv: object

    def read(self, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        """Voxels [start, stop) (absolute, xyz) as uint64."""
        from cloudvolume import Bbox

        cutout = self.cv.download(Bbox(start, stop), mip=0)  # type: ignore[attr-defined]
        return np.asarray(cutout[..., 0], dtype=np.uint64)


def open_source(cloudpath: str) -> SourceVolume:
    """Open the input segmentation; missing or non-integer layers are one-line BuildErrors."""
    from cloudvolume import CloudVolume
    from cloudvolume.exceptions import InfoUnavailableError

    try:
        cv = CloudVolume(cloudpath, mip=0, progress=False, fill_missing=True, bounded=True)
    except InfoUnavailableError:
        raise BuildError(
            f"segmentation {cloudpath} not found (no info file): pass the path of a precomputed layer"
        ) from None
    except Exception as exc:  # cloud-volume raises many kinds for bad paths
        raise BuildError(
            f"segmentation {cloudpath} cannot be opened ({type(exc).__name__}: {exc}); "
            "pass a precomputed layer path such as file:///data/ws or gs://bucket/ws"
        ) from None
    dtype = str(cv.data_type)
    if dtype not in UNSIGNED:
        raise BuildError(
            f"segmentation {cloudpath} has data type {dtype}: supervoxels must be unsigned integers "
            f"({', '.join(UNSIGNED)})"
        )
    if str(cv.layer_type) != "segmentation":
        log.warning(
            "segmentation %s has layer type %s; reading it as supervoxels", cloudpath, cv.layer_type
        )
    bounds = cv.meta.bounds(0)
    return SourceVolume(
        cloudpath=cloudpath,
        voxel_offset=tuple(int(v) for v in bounds.minpt),  # type: ignore[arg-type]
        volume_size=tuple(int(v) for v in bounds.size3()),  # type: ignore[arg-type]
        resolution=tuple(float(v) for v in cv.meta.resolution(0)),  # type: ignore[arg-type]
        dtype=dtype,
        cv=cv,
    )


def downsample_factors(
    resolution: tuple[float, float, float], mip: int
) -> list[tuple[int, int, int]]:
    """Per-step factors from mip 0 to ``mip``.

    Rule: x and y always halve; z halves only where it is strictly finer than the coarsest of
    x and y at that step (so isotropic data first goes anisotropic 2x2x1, then 2x2x2, and
    anisotropic EM data such as 8x8x40 keeps its z until x,y catch up).
    """
    res = list(resolution)
    steps: list[tuple[int, int, int]] = []
    for _ in range(mip):
        fz = 2 if res[2] < max(res[0], res[1]) else 1
        steps.append((2, 2, fz))
        res = [res[0] * 2, res[1] * 2, res[2] * fz]
    return steps


def cumulative_factors(steps: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Total factor of each mip 0..len(steps) relative to mip 0."""
    total = [(1, 1, 1)]
    for fx, fy, fz in steps:
        x, y, z = total[-1]
        total.append((x * fx, y * fy, z * fz))
    return total


def check_mip_geometry(
    chunk_size: tuple[int, int, int],
    voxel_offset: tuple[int, int, int],
    totals: list[tuple[int, int, int]],
) -> None:
    """Every mip's chunks must stay whole voxels and aligned; say which mip fails and why."""
    for mip, factor in enumerate(totals):
        for axis, name in enumerate("xyz"):
            if chunk_size[axis] % factor[axis]:
                raise BuildError(
                    f"chunk size {list(chunk_size)} is not divisible by the mip {mip} downsampling factor "
                    f"{list(factor)} along {name}: use a chunk size that is (e.g. multiples of {list(totals[-1])}) or a lower --mip"
                )
            if voxel_offset[axis] % factor[axis]:
                raise BuildError(
                    f"voxel offset {list(voxel_offset)} is not divisible by the mip {mip} factor {list(factor)} "
                    f"along {name}: use a lower --mip"
                )


class WatershedWriter:
    """Writes the layer-1 watershed: one aligned block per layer-2 chunk, at every mip."""

    def __init__(
        self,
        cloudpath: str,
        *,
        resolution: tuple[float, float, float],
        voxel_offset: tuple[int, int, int],
        volume_size: tuple[int, int, int],
        chunk_size: tuple[int, int, int],
        mip: int,
        mesh_dir: str | None,
    ) -> None:
        from cloudvolume import CloudVolume

        self.steps = downsample_factors(resolution, mip)
        self.totals = cumulative_factors(self.steps)
        check_mip_geometry(chunk_size, voxel_offset, self.totals)
        info = CloudVolume.create_new_info(
            num_channels=1,
            layer_type="segmentation",
            data_type="uint64",
            encoding="compressed_segmentation",
            resolution=list(resolution),
            voxel_offset=list(voxel_offset),
            volume_size=list(volume_size),
            chunk_size=list(chunk_size),
            mesh=mesh_dir,
        )
        base = CloudVolume(cloudpath, info=info, progress=False)
        for factor in self.totals[1:]:
            base.add_scale(
                list(factor),
                chunk_size=[c // f for c, f in zip(chunk_size, factor, strict=True)],
                encoding="compressed_segmentation",
            )
        base.commit_info()
        self.volumes = [
            CloudVolume(cloudpath, mip=m, progress=False, bounded=True, non_aligned_writes=False)
            for m in range(len(self.totals))
        ]
        self.resolution = tuple(float(r) for r in np.asarray(base.meta.resolution(mip)))

    def write(self, start: np.ndarray, labels: np.ndarray) -> None:
        """Write one chunk's labels (absolute mip-0 ``start``) and its downsampled copies."""
        import tinybrain

        data = np.asfortranarray(labels, dtype=np.uint64)
        for mip, cv in enumerate(self.volumes):
            if mip:
                data = np.asfortranarray(
                    tinybrain.downsample_segmentation(data, self.steps[mip - 1])[0], dtype=np.uint64
                )
            factor = np.asarray(self.totals[mip])
            lo = np.asarray(start) // factor
            hi = lo + np.asarray(data.shape[:3])
            cv[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = data
