"""Meshing every layer (2..root) of a 5-layer synthetic dataset: time, output and task memory.

Layers are meshed with ``mesh_layer`` and the default workers at one timestamp. Then stitching
tasks (layer >= 3) are re-run one per fresh process (``bench.stitch_worker``; two at a time below
the top layer, whose task runs alone for its timing) to read their own peak RSS: all chunks of the top two layers, and in bigger layers the chunks whose children
hold the most shard bytes. Memory should follow the largest single node mesh a task builds,
not the number of descendants.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.dataset import OUT, DatasetSpec, build_dataset

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
SPEC = DatasetSpec(chunk_size=(64, 64, 32))  # 8x8x4 layer-2 chunks: layers 2..5
#: Dense, 3 objects each spanning the whole volume: top-layer node meshes above 20 MiB decoded
#: (with 6 objects, as the issue's volume had, this generator's largest was 13 MiB).
DENSE = DatasetSpec(
    shape=(768, 768, 128), chunk_size=(64, 64, 32), max_error=20.0, objects=3
)  # 12x12x4 layer-2 chunks: layers 2..6
DENSE_NAME = "stitch_dense"
MAX_SAMPLED = 4  # tasks per layer measured in their own process (the biggest ones)
PARALLEL_TASKS = 2  # measuring processes at a time below the top layer
FLOOR_BYTES = 16 * 2**20
Coords = tuple[int, int, int]


@dataclass
class TaskMemory:
    coords: Coords
    peak_mib: float
    base_mib: float
    largest_mesh_bytes: int
    seconds: float = 0.0
    codec_seconds: float = 0.0
    layer: int = 0

    @property
    def grown_bytes(self) -> float:
        return (self.peak_mib - self.base_mib) * 2**20

    @property
    def ratio(self) -> float:
        """Growth over the largest mesh, floored: small tasks' fixed costs are not a ratio."""
        return self.grown_bytes / max(self.largest_mesh_bytes, FLOOR_BYTES)


@dataclass
class LayerFigures:
    layer: int
    chunks: int
    seconds: float
    fragments: int
    bytes: int
    tasks: list[TaskMemory] = field(default_factory=list)
    l2_peak_mib: float = 0.0

    @property
    def peak_mib(self) -> float:
        if self.tasks:
            return max(t.peak_mib for t in self.tasks)
        return self.l2_peak_mib


def shard_bytes(config, meta, layer: int, coords: Coords) -> int:
    from meshing_core.store import files
    from meshing_core.store.layout import chunk_shard_name, initial_dir

    data = files.read_file(initial_dir(config, layer), chunk_shard_name(meta, layer, coords))
    return len(data) if data else 0


def children_bytes(config, meta, layer: int, coords: Coords) -> int:
    """Shard bytes of the layer-(L-1) chunks under a layer-L chunk (fan-out 2)."""
    from meshing_core.run.checks import iter_chunks

    bounds = meta.layer_chunk_bounds(layer - 1)
    start = tuple(2 * c for c in coords)
    end = tuple(min(2 * c + 2, b) for c, b in zip(coords, bounds, strict=True))
    return sum(shard_bytes(config, meta, layer - 1, c) for c in iter_chunks(start, end))


def sample_chunks(config, meta, layer: int) -> list[Coords]:
    from meshing_core.run.checks import iter_chunks

    chunks = list(iter_chunks((0, 0, 0), tuple(meta.layer_chunk_bounds(layer))))
    if layer >= meta.n_layers - 1 or len(chunks) <= MAX_SAMPLED:
        return chunks
    chunks.sort(key=lambda c: children_bytes(config, meta, layer, c), reverse=True)
    return chunks[:MAX_SAMPLED]


