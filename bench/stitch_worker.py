"""Stitch one chunk (layer >= 3) in this fresh process and print its memory figures:
``python -m bench.stitch_worker <graph.yaml> <timestamp> <layer> <x> <y> <z>``.

Prints ``<peak MiB> <after-imports MiB> <largest node mesh bytes> <fragments>``. The largest node
mesh is measured as draco would decode it (float32 vertices + uint32 faces: 12 bytes each) by
watching the meshes stitching hands to the encoder. Re-stitching rewrites the same bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path


def current_rss_mib() -> float:
    """Resident size now (``VmRSS``), the baseline a task's peak is measured from."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str]) -> None:
    import meshing_core.mesh.stitch as stitch
    from bench.rss import peak_rss_mib
    from meshing_core.config import load_config
    from meshing_core.graph import open_graph
    from meshing_core.mesh.watershed import mip_geometry
    from meshing_core.run.layer import check_mesh_info, mesh_one_chunk, read_mesh_info

    config = load_config(argv[0])
    timestamp = float(argv[1])
    layer = int(argv[2])
    coords = tuple(int(c) for c in argv[3:6])
    graph = open_graph(config)
    geometry = mip_geometry(graph.meta, config.watershed, int(config.mip))
    block = geometry.block_shape.tolist()
    info = read_mesh_info(config)
    sharding = {str(k): check_mesh_info(info, config, block, k) for k in range(2, layer + 1)}
    largest = [0]
    encode = stitch.encode_draco

    def watched(vertices, faces, grid):  # type: ignore[no-untyped-def]
        largest[0] = max(largest[0], 12 * len(vertices) + 12 * len(faces))
        return encode(vertices, faces, grid)

    stitch.encode_draco = watched
    before = current_rss_mib()
    result = mesh_one_chunk(
        config,
        layer,
        coords,  # type: ignore[arg-type]
        timestamp,
        sharding[str(layer)],
        graph,
        sharding=sharding,
        max_triangles=stitch.max_triangles_of(config),
    )
    peak = peak_rss_mib()
    print(f"{peak:.2f} {before:.2f} {largest[0]} {result.fragments}")


if __name__ == "__main__":
    main(sys.argv[1:])
