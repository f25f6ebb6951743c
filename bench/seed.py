"""The seed recipe (PyChunkedGraph meshgen / igneous), run on chunk arrays already in memory.

One zmesh ``Mesher`` per chunk, ``mesh(labels)``, then ``get(label, reduction_factor=100,
max_error=...)`` for every label in a fixed (sorted) order, vertices moved to the chunk offset,
then Draco on the chunk's grid. No IO and no graph: the seed's best case.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import zmesh

from meshing_core.mesh.draco_grid import DracoGrid, encode_draco


@dataclass
class SeedResult:
    seconds: float
    triangles: int
    bytes: int
    fragments: int


def seed_chunk(
    labels: np.ndarray,
    resolution: np.ndarray,
    offset_nm: np.ndarray,
    max_error: float,
    grid: DracoGrid,
) -> SeedResult:
    started = time.perf_counter()
    mesher = zmesh.Mesher(tuple(float(r) for r in resolution))
    mesher.mesh(labels)
    triangles = size = fragments = 0
    for label in sorted(int(i) for i in mesher.ids()):
        if label == 0:
            continue
        mesh = mesher.get(label, reduction_factor=100, max_error=max_error, voxel_centered=False)
        if len(mesh.faces) == 0:
            continue
        vertices = mesh.vertices + np.asarray(offset_nm, dtype=np.float32)
        size += len(encode_draco(vertices, mesh.faces, grid))
        triangles += len(mesh.faces)
        fragments += 1
    return SeedResult(time.perf_counter() - started, triangles, size, fragments)
