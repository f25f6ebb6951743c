"""Meshing through the PyChunkedGraph backend (wired to the stand-in) as a CAVE lab would.

The example meshed through PyChunkedGraph's API gives byte-identical shards to meshing it
through the embedded graph, locally and through SQS workers; ``--cg_name`` works with no file;
a graph config naming a PyChunkedGraph graph makes the same DAG; bad input (extra not
installed, credentials missing, unknown graph) is one stderr line naming PyChunkedGraph and the
fix, before anything is queued.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from cli_support import run_cli
from dag_run_support import mesh_shards

from tools.pcg_datasets import to_pychunkedgraph
from tools.pcg_standin import read_calls

TS = "2021-03-02T12:00:00Z"  # between the merge and the split: edits are in effect
LAYERS = range(2, 6)


def _all_shards(graph_yaml: Path) -> dict[int, dict[str, bytes]]:
    return {layer: mesh_shards(graph_yaml, layer) for layer in LAYERS}


def _ws_json(dataset: Path, *parts: str) -> dict:
    return json.loads((dataset / "watershed").joinpath(*parts).read_text())


@pytest.fixture(scope="module")
def embedded_run(example_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example meshed through the embedded graph at TS (all layers)."""
    dataset = tmp_path_factory.mktemp("pcg-reference") / "example"
    shutil.copytree(example_dir, dataset)
    run_cli("run", "--graph", str(dataset / "graph.yaml"), "--timestamp", TS, quiet=True)
    return dataset


def _pcg_copy(example_dir: Path, standin: Path, root: Path, graph_id: str) -> Path:
    dataset = root / graph_id
    shutil.copytree(example_dir, dataset)
    return to_pychunkedgraph(dataset, standin, graph_id)


def test_pychunkedgraph_run_writes_the_same_shards_and_metadata(
    example_dir, standin, embedded_run, tmp_path
):
    pcg_yaml = _pcg_copy(example_dir, standin, tmp_path, "example_local")
    out = run_cli("run", "--graph", str(pcg_yaml), "--timestamp", TS, quiet=True).stdout
    assert "finished" in out
    shards = _all_shards(pcg_yaml)
    assert shards == _all_shards(embedded_run / "graph.yaml")
    assert all(shards[layer] for layer in LAYERS)
    for parts in (("info",), ("graphene_meshes", "info")):
        assert _ws_json(pcg_yaml.parent, *parts) == _ws_json(embedded_run, *parts)
    # the custom data mesh block went into the graph's own meta (PyChunkedGraph's update_meta)
    table_meta = json.loads((standin / "example_local" / "meta.json").read_text())
    from meshing_core.config import load_config
    from meshing_core.graph import open_graph

    reference = open_graph(load_config(embedded_run / "graph.yaml"))
    try:
        assert table_meta["custom_data"]["mesh"] == reference.custom_data()["mesh"]
        assert table_meta["custom_data"]["mesh"]["max_layer"] == 5
    finally:
        reference.close()


def test_pychunkedgraph_sqs_workers_write_the_same_shards(
    example_dir, standin, embedded_run, sqs, tmp_path
):
    from meshing_core.queue.sqs import ensure_queues, queue_counts

    pcg_yaml = str(_pcg_copy(example_dir, standin, tmp_path, "example_sqs"))
    run_cli("setup", "--graph", pcg_yaml, quiet=True)
    url, dead = ensure_queues(sqs, "pcg-mesh", max_receive_count=2, visibility_timeout_s=60)
    for layer in (2, 3):
        sent = run_cli("mesh", "--graph", pcg_yaml, "--layer", str(layer), "--timestamp", TS,
                       "--queue_name", "pcg-mesh").stdout  # fmt: skip
        assert "chunks enqueued" in sent
        run_cli(
            "worker", "--graph", pcg_yaml, "--queue", url, "--workers", "2", "--exit-when-empty"
        )
        shards = mesh_shards(Path(pcg_yaml), layer)
        assert shards == mesh_shards(embedded_run / "graph.yaml", layer) != {}
    assert queue_counts(sqs, dead)["visible"] == 0


def test_pychunkedgraph_cg_name_meshes_with_no_file_in_a_few_calls_per_chunk(
    example_dir, standin, embedded_run, tmp_path, monkeypatch
):
    """The procedure's command line, with `--cg_name`: the graph's meta makes the config."""
    pcg_yaml = _pcg_copy(example_dir, standin, tmp_path, "example_cgname")
    pcg_yaml.unlink()  # nothing on disk names the graph: only its id
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("PCG_STANDIN_CALLS", str(calls))
    run_cli("setup", "--cg_name", "example_cgname", quiet=True)
    setup_calls = sum(read_calls(calls).values())
    calls.unlink()
    out = run_cli("mesh", "--cg_name", "example_cgname", "--layer", "2", "--chunk_start", "0",
                  "0", "0", "--chunk_end", "7", "4", "4", "--mip", "0", "--timestamp", TS,
                  "--workers", "1", quiet=True).stdout  # fmt: skip
    assert "layer 2" in out and "112 chunks" in out
    assert mesh_shards(pcg_yaml, 2) == mesh_shards(embedded_run / "graph.yaml", 2)
    assert not pcg_yaml.exists() and not list(pcg_yaml.parent.glob("*.yaml"))
    counted = read_calls(calls)
    # per chunk: one parent read (supervoxels -> layer 2), one roots read (each voxel's object)
    assert counted["get_parents"] <= 112 and counted["get_roots"] <= 112, counted
    assert sum(counted.values()) <= 2 * 112 + 10, counted
    assert setup_calls < 200  # counters of the chunks, read once
    # status and info work from the id alone; node counts (a table scan) show as unknown
    status = run_cli("status", "--cg_name", "example_cgname", "--timestamp", TS).stdout
    header = next(line.split() for line in status.splitlines() if line.startswith("layer"))
    row = dict(zip(header, next(line.split() for line in status.splitlines()
                                if line.split()[:1] == ["2"]), strict=False))  # fmt: skip
    assert row["total"] == "112" and row["nodes"] == "-", status  # node counts unknown
    info = run_cli("info", "--cg_name", "example_cgname").stdout
    assert "layers      5" in info and "    2          7x4x4      112         -" in info, info


