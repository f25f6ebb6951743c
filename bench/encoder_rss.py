"""The draco encoder's own memory on a chunk's largest stored mesh, in a fresh process:
``python -m bench.encoder_rss <graph.yaml> <layer> <x> <y> <z>``.

Prints ``<peak growth MiB> <decoded bytes>``: what ``encode_draco`` alone adds to the resident
size while encoding that mesh (decoded = 12 x vertices + 12 x triangles), the floor under any
stitching task that encodes the mesh in its own process.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    import DracoPy
    import numpy as np

    from bench.rss import current_rss_mib, peak_rss_mib
    from meshing_core.config import load_config
    from meshing_core.graph import open_graph
    from meshing_core.mesh.draco_grid import encode_draco
    from meshing_core.mesh.layer_grids import layer_grids
    from meshing_core.mesh.watershed import mip_geometry
    from meshing_core.run.checks import read_mesh_info
    from meshing_core.store import files
    from meshing_core.store.layout import chunk_shard_name, initial_dir
    from meshing_core.store.sharding import ShardReader, bytes_source

    config = load_config(argv[0])
    layer = int(argv[1])
    coords = tuple(int(c) for c in argv[2:5])
    meta = open_graph(config).meta
    spec = read_mesh_info(config)["sharding"][str(layer)]
    data = files.read_file(initial_dir(config, layer), chunk_shard_name(meta, layer, coords))
    largest = max((f for _, f in ShardReader(bytes_source(data), spec).items()), key=len)
    del data
    mesh = DracoPy.decode(largest)
    vertices = np.ascontiguousarray(mesh.points, dtype=np.float32).reshape(-1, 3)
    faces = np.ascontiguousarray(mesh.faces, dtype=np.uint32).reshape(-1, 3)
    del mesh, largest
    grid = layer_grids(meta, mip_geometry(meta, config.watershed, int(config.mip)), layer).grid(
        layer, coords
    )
    Path("/proc/self/clear_refs").write_text("5")  # high-water mark := now (decoding's peak gone)
    before = current_rss_mib()
    encode_draco(vertices, faces, grid)
    grown = peak_rss_mib() - before
    print(f"{grown:.2f} {12 * len(vertices) + 12 * len(faces)}")


if __name__ == "__main__":
    main(sys.argv[1:])
