"""Mesh one layer-2 chunk in this process and print its peak RSS (MiB): ``python -m
bench.worker_rss <graph.yaml> <timestamp> <x> <y> <z>``. A pool worker does exactly this."""

from __future__ import annotations

import sys

from bench.rss import peak_rss_mib


def main(argv: list[str]) -> None:
    from meshing_core.config import load_config
    from meshing_core.graph import open_graph
    from meshing_core.mesh.watershed import mip_geometry
    from meshing_core.run.layer import check_mesh_info, mesh_one_chunk, read_mesh_info

    config = load_config(argv[0])
    timestamp = float(argv[1])
    coords = tuple(int(c) for c in argv[2:5])
    graph = open_graph(config)
    geometry = mip_geometry(graph.meta, config.watershed, int(config.mip))
    spec = check_mesh_info(read_mesh_info(config), config, geometry.block_shape.tolist(), 2)
    before = peak_rss_mib()
    mesh_one_chunk(config, 2, coords, timestamp, spec, graph)  # type: ignore[arg-type]
    peak = peak_rss_mib()
    print(f"{peak:.1f} {before:.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
