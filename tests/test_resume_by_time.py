"""A killed `run` of slow chunks loses at most the chunks finished in its last 5 s.

Chunks here take seconds each (256x256x64 voxels of a dense synthetic neurite volume), as on a
real dataset: a record flushed only every N chunks would lose minutes of work on a kill.
The kill comes a fixed time after the first shard is published (not after setup): on a loaded
machine the first chunk alone can take longer than the grace period, which left the test with
nothing old enough to check.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_support import REPO, run_cli

from meshing_core.config import load_config
from meshing_core.run.records import RecordStore, RunJournal
from meshing_core.store.paths import to_cloudpath

KILL_AFTER_FIRST_SHARD_S = 7.0  # > GRACE_S: the first shard is always old enough to count
GRACE_S = 5.0


@pytest.fixture(scope="module")
def slow_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from meshing_core.datasets.synthetic import (
        neurite_volume,
        write_agglomeration_csv,
        write_precomputed_segmentation,
    )
    from meshing_core.ingest.builder import build_graph

    root = tmp_path_factory.mktemp("slow")
    volume, agglomeration = neurite_volume((768, 768, 64), 3)
    write_precomputed_segmentation(to_cloudpath(root / "seg"), volume, (8.0, 8.0, 40.0))
    write_agglomeration_csv(root / "agglomeration.csv", agglomeration)
    graph_yaml = build_graph(
        to_cloudpath(root / "seg"),
        root / "agglomeration.csv",
        root / "ds",
        (256, 256, 64),
        max_error=8.0,
        progress=False,
    )
    return Path(graph_yaml)


def test_a_kill_in_layer_2_loses_at_most_the_last_5_s(slow_dataset: Path):
    config = load_config(slow_dataset)
    layer2 = Path(config.mesh_cloudpath[len("file://") :]) / "initial" / "2"
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshing_core", "run", "--graph", str(slow_dataset),
         "--workers", "1", "-q"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    first_shard = None
    while time.monotonic() < deadline and proc.poll() is None:
        if first_shard is None and layer2.is_dir() and any(layer2.glob("*.shard")):
            first_shard = time.monotonic()
        if first_shard is not None and time.monotonic() - first_shard >= KILL_AFTER_FIRST_SHARD_S:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    killed_at = time.time()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    published = {p.name: p.stat().st_mtime for p in layer2.glob("*.shard")}
    assert 1 <= len(published) < 9, "kill the run in the middle of layer 2"
    early = [name for name, mtime in published.items() if mtime <= killed_at - GRACE_S]
    entry = RunJournal(config).last()
    recorded = RecordStore(config, entry.timestamp).done_chunks(2)
    assert len(recorded) >= len(early), (recorded, early)

    resumed = run_cli("run", "--graph", str(slow_dataset), "--workers", "2", quiet=True)
    found = re.search(r"layer 2: 9 chunks \((\d+) empty, (\d+) already done\)", resumed.stdout)
    assert found, resumed.stdout
    assert int(found.group(2)) >= len(early) >= 1
    assert "finished" in resumed.stdout
