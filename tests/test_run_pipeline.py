"""`run`, `status`: whole runs through the CLI as real processes, kill -9 and resume, lease, failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_support import run_cli

from meshing_core.config import load_config
from meshing_core.graph import open_graph
from meshing_core.store.sharding import ShardReader, bytes_source

REPO = Path(__file__).resolve().parents[1]
MERGE_STATE = 1614643200.0 + 3600  # after the example's merge (2021-03-02), before its split
SPLIT_STATE = 1614729600.0 + 3600  # after the split (2021-03-03)


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, check=check, quiet=True)


def shards(dataset: Path) -> dict[str, bytes]:
    root = dataset / "watershed" / "graphene_meshes" / "initial"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.shard"))}


def fresh_copy(example_dir: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(example_dir, target)
    return target


def test_killed_run_resumes_at_its_timestamp_with_identical_bytes(example_dir, tmp_path):
    killed = fresh_copy(example_dir, tmp_path, "killed")
    layer2 = killed / "watershed" / "graphene_meshes" / "initial" / "2"
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshing_core", "run", "--graph", str(killed / "graph.yaml"),
         "--workers", "1", "-q"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    seen = 0
    while time.monotonic() < deadline and proc.poll() is None:
        seen = len(list(layer2.glob("*.shard"))) if layer2.exists() else 0
        if seen >= 5:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert 5 <= seen < 111  # killed in the middle of layer 2
    runs = json.loads((killed / "watershed/graphene_meshes/runs.json").read_text())
    runs = runs["runs"] if isinstance(runs, dict) else runs
    killed_ts = runs[-1]["timestamp"]

    resumed = cli("run", "--graph", str(killed / "graph.yaml"))  # no --timestamp: resume
    assert "resuming" in resumed.stdout

    straight = fresh_copy(example_dir, tmp_path, "straight")
    cli("run", "--graph", str(straight / "graph.yaml"), "--timestamp", repr(killed_ts))
    assert shards(killed) == shards(straight)
    assert {name.split("/")[0] for name in shards(killed)} == {"2", "3", "4", "5"}

    again = cli("run", "--graph", str(killed / "graph.yaml"))
    assert "nothing to do" in again.stdout


def test_second_run_is_refused_while_the_lease_is_held(example_copy):
    from meshing_core.run.lease import acquire

    config = load_config(example_copy / "graph.yaml")
    lease = acquire(config, 1614729600.0 + 7200)
    try:
        proc = cli("run", "--graph", str(example_copy / "graph.yaml"), check=False)
    finally:
        lease.release()
    assert proc.returncode == 2
    error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "leased by" in error[0] and str(os.getpid()) in error[0]
    assert not list((example_copy / "watershed").rglob("*.shard"))


def test_corrupt_child_shard_fails_its_parent_only_and_status_shows_it(example_copy):
    graph_yaml = str(example_copy / "graph.yaml")
    cli("run", "--graph", graph_yaml, "--timestamp", repr(SPLIT_STATE), "--max-layer", "2")
    layer2 = example_copy / "watershed" / "graphene_meshes" / "initial" / "2"
    victim = layer2 / "0-0.shard"  # chunk (0, 0, 0), a child of layer-3 chunk (0, 0, 0)
    victim.write_bytes(victim.read_bytes()[:10])
    proc = cli(
        "run", "--graph", graph_yaml, "--timestamp", repr(SPLIT_STATE), "--max-layer", "3",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "[0, 0, 0]" in error[0] and "0-0.shard" in error[0]
    layer3 = example_copy / "watershed" / "graphene_meshes" / "initial" / "3"
    assert not (layer3 / "0-0.shard").exists()
    assert len(list(layer3.glob("*.shard"))) >= 10  # the other parents were stitched
    status = cli("status", "--graph", graph_yaml, "--json")
    facts = json.loads(status.stdout)
    layer3_row = next(row for row in facts["layers"] if row["layer"] == 3)
    assert layer3_row["chunks_failed"] == 1
    assert layer3_row["chunks_done"] == layer3_row["chunks_total"] - 1
    graph = open_graph(load_config(graph_yaml))
    try:
        # the failed extension to layer 3 advertises nothing new: layer 2 is what finished
        assert graph.custom_data()["mesh"]["max_layer"] == 2
    finally:
        graph.close()


def test_metadata_after_a_run_is_what_cloud_volume_reads(example_copy):
    from meshing_core.store.verify import graphene_reader

    graph_yaml = example_copy / "graph.yaml"
    cli("run", "--graph", str(graph_yaml), "--timestamp", repr(SPLIT_STATE))
    config = load_config(graph_yaml)
    graph = open_graph(config)
    try:
        mesh = graph.custom_data()["mesh"]
        assert mesh["max_layer"] == 5 and mesh["initial_ts"] == int(SPLIT_STATE)
        assert mesh["dir"] == "graphene_meshes" and mesh["max_error"] == config.max_error
        cv = graphene_reader(config, graph)
        assert cv.meta.max_meshed_layer == 5
        assert cv.meta.uniform_draco_grid_size > 0
        info = json.loads((example_copy / "watershed" / "info").read_text())
        assert info["mesh_metadata"]["unsharded_mesh_dir"] == "dynamic"
    finally:
        graph.close()


@pytest.mark.parametrize("first,second", [(MERGE_STATE, SPLIT_STATE)])
def test_each_state_leaves_exactly_its_own_shards(example_dir, tmp_path, first, second):
    reused = fresh_copy(example_dir, tmp_path, "reused")
    cli("run", "--graph", str(reused / "graph.yaml"), "--timestamp", repr(first))
    merged = shards(reused)
    cli("run", "--graph", str(reused / "graph.yaml"), "--timestamp", repr(second))
    split = shards(reused)
    assert merged != split
    only_second = fresh_copy(example_dir, tmp_path, "only_second")
    cli("run", "--graph", str(only_second / "graph.yaml"), "--timestamp", repr(second))
    assert split == shards(only_second)  # nothing of the merged state is left behind
    config = load_config(reused / "graph.yaml")
    spec = json.loads((reused / "watershed/graphene_meshes/info").read_text())["sharding"]
    graph = open_graph(config)
    try:
        for name, data in split.items():
            layer = int(name.split("/")[0])
            keys = set(map(int, ShardReader(bytes_source(data), spec[str(layer)]).keys()))
            alive = set()
            for key in keys:
                from meshing_core import ids

                coords = ids.chunk_coords(graph.meta.codec, key)
                alive |= set(graph.chunk_nodes(layer, coords, second).tolist())
            assert keys <= alive, name
    finally:
        graph.close()


def test_parent_without_recorded_children_is_not_stitched(example_copy):
    from meshing_core.run.layer import mesh_layer
    from meshing_core.run.records import RecordStore
    from meshing_core.run.setup import setup_meshes

    config = load_config(example_copy / "graph.yaml")
    setup_meshes(config)
    # layer 2 only for x < 4: layer-3 parents with x >= 2 have unrecorded children
    mesh_layer(config, 2, chunk_end=(4, 4, 4), timestamp=SPLIT_STATE, workers=1,
               progress=False, record=True)  # fmt: skip
    with pytest.raises(Exception) as err:
        mesh_layer(config, 3, timestamp=SPLIT_STATE, workers=1, progress=False, record=True)
    records = RecordStore(config, SPLIT_STATE)
    assert "has no completion record" in str(err.value) and "mesh layer 2 first" in str(err.value)
    layer3 = example_copy / "watershed" / "graphene_meshes" / "initial" / "3"
    written = {p.name for p in layer3.glob("*.shard")}
    failed = set(records.failures(3))
    done = set(records.done_chunks(3))
    assert failed == {(x, y, z) for x in (2, 3) for y in (0, 1) for z in (0, 1)}
    assert done == {(x, y, z) for x in (0, 1) for y in (0, 1) for z in (0, 1)}
    assert len(written) == len(done)  # nothing was written for the failed parents
