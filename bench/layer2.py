"""Layer-2 meshing: the seed recipe on in-memory chunks vs our whole path (read, remap, mesh,
encode, write shard), on the same chunks of the benchmark dataset."""

from __future__ import annotations

import logging
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import DracoPy
import numpy as np
import zmesh

from bench.seed import seed_chunk

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]


@dataclass
class ChunkInput:
    coords: tuple[int, int, int]
    labels: np.ndarray  # layer-2 node ids, chunk + margin, xyz
    inner_voxels: int
    offset_nm: np.ndarray
    grid: object
    own_hi_nm: np.ndarray  # the chunk's own voxels end here; the +1 overlap is the next chunk's
    chunk: object = None  # meshing_core.mesh.layer2.ChunkLabels: roots and own box, for ownership


@dataclass
class Layer2Figures:
    voxels: int = 0
    chunks: int = 0
    seed_seconds: list[float] = field(default_factory=list)
    ours_seconds: list[float] = field(default_factory=list)
    ours_all_seconds: list[float] = field(default_factory=list)
    workers_all: int = 0
    seed_triangles: int = 0
    seed_bytes: int = 0
    ours_triangles: int = 0
    ours_bytes: int = 0
    ours_fragments: int = 0
    seed_fragments: int = 0
    max_deviation_nm: float = 0.0
    max_deviation_own_nm: float = 0.0
    draco_bin_nm: float = 0.0
    peak_rss_mib: float = 0.0
    max_error: float = 0.0
    igneous: dict = field(default_factory=dict)  # parallel -> bench.igneous_env.measure's figures


def chunk_inputs(config, timestamp: float) -> list[ChunkInput]:
    """Every layer-2 chunk's labels as our mesher sees them (read and remapped once, untimed)."""
    from meshing_core.graph import open_graph
    from meshing_core.mesh.layer2 import chunk_grid, chunk_labels
    from meshing_core.mesh.watershed import mip_geometry, read_chunk
    from meshing_core.run.checks import iter_chunks

    graph = open_graph(config)
    geometry = mip_geometry(graph.meta, config.watershed, int(config.mip))
    inputs = []
    bounds = graph.meta.layer_chunk_bounds(2)
    for coords in iter_chunks((0, 0, 0), tuple(bounds)):
        block = read_chunk(config.watershed, geometry, coords)
        chunk = chunk_labels(graph, block, timestamp)
        inner = chunk.box.inner
        inputs.append(
            ChunkInput(
                coords=tuple(int(c) for c in coords),
                labels=chunk.labels,
                inner_voxels=int(np.prod(inner)),
                offset_nm=block.offset_nm(geometry.resolution),
                grid=chunk_grid(geometry, coords),
                own_hi_nm=geometry.chunk_offset_nm(coords)
                + np.asarray(inner) * geometry.resolution,
                chunk=chunk,
            )
        )
    return inputs, geometry


def run_seed(inputs, geometry, max_error: float, repeats: int, figures: Layer2Figures) -> None:
    for _ in range(repeats):
        total = 0.0
        triangles = size = fragments = 0
        for chunk in inputs:
            result = seed_chunk(
                chunk.labels, geometry.resolution, chunk.offset_nm, max_error, chunk.grid
            )
            total += result.seconds
            triangles += result.triangles
            size += result.bytes
            fragments += result.fragments
        figures.seed_seconds.append(total)
        figures.seed_triangles, figures.seed_bytes = triangles, size
        figures.seed_fragments = fragments
        log.info("seed: %.2f s, %d triangles", total, triangles)


def run_ours(config, timestamp: float, workers: int | None, repeats: int) -> list[float]:
    from meshing_core.run.layer import mesh_layer

    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        mesh_layer(config, 2, timestamp=timestamp, workers=workers, progress=False)
        seconds.append(time.perf_counter() - started)
        log.info("ours (workers=%s): %.2f s", workers, seconds[-1])
    return seconds


