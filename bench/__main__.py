"""``python -m bench``: layer-2 meshing vs the seed recipe, all layers of a 5-layer graph, the
builder at 1024x1024x256, graph API calls per chunk through the PyChunkedGraph backend, and the same graph meshed through the Airflow DAG vs directly.

Prints raw figures and ``RATIO <name> <value>`` lines (medians over ``--repeats`` runs).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import (
    build_large,
    dag_vs_direct,
    layer2,
    pcg_reads,
    progress_view,
    serve,
    sqs_vs_local,
    stitch,
)
from bench.dataset import DatasetSpec, build_dataset


def _layer2(args: argparse.Namespace) -> None:
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
    with tempfile.TemporaryDirectory(prefix="bench-real-") as workdir:
        for line in layer2.report_real(layer2.run_real(Path(workdir))):
            print(line, flush=True)


def _stitch(args: argparse.Namespace) -> None:
    for line in stitch.report(*stitch.run()):
        print(line, flush=True)
    for line in stitch.report_dense(*stitch.run(stitch.DENSE, stitch.DENSE_NAME)):
        print(line, flush=True)


def _pcg_reads(args: argparse.Namespace) -> None:
    for line in pcg_reads.report(pcg_reads.run()):
        print(line, flush=True)


def _progress_view(args: argparse.Namespace) -> None:
    for line in progress_view.report(progress_view.run()):
        print(line, flush=True)


def _build(args: argparse.Namespace) -> None:
    built = build_large.measure()
    print(
        f"build_1024x1024x256_seconds {built['seconds']:.2f} "
        f"build_1024x1024x256_peak_rss_mib {built['peak_rss_mib']:.1f}",
        flush=True,
    )


def _dag_vs_direct(args: argparse.Namespace) -> bool:
    figures = dag_vs_direct.run()
    for line in dag_vs_direct.report(figures):
        print(line, flush=True)
    return not dag_vs_direct.problems(figures)


def _sqs_vs_local(args: argparse.Namespace) -> bool:
    figures = sqs_vs_local.run()
    for line in sqs_vs_local.report(figures):
        print(line, flush=True)
    return not sqs_vs_local.problems(figures)


def _serve(args: argparse.Namespace) -> bool:
    ok = True
    for line in serve.measure(args.repeats):
        print(line, flush=True)
        ok = ok and "same_vertices False" not in line  # the server and the bypass must agree
    return ok


#: In running order; a bench returning False failed its own checks (make bench exits 1).
BENCHES: dict[str, Callable[[argparse.Namespace], bool | None]] = {
    "layer2": _layer2,
    "stitch": _stitch,
    "pcg_reads": _pcg_reads,
    "progress_view": _progress_view,
    "build": _build,
    "dag_vs_direct": _dag_vs_direct,
    "sqs_vs_local": _sqs_vs_local,
    "serve": _serve,
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing (median)")
    parser.add_argument("--skip-build", action="store_true", help="skip the 1024^2x256 build")
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHES,
        metavar="NAME",
        help=f"run only this bench (repeatable; one of {', '.join(BENCHES)}; default: all)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    selected = set(args.only or BENCHES)
    if args.skip_build:
        selected.discard("build")
    started = time.perf_counter()
    ok = True
    for name, bench in BENCHES.items():
        if name not in selected:
            continue
        begun = time.perf_counter()
        ok = bench(args) is not False and ok
        # each bench's own wall time: what to cut when make bench nears its 25 minutes
        print(f"bench_seconds {name} {time.perf_counter() - begun:.1f}", flush=True)
    print(f"bench_total_seconds {time.perf_counter() - started:.1f}", flush=True)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
