"""Graph API calls per chunk through the PyChunkedGraph backend, counted by the stand-in.

On BigTable every call is a round trip, so the backend must batch: one call per node list or
per chunk, never one per node. The stitch bench's dataset (the one the ``stitch_*`` ratios use)
is meshed through the PyChunkedGraph backend wired to the stand-in (``tools/pcg_standin``),
layer 2 and then the stitched layers, each as its own ``mesh`` command with the stand-in
counting every outermost API call (worker processes' own graph opens included). Setup's calls
(id counters, once per run) are reported apart.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.dataset import OUT, build_dataset

REPO = Path(__file__).resolve().parents[1]


def _cli(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "meshing_core", *args, "-q"],
        cwd=REPO, env=env, check=True, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip


def run() -> dict:
    from bench import stitch
    from meshing_core.config import load_config
    from meshing_core.graph import open_graph
    from tools.pcg_datasets import to_pychunkedgraph
    from tools.pcg_standin import read_calls, standin_environment

    source, _ = build_dataset(stitch.SPEC, OUT / "stitch")
    config = load_config(source)
    graph = open_graph(config)
    meta, timestamp = graph.meta, max(graph.history()) + 1.0
    graph.close()
    root = OUT / "pcg_reads"
    shutil.rmtree(root, ignore_errors=True)
    dataset = root / "dataset"
    shutil.copytree(source.parent, dataset)
    shutil.rmtree(dataset / "watershed" / config.mesh_dir, ignore_errors=True)  # start clean
    graph_yaml = str(to_pychunkedgraph(dataset, root / "tables", "bench_pcg"))
    calls: dict[str, Counter] = {}
    chunks: dict[str, int] = {"layer2": 0, "stitched": 0}
    for step, layers in (("setup", []), ("layer2", [2]), ("stitched", range(3, meta.n_layers + 1))):
        counted = root / f"calls-{step}.txt"
        env = {**os.environ, **standin_environment(root / "tables", counted)}
        if step == "setup":
            _cli(env, "setup", "--graph", graph_yaml)
        for layer in layers:
            _cli(env, "mesh", "--graph", graph_yaml, "--layer", str(layer),
                 "--timestamp", repr(timestamp))  # fmt: skip
            bounds = meta.layer_chunk_bounds(layer)
            chunks[step] += int(bounds[0] * bounds[1] * bounds[2])
        calls[step] = read_calls(counted) if counted.exists() else Counter()
    return {"calls": calls, "chunks": chunks, "n_layers": meta.n_layers}


def report(figures: dict) -> list[str]:
    calls, chunks = figures["calls"], figures["chunks"]
    per = {step: sum(calls[step].values()) / max(chunks[step], 1) for step in chunks}

    def methods(step: str) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(calls[step].items()))

    return [
        f"pcg_calls_per_layer2_chunk {per['layer2']:.3f} ({chunks['layer2']} chunks: "
        f"{methods('layer2')}) pcg_calls_per_stitched_chunk {per['stitched']:.3f} "
        f"({chunks['stitched']} chunks of layers 3..{figures['n_layers']}: "
        f"{methods('stitched')}) pcg_setup_calls {sum(calls['setup'].values())}",
        f"RATIO pcg_backend_reads_per_chunk {max(per.values()):.3f}",
    ]