def read_our_meshes(config, inputs) -> dict[tuple[int, int, int], dict[int, tuple]]:
    """Decode every fragment we wrote (independent of the kernel: shard bytes -> DracoPy)."""
    from meshing_core.graph import open_graph
    from meshing_core.run.checks import read_mesh_info
    from meshing_core.store import files
    from meshing_core.store.layout import chunk_shard_name, initial_dir
    from meshing_core.store.sharding import ShardReader, bytes_source

    spec = read_mesh_info(config)["sharding"]["2"]
    meta = open_graph(config).meta
    out = {}
    for chunk in inputs:
        data = files.read_file(initial_dir(config, 2), chunk_shard_name(meta, 2, chunk.coords))
        meshes = {}
        if data:
            for key, fragment in ShardReader(bytes_source(data), spec).items():
                decoded = DracoPy.decode(fragment)
                meshes[int(key)] = (
                    np.asarray(decoded.points, dtype=np.float64).reshape(-1, 3),
                    np.asarray(decoded.faces, dtype=np.int64).reshape(-1, 3),
                    len(fragment),
                )
        out[chunk.coords] = meshes
    return out


def measure_output(config, inputs, geometry, figures: Layer2Figures) -> None:
    """Triangles, bytes and the worst distance of any raw MC vertex to our decoded mesh."""
    import igl

    from meshing_core.mesh.overlap import owned_faces

    ours = read_our_meshes(config, inputs)
    worst = worst_own = 0.0
    for chunk in inputs:
        meshes = ours[chunk.coords]
        mesher = zmesh.Mesher(tuple(float(r) for r in geometry.resolution))
        mesher.mesh(chunk.labels)
        for label in mesher.ids():
            if label == 0:
                continue
            raw = mesher.get(int(label), reduction_factor=0, voxel_centered=False)
            owned = owned_faces(
                raw.vertices, raw.faces, geometry.resolution, chunk.chunk.roots,
                chunk.chunk.root_of[int(label)], chunk.chunk.box,
            )  # fmt: skip
            if not owned.any():
                continue
            vertices, faces, size = meshes[int(label)]  # a surface must have a fragment
            points = raw.vertices[np.unique(raw.faces[owned])].astype(np.float64) + chunk.offset_nm
            sqr, _, _ = igl.point_mesh_squared_distance(points, vertices, faces)
            worst = max(worst, float(np.sqrt(sqr.max())))
            own = (points < chunk.own_hi_nm - 1e-6).all(axis=1)
            if own.any():
                worst_own = max(worst_own, float(np.sqrt(sqr[own].max())))
        figures.ours_triangles += sum(len(m[1]) for m in meshes.values())
        figures.ours_bytes += sum(m[2] for m in meshes.values())
        figures.ours_fragments += len(meshes)
    figures.max_deviation_nm = worst
    figures.max_deviation_own_nm = worst_own
    figures.draco_bin_nm = float(inputs[0].grid.bin_size)


