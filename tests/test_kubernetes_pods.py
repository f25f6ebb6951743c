"""``kubernetes`` mode: the pod a batch becomes, built without a cluster and checked against the
real Kubernetes schemas (``kubernetes-validate``), and the DAG shape of a kubernetes entry.

Airflow runs in a subprocess with its own AIRFLOW_HOME (it reads its configuration once per
process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tools.airflow_env import airflow_env

REPO = Path(__file__).resolve().parents[1]
K8S_VERSION = "1.33.0"

BUILD = """
import json, sys
import airflow  # puts the plugins folder on the path
from kubernetes.client import ApiClient
from meshing_core.config import load_config
from meshing_core.run.plan import plan_layer
from meshing_airflow.pods import pod_partial

graph_yaml, layer = sys.argv[1], int(sys.argv[2])
config = load_config(graph_yaml)
ticket = {"timestamp": 1614816000.0, "timestamp_rfc3339": "2021-03-04T00:00:00Z",
          "mode": "kubernetes", "token": "t"}
descriptor = plan_layer(config, layer)[-1]
partial = pod_partial(config, graph_yaml, layer, task_id="batch", ticket=ticket)
operator = partial.operator_class(**partial.kwargs, descriptor=descriptor)
operator.prepare_pod()  # what execute does before the pod starts
pod = operator.build_pod_request_obj(dry_run=True)
print("JSON" + json.dumps({"pod": ApiClient().sanitize_for_serialization(pod),
                           "descriptor": descriptor, "class": type(operator).__name__}))
"""


def _configure(graph_yaml: Path, **kubernetes: object) -> None:
    data = yaml.safe_load(graph_yaml.read_text())
    data["batches"]["chunks_per_batch"] = 16
    data["kubernetes"] = {
        "image": "registry.example/meshing:1.0",
        "namespace": "meshing",
        "secrets": {"google": "google-secret", "aws": "aws-secret", "cave": "cave-secret"},
        **kubernetes,
    }
    data["layers"] = {
        "default": {"cpu": "2500m", "memory": "3Gi", "timeout_s": 1800},
        "3": {"cpu": 4, "memory": "12Gi", "memory_limit": "16Gi", "cpu_limit": 6},
    }
    graph_yaml.write_text(yaml.safe_dump(data))


def _build(graph_yaml: Path, layer: int, home: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", BUILD, str(graph_yaml), str(layer)],
        env=airflow_env(home), cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("JSON")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][4:])


def test_a_batch_pod_runs_the_batch_command_with_layer_resources_and_mounted_secrets(
    example_copy, tmp_path
):
    graph_yaml = example_copy / "graph.yaml"
    _configure(graph_yaml)
    built = _build(graph_yaml, 2, tmp_path / "airflow")
    pod, descriptor = built["pod"], built["descriptor"]
    assert built["class"] == "MeshBatchPodOperator"
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)  # raises on any schema error
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert pod["metadata"]["namespace"] == "meshing"
    assert container["image"] == "registry.example/meshing:1.0"
    assert container["command"] == ["python", "-m", "meshing_core"]
    assert container["args"] == [
        "mesh", "--graph", str(graph_yaml), "--layer", "2", "--timestamp",
        "2021-03-04T00:00:00Z", "--chunk-index-range", str(descriptor["start"]),
        str(descriptor["stop"]), "--workers", "2",  # floor(2500m)
    ]  # fmt: skip
    assert container["resources"] == {
        "requests": {"cpu": "2500m", "memory": "3Gi"},
        "limits": {"memory": "3Gi"},
    }
    assert spec["activeDeadlineSeconds"] == 1800
    # secrets: one read-only projected volume at cloud-volume's folder, never in args or values
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/root/.cloudvolume/secrets" and mount["readOnly"] is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    names = sorted(s["secret"]["name"] for s in volume["projected"]["sources"])
    assert names == ["aws-secret", "cave-secret", "google-secret"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env == {
        "GOOGLE_APPLICATION_CREDENTIALS": "/root/.cloudvolume/secrets/google-secret.json"
    }
    text = json.dumps(container["args"]) + json.dumps(env)
    for word in ("AWS_SECRET", "private_key", "token"):
        assert word not in text


def test_layer_overrides_set_pod_limits_and_workers(example_copy, tmp_path):
    graph_yaml = example_copy / "graph.yaml"
    _configure(graph_yaml)
    pod = _build(graph_yaml, 3, tmp_path / "airflow")["pod"]
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    (container,) = pod["spec"]["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "12Gi"},
        "limits": {"cpu": "6", "memory": "16Gi"},
    }
    assert container["args"][-2:] == ["--workers", "4"]


def test_a_gke_cluster_selects_the_gke_operator(example_copy, tmp_path):
    graph_yaml = example_copy / "graph.yaml"
    gke = {"project_id": "lab", "location": "us-east1", "cluster_name": "meshing"}
    _configure(graph_yaml, gke=gke)
    built = _build(graph_yaml, 2, tmp_path / "airflow")
    assert built["class"] == "MeshBatchGKEPodOperator"
    kubernetes_validate.validate(built["pod"], K8S_VERSION, strict=True)


def test_unknown_secret_kinds_and_bad_gke_are_one_line_config_errors(example_copy):
    from meshing_core.config import ConfigError, load_config

    graph_yaml = example_copy / "graph.yaml"
    _configure(graph_yaml, gke={"project_id": "lab"})
    with pytest.raises(ConfigError, match="kubernetes.gke is .*project_id, location, cluster_name"):
        load_config(graph_yaml)
    _configure(graph_yaml, secrets="google-secret")
    with pytest.raises(ConfigError, match="kubernetes.secrets is 'google-secret': give a mapping"):
        load_config(graph_yaml)
