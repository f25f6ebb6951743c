"""Layer 2 of the layer-2 bench volume meshed in ``local`` mode and through SQS, side by side.

``local``: ``python -m meshing_core mesh --layer 2 --workers 2`` per round. ``sqs``: per round
``mesh --queue_name`` enqueues the layer (moto_server on loopback), and one
``python -m meshing_core worker --workers 2 --exit-when-empty`` process meshes every round's
messages (a deployment's workers outlive a layer; its final empty long poll is counted). Each
round is a fresh meshing timestamp, so every round meshes every chunk. The volume is small
(the ``l2_throughput_*`` one), so rounds repeat until the local side takes at least
``MIN_LOCAL_S``: the queue's overhead is then measured against 40 s or more of real work. Shards
of the last round are compared byte for byte.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from bench.dataset import OUT, DatasetSpec, build_dataset
from tools.moto_sqs import moto_server, sqs_environment

REPO = Path(__file__).resolve().parents[1]
ROOT = OUT / "sqs_vs_local"
MIN_LOCAL_S = 40.0
MAX_ROUNDS = 40
WORKERS = 2


@dataclass
class Figures:
    rounds: int = 0
    chunks: int = 0
    local_seconds: float = 0.0
    enqueue_seconds: float = 0.0
    worker_seconds: float = 0.0
    identical: bool = False

    @property
    def sqs_seconds(self) -> float:
        return self.enqueue_seconds + self.worker_seconds


def _cli(*args: str, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "meshing_core", *args, "-q"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        timeout=3600,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds


def _copy(source: Path, name: str) -> Path:
    target = ROOT / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    return target / "graph.yaml"


def _shards(graph_yaml: Path) -> dict[str, bytes]:
    folder = graph_yaml.parent / "watershed" / "graphene_meshes" / "initial" / "2"
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.shard"))}


def run() -> Figures:
    from meshing_core.config import load_config
    from meshing_core.queue.sqs import ensure_queues, sqs_client
    from meshing_core.timestamps import format_timestamp

    graph_yaml, _ = build_dataset(DatasetSpec())
    ROOT.mkdir(parents=True, exist_ok=True)
    source = graph_yaml.resolve().parent
    local, queued = _copy(source, "local"), _copy(source, "queued")
    for graph in (local, queued):  # the one-time mesh setup, untimed
        _cli("setup", "--graph", str(graph))
    figures = Figures()
    stamps: list[str] = []
    first = int(time.time()) + 1  # after the bench graph's creation
    # local rounds until MIN_LOCAL_S of work (the round count then fixes the SQS side's work)
    while figures.local_seconds < MIN_LOCAL_S and figures.rounds < MAX_ROUNDS:
        stamp = format_timestamp(float(first + figures.rounds * 60))
        stamps.append(stamp)
        figures.local_seconds += _cli(
            "mesh", "--graph", str(local), "--layer", "2", "--timestamp", stamp,
            "--workers", str(WORKERS),
        )  # fmt: skip
        figures.rounds += 1
    with moto_server() as endpoint:
        env = {**os.environ, **sqs_environment(endpoint)}
        with mock.patch.dict(os.environ, env):  # this process's client finds moto too
            config = load_config(queued)
            url, _ = ensure_queues(
                sqs_client(), "bench-sqs", max_receive_count=3,
                visibility_timeout_s=int(config.layer_settings(2)["visibility_timeout_s"]),
            )  # fmt: skip
        for stamp in stamps:
            figures.enqueue_seconds += _cli(
                "mesh", "--graph", str(queued), "--layer", "2", "--timestamp", stamp,
                "--queue_name", url, env=env,
            )  # fmt: skip
        figures.worker_seconds = _cli(
            "worker", "--graph", str(queued), "--queue", url, "--workers", str(WORKERS),
            "--exit-when-empty", env=env,
        )  # fmt: skip
    figures.chunks = math.prod(
        -(-s // c) for s, c in zip(DatasetSpec().shape, DatasetSpec().chunk_size, strict=True)
    )
    figures.identical = _shards(local) == _shards(queued) != {}
    return figures


def report(figures: Figures) -> list[str]:
    return [
        f"sqs_vs_local rounds {figures.rounds} chunks_per_round {figures.chunks} "
        f"local_seconds {figures.local_seconds:.1f} enqueue_seconds {figures.enqueue_seconds:.1f} "
        f"worker_seconds {figures.worker_seconds:.1f} shards_identical {figures.identical}",
        f"RATIO sqs_vs_local {figures.sqs_seconds / figures.local_seconds:.3f}",
    ]


def problems(figures: Figures) -> list[str]:
    return [] if figures.identical else ["sqs and local shards differ"]
