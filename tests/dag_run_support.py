"""One real DAG run of ``mesh_example`` (``dag.test`` in a subprocess with its own AIRFLOW_HOME:
Airflow reads its configuration once per process), for the tests of each execution mode."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from cli_support import REPO

from tools.airflow_env import airflow_env

RUN = """
import json, os, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
dag = bag.get_dag(sys.argv[1])
run = dag.test(run_conf=json.loads(sys.argv[2]))
tis = run.get_task_instances()
key = lambda t: f"{t.task_id}[{t.map_index}]"
print("JSON" + json.dumps({"state": str(run.state),
                           "tasks": {key(t): str(t.state) for t in tis},
                           "tries": {key(t): t.try_number for t in tis},
                           "durations": {key(t): t.duration for t in tis}}))
"""


def example_dag_run(
    home: Path,
    entry: str,
    conf: dict,
    tmp_path: Path,
    *,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> dict:
    """Run ``mesh_example`` from a configs entry (its YAML text); states, output, error lines."""
    configs = tmp_path / "configs"
    configs.mkdir(exist_ok=True)
    (configs / "example.yaml").write_text(entry)
    env = {**airflow_env(home, configs=configs), **(extra_env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", RUN, "mesh_example", json.dumps(conf)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("JSON")]
    assert lines, proc.stderr[-4000:]
    output = proc.stdout + proc.stderr
    errors = "\n".join(line for line in output.splitlines() if "rror" in line)
    return {**json.loads(lines[-1][4:]), "output": output, "errors": errors[-4000:]}


def mesh_shards(graph_yaml: Path, layer: int) -> dict[str, bytes]:
    """A layer's shard files by name, for byte-for-byte comparisons."""
    folder = graph_yaml.parent / "watershed" / "graphene_meshes" / "initial" / str(layer)
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.shard"))}