def test_pychunkedgraph_graph_config_makes_the_same_dag(example_dir, standin, tmp_path):
    from test_dags import PARSE, _python

    from tools.airflow_env import airflow_env

    embedded = tmp_path / "embedded"
    shutil.copytree(example_dir, embedded)
    pcg_yaml = _pcg_copy(example_dir, standin, tmp_path, "example_dag")
    data = yaml.safe_load(pcg_yaml.read_text())
    data["name"] = "example_pcg"
    pcg_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "embedded.yaml").write_text(f"graph: {embedded / 'graph.yaml'}\n")
    (configs / "pcg.yaml").write_text(f"graph: {pcg_yaml}\n")
    env = airflow_env(tmp_path / "airflow", configs=configs)
    for name in ("PYTHONPATH", "PCG_STANDIN_TABLES", "BIGTABLE_PROJECT", "BIGTABLE_INSTANCE"):
        env.pop(name, None)  # parsing must not need PyChunkedGraph nor reach the graph
    parsed = _python(PARSE, env)
    assert parsed["errors"] == {}
    mine, theirs = parsed["dags"]["mesh_example"], parsed["dags"]["mesh_example_pcg"]
    assert "layer_5" in mine["groups"]
    for key in ("groups", "tasks", "params", "max_active_runs", "schedule"):
        assert mine[key] == theirs[key], key


def _one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("error: ") and "PyChunkedGraph" in lines[0], lines[0]
    return lines[0]


def test_pychunkedgraph_bad_input_is_one_line_before_anything_is_queued(
    example_dir, standin, sqs, tmp_path, monkeypatch
):
    from meshing_core.queue.sqs import ensure_queues, queue_counts

    pcg_yaml = str(_pcg_copy(example_dir, standin, tmp_path, "example_bad"))
    url, _ = ensure_queues(sqs, "pcg-bad", max_receive_count=2, visibility_timeout_s=30)
    send = ("mesh", "--graph", pcg_yaml, "--layer", "2", "--queue_name", "pcg-bad")

    unknown = yaml.safe_load(Path(pcg_yaml).read_text())
    unknown["graph"]["graph_id"] = "no_such_graph"
    other = tmp_path / "unknown" / "graph.yaml"
    other.parent.mkdir()
    other.write_text(yaml.safe_dump(unknown))
    line = _one_error_line(run_cli("mesh", "--graph", str(other), "--layer", "2",
                                   "--queue_name", "pcg-bad", check=False))  # fmt: skip
    assert "'no_such_graph'" in line and "graph id" in line
    line = _one_error_line(run_cli("run", "--cg_name", "no_such_graph", check=False))
    assert "'no_such_graph'" in line

    with monkeypatch.context() as env:
        env.delenv("BIGTABLE_INSTANCE")
        line = _one_error_line(run_cli(*send, check=False))
    assert "BIGTABLE_INSTANCE not set" in line and "export" in line

    kept = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if "pcg_standin" not in p]
    with monkeypatch.context() as env:
        env.setenv("PYTHONPATH", os.pathsep.join(kept))
        line = _one_error_line(run_cli(*send, check=False))
        assert "not installed" in line and "make pychunkedgraph" in line
        line = _one_error_line(run_cli("setup", "--cg_name", "example_bad", check=False))
        assert "not installed" in line
    assert queue_counts(sqs, url) == {"visible": 0, "in_flight": 0}


def test_pychunkedgraph_batch_pods_get_the_bigtable_environment(example_dir, standin, tmp_path):
    """kubernetes mode: the pod mounts the key and gets BIGTABLE_PROJECT / BIGTABLE_INSTANCE
    from the task's environment; without a google secret the batch is refused in one line."""
    import kubernetes_validate
    from test_kubernetes_pods import K8S_VERSION, _build, _configure

    pcg_yaml = _pcg_copy(example_dir, standin, tmp_path, "example_pods")
    _configure(pcg_yaml)
    pod = _build(pcg_yaml, 2, tmp_path / "airflow")["pod"]
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env == {
        "GOOGLE_APPLICATION_CREDENTIALS": "/root/.cloudvolume/secrets/google-secret.json",
        "BIGTABLE_PROJECT": os.environ["BIGTABLE_PROJECT"],
        "BIGTABLE_INSTANCE": os.environ["BIGTABLE_INSTANCE"],
    }
    _configure(pcg_yaml, secrets={"aws": "aws-secret"})
    with pytest.raises(AssertionError, match="kubernetes.secrets.google"):
        _build(pcg_yaml, 2, tmp_path / "airflow")
