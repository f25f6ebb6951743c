"""``kubernetes`` mode through a real DAG run (``dag.test`` in a subprocess) against a loopback
Kubernetes API emulator (``kmock``) with a kubelet stand-in that runs each pod's command as a
local process (``tests/kubelet_standin.py``): the real KubernetesPodOperator creates, watches,
reads the logs of and deletes the pods.

Cases: every batch pod succeeds and the shards equal ``mesh``'s; a pod whose command exits
non-zero fails its batch; a pod stuck Running fails its batch by ``execution_timeout``. In each,
every pod is deleted from the API at the end.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import yaml
from cli_support import REPO, run_cli
from dag_run_support import example_dag_run, mesh_shards
from kubelet_standin import KubeCluster

TS = "2021-03-04T00:00:00Z"
CONN_ID = "kmock_k8s"
NAMESPACE = "meshing"


def _configure(graph_yaml: Path, chunks_per_batch: int, **layer: object) -> None:
    data = yaml.safe_load(graph_yaml.read_text())
    data["batches"]["chunks_per_batch"] = chunks_per_batch
    data["kubernetes"] = {
        "image": "meshing-core:test",
        "namespace": NAMESPACE,
        "kubernetes_conn_id": CONN_ID,
        "startup_timeout_s": 60,
    }
    data["layers"]["default"].update({"retries": 0, "retry_delay_s": 1, **layer})
    graph_yaml.write_text(yaml.safe_dump(data))


def _dag_run(home: Path, graph_yaml: Path, cluster: KubeCluster, tmp_path: Path) -> dict:
    kubeconfig = cluster.kubeconfig(tmp_path / "kubeconfig.json", NAMESPACE)
    connection = json.dumps(
        {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
    )
    conf = {"timestamp": TS, "mode": "kubernetes", "max_layer": 2}
    return example_dag_run(
        home, f"graph: {graph_yaml}\nmode: kubernetes\n", conf, tmp_path,
        extra_env={f"AIRFLOW_CONN_{CONN_ID.upper()}": connection}, timeout=240,
    )  # fmt: skip


def _batches(result: dict) -> dict[int, str]:
    """map index -> state of the layer-2 batch tasks."""
    prefix = "layer_2.batch["
    return {
        int(key[len(prefix) : -1]): state
        for key, state in result["tasks"].items()
        if key.startswith(prefix)
    }


def _by_map_index(snapshot: dict) -> dict[int, dict]:
    pods = snapshot["kubelet"].values()
    return {int(p["labels"]["map_index"]): p for p in pods}


def _assert_all_pods_deleted(snapshot: dict) -> None:
    assert snapshot["pods"], "no pod was created"
    alive = [name for name, pod in snapshot["pods"].items() if not pod["deleted"]]
    assert not alive, f"pods left in the API: {alive}"
    assert all(p["namespace"] == NAMESPACE for p in snapshot["pods"].values())


def test_batch_pods_run_to_success_and_match_mesh(
    example_dir, example_copy, airflow_home, tmp_path
):
    local = tmp_path / "local"
    shutil.copytree(example_dir, local)
    run_cli("setup", "--graph", str(local / "graph.yaml"), quiet=True)
    run_cli("mesh", "--graph", str(local / "graph.yaml"), "--layer", "2", "--timestamp", TS,
            quiet=True)  # fmt: skip
    graph_yaml = example_copy / "graph.yaml"
    _configure(graph_yaml, chunks_per_batch=48)  # 112 layer-2 chunks: 3 batches
    with KubeCluster(REPO) as cluster:
        result = _dag_run(airflow_home, graph_yaml, cluster, tmp_path)
        snapshot = cluster.snapshot()
    assert result["state"] == "success", result["errors"]
    batches = _batches(result)
    assert 1 <= len(batches) <= 3 and set(batches.values()) == {"success"}, batches
    assert snapshot["errors"] == []
    _assert_all_pods_deleted(snapshot)
    pods = _by_map_index(snapshot)
    assert sorted(pods) == sorted(batches)  # one pod per batch, no retries
    for pod in pods.values():
        assert pod["argv"][:3] == [sys.executable, "-m", "meshing_core"]
        assert pod["argv"][3:8] == ["mesh", "--graph", str(graph_yaml), "--layer", "2"]
        assert pod["exit_code"] == 0 and pod["phases"] == ["Running", "Succeeded"]
        assert pod["log_reads"] >= 1 and pod["labels"]["layer"] == "2"
    for name, pod in snapshot["pods"].items():
        assert pod["phases"] == ["Pending", "Running", "Succeeded"], (name, pod)
    # the operator followed the pod logs into the task log
    last_lines = [p["log"].strip().splitlines()[-1] for p in pods.values() if p["log"].strip()]
    assert last_lines and all(line in result["output"] for line in last_lines)
    assert mesh_shards(graph_yaml, 2) == mesh_shards(local / "graph.yaml", 2) != {}


def test_a_pod_exiting_non_zero_fails_its_batch_and_is_deleted(
    example_copy, airflow_home, tmp_path
):
    graph_yaml = example_copy / "graph.yaml"
    _configure(graph_yaml, chunks_per_batch=48)
    victim = next((example_copy / "watershed").glob("*/96-128_32-64_16-32*"))
    victim.write_bytes(b"not a segmentation chunk")
    with KubeCluster(REPO) as cluster:
        result = _dag_run(airflow_home, graph_yaml, cluster, tmp_path)
        snapshot = cluster.snapshot()
    assert result["state"] == "failed"
    batches = _batches(result)
    failed = {i for i, state in batches.items() if state == "failed"}
    assert snapshot["errors"] == []
    _assert_all_pods_deleted(snapshot)
    pods = _by_map_index(snapshot)
    non_zero = {i for i, pod in pods.items() if pod["exit_code"] != 0}
    assert failed == non_zero and 1 <= len(failed) < len(batches), (batches, pods)
    assert {batches[i] for i in set(batches) - failed} == {"success"}
    for i in failed:
        assert pods[i]["phases"] == ["Running", "Failed"]
        assert "chunk(s) of layer 2 failed" in pods[i]["log"]
        assert f"Pod {pods[i]['name']} returned a failure" in result["output"]
    assert result["tasks"]["layer_2.summary[-1]"] != "success"


def test_a_pod_stuck_running_fails_its_batch_by_timeout_and_is_deleted(
    example_copy, airflow_home, tmp_path
):
    graph_yaml = example_copy / "graph.yaml"
    _configure(graph_yaml, chunks_per_batch=200, timeout_s=5)  # one batch
    with KubeCluster(REPO, behaviour=lambda pod: "hang") as cluster:
        result = _dag_run(airflow_home, graph_yaml, cluster, tmp_path)
        snapshot = cluster.snapshot()
    assert result["state"] == "failed"
    assert _batches(result) == {0: "failed"}
    assert 5 <= result["durations"]["layer_2.batch[0]"] < 60
    assert snapshot["errors"] == []
    _assert_all_pods_deleted(snapshot)
    (pod,) = snapshot["kubelet"].values()
    assert pod["behaviour"] == "hang" and pod["exit_code"] is None
    assert pod["phases"] == ["Running"] and pod["deleted"]
    (stored,) = snapshot["pods"].values()
    assert stored["phases"] == ["Pending", "Running"]  # deleted while Running
    # the execution_timeout fired, then the operator's clean-up deleted the pod (and raised
    # "returned a failure", which replaces AirflowTaskTimeout as the task's error)
    output = result["output"]
    assert "AirflowTaskTimeout" in output
    assert output.index("Process timed out") < output.index(f"Deleting pod: {pod['name']}")
