"""The meshing DAG on a real local Airflow server (API server, scheduler, dag-processor,
triggerer on 127.0.0.1), driven through its REST API as the UI drives it.

One server for the module (start-up costs ~15 s, each task ~0.5 s): it lists ``mesh_example``,
refuses bad trigger forms before anything runs, and shows a failing batch retried, failed, then
cleared and rerun alone once its fault is removed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli_support import run_cli
from tools.airflow_env import free_port
from tools.airflow_serve import Server, standalone

DAG_ID = "mesh_example"
TIMESTAMP = "2021-03-04T00:00:00Z"
TIMESTAMP_S = 1614816000
FAILING_LAYER = 3


@dataclass
class Served:
    server: Server
    graph_yaml: Path


@pytest.fixture(scope="module")
def served(example_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server whose configs folder holds one entry: a private example copy.

    Layer 3 retries once after 1 s; the DAG reads retries when it is parsed, so graph.yaml says
    so before the server starts.
    """
    root = tmp_path_factory.mktemp("airflow_server")
    dataset = root / "example"
    shutil.copytree(example_dir, dataset)
    graph_yaml = dataset / "graph.yaml"
    data = yaml.safe_load(graph_yaml.read_text())
    data.setdefault("layers", {})[str(FAILING_LAYER)] = {"retries": 1, "retry_delay_s": 1}
    graph_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    configs = root / "configs"
    configs.mkdir()
    (configs / "example.yaml").write_text("graph: ../example/graph.yaml\n")
    with standalone(root / "home", configs, free_port()) as server:
        server.wait_for_dag(DAG_ID, timeout=120)
        yield Served(server, graph_yaml)


def _task_instances(server: Server, run_id: str) -> list[dict[str, Any]]:
    """Every task instance of a run (mapped ones one per map index), paging through the API."""
    out: list[dict[str, Any]] = []
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances"
    for _ in range(50):
        page = server.get(path, limit=100, offset=len(out))
        out += page["task_instances"]
        if not page["task_instances"] or len(out) >= page["total_entries"]:
            return out
    raise AssertionError(f"more than 5000 task instances in {run_id}")


def _by_task(tis: list[dict[str, Any]], task_id: str) -> dict[int, dict[str, Any]]:
    return {int(ti["map_index"]): ti for ti in tis if ti["task_id"] == task_id}


def _trigger(server: Server, conf: dict[str, Any]) -> Any:
    return server.api(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf}
    )


def test_server_lists_the_example_dag(served: Served) -> None:
    dags = {d["dag_id"]: d for d in served.server.dags()}
    assert DAG_ID in dags, sorted(dags)
    dag = dags[DAG_ID]
    assert dag["is_paused"] is False
    assert dag["has_import_errors"] is False
    assert "broken-config" not in {t["name"] for t in dag["tags"]}
    errors = served.server.get("/api/v2/importErrors")
    assert errors["total_entries"] == 0, errors


@pytest.mark.parametrize(
    ("conf", "named"),
    [({"timestamp": "yesterday"}, "timestamp"), ({"mode": "carrier-pigeon"}, "mode")],
)
def test_bad_trigger_form_is_refused_and_nothing_runs(
    served: Served, conf: dict[str, Any], named: str
) -> None:
    response = _trigger(served.server, conf)
    assert 400 <= response.status_code < 500, response.text
    assert f"param {named}" in response.json()["detail"]
    runs = served.server.get(f"/api/v2/dags/{DAG_ID}/dagRuns")
    assert runs["total_entries"] == 0, runs