def peak_rss(graph_yaml: Path, timestamp: float, coords: tuple[int, int, int]) -> float:
    """Peak RSS (MiB) of a fresh process meshing one chunk, as a pool worker does."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.worker_rss", str(graph_yaml), repr(timestamp)]
        + [str(c) for c in coords],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.split()[0])


def run(graph_yaml: Path, repeats: int) -> Layer2Figures:
    from meshing_core.config import load_config
    from meshing_core.run.cpus import available_cpus
    from meshing_core.run.setup import setup_meshes

    config = load_config(graph_yaml)
    setup_meshes(config, reset=True)
    timestamp = time.time()
    inputs, geometry = chunk_inputs(config, timestamp)
    figures = Layer2Figures(
        voxels=sum(c.inner_voxels for c in inputs),
        chunks=len(inputs),
        max_error=float(config.max_error),
    )
    run_seed(inputs, geometry, float(config.max_error), repeats, figures)
    figures.ours_seconds = run_ours(config, timestamp, 1, repeats)
    figures.workers_all = available_cpus()
    figures.ours_all_seconds = run_ours(config, timestamp, None, repeats)
    measure_output(config, inputs, geometry, figures)
    biggest = max(inputs, key=lambda c: int(np.count_nonzero(c.labels)))
    figures.peak_rss_mib = peak_rss(graph_yaml, timestamp, biggest.coords)
    run_igneous(config, figures)
    return figures


def run_igneous(config, figures: Layer2Figures) -> None:
    """igneous's mesh forge (its own venv, as users run it) on the same watershed volume, chunk
    size and max error, in one process and on all cores. One run each: a run takes about as
    long as the seed recipe's three, and the venv's first install counts in make bench."""
    from bench.igneous_env import measure

    for parallel in sorted({1, figures.workers_all}):
        figures.igneous[parallel] = measure(
            config.watershed, config.chunk_size, float(config.max_error), parallel, 1
        )
        log.info("igneous parallel=%d: %.2f s", parallel, figures.igneous[parallel]["seconds"])


def run_real(workdir: Path) -> Layer2Figures:
    """Ours vs the seed recipe on real data: the example (the gala train crop, 10 nm voxels,
    max_error 10), every layer-2 chunk once, at a time after its edits. Output only, untimed."""
    from meshing_core.config import load_config
    from meshing_core.datasets.example import build_example
    from meshing_core.run.setup import setup_meshes

    graph_yaml = build_example(workdir / "example", progress=False)
    config = load_config(graph_yaml)
    setup_meshes(config, reset=True)
    timestamp = time.time()
    inputs, geometry = chunk_inputs(config, timestamp)
    figures = Layer2Figures(chunks=len(inputs), max_error=float(config.max_error))
    run_seed(inputs, geometry, float(config.max_error), 1, figures)
    run_ours(config, timestamp, 1, 1)
    measure_output(config, inputs, geometry, figures)
    return figures


def report_real(figures: Layer2Figures) -> list[str]:
    return [
        f"layer2_real chunks {figures.chunks} max_error_nm {figures.max_error:g} "
        f"seed_triangles {figures.seed_triangles} ours_triangles {figures.ours_triangles} "
        f"seed_bytes {figures.seed_bytes} ours_bytes {figures.ours_bytes} "
        f"draco_bin_nm {figures.draco_bin_nm:g}",
        f"RATIO l2_triangles_vs_seed_real {figures.ours_triangles / max(figures.seed_triangles, 1):.3f}",
        f"layer2_real max_deviation_nm_with_overlap {figures.max_deviation_nm:.3f}",
        f"RATIO l2_max_deviation_nm_real {figures.max_deviation_own_nm:.3f}",
    ]


def report(figures: Layer2Figures) -> list[str]:
    seed = statistics.median(figures.seed_seconds)
    ours = statistics.median(figures.ours_seconds)
    ours_all = statistics.median(figures.ours_all_seconds)
    vox = figures.voxels
    lines = [
        f"layer2 chunks {figures.chunks} voxels {vox} max_error_nm {figures.max_error:g}",
        f"layer2 seed_seconds {seed:.3f} seed_voxels_per_s {vox / seed:.0f} "
        f"runs {[round(s, 3) for s in figures.seed_seconds]}",
        f"layer2 ours_seconds {ours:.3f} ours_voxels_per_s {vox / ours:.0f} "
        f"runs {[round(s, 3) for s in figures.ours_seconds]}",
        f"layer2 ours_all_cores_seconds {ours_all:.3f} workers {figures.workers_all} "
        f"ours_all_cores_voxels_per_s {vox / ours_all:.0f} "
        f"runs {[round(s, 3) for s in figures.ours_all_seconds]}",
        f"layer2 seed_triangles {figures.seed_triangles} ours_triangles {figures.ours_triangles}",
        f"layer2 seed_bytes {figures.seed_bytes} ours_bytes {figures.ours_bytes}",
        f"layer2 seed_fragments {figures.seed_fragments} ours_fragments {figures.ours_fragments}",
        f"layer2 draco_bin_nm {figures.draco_bin_nm:g}",
        f"RATIO l2_throughput_vs_seed {seed / ours:.3f}",
        f"RATIO l2_throughput_all_cores_vs_seed {seed / ours_all:.3f}",
        f"RATIO l2_triangles_vs_seed {figures.ours_triangles / max(figures.seed_triangles, 1):.3f}",
        f"RATIO l2_bytes_vs_seed {figures.ours_bytes / max(figures.seed_bytes, 1):.3f}",
        f"RATIO l2_max_deviation_nm {figures.max_deviation_nm:.3f}",
        f"RATIO l2_peak_rss_mib {figures.peak_rss_mib:.1f}",
    ]
    if figures.igneous:
        one = figures.igneous[1]
        every = figures.igneous[figures.workers_all]
        lines += [
            f"layer2 igneous_install_seconds {one['install_seconds']:.1f} "
            f"igneous_seconds {one['seconds']:.3f} igneous_all_cores_seconds "
            f"{every['seconds']:.3f} igneous_fragments {one['fragments']} "
            f"igneous_bytes {one['bytes']}",
            f"layer2 igneous_vs_ours_one_process {one['seconds'] / ours:.3f} "
            f"igneous_vs_ours_all_cores {every['seconds'] / ours_all:.3f}",
            # the worse of the two, as the issue asks
            f"RATIO l2_vs_igneous {min(one['seconds'] / ours, every['seconds'] / ours_all):.3f}",
        ]
    return lines
