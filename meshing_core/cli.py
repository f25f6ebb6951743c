"""`python -m meshing_core ...`: the command line (meshing_batch.py-compatible flags and more).

Every command prints a short summary on stdout; logs and progress bars go to stderr. Errors caused
by input (``MeshingError``) print one line, ``error: ...``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from meshing_core.errors import MeshingError

log = logging.getLogger("meshing_core")


def _triple(
    parser: argparse.ArgumentParser, *names: str, help: str, required: bool = False
) -> None:
    parser.add_argument(
        *names,
        dest=names[0].lstrip("-").replace("-", "_"),
        nargs=3,
        type=int,
        metavar=("X", "Y", "Z"),
        required=required,
        help=help,
    )


def _graph_arg(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--graph",
        help="the dataset's graph.yaml or its folder: a path, file://, s3:// or gs://",
    )
    which.add_argument(
        "--cg_name",
        "--cg-name",
        dest="cg_name",
        help="a PyChunkedGraph (CAVE) graph id, as in the procedure: its meta and custom data "
        "make the config, nothing is written to disk (same as --graph pychunkedgraph:NAME; "
        "needs the pychunkedgraph extra and the BigTable environment)",
    )


def _cmd_example(args: argparse.Namespace) -> None:
    from meshing_core.datasets.example import build_example
    from meshing_core.ingest.publish import build_at

    config = build_at(args.out, lambda out: build_example(out, progress=not args.quiet))
    print(f"example dataset written: {config}")
    print(f"next: python -m meshing_core setup --graph {config}")


def _cmd_build_graph(args: argparse.Namespace) -> None:
    from meshing_core.ingest.builder import build_graph
    from meshing_core.ingest.publish import build_at
    from meshing_core.timestamps import parse_timestamp

    created_at = parse_timestamp(args.created_at) if args.created_at is not None else None
    config = build_at(
        args.out,
        lambda out: build_graph(
            args.segmentation,
            args.agglomeration,
            out,
            tuple(args.chunk_size),
            edits=args.edits,
            created_at=created_at,
            mip=args.mip,
            mesh_dir=args.mesh_dir,
            name=args.name,
            spatial_bits=args.spatial_bits,
            max_error=args.max_error,
            progress=not args.quiet,
        ),
    )
    print(f"graph written: {config}")


def _cmd_setup(args: argparse.Namespace) -> None:
    from meshing_core.run.lease import leased
    from meshing_core.run.setup import setup_meshes
    from meshing_core.timestamps import now

    config = args.config
    with leased(config, now()):  # refused while a run holds the mesh dir: it writes there too
        changes = setup_meshes(config, reset=args.reset)
    for what, state in changes.items():
        print(f"{what}: {state}")


def _cmd_mesh(args: argparse.Namespace) -> None:
    from meshing_core.run.layer import mesh_layer, run_batch
    from meshing_core.run.lifecycle import attached_to_run
    from meshing_core.run.plan import descriptor
    from meshing_core.timestamps import format_timestamp, parse_timestamp

    config = args.config
    if args.skip_cache:
        log.info("--skip_cache accepted for compatibility; this mesher keeps no cache")
    if args.chunk_index_range is not None and args.timestamp is None:
        raise MeshingError(
            "--chunk-index-range needs --timestamp T: a batch belongs to the run at T"
        )
    timestamp = parse_timestamp(args.timestamp)  # resolved once for the whole command
    if args.queue_name is not None:  # the procedure's flag: send the chunks, mesh nothing here
        from meshing_core.queue.producer import enqueue_chunks

        sent = enqueue_chunks(
            config,
            args.layer,
            timestamp,
            args.queue_name,
            chunk_start=args.chunk_start,
            chunk_end=args.chunk_end,
            chunk_indices=args.chunk_index_range,
        )
        print(
            f"layer {args.layer} at {format_timestamp(timestamp)}: {sent['chunks']} chunks "
            f"enqueued in {sent['messages']} messages ({sent['already_done']} already done) "
            f"to {args.queue_name}"
        )
        return
    if args.chunk_index_range is not None:
        # one planned batch, recorded like a batch of `run`: a rerun at T skips finished chunks
        start, stop = args.chunk_index_range
        box = {}
        if (args.chunk_start is None) != (args.chunk_end is None):
            raise MeshingError(
                "with --chunk-index-range give both --chunk-start and --chunk-end, or neither"
            )
        if args.chunk_start is not None:
            box = {"box": [*args.chunk_start, *args.chunk_end]}
        with attached_to_run(config, timestamp):  # renews the lease of the run at T, if any
            batch = run_batch(
                config,
                descriptor(args.layer, 0, start, stop, box),
                timestamp=timestamp,
                workers=args.workers,
                progress=not args.quiet,
            )
        chunks, empty, skipped = batch["chunks"], batch["empty"], batch["skipped"]
        fragments, size, seconds = batch["fragments"], batch["bytes"], batch["seconds"]
    else:
        report = mesh_layer(
            config,
            args.layer,
            chunk_start=args.chunk_start,
            chunk_end=args.chunk_end,
            timestamp=timestamp,
            workers=args.workers,
            progress=not args.quiet,
        )
        chunks, empty, skipped = report.chunks, report.empty_chunks, report.skipped_chunks
        fragments, size, seconds = report.fragments, report.bytes, report.seconds
    from meshing_core.store import layout

    done = f", {skipped} already done" if skipped else ""
    print(
        f"layer {args.layer} at {format_timestamp(timestamp)}: {chunks} chunks "
        f"({empty} empty{done}), {fragments} fragments, {size} bytes, {seconds:.1f} s"
    )
    print(f"shards: {layout.initial_dir(config, args.layer)}")


def _cmd_worker(args: argparse.Namespace) -> None:
    from meshing_core.queue.worker import run_workers

    if args.workers < 1:
        raise MeshingError(f"--workers is {args.workers}: give 1 or more")
    if args.visibility_timeout is not None and not 1 <= args.visibility_timeout <= 43200:
        raise MeshingError(
            f"--visibility-timeout is {args.visibility_timeout}: SQS allows 1..43200 seconds"
        )
    totals = run_workers(
        str(args.config.source),
        args.queue,
        workers=args.workers,
        visibility_timeout_s=args.visibility_timeout,
        exit_when_empty=args.exit_when_empty,
    )
    print(f"worker: {totals.describe()}")


def _cmd_info(args: argparse.Namespace) -> None:
    from meshing_core.info import describe
    from meshing_core.timestamps import parse_timestamp

    config = args.config
    print(describe(config, parse_timestamp(args.timestamp)))


def _cmd_run(args: argparse.Namespace) -> None:
    from meshing_core.run.lifecycle import run_graph
    from meshing_core.timestamps import parse_timestamp

    config = args.config
    summary = run_graph(
        config,
        timestamp=parse_timestamp(args.timestamp) if args.timestamp is not None else None,
        max_layer=args.max_layer,
        force=args.force,
        break_lease=args.break_lease,
        workers=args.workers,
        progress=not args.quiet,
    )
    print(summary.describe())


def _cmd_status(args: argparse.Namespace) -> None:
    import json

    from meshing_core.run.status import format_status, status
    from meshing_core.timestamps import parse_timestamp

    config = args.config
    timestamp = parse_timestamp(args.timestamp) if args.timestamp is not None else None
    facts = status(config, timestamp)
    print(json.dumps(facts, indent=2, sort_keys=True) if args.json else format_status(facts))


def _cmd_export_mesh(args: argparse.Namespace) -> None:
    from meshing_core.mesh.export import export_mesh
    from meshing_core.timestamps import parse_timestamp

    if (args.point is None) == (args.node is None):
        raise MeshingError("give exactly one of --point X Y Z or --node ID")
    config = args.config
    report = export_mesh(
        config,
        args.out,
        point=tuple(args.point) if args.point is not None else None,
        node=args.node,
        timestamp=parse_timestamp(args.timestamp) if args.timestamp is not None else None,
    )
    print(
        f"node {report.node}: {report.vertices} vertices, {report.faces} faces from "
        f"{len(report.fragments)} fragments (meshed up to layer {report.max_meshed_layer}) "
        f"-> {report.out}"
    )


def _cmd_serve(args: argparse.Namespace) -> None:
    from meshing_core.serve.server import ServeSettings, check_port, origins, serve
    from meshing_core.timestamps import format_timestamp, parse_timestamp

    source = f"pychunkedgraph:{args.cg_name}" if args.cg_name else str(args.config.source)
    settings = ServeSettings(
        graph=source,
        host=args.host,
        port=args.port,
        timestamp=parse_timestamp(args.timestamp) if args.timestamp is not None else None,
        allow_origins=origins(args.allow_origin),
        workers=args.workers,
        viewer=not args.no_viewer,
    )
    check_port(settings.host, settings.port)

    def announce(base: str, served: Any) -> None:
        from meshing_core.serve.app import default_state
        from meshing_core.serve.viewer import viewer_url

        table = served.table
        print(f"serving table {table} read-only at {base} ({settings.workers} worker(s))")
        when = format_timestamp(served.timestamp)
        if settings.timestamp is not None:
            print(f"  lookups default to {when} (--timestamp)")
        elif served.meshed_at is not None:
            print(f"  lookups default to {when} (the time the meshes were made)")
        else:
            print(f"  lookups default to {when} (now: no meshing run has finished)")
        print(f"  cloud-volume / neuroglancer source: graphene://{base}/segmentation/table/{table}")
        if settings.viewer:
            print(f"  neuroglancer: {viewer_url(base, table, default_state(served, base))}")
        print("  stop with Ctrl-C", flush=True)

    serve(settings, announce)


def _cmd_demo(args: argparse.Namespace) -> None:
    from meshing_core.demo import run_demo

    run_demo(args.out, workers=args.workers, progress=not args.quiet)


class _OneLineParser(argparse.ArgumentParser):
    """Usage mistakes end as one ``error:`` line naming the fix, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="python -m meshing_core",
        description="Mesh a ChunkedGraph segmentation into sharded, cloud-volume-readable meshes.",
    )
    common = _OneLineParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_OneLineParser
    )

    p = sub.add_parser(
        "example",
        parents=[common],
        help="build the example dataset (gala train crop) and its graph",
    )
    p.add_argument(
        "--out", required=True, help="folder to write the dataset into (path, s3:// or gs://)"
    )
    p.set_defaults(func=_cmd_example)

    p = sub.add_parser(
        "build-graph",
        parents=[common],
        help="build an embedded ChunkedGraph from supervoxels + agglomeration",
    )
    p.add_argument(
        "--segmentation", required=True, help="precomputed supervoxel layer (file://, gs://, s3://)"
    )
    p.add_argument("--agglomeration", type=Path, help="CSV supervoxel,object (header optional)")
    p.add_argument(
        "--edits", type=Path, help='JSONL: {"timestamp", "op": merge|split, "supervoxels": [a, b]}'
    )
    _triple(p, "--chunk-size", "--chunk_size", help="layer-2 chunk size in voxels", required=True)
    p.add_argument(
        "--out",
        required=True,
        help="folder for graph.yaml, the graph and the watershed (path, s3:// or gs://)",
    )
    p.add_argument(
        "--created-at",
        "--created_at",
        dest="created_at",
        help="base build time (RFC 3339 or Unix s)",
    )
    p.add_argument(
        "--mip", type=int, default=0, help="mesh mip (downsampled scales are written up to it)"
    )
    p.add_argument("--mesh-dir", dest="mesh_dir", default="graphene_meshes", help="mesh dir name")
    p.add_argument("--name", help="graph name (default: the --out folder name)")
    p.add_argument(
        "--spatial-bits", dest="spatial_bits", type=int, default=10, help="layer-2 bits per axis"
    )
    p.add_argument("--max-error", dest="max_error", type=float, help="simplification error in nm")
    p.set_defaults(func=_cmd_build_graph)

    p = sub.add_parser(
        "setup", parents=[common], help="write the mesh info, sharding specs and static custom data"
    )
    _graph_arg(p)
    p.add_argument(
        "--reset", action="store_true", help="clear the mesh dir's shards and records first"
    )
    p.add_argument(
        "--mip",
        type=int,
        help="with --cg_name on a graph not set up yet: the mip to mesh at (default 0); "
        "otherwise it must match the config",
    )
    p.set_defaults(func=_cmd_setup)

    p = sub.add_parser("mesh", parents=[common], help="mesh the chunks of one layer")
    _graph_arg(p)
    p.add_argument("--layer", required=True, type=int, help="layer to mesh (2 = marching cubes)")
    _triple(p, "--chunk-start", "--chunk_start", help="first chunk (default 0 0 0)")
    _triple(
        p, "--chunk-end", "--chunk_end", help="end chunk, exclusive (default: the layer's bounds)"
    )
    p.add_argument(
        "--chunk-index-range",
        dest="chunk_index_range",
        nargs=2,
        type=int,
        metavar=("A", "B"),
        help="one planned batch: chunk indices [A, B) in the layer's fixed order (x outermost, "
        "z fastest); recorded at --timestamp, finished chunks skipped; renews the lease of the "
        "run at that timestamp if one holds the mesh dir, refused if another run does",
    )
    p.add_argument("--timestamp", help="graph time: RFC 3339 or Unix seconds (default: now)")
    p.add_argument(
        "--workers", type=int, help="processes (default: CPUs available to this process)"
    )
    p.add_argument(
        "--mip", type=int, help="accepted for meshing_batch.py compatibility; must match the config"
    )
    p.add_argument(
        "--skip_cache",
        "--skip-cache",
        dest="skip_cache",
        action="store_true",
        help="accepted for meshing_batch.py compatibility (no cache is kept)",
    )
    p.add_argument(
        "--queue_name",
        "--queue-name",
        dest="queue_name",
        help="enqueue the chunks as SQS tasks to this existing queue (URL or name) instead of "
        "meshing here; `worker` processes run them (the queue is never created or changed)",
    )
    p.set_defaults(func=_cmd_mesh)

    p = sub.add_parser(
        "worker", parents=[common], help="run chunk tasks from an SQS queue until SIGTERM"
    )
    _graph_arg(p)
    p.add_argument("--queue", required=True, help="the queue's URL or name")
    p.add_argument("--workers", type=int, default=1, help="receive loops (processes), default 1")
    p.add_argument(
        "--visibility-timeout",
        dest="visibility_timeout",
        type=int,
        help="seconds a received message is held, extended while its chunk runs (default: the "
        "layer's visibility_timeout_s in graph.yaml)",
    )
    p.add_argument(
        "--exit-when-empty",
        dest="exit_when_empty",
        action="store_true",
        help="exit once nothing is queued or in flight (default: poll until SIGTERM)",
    )
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser(
        "run", parents=[common], help="setup, every layer from 2 up in order, then metadata"
    )
    _graph_arg(p)
    p.add_argument(
        "--timestamp",
        help="graph time (default: resume the last unfinished run, else now for a first run)",
    )
    p.add_argument(
        "--max-layer", dest="max_layer", type=int, help="stop at this layer (default: root)"
    )
    p.add_argument("--force", action="store_true", help="re-mesh chunks that are already done")
    p.add_argument(
        "--break-lease",
        dest="break_lease",
        action="store_true",
        help="take over a stale lease left by a run that stopped heartbeating",
    )
    p.add_argument("--workers", type=int, help="processes (default: CPUs available)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "status", parents=[common], help="per layer: chunks done/failed/total, nodes, bytes"
    )
    _graph_arg(p)
    p.add_argument("--timestamp", help="the run to show (default: the last run)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser(
        "export-mesh", parents=[common], help="write one object's mesh as PLY or OBJ (by suffix)"
    )
    _graph_arg(p)
    p.add_argument(
        "--point",
        nargs=3,
        type=int,
        metavar=("X", "Y", "Z"),
        help="absolute mip-0 voxel of the segmentation (voxel offset included)",
    )
    p.add_argument("--node", type=int, help="a node id")
    p.add_argument("--out", required=True, type=Path, help="FILE.ply or FILE.obj")
    p.add_argument("--timestamp", help="graph time (default: the meshing time, else now)")
    p.set_defaults(func=_cmd_export_mesh)

    p = sub.add_parser(
        "info", parents=[common], help="layers, chunk bounds, node counts and what is meshed"
    )
    _graph_arg(p)
    p.add_argument("--timestamp", help="count nodes at this time (default: now)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser(
        "serve",
        parents=[common],
        help="a read-only graphene server (neuroglancer, cloud-volume, caveclient) for the meshes",
    )
    _graph_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--timestamp",
        help="graph time lookups default to (default: the time the meshes were made)",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        metavar="ORIGIN",
        help="let a viewer hosted at ORIGIN read this server (CORS); repeatable; "
        "off by default (the bundled viewer is same-origin)",
    )
    p.add_argument("--workers", type=int, default=1, help="server processes (default: 1)")
    p.add_argument("--no-viewer", action="store_true", help="do not serve neuroglancer's client")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "demo",
        parents=[common],
        help="build the example, set it up and mesh it (what `make demo` runs)",
    )
    p.add_argument("--out", required=True, type=Path, help="folder for the example dataset")
    p.add_argument("--workers", type=int, help="processes (default: CPUs available)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for chatty in ("botocore", "boto3", "urllib3", "google"):  # storage clients' INFO lines
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.root.level))
    func: Callable[[argparse.Namespace], None] = args.func
    from meshing_core.run.layer import ChunkFailuresError

    try:
        from meshing_core.config import PCG_SOURCE_PREFIX

        graph = getattr(args, "graph", None)
        if graph is not None and graph.startswith(PCG_SOURCE_PREFIX):
            args.cg_name, args.graph = graph[len(PCG_SOURCE_PREFIX) :], None  # one path
        if getattr(args, "cg_name", None) is not None:
            from meshing_core.config import pychunkedgraph_config

            args.config = pychunkedgraph_config(args.cg_name, mip=getattr(args, "mip", None))
        elif getattr(args, "graph", None) is not None:
            from meshing_core.config import load_config

            args.config = load_config(args.graph)  # checked before any work or log line
        mip = getattr(args, "mip", None)
        if getattr(args, "config", None) is not None and mip is not None and mip != args.config.mip:
            raise MeshingError(
                f"--mip {mip} differs from mip {args.config.mip} in {args.config.source}: drop "
                "--mip, or change the mip where it is set (graph.yaml, or the graph's custom "
                "data mesh block) and run setup --reset"
            )
        func(args)
    except (MeshingError, ChunkFailuresError) as exc:
        message = " ".join(str(exc).split())  # always one line
        print(f"error: {message}", file=sys.stderr)
        return 2
    except Exception as exc:  # storage, OS, a bug: still one line; -v shows the traceback
        if args.verbose:
            raise
        message = " ".join(str(exc).split()) or "no message"
        print(
            f"error: unexpected {type(exc).__name__}: {message} (rerun with -v for the traceback)",
            file=sys.stderr,
        )
        return 1
    return 0


def main_exit() -> None:
    """Console script ``meshing`` (the same as ``python -m meshing_core``)."""
    sys.exit(main())
