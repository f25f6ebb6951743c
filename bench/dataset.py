"""The benchmark dataset: a dense synthetic neurite volume, built into an embedded graph once.

Generated data lives under ``bench/out/`` (git-ignored) and is reused while its parameters are
unchanged, so re-runs measure meshing, not data generation.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

OUT = Path(__file__).resolve().parent / "out"


@dataclass(frozen=True)
class DatasetSpec:
    """What to generate: shape (voxels, xyz), resolution (nm), graph chunk size, max error."""

    shape: tuple[int, int, int] = (512, 512, 128)
    resolution: tuple[float, float, float] = (8.0, 8.0, 40.0)
    chunk_size: tuple[int, int, int] = (256, 256, 64)
    max_error: float = 40.0
    seed: int = 1
    objects: int | None = None  # agglomerate every supervoxel into one of this many objects

    @property
    def name(self) -> str:
        base = "neurites-" + "x".join(str(s) for s in self.shape)
        return base if self.objects is None else f"{base}-{self.objects}objects"


def build_dataset(spec: DatasetSpec, out: Path = OUT) -> tuple[Path, float]:
    """Return (graph.yaml, build seconds); reuses an earlier build of the same spec (0 s)."""
    from meshing_core.datasets.synthetic import (
        neurite_volume,
        write_agglomeration_csv,
        write_precomputed_segmentation,
    )
    from meshing_core.ingest.builder import build_graph
    from meshing_core.store.paths import to_cloudpath

    root = out / spec.name
    stamp = root / "spec.json"
    wanted = json.dumps(asdict(spec), sort_keys=True)
    graph_yaml = root / "graph" / "graph.yaml"
    if stamp.exists() and stamp.read_text() == wanted and graph_yaml.exists():
        return graph_yaml, 0.0
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    log.info("generating %s", spec.name)
    volume, agglomeration = neurite_volume(spec.shape, spec.seed)
    if spec.objects is not None:  # objects spanning the whole volume: huge top-layer meshes
        agglomeration = {sv: 1 + sv % spec.objects for sv in agglomeration}
    segmentation = to_cloudpath(root / "segmentation")
    write_precomputed_segmentation(segmentation, volume, spec.resolution)
    del volume
    write_agglomeration_csv(root / "agglomeration.csv", agglomeration)
    started = time.perf_counter()
    graph_yaml = build_graph(
        segmentation,
        root / "agglomeration.csv",
        root / "graph",
        spec.chunk_size,
        max_error=spec.max_error,
        progress=False,
    )
    seconds = time.perf_counter() - started
    stamp.write_text(wanted)
    return Path(graph_yaml), seconds