def _corrupt_one_child_shard(graph_yaml: Path) -> tuple[Path, bytes, list[int], int]:
    """Truncate one layer-2 shard that a layer-3 chunk's stitching reads.

    Returns the shard, its original bytes, the parent chunk's coordinates and the parent's
    index in the layer's chunk order (its batch, at one chunk per batch).
    """
    from meshing_core import ids
    from meshing_core.config import load_config
    from meshing_core.graph import open_graph
    from meshing_core.mesh.descendants import multi_child_plan
    from meshing_core.run.records import chunk_index, chunk_order
    from meshing_core.store import layout

    config = load_config(graph_yaml)
    graph = open_graph(config)
    try:
        meta = graph.meta
        candidates = []
        for coords in chunk_order(meta, FAILING_LAYER):
            plan = multi_child_plan(graph, FAILING_LAYER, coords, float(TIMESTAMP_S))
            if plan:
                candidates.append((coords, plan))
        assert len(candidates) >= 2, "the example needs several layer-3 chunks with stitching"
        coords, plan = candidates[len(candidates) // 2]  # one in the middle of the map
        source = plan[min(plan)][0]
        child_chunk = ids.chunk_id_of(meta.codec, source)
        assert ids.layer_of(child_chunk) == 2
        mesh_dir = Path(config.mesh_cloudpath.removeprefix("file://"))
        shard = mesh_dir / layout.shard_key(meta.codec, child_chunk)
        index = chunk_index(meta, FAILING_LAYER, coords)
    finally:
        graph.close()
    assert shard.is_file(), shard
    original = shard.read_bytes()
    shard.write_bytes(original[: len(original) // 2])  # its minishard index is cut off
    return shard, original, [int(c) for c in coords], index


def _parent_shard(graph_yaml: Path, coords: list[int]) -> Path:
    from meshing_core.config import load_config
    from meshing_core.graph import open_graph
    from meshing_core.store import layout

    config = load_config(graph_yaml)
    graph = open_graph(config)
    try:
        chunk = graph.meta.codec.chunk_id(FAILING_LAYER, *coords)
        key = layout.shard_key(graph.meta.codec, chunk)
    finally:
        graph.close()
    return Path(config.mesh_cloudpath.removeprefix("file://")) / key


def _later(task_id: str) -> bool:
    groups = tuple(f"layer_{n}." for n in (FAILING_LAYER + 1, FAILING_LAYER + 2))
    return task_id.startswith(groups) or task_id == "mesh_metadata"


def test_failing_batch_is_retried_failed_then_cleared_alone(served: Served) -> None:
    server, graph_yaml = served.server, served.graph_yaml
    run_cli("run", "--graph", str(graph_yaml), "--timestamp", TIMESTAMP, "--max-layer", "2", "-q")
    shard, original, parent, parent_index = _corrupt_one_child_shard(graph_yaml)
    # Layer 2's record batches (64 chunks) are frozen at this timestamp by the CLI run; layer 3
    # has none yet, so one chunk per batch from here gives layer 3 one mapped task per chunk.
    data = yaml.safe_load(graph_yaml.read_text())
    data["batches"]["chunks_per_batch"] = 1
    graph_yaml.write_text(yaml.safe_dump(data, sort_keys=False))

    response = _trigger(server, {"timestamp": TIMESTAMP, "batch_size": 1})
    assert response.status_code == 200, response.text
    run_id = response.json()["dag_run_id"]
    run = server.wait_for_run(DAG_ID, run_id, timeout=300)
    assert run["state"] == "failed"

    tis = _task_instances(server, run_id)
    layer3 = _by_task(tis, "layer_3.batch")
    assert len(layer3) >= 2, layer3.keys()
    assert {i: ti["state"] for i, ti in layer3.items() if ti["state"] != "success"} == {
        parent_index: "failed"
    }
    assert f"L3 b{parent_index} chunks " in layer3[parent_index]["rendered_map_index"]
    assert layer3[parent_index]["try_number"] == 2  # retried once (retries: 1), then failed
    assert {ti["try_number"] for i, ti in layer3.items() if i != parent_index} == {1}
    layer2 = _by_task(tis, "layer_2.batch")
    assert layer2 and {ti["state"] for ti in layer2.values()} == {"success"}
    assert _by_task(tis, "start")[-1]["state"] == "success"
    later = [ti for ti in tis if _later(ti["task_id"])]
    assert "mesh_metadata" in {ti["task_id"] for ti in later}
    assert {ti["task_id"] for ti in later if ti["task_id"].startswith("layer_5.")}
    for ti in later:
        assert ti["state"] not in ("success", "running", "failed"), ti
        assert ti["try_number"] == 0, ti

    status = json.loads(
        run_cli("status", "--graph", str(graph_yaml), "--timestamp", TIMESTAMP, "--json").stdout
    )
    layer3_status = next(s for s in status["layers"] if s["layer"] == FAILING_LAYER)
    assert parent in [f["chunk"] for f in layer3_status["failures"]], layer3_status
    log = server.api(
        "GET",
        f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/layer_3.batch/logs/2",
        params={"map_index": parent_index, "full_content": "true"},
    )
    assert log.ok, log.text[:300]
    assert f"layer-{FAILING_LAYER} chunk {parent}" in log.text
    assert shard.name in log.text

    # Remove the fault; clear that one mapped instance with what depends on it, as the UI's
    # "Clear" with "Downstream" does. Airflow adds the cleared work's setup (start) and teardown
    # (end_run), so the rerun takes the mesh dir's lease again and frees it at the end.
    shard.write_bytes(original)
    body = {
        "dry_run": False,
        "dag_run_id": run_id,
        "task_ids": [["layer_3.batch", parent_index]],
        "include_downstream": True,
        "only_failed": False,
        "reset_dag_runs": True,
    }
    response = server.api("POST", f"/api/v2/dags/{DAG_ID}/clearTaskInstances", body)
    assert response.status_code == 200, response.text
    cleared = {(ti["task_id"], ti["map_index"]) for ti in response.json()["task_instances"]}
    assert ("layer_3.batch", parent_index) in cleared
    assert ("mesh_metadata", -1) in cleared
    assert not {c for c in cleared if c[0] == "setup" or c[0].startswith("layer_2.")}, cleared
    assert not {c for c in cleared if c[0] == "layer_3.batch" and c[1] != parent_index}
    run = server.wait_for_run(DAG_ID, run_id, timeout=300)
    assert run["state"] == "success"

    tis = _task_instances(server, run_id)
    layer3 = _by_task(tis, "layer_3.batch")
    assert layer3[parent_index]["state"] == "success"
    assert layer3[parent_index]["try_number"] == 3
    assert {ti["try_number"] for i, ti in layer3.items() if i != parent_index} == {1}
    assert {ti["try_number"] for ti in _by_task(tis, "layer_2.batch").values()} == {1}
    setup = [ti for ti in tis if ti["task_id"] == "setup"]
    assert setup and {(ti["state"], ti["try_number"]) for ti in setup} == {("success", 1)}
    assert _by_task(tis, "start")[-1]["state"] == "success"
    later = [ti for ti in tis if _later(ti["task_id"])]
    assert {ti["state"] for ti in later} == {"success"}, [
        (ti["task_id"], ti["map_index"], ti["state"]) for ti in later
    ]
    status = json.loads(
        run_cli("status", "--graph", str(graph_yaml), "--timestamp", TIMESTAMP, "--json").stdout
    )
    assert status["lease"] is None, status["lease"]
    assert status["run"]["state"] == "finished"
    layer3_status = next(s for s in status["layers"] if s["layer"] == FAILING_LAYER)
    assert layer3_status["chunks_failed"] == 0 and not layer3_status["failures"]

    from meshing_core.config import load_config
    from meshing_core.graph import open_graph

    graph = open_graph(load_config(graph_yaml))
    try:
        assert graph.custom_data()["mesh"]["initial_ts"] == TIMESTAMP_S
    finally:
        graph.close()
    assert _parent_shard(graph_yaml, parent).is_file()
