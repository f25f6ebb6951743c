"""Mesh one layer-2 chunk in this process and print its peak RSS (MiB): ``python -m
bench.worker_rss <graph.yaml> <timestamp> <x> <y> <z>``. A pool worker does exactly this."""

from __future__ import annotations

import sys

from bench.rss import peak_rss_mib


def main(argv: list[str]) -> None:
    from meshing_core.config import load_config
    from meshing_core.run.chunk import ChunkFailure, prepare_context, run_chunk

    config = load_config(argv[0])
    timestamp = float(argv[1])
    coords = tuple(int(c) for c in argv[2:5])
    context = prepare_context(config, 2, timestamp)
    before = peak_rss_mib()
    result = run_chunk(context, coords)  # type: ignore[arg-type]
    if isinstance(result, ChunkFailure):
        raise result.error
    peak = peak_rss_mib()
    print(f"{peak:.1f} {before:.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