def measure_task(graph_yaml: Path, timestamp: float, layer: int, coords: Coords) -> TaskMemory:
    out = subprocess.run(
        [sys.executable, "-m", "bench.stitch_worker", str(graph_yaml), repr(timestamp), str(layer)]
        + [str(c) for c in coords],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    peak, base, largest, _, seconds, codec = out.stdout.split()
    return TaskMemory(
        coords, float(peak), float(base), int(largest), float(seconds), float(codec), layer
    )


def encoder_growth(spec: DatasetSpec, task: TaskMemory) -> tuple[float, int]:
    """(MiB, decoded bytes): draco's encoder alone on the largest mesh of ``task``'s chunk."""
    graph_yaml = OUT / DENSE_NAME / spec.name / "graph" / "graph.yaml"
    out = subprocess.run(
        [sys.executable, "-m", "bench.encoder_rss", str(graph_yaml), str(task.layer)]
        + [str(c) for c in task.coords],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    grown, decoded = out.stdout.split()
    return float(grown), int(decoded)


def run(
    spec: DatasetSpec = SPEC, name: str = "stitch"
) -> tuple[DatasetSpec, float, list[LayerFigures]]:
    """Build (or reuse) the dataset, mesh all layers, then measure stitching tasks' memory."""
    from bench.layer2 import peak_rss
    from meshing_core.config import load_config
    from meshing_core.graph import open_graph
    from meshing_core.run.checks import iter_chunks
    from meshing_core.run.layer import mesh_layer
    from meshing_core.run.setup import setup_meshes

    graph_yaml, build_seconds = build_dataset(spec, OUT / name)
    config = load_config(graph_yaml)
    graph = open_graph(config)
    meta = graph.meta
    graph.close()
    setup_meshes(config, reset=True)
    timestamp = time.time()
    layers = []
    for layer in range(2, meta.n_layers + 1):
        report = mesh_layer(config, layer, timestamp=timestamp, progress=False)
        layers.append(
            LayerFigures(layer, report.chunks, report.seconds, report.fragments, report.bytes)
        )
        log.info("layer %d: %s", layer, report)
    l2_chunks = iter_chunks((0, 0, 0), tuple(meta.layer_chunk_bounds(2)))
    biggest = max(l2_chunks, key=lambda c: shard_bytes(config, meta, 2, c))
    layers[0].l2_peak_mib = peak_rss(graph_yaml, timestamp, biggest)
    # below the top, tasks are measured two processes at a time (each reads its own peak RSS;
    # their seconds are not reported); the top layer's task runs alone: its seconds are timed
    jobs = [(f, c) for f in layers[1:-1] for c in sample_chunks(config, meta, f.layer)]
    with ThreadPoolExecutor(PARALLEL_TASKS) as pool:
        measured = pool.map(
            lambda job: measure_task(graph_yaml, timestamp, job[0].layer, job[1]), jobs
        )
        for (figures, _), task in zip(jobs, measured, strict=True):
            figures.tasks.append(task)
    top = layers[-1]
    for coords in sample_chunks(config, meta, top.layer):
        top.tasks.append(measure_task(graph_yaml, timestamp, top.layer, coords))
    return spec, build_seconds, layers


def report(spec: DatasetSpec, build_seconds: float, layers: list[LayerFigures]) -> list[str]:
    lines = [
        f"stitch dataset {spec.name} chunk {list(spec.chunk_size)} layers 2..{layers[-1].layer} "
        f"build_seconds {build_seconds:.2f}"
    ]
    for f in layers:
        line = (
            f"stitch layer {f.layer} chunks {f.chunks} seconds {f.seconds:.3f} "
            f"fragments {f.fragments} bytes {f.bytes} task_peak_rss_mib {f.peak_mib:.1f}"
        )
        if f.tasks:
            worst = max(f.tasks, key=lambda t: t.ratio)
            line += (
                f" tasks_measured {len(f.tasks)} after_imports_mib {worst.base_mib:.1f} "
                f"largest_node_mesh_bytes {max(t.largest_mesh_bytes for t in f.tasks)} "
                f"worst_rss_ratio {worst.ratio:.3f}"
            )
        lines.append(line)
    tasks = [t for f in layers[1:] for t in f.tasks]
    worst = max(t.ratio for t in tasks) if tasks else float("nan")
    stitch_seconds = sum(f.seconds for f in layers[1:])
    lines += [
        f"RATIO stitch_rss_vs_largest_mesh_small {worst:.3f}",
        f"stitch_top_layer_peak_rss_mib {layers[-1].peak_mib:.1f}",
        f"RATIO stitch_vs_l2_seconds {stitch_seconds / max(layers[0].seconds, 1e-9):.3f}",
    ]
    return lines


def report_dense(spec: DatasetSpec, build_seconds: float, layers: list[LayerFigures]) -> list[str]:
    """The dense dataset: memory against the largest mesh, top layer against layer 3, codec."""
    lines = [
        f"stitch_dense dataset {spec.name} chunk {list(spec.chunk_size)} "
        f"layers 2..{layers[-1].layer} build_seconds {build_seconds:.2f}"
    ]
    for f in layers:
        largest = max((t.largest_mesh_bytes for t in f.tasks), default=0)
        lines.append(
            f"stitch_dense layer {f.layer} chunks {f.chunks} seconds {f.seconds:.3f} "
            f"fragments {f.fragments} bytes {f.bytes} task_peak_rss_mib {f.peak_mib:.1f} "
            f"largest_node_mesh_mib {largest / 2**20:.1f}"
        )
    tasks = [t for f in layers[1:] for t in f.tasks]
    worst = max(tasks, key=lambda t: t.ratio)
    biggest = max(tasks, key=lambda t: t.largest_mesh_bytes)  # the ratio: no floor
    top = max(layers[-1].tasks, key=lambda t: t.seconds)
    layer3 = next(f for f in layers if f.layer == 3)
    encoder_mib, decoded = encoder_growth(spec, biggest)
    lines += [
        f"stitch_dense worst_floored_task {worst.coords} peak_mib {worst.peak_mib:.1f} "
        f"after_imports_mib {worst.base_mib:.1f} ratio_floored_16mib {worst.ratio:.3f}",
        f"stitch_dense largest_mesh_task layer {biggest.layer} {biggest.coords} peak_mib "
        f"{biggest.peak_mib:.1f} after_imports_mib {biggest.base_mib:.1f} largest_mesh_mib "
        f"{biggest.largest_mesh_bytes / 2**20:.1f}",
        # draco's encoder alone on that mesh (fresh process): the floor under the ratio below
        f"stitch_dense encoder_alone_growth_mib {encoder_mib:.1f} "
        f"encoder_alone_vs_largest_mesh {encoder_mib * 2**20 / max(decoded, 1):.3f}",
        f"RATIO stitch_rss_vs_largest_mesh "
        f"{biggest.grown_bytes / max(biggest.largest_mesh_bytes, 1):.3f}",
        f"RATIO stitch_top_vs_layer3_rss {layers[-1].peak_mib / max(layer3.peak_mib, 1e-9):.3f}",
        f"stitch_dense top_chunk seconds {top.seconds:.3f} codec_seconds {top.codec_seconds:.3f}",
        f"RATIO stitch_vs_codec_floor {top.seconds / max(top.codec_seconds, 1e-9):.3f}",
    ]
    return lines
