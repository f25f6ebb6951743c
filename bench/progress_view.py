"""The progress view's cost on a run of 1,000,000 layer-2 chunks, against reading its inputs raw.

The bench writes the records of such a run on ``file://`` (rolled-up batches of the default
size, some failures, and three batches still in flight as per-chunk objects), then, each in a
fresh process (no cache): computes the view's data (``status(..., grid=True)``, what the
Airflow tab shows) while noting every object it reads, and reads exactly those objects raw with
no parsing. ``RATIO progress_view_vs_read_floor`` is the median of the first over the second.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.dataset import OUT

REPO = Path(__file__).resolve().parents[1]
ROOT = OUT / "progress_view"
GRID = (100, 100, 100)  # layer-2 chunks per axis: 1,000,000
CHUNK = (256, 256, 64)
TIMESTAMP = 1_700_000_000.0
IN_FLIGHT = 3  # batches whose chunks are still separate objects
REPEATS = 3


class _Graph:
    """What ``status`` asks of a graph, for records with no graph behind them."""

    def __init__(self, meta):
        self.meta = meta

    def node_counts(self, timestamp: float) -> dict[int, int]:
        return {}

    def close(self) -> None:
        pass


def _setup():
    from meshing_core import ids
    from meshing_core.config import DEFAULT_BATCHES, GraphConfig
    from meshing_core.graph.protocol import GraphMeta
    from meshing_core.store.paths import to_cloudpath

    n_layers = ids.layer_count_for(GRID)
    meta = GraphMeta(
        graph_id="progress-bench",
        n_layers=n_layers,
        spatial_bits=10,
        chunk_size=CHUNK,
        voxel_offset=(0, 0, 0),
        volume_size=tuple(g * c for g, c in zip(GRID, CHUNK, strict=True)),  # type: ignore[arg-type]
        resolution=(8.0, 8.0, 40.0),
    )
    config = GraphConfig(
        source=str(ROOT / "graph.yaml"),
        name="progress-bench",
        backend="embedded",
        graph_path=to_cloudpath(ROOT / "graph.sqlite"),
        watershed=to_cloudpath(ROOT / "watershed"),
        mesh_dir="graphene_meshes",
        mip=0,
        max_error=40.0,
        verify=False,
        chunk_size=CHUNK,
        n_layers=n_layers,
        spatial_bits=10,
        batches=dict(DEFAULT_BATCHES),
    )
    return config, meta


def write_records() -> dict:
    """The records of a run at layer 2 (reused while the spec file matches)."""
    from meshing_core.run.records import RecordStore, RunJournal

    stamp = ROOT / "spec.json"
    spec = json.dumps({"grid": GRID, "chunk": CHUNK, "in_flight": IN_FLIGHT, "version": 1})
    config, meta = _setup()
    store = RecordStore(config, TIMESTAMP, meta=meta)
    if stamp.exists() and stamp.read_text() == spec:
        return {"written_seconds": 0.0, "batches": store.batch_count(2)}
    import shutil

    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    started = time.perf_counter()
    RunJournal(config).start(TIMESTAMP, meta.n_layers)
    count = store.batch_count(2)
    for batch in range(count):
        chunks = store.batch_chunks(2, batch)
        if batch >= count - IN_FLIGHT:  # in flight: half its chunks recorded one by one
            store.record_chunks(2, done={c: {"fragments": 2, "bytes": 900} for c in chunks[::2]})
            continue
        failed = {c: "simulated failure" for c in chunks[:: max(1, len(chunks) // 2)][:2]}
        done = {
            c: {"fragments": (i % 7), "bytes": 1000 + i}
            for i, c in enumerate(chunks)
            if c not in failed
        }
        store.record_batch(2, batch, done=done, failed=failed)
    stamp.write_text(spec)
    return {"written_seconds": time.perf_counter() - started, "batches": count}


def _view() -> None:
    """In a fresh process: the view's data, timed, with the names of the objects it read."""
    from meshing_core.run import status as status_module
    from meshing_core.store import files

    read: list[str] = []
    plain = {
        "read_many": files.read_many,
        "read_json": files.read_json,
        "read_file": files.read_file,
    }

    def read_many(cloudpath, names):
        read.extend(f"{cloudpath.rstrip('/')}/{n}" for n in names)
        return plain["read_many"](cloudpath, names)

    def read_json(cloudpath, name):
        read.append(f"{cloudpath.rstrip('/')}/{name}")
        return plain["read_json"](cloudpath, name)

    def read_file(cloudpath, name):
        read.append(f"{cloudpath.rstrip('/')}/{name}")
        return plain["read_file"](cloudpath, name)

    files.read_many, files.read_json, files.read_file = read_many, read_json, read_file
    config, meta = _setup()
    started = time.perf_counter()
    report = status_module.status(config, TIMESTAMP, grid=True, graph=_Graph(meta))
    seconds = time.perf_counter() - started
    layer2 = report["layers"][0]
    print(json.dumps({"seconds": seconds, "read": read, "done": layer2["chunks_done"],
                      "failed": layer2["chunks_failed"], "total": layer2["chunks_total"]}))  # fmt: skip


def _floor(names_file: str) -> None:
    """In a fresh process: read those objects raw (no parsing), timed."""
    from meshing_core.store.paths import local_path

    names = json.loads(Path(names_file).read_text())
    paths = [str(local_path(n)) for n in names]
    started = time.perf_counter()
    size = 0
    for path in paths:
        try:
            with open(path, "rb") as handle:
                size += len(handle.read())
        except FileNotFoundError:
            pass
    print(json.dumps({"seconds": time.perf_counter() - started, "bytes": size}))


def _fresh(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.progress_view", *args],
        cwd=REPO, check=True, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> dict:
    written = write_records()
    views, floors = [], []
    last: dict = {}
    for _ in range(REPEATS):
        last = _fresh("view")
        names = ROOT / "view-reads.json"
        names.write_text(json.dumps(sorted(set(last["read"]))))
        views.append(last["seconds"])
        floors.append(_fresh("floor", str(names))["seconds"])
    return {
        **written,
        "view_seconds": statistics.median(views),
        "floor_seconds": statistics.median(floors),
        "objects": len(set(last["read"])),
        "done": last["done"],
        "failed": last["failed"],
        "total": last["total"],
    }


def report(figures: dict) -> list[str]:
    return [
        f"progress_view_seconds {figures['view_seconds']:.3f} (layer 2: {figures['total']} chunks, "
        f"{figures['done']} done, {figures['failed']} failed, {figures['batches']} record batches, "
        f"{figures['objects']} objects read) progress_view_read_floor_seconds "
        f"{figures['floor_seconds']:.3f}",
        f"RATIO progress_view_vs_read_floor "
        f"{figures['view_seconds'] / max(figures['floor_seconds'], 1e-9):.3f}",
    ]


if __name__ == "__main__":
    if sys.argv[1] == "view":
        _view()
    else:
        _floor(sys.argv[2])
