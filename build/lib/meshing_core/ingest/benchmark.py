"""Build-graph benchmark: a large synthetic volume built in a fresh process.

The build runs in a spawned child so its peak RSS (``RUSAGE_CHILDREN``) is the build's own,
not the generator's. ``python -m meshing_core.ingest.benchmark`` prints the numbers.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

from meshing_core.datasets.synthetic import write_agglomeration_csv, write_neurite_segmentation
from meshing_core.store.paths import to_cloudpath


def _build(args: tuple) -> float:
    from meshing_core.ingest.builder import build_graph

    seg, agg, out, chunk_size = args
    start = time.perf_counter()
    build_graph(seg, agg, out, chunk_size, created_at=0.0, progress=False)
    return time.perf_counter() - start


def measure_build(
    work: Path,
    shape: tuple[int, int, int] = (1024, 1024, 256),
    chunk_size: tuple[int, int, int] = (128, 128, 64),
    seed: int = 0,
) -> dict[str, float]:
    """Write the synthetic source under ``work`` and time its build; return seconds and peak RSS."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    seg = to_cloudpath(work / "source")
    start = time.perf_counter()
    agglomeration = write_neurite_segmentation(seg, shape, seed, chunk_size=(64, 64, 64))
    write_agglomeration_csv(work / "agglomeration.csv", agglomeration)
    generate_s = time.perf_counter() - start
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        build_s = pool.apply(_build, ((seg, work / "agglomeration.csv", work / "out", chunk_size),))
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "voxels": float(shape[0] * shape[1] * shape[2]),
        "supervoxels": float(len(agglomeration)),
        "generate_s": round(generate_s, 2),
        "build_s": round(build_s, 2),
        "build_peak_rss_mib": round(peak_kib / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", type=int, nargs=3, default=(1024, 1024, 256))
    parser.add_argument("--chunk-size", type=int, nargs=3, default=(128, 128, 64))
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = measure_build(args.work or Path(tmp), tuple(args.shape), tuple(args.chunk_size))
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
