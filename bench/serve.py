"""The read-only graphene server against cloud-volume's offline bypass reader.

On the stitching bench's dataset (a copy under ``bench/out/serve``, meshed to its root layer
once and reused), cloud-volume fetches the mesh of every root:

- through the server: ``CloudVolume("graphene://http://...").mesh.get(root)`` (manifest, then
  ranged reads of the shards over HTTP);
- through the bypass reader on ``file://``: ``get_meshes_on_bypass`` of the same fragments (their
  ids found beforehand, not timed) and the same multi-level stitching ``get`` does.

``serve_vs_bypass`` = server seconds / bypass seconds (medians). ``serve_concurrency_speedup`` =
meshes per second with 8 client processes, each fetching every ``SHARE``-th root's mesh (each
root twice in all), / with one fetching every root's; the server runs 2 worker processes.
Clients are started and ready (imports, volume opened) before the clock starts.
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

from bench.dataset import OUT, build_dataset
from bench.stitch import SPEC

log = logging.getLogger(__name__)
TABLE_DIR = OUT / "serve"
CLIENTS = 8
#: In the concurrent run each client fetches every SHARE-th root: twice one client's work in all,
#: about ten seconds here (every root from every client took four times as long, for the same rate).
SHARE = 4
SERVER_WORKERS = 2
TOKEN = {"token": "0123abcd"}


def meshed_dataset() -> Path:
    """The stitching bench's dataset, meshed to the root layer (once; reused while unchanged)."""
    from meshing_core.config import load_config
    from meshing_core.graph import open_graph
    from meshing_core.mesh.export import meshed_at
    from meshing_core.run.lifecycle import run_graph

    graph_yaml, _ = build_dataset(SPEC, TABLE_DIR)
    config = load_config(graph_yaml)
    graph = open_graph(config)
    try:
        done = meshed_at(graph.custom_data()) is not None
    finally:
        graph.close()
    if not done:
        log.info("meshing %s for the serve bench", graph_yaml)
        run_graph(config, progress=False)
    return graph_yaml


def roots_and_fragments(graph_yaml: Path) -> dict[int, list[int]]:
    """Every root at the meshing time and the node ids of its highest meshed fragments."""
    from meshing_core.config import load_config
    from meshing_core.graph import open_graph
    from meshing_core.mesh.export import (
        MeshShards,
        highest_meshed,
        max_meshed_layer,
        meshing_timestamp,
        read_mesh_info,
    )

    config = load_config(graph_yaml)
    graph = open_graph(config)
    try:
        meta = graph.meta
        custom = graph.custom_data()
        ts = meshing_timestamp(custom)
        top = max_meshed_layer(config, custom, meta.n_layers)
        shards = MeshShards(config.mesh_cloudpath, meta.codec, read_mesh_info(config))
        roots = graph.chunk_nodes(meta.n_layers, (0, 0, 0), ts).tolist()
        return {
            int(r): [f.node for f in highest_meshed(graph, shards, int(r), top)[0]] for r in roots
        }
    finally:
        graph.close()


def fetch_served(source: str, roots: list[int]) -> int:
    """Vertices of every root's mesh through the server (``source``: its table URL)."""
    from cloudvolume import CloudVolume

    cv = CloudVolume(f"graphene://{source}", secrets=TOKEN, progress=False)
    vertices = 0
    with contextlib.redirect_stdout(io.StringIO()):  # cloud-volume prints a warning per root
        for root in roots:
            vertices += len(cv.mesh.get(root)[root].vertices)
    return vertices


def fetch_bypass(graph_yaml: Path, fragments: dict[int, list[int]]) -> int:
    from meshing_core.config import load_config
    from meshing_core.graph import open_graph
    from meshing_core.store.verify import graphene_reader

    config = load_config(graph_yaml)
    graph = open_graph(config)
    try:
        cv = graphene_reader(config, graph)
    finally:
        graph.close()
    vertices = 0
    for root, nodes in fragments.items():
        meshes = cv.mesh.get_meshes_on_bypass(nodes)
        mesh = cv.mesh.stitch_multi_level_draco_mesh_fragments(list(meshes.values()), root)
        vertices += len(mesh.vertices)
    return vertices


