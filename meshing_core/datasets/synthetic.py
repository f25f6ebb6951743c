"""A synthetic, dense "neuropil" segmentation for tests, benchmarks and the offline example.

Neurites are smooth random tubes cut into supervoxels along their length; the space between
them is filled by jittered grid cells (supervoxels) grouped 2x2x2 into objects, so every voxel
is labelled, objects cross chunk faces, and some fill objects are cut apart by neurites (which
exercises the builder's non-touching rule). The scene is a small parametric description, so any
box can be rendered on its own: a volume too large for memory is written block by block.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
from scipy.ndimage import map_coordinates

#: Volumes of more voxels than this are rendered block by block in a process per core: rendering
#: is the cost of building a bench dataset (a 1024x1024x256 volume took 100 s in one process).
PARALLEL_VOXELS = 2**25
RENDER_BLOCK = (256, 256, 64)
NEURITE_OBJECT_BASE = 2_000_000
FILL_OBJECT_BASE = 1_000_000


@dataclass(frozen=True)
class NeuriteScene:
    """Everything needed to render any box of the synthetic volume."""

    shape: tuple[int, int, int]
    cell: int
    cells: tuple[int, int, int]
    jitter: np.ndarray  # (3, gx, gy, gz) displacement lattice, spacing ``cell``
    seg_start: np.ndarray  # (m, 3) float segment starts
    seg_end: np.ndarray  # (m, 3)
    seg_radius: np.ndarray  # (m,)
    seg_label: np.ndarray  # (m,) uint64 supervoxel of the segment
    seg_object: np.ndarray  # (m,) uint64 object of the segment

    @property
    def n_fill(self) -> int:
        return int(np.prod(self.cells))

    def fill_object(self, supervoxels: np.ndarray) -> np.ndarray:
        """Object of fill supervoxels: their cells grouped 2x2x2."""
        index = supervoxels.astype(np.int64) - 1
        gx, gy, gz = self.cells
        x, rest = index // (gy * gz), index % (gy * gz)
        y, z = rest // gz, rest % gz
        hy, hz = (gy + 1) // 2, (gz + 1) // 2
        group = ((x // 2) * hy + (y // 2)) * hz + (z // 2)
        return (FILL_OBJECT_BASE + group).astype(np.uint64)

    def objects(self, supervoxels: np.ndarray) -> np.ndarray:
        """Object of each supervoxel (fill or neurite)."""
        svs = np.asarray(supervoxels, dtype=np.uint64)
        out = np.zeros(svs.shape, dtype=np.uint64)
        fill = svs <= self.n_fill
        out[fill] = self.fill_object(svs[fill])
        order = np.argsort(self.seg_label, kind="stable")
        labels = self.seg_label[order]
        pos = np.searchsorted(labels, svs[~fill]).clip(0, max(labels.size - 1, 0))
        out[~fill] = self.seg_object[order][pos] if labels.size else 0
        return out


def neurite_scene(
    shape: tuple[int, int, int],
    seed: int = 0,
    *,
    n_neurites: int | None = None,
    cell: int | None = None,
    radius: tuple[float, float] = (2.0, 5.0),
    step: float = 4.0,
    steps_per_supervoxel: int = 6,
) -> NeuriteScene:
    """Draw the scene's random parameters (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    dims = np.asarray(shape, dtype=np.float64)
    if cell is None:
        cell = int(max(4, min(16, min(shape) // 2)))
    cells = tuple(int(np.ceil(s / cell)) for s in shape)
    lattice = [c + 2 for c in cells]
    jitter = rng.uniform(-cell / 3, cell / 3, size=(3, *lattice))
    if n_neurites is None:
        n_neurites = int(max(3, round(np.prod(dims) / 2.0e6)))
    starts, ends, radii, labels, objects = [], [], [], [], []
    next_label = int(np.prod(cells)) + 1
    max_steps = int(2 * dims.max() / step) + 1
    for neurite in range(n_neurites):
        point = rng.uniform(0, 1, 3) * dims
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        r = rng.uniform(*radius)
        for i in range(max_steps):
            if i and i % steps_per_supervoxel == 0:
                next_label += 1
            direction = direction + rng.normal(scale=0.25, size=3)
            direction /= np.linalg.norm(direction)
            nxt = point + step * direction
            starts.append(point)
            ends.append(nxt)
            radii.append(r)
            labels.append(next_label)
            objects.append(NEURITE_OBJECT_BASE + neurite)
            point = nxt
            if np.any(point < -r) or np.any(point > dims + r):
                break
        next_label += 1
    return NeuriteScene(
        shape=tuple(int(s) for s in shape),  # type: ignore[arg-type]
        cell=cell,
        cells=cells,  # type: ignore[arg-type]
        jitter=jitter,
        seg_start=np.asarray(starts, dtype=np.float64).reshape(-1, 3),
        seg_end=np.asarray(ends, dtype=np.float64).reshape(-1, 3),
        seg_radius=np.asarray(radii, dtype=np.float64),
        seg_label=np.asarray(labels, dtype=np.uint64),
        seg_object=np.asarray(objects, dtype=np.uint64),
    )


def render(
    scene: NeuriteScene, start: tuple[int, int, int], stop: tuple[int, int, int]
) -> np.ndarray:
    """Voxels [start, stop) of the scene (xyz, uint64, Fortran order, no zeros)."""
    lo = np.asarray(start, dtype=np.int64)
    hi = np.asarray(stop, dtype=np.int64)
    grid = np.stack(
        np.meshgrid(
            *(np.arange(a, b, dtype=np.float32) + 0.5 for a, b in zip(lo, hi, strict=True)),
            indexing="ij",
        )
    )
    lattice_coords = grid / scene.cell + 1.0
    cell_index = []
    for axis in range(3):
        moved = grid[axis] + map_coordinates(
            scene.jitter[axis], lattice_coords, order=1, mode="nearest"
        )
        cell_index.append(np.clip((moved // scene.cell).astype(np.int64), 0, scene.cells[axis] - 1))
    gx, gy, gz = scene.cells
    out = ((cell_index[0] * gy + cell_index[1]) * gz + cell_index[2] + 1).astype(np.uint64)
    del grid, lattice_coords, cell_index

    seg_lo = np.minimum(scene.seg_start, scene.seg_end) - scene.seg_radius[:, None]
    seg_hi = np.maximum(scene.seg_start, scene.seg_end) + scene.seg_radius[:, None]
    hits = np.flatnonzero(np.all(seg_hi >= lo, axis=1) & np.all(seg_lo <= hi, axis=1))
    for s in hits.tolist():
        box_lo = np.maximum(np.floor(seg_lo[s]).astype(np.int64), lo)
        box_hi = np.minimum(np.ceil(seg_hi[s]).astype(np.int64) + 1, hi)
        if np.any(box_hi <= box_lo):
            continue
        axes = [
            np.arange(a, b, dtype=np.float64) + 0.5 for a, b in zip(box_lo, box_hi, strict=True)
        ]
        px, py, pz = np.meshgrid(*axes, indexing="ij")
        p0, d = scene.seg_start[s], scene.seg_end[s] - scene.seg_start[s]
        t = ((px - p0[0]) * d[0] + (py - p0[1]) * d[1] + (pz - p0[2]) * d[2]) / float(d @ d)
        t = np.clip(t, 0.0, 1.0)
        dist2 = (
            (px - p0[0] - t * d[0]) ** 2
            + (py - p0[1] - t * d[1]) ** 2
            + (pz - p0[2] - t * d[2]) ** 2
        )
        inside = dist2 <= scene.seg_radius[s] ** 2
        view = out[tuple(slice(a - o, b - o) for a, b, o in zip(box_lo, box_hi, lo, strict=True))]
        view[inside] = scene.seg_label[s]
    return np.asfortranarray(out)


Box = tuple[int, int, int]


def _render_box(scene: NeuriteScene, lo: Box, hi: Box) -> tuple[Box, Box, np.ndarray]:
    return lo, hi, render(scene, lo, hi)


def render_blocks(
    scene: NeuriteScene, shape: Box, block: Box
) -> Iterator[tuple[Box, Box, np.ndarray]]:
    """(start, stop, voxels) of every block of the scene, in order; a process per core renders
    them when the volume is large (each voxel depends on its position only: same output)."""
    boxes = []
    for x in range(0, shape[0], block[0]):
        for y in range(0, shape[1], block[1]):
            for z in range(0, shape[2], block[2]):
                lo = (x, y, z)
                hi = tuple(min(a + s, n) for a, s, n in zip(lo, block, shape, strict=True))
                boxes.append((lo, hi))
    workers = min(os.cpu_count() or 1, len(boxes))
    if workers < 2 or int(np.prod(shape)) <= PARALLEL_VOXELS:
        for lo, hi in boxes:
            yield _render_box(scene, lo, hi)  # type: ignore[arg-type]
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        pending = [pool.submit(_render_box, scene, lo, hi) for lo, hi in boxes]
        for future in pending:  # in order; at most the finished blocks wait here
            yield future.result()


def neurite_volume(
    shape: tuple[int, int, int], seed: int = 0, **scene_options: object
) -> tuple[np.ndarray, dict[int, int]]:
    """A dense synthetic segmentation and its agglomeration (supervoxel -> object).

    The volume is uint64, indexed [x, y, z] in Fortran order (cloud-volume's layout), with
    every voxel labelled; the agglomeration lists exactly the supervoxels present.
    """
    scene = neurite_scene(shape, seed, **scene_options)  # type: ignore[arg-type]
    volume = np.empty(tuple(shape), dtype=np.uint64, order="F")
    for lo, hi, data in render_blocks(scene, tuple(shape), RENDER_BLOCK):  # type: ignore[arg-type]
        volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = data
    present = np.unique(volume)
    objects = scene.objects(present)
    return volume, dict(zip(present.tolist(), objects.tolist(), strict=True))


def _new_layer(
    cloudpath: str,
    dtype: str,
    shape: tuple[int, int, int],
    resolution,
    voxel_offset=(0, 0, 0),
    chunk_size=(64, 64, 64),
):
    from cloudvolume import CloudVolume

    encoding = "compressed_segmentation" if dtype in ("uint32", "uint64") else "raw"
    info = CloudVolume.create_new_info(
        num_channels=1,
        layer_type="segmentation",
        data_type=dtype,
        encoding=encoding,
        resolution=[float(r) for r in resolution],
        voxel_offset=[int(v) for v in voxel_offset],
        volume_size=[int(s) for s in shape],
        chunk_size=[int(c) for c in chunk_size],
    )
    cv = CloudVolume(cloudpath, info=info, progress=False)
    cv.commit_info()
    return CloudVolume(cloudpath, progress=False, non_aligned_writes=True)


def write_precomputed_segmentation(
    cloudpath: str,
    volume: np.ndarray,
    resolution,
    voxel_offset=(0, 0, 0),
    chunk_size=(64, 64, 64),
) -> None:
    """Write an [x, y, z] integer volume as a new precomputed segmentation layer."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-d [x, y, z] volume, got shape {volume.shape}")
    cv = _new_layer(
        cloudpath, str(volume.dtype), volume.shape, resolution, voxel_offset, chunk_size
    )
    off = [int(v) for v in voxel_offset]
    cv[
        off[0] : off[0] + volume.shape[0],
        off[1] : off[1] + volume.shape[1],
        off[2] : off[2] + volume.shape[2],
    ] = np.asfortranarray(volume)


def write_neurite_segmentation(
    cloudpath: str,
    shape: tuple[int, int, int],
    seed: int = 0,
    resolution=(8.0, 8.0, 8.0),
    chunk_size=(64, 64, 64),
    block: tuple[int, int, int] = (256, 256, 64),
) -> dict[int, int]:
    """Write the synthetic volume block by block (bounded memory); return its agglomeration."""
    scene = neurite_scene(shape, seed)
    cv = _new_layer(cloudpath, "uint64", shape, resolution, (0, 0, 0), chunk_size)
    step = tuple(max(b // c, 1) * c for b, c in zip(block, chunk_size, strict=True))
    present: list[np.ndarray] = []
    for lo, hi, data in render_blocks(scene, shape, step):  # type: ignore[arg-type]
        present.append(np.unique(data))
        cv[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = data
    svs = np.unique(np.concatenate(present)) if present else np.zeros(0, np.uint64)
    return dict(zip(svs.tolist(), scene.objects(svs).tolist(), strict=True))


def write_agglomeration_csv(path, agglomeration: dict[int, int]) -> None:
    """Write ``supervoxel,object`` rows (with a header), sorted by supervoxel."""
    from pathlib import Path

    lines = ["supervoxel,object"] + [f"{sv},{obj}" for sv, obj in sorted(agglomeration.items())]
    Path(path).write_text("\n".join(lines) + "\n")
