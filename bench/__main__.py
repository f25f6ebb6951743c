"""``python -m bench``: layer-2 meshing vs the seed recipe, all layers of a 5-layer graph, and
the builder at 1024x1024x256.

Prints raw figures and ``RATIO <name> <value>`` lines (medians over ``--repeats`` runs).
"""

from __future__ import annotations

import argparse
import logging
import time

from bench import build_large, layer2, stitch
from bench.dataset import DatasetSpec, build_dataset


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing (median)")
    parser.add_argument("--skip-build", action="store_true", help="skip the 1024^2x256 build")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    started = time.perf_counter()
    spec = DatasetSpec()
    graph_yaml, build_seconds = build_dataset(spec)
    print(
        f"dataset {spec.name} resolution {list(spec.resolution)} chunk {list(spec.chunk_size)} "
        f"build_seconds {build_seconds:.2f}",
        flush=True,
    )
    figures = layer2.run(graph_yaml, args.repeats)
    for line in layer2.report(figures):
        print(line, flush=True)
    for line in stitch.report(*stitch.run()):
        print(line, flush=True)
    if not args.skip_build:
        built = build_large.measure()
        print(
            f"build_1024x1024x256_seconds {built['seconds']:.2f} "
            f"build_1024x1024x256_peak_rss_mib {built['peak_rss_mib']:.1f}",
            flush=True,
        )
    print(f"bench_total_seconds {time.perf_counter() - started:.1f}", flush=True)


if __name__ == "__main__":
    main()