def _client(source: str, roots: list[int], rounds: int, ready, results) -> None:  # noqa: ANN001
    from cloudvolume import CloudVolume  # noqa: F401  (imported before the clock starts)

    for _ in range(rounds):
        ready.wait()
        started = time.perf_counter()
        fetch_served(source, roots)
        results.put((started, time.perf_counter()))


def clients_rate(
    source: str, roots: list[int], clients: int, share: int = 1, rounds: int = 1
) -> float:
    """Meshes per second with ``clients`` processes, client k fetching ``roots[k % share::share]``:
    the median of ``rounds`` rounds, every client starting each round together (processes are
    started once)."""
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(clients + 1)
    results = context.Queue()
    parts = [roots[k % share :: share] for k in range(clients)]
    processes = [
        context.Process(target=_client, args=(source, part, rounds, ready, results))
        for part in parts
    ]
    for process in processes:
        process.start()
    rates = []
    for _ in range(rounds):
        ready.wait(timeout=120)
        spans = [results.get(timeout=600) for _ in processes]
        elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
        rates.append(sum(len(part) for part in parts) / elapsed)
    for process in processes:
        process.join(60)
    return statistics.median(rates)


def floor_seconds(graph_yaml: Path, table: str, roots: list[int], repeats: int) -> float:
    """cloud-volume fetching every root's mesh from ``bench.serve_floor``: the median of
    ``repeats`` passes after a first one (the files are in its memory by then)."""
    import os
    import subprocess
    import sys

    from tools.airflow_env import free_port
    from tools.graphene_server import stop, wait_ready

    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "bench.serve_floor:build", "--factory"]
    command += ["--port", str(port), "--log-level", "warning"]
    log_file = TABLE_DIR / "floor.log"
    env = {**os.environ, "SERVE_FLOOR_GRAPH": str(graph_yaml)}
    with open(log_file, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, f"{base}/segmentation/table/{table}/info", log_file, 120)
        source = f"{base}/segmentation/table/{table}"
        fetch_served(source, roots)
        passes = []
        for _ in range(repeats):
            started = time.perf_counter()
            fetch_served(source, roots)
            passes.append(time.perf_counter() - started)
        return statistics.median(passes)
    finally:
        stop(process)


def measure(repeats: int = 3) -> Iterator[str]:
    """Report lines, each yielded as soon as its figure is measured."""
    from meshing_core.config import load_config
    from tools.graphene_server import graphene_server

    graph_yaml = meshed_dataset()
    table = load_config(graph_yaml).name
    fragments = roots_and_fragments(graph_yaml)
    roots = sorted(fragments)
    log_file = TABLE_DIR / "serve.log"
    server_args = ("--workers", str(SERVER_WORKERS), "--no-viewer")
    with graphene_server(graph_yaml, *server_args, log=log_file) as base:
        served = f"{base}/segmentation/table/{table}"
        same = fetch_served(served, roots) == fetch_bypass(graph_yaml, fragments)
        server_s, bypass_s = [], []
        for _ in range(repeats):  # interleaved, so drift on this machine hits both
            started = time.perf_counter()
            fetch_served(served, roots)
            server_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            fetch_bypass(graph_yaml, fragments)
            bypass_s.append(time.perf_counter() - started)
        server, bypass = statistics.median(server_s), statistics.median(bypass_s)
        yield (
            f"serve roots {len(roots)} fragments {sum(len(v) for v in fragments.values())} "
            f"same_vertices {same} server_seconds {server:.3f} bypass_seconds {bypass:.3f}"
        )
        yield f"RATIO serve_vs_bypass {server / bypass:.3f}"
    floor = floor_seconds(graph_yaml, table, roots, repeats)
    yield (
        f"serve floor_seconds {floor:.3f} floor_vs_bypass {floor / bypass:.3f} (a bare ASGI app "
        "answering from memory: no server can do better with this client)"
    )
    with graphene_server(graph_yaml, *server_args, log=log_file) as base:
        served = f"{base}/segmentation/table/{table}"
        one = clients_rate(served, roots, 1, rounds=repeats)
        many = clients_rate(served, roots, CLIENTS, SHARE, rounds=repeats)
        yield (
            f"serve meshes_per_second one_client {one:.1f} {CLIENTS}_clients {many:.1f} "
            f"(server workers {SERVER_WORKERS})"
        )
        yield f"RATIO serve_concurrency_speedup {many / one:.3f}"
