"""The DAG factory in dags/: parsing configs into DAGs, placeholders, and a real local-mode run.

Airflow runs in subprocesses with their own AIRFLOW_HOME (Airflow reads its config once per
process, so keeping it out of the pytest process leaves other tests untouched).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from cli_support import run_cli

from tools.airflow_env import airflow_env, migrate_db

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
CONFIGS = Path(__file__).resolve().parent / "dag_configs"

PARSE = """
import json, os
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag in bag.dags.values():
    groups = sorted(g for g in dag.task_group.get_task_group_dict() if g)
    tasks = {t.task_id: {"retries": t.retries, "pool": t.pool,
                         "retry_delay": t.retry_delay.total_seconds(),
                         "timeout": t.execution_timeout and t.execution_timeout.total_seconds(),
                         "trigger_rule": getattr(t.trigger_rule, "value", t.trigger_rule),
                         "upstream": sorted(t.upstream_task_ids),
                         "setup": t.is_setup, "teardown": t.is_teardown}
             for t in dag.tasks}
    out["dags"][dag.dag_id] = {"description": dag.description, "groups": groups,
        "tasks": tasks, "max_active_runs": dag.max_active_runs,
        "schedule": type(dag.timetable).__name__,
        "params": {k: dag.params.get_param(k).resolve(suppress_exception=True)
                   for k in dag.params}}
print("JSON" + json.dumps(out))
"""

RUN = """
import json, os, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
dag = bag.get_dag(sys.argv[1])
from airflow.models.xcom import XComModel
from airflow.settings import Session
run = dag.test(run_conf=json.loads(sys.argv[2]))
states = {f"{ti.task_id}[{ti.map_index}]": str(ti.state) for ti in run.get_task_instances()}
with Session() as session:
    rows = session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=dag.dag_id,
                                              key="return_value")).all()
    xcoms = {f"{r.task_id}[{r.map_index}]": XComModel.deserialize_value(r) for r in rows}
labels = {f"{ti.task_id}[{ti.map_index}]": ti.rendered_map_index for ti in run.get_task_instances()}
print("JSON" + json.dumps({"state": str(run.state), "tasks": states, "xcoms": xcoms,
                           "labels": labels}, default=str))
"""


def _airflow_env(home: Path, configs: Path) -> dict[str, str]:
    return airflow_env(home, configs=configs)


def _python(script: str, env: dict[str, str], *args: str, timeout: float = 600) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("JSON")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = json.loads(lines[-1][len("JSON") :])
    found["output"] = proc.stdout + proc.stderr
    return found


def _graph_yaml(folder: Path, n_layers: int, **extra: object) -> Path:
    """A graph.yaml as build-graph writes it (parsing reads nothing else)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "name": folder.name,
        "graph": {"backend": "embedded", "path": "graph.sqlite"},
        "watershed": "watershed",
        "mesh": {"dir": "graphene_meshes", "mip": 0, "max_error": 10.0},
        "chunk_size": [32, 32, 16],
        "n_layers": n_layers,
        "layers": {"default": {"retries": 2}, "4": {"retries": 1, "timeout_s": 7200}},
        **extra,
    }
    target = folder / "graph.yaml"
    target.write_text(yaml.safe_dump(data))
    return target


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The committed test configs (tests/dag_configs) parsed by a real DagBag."""
    tmp = tmp_path_factory.mktemp("dagbag")
    env = _airflow_env(tmp / "airflow", CONFIGS)
    return _python(PARSE, env)


def test_dagbag_has_no_import_errors(parsed):
    assert parsed["errors"] == {}
    assert set(parsed["dags"]) == {
        "mesh_four_layers",
        "mesh_scheduled",
        "mesh_unknown_key",
        "mesh_bad_batch_type",
        "mesh_bad_mode",
        "mesh_missing_graph",
        "mesh_bad_graph_field",
        "mesh_same_graph_name",
    }


def test_good_config_has_setup_layer_groups_and_metadata(parsed):
    dag = parsed["dags"]["mesh_four_layers"]
    assert dag["groups"] == ["layer_2", "layer_3", "layer_4"]
    assert set(dag["tasks"]) == {
        "start",
        "setup",
        *(f"layer_{n}.{t}" for n in (2, 3, 4) for t in ("plan", "batch", "summary")),
        "mesh_metadata",
        "end_run",
    }
    assert dag["max_active_runs"] == 1
    assert dag["schedule"] == "NullTimetable"
    tasks = dag["tasks"]
    # layers chained in order: plan -> batch -> summary -> next layer's plan
    assert "layer_2.plan" in tasks["layer_2.batch"]["upstream"]
    assert "layer_2.batch" in tasks["layer_2.summary"]["upstream"]
    assert "layer_2.summary" in tasks["layer_3.plan"]["upstream"]
    assert "setup" in tasks["layer_2.plan"]["upstream"]
    # metadata runs unless a layer failed, and sees every layer's summary
    meta = tasks["mesh_metadata"]
    assert meta["trigger_rule"] == "none_failed_min_one_success"
    assert {"layer_2.summary", "layer_3.summary", "layer_4.summary"} <= set(meta["upstream"])
    # the teardown frees the run's lease after everything, whatever happened
    assert tasks["end_run"]["teardown"] and tasks["start"]["setup"]
    assert {"mesh_metadata", "start"} <= set(tasks["end_run"]["upstream"])


def test_per_layer_settings_come_from_the_graph_config(parsed):
    tasks = parsed["dags"]["mesh_four_layers"]["tasks"]
    assert tasks["layer_2.batch"]["retries"] == 2
    assert tasks["layer_2.batch"]["timeout"] == 3600
    assert tasks["layer_4.batch"]["retries"] == 1
    assert tasks["layer_4.batch"]["timeout"] == 7200
    assert tasks["layer_4.batch"]["pool"] == "default_pool"


def test_params_have_defaults_from_the_configs(parsed):
    params = parsed["dags"]["mesh_four_layers"]["params"]
    assert params["timestamp"] is None
    assert params["max_layer"] == 4
    assert params["mode"] == "local"
    assert params["force"] is False
    assert params["chunk_start"] is None and params["batch_size"] is None
    scheduled = parsed["dags"]["mesh_scheduled"]
    assert scheduled["params"]["mode"] == "sqs"
    assert scheduled["schedule"] != "NullTimetable"


@pytest.mark.parametrize(
    ("dag_id", "phrase"),
    [
        ("mesh_bad_mode", "field 'mode' is 'carrier-pigeon'"),
        ("mesh_missing_graph", "field 'graph'"),
        ("mesh_bad_graph_field", "n_layers"),
        ("mesh_same_graph_name", "graph name 'four_layers' gives the dag_id mesh_four_layers"),
        ("mesh_unknown_key", "unknown key 'batches.chunk_per_batch'"),
        ("mesh_bad_batch_type", "batches.chunks_per_batch is 'sixteen': give a whole number"),
    ],
)
def test_broken_config_becomes_a_placeholder_naming_file_and_field(parsed, dag_id, phrase):
    dag = parsed["dags"][dag_id]
    assert set(dag["tasks"]) == {"config_error"}
    description = dag["description"]
    assert phrase in description
    assert dag_id[len("mesh_") :] + ".yaml" in description
    assert "\n" not in description


def test_configs_folder_with_generated_graphs(tmp_path):
    """MESHING_CONFIGS names any folder; graph paths are relative to the entry."""
    configs = tmp_path / "configs"
    configs.mkdir()
    _graph_yaml(tmp_path / "data" / "small", 2)
    (configs / "small.yaml").write_text("graph: ../data/small/graph.yaml\n")
    (configs / "notyaml.yaml").write_text("graph: [unclosed\n")
    parsed = _python(PARSE, _airflow_env(tmp_path / "airflow", configs))
    assert parsed["errors"] == {}
    assert parsed["dags"]["mesh_small"]["groups"] == ["layer_2"]
    assert "notyaml.yaml: not readable YAML" in parsed["dags"]["mesh_notyaml"]["description"]


@pytest.fixture(scope="module")
def migrated_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow-home")
    migrate_db(_airflow_env(home, CONFIGS), home / "migrate.log", timeout=300)
    return home


def _records_and_journal(config) -> tuple[dict, list]:
    """Every layer's records (fragments, bytes per chunk) and the journal, owner and times aside."""
    from meshing_core.run.records import RecordStore, RunJournal

    entries = RunJournal(config).runs()
    store = RecordStore(config, entries[-1].timestamp)
    records = {
        layer: {
            c: (e["fragments"], e["bytes"])
            for batch in store._batch_objects(layer)
            for c, e in batch["done"].items()
        }
        for layer in range(2, config.n_layers + 1)
    }
    journal = [(e.timestamp, e.state, e.max_layer, e.layers_done, e.error) for e in entries]
    return records, journal


def test_local_mode_run_meshes_every_layer_and_writes_metadata(
    example_copy, example_dir, migrated_home, tmp_path
):
    pytest.importorskip("meshing_core.run.plan")
    from meshing_core.config import load_config
    from meshing_core.graph import open_graph
    from meshing_core.store import files, verify

    configs = tmp_path / "configs"
    configs.mkdir()
    graph_yaml = example_copy / "graph.yaml"
    data = yaml.safe_load(graph_yaml.read_text())
    data["batches"]["chunks_per_batch"] = 16  # several batches per layer share lease and records
    graph_yaml.write_text(yaml.safe_dump(data))
    (configs / "example.yaml").write_text(f"graph: {graph_yaml}\n")
    env = _airflow_env(migrated_home, configs)
    conf = {"timestamp": "2021-03-04T00:00:00Z"}
    result = _python(RUN, env, "mesh_example", json.dumps(conf))

    assert result["state"] == "success", result["tasks"]
    config = load_config(example_copy / "graph.yaml")
    assert result["tasks"]["mesh_metadata[-1]"] == "success"
    assert result["tasks"]["end_run[-1]"] == "success"
    assert files.read_json(config.mesh_cloudpath, "lease.json") is None  # the teardown freed it
    journal = files.read_json(config.mesh_cloudpath, "runs.json")["runs"]
    assert [(r["timestamp"], r["state"]) for r in journal] == [(1614816000.0, "finished")]
    first = result["xcoms"]
    for layer in range(2, config.n_layers + 1):
        summary = first[f"layer_{layer}.summary[-1]"]
        assert summary["chunks_done"] == summary["chunks_total"] > 0, summary
        assert summary["chunks_failed"] == 0 and summary["skipped"] == 0, summary
    assert any(k.startswith(f"layer_{config.n_layers}.batch[") for k in result["tasks"])
    assert sum(k.startswith("layer_2.batch[") for k in result["tasks"]) == 7  # 112 chunks / 16
    assert result["labels"]["layer_2.batch[6]"] == "L2 b6 chunks 96-111"  # from the descriptor

    sharding = files.read_json(config.mesh_cloudpath, "info")["sharding"]
    graph = open_graph(config)
    try:
        assert graph.custom_data()["mesh"]["initial_ts"] == 1614816000
        assert graph.custom_data()["mesh"]["max_layer"] == config.n_layers
        ws = files.read_json(config.watershed, "info")
        assert ws["mesh_metadata"]["max_meshed_layer"] == config.n_layers
        mesh_root = Path(config.mesh_cloudpath[len("file://") :])
        for layer in range(2, config.n_layers + 1):
            shards = sorted((mesh_root / "initial" / str(layer)).glob("*.shard"))
            assert shards, f"no shards for layer {layer}"
            keys = verify.tensorstore_keys(shards[0], sharding[str(layer)])
            assert keys, shards[0]
            meshes = verify.read_back_graphene(config, graph, keys[:20])
            assert sorted(meshes) == keys[:20]
    finally:
        graph.close()

    # the command line's `run` of the same dataset walks the same plan: same bytes, records, journal
    cli_copy = tmp_path / "cli"
    shutil.copytree(example_dir, cli_copy)
    (cli_copy / "graph.yaml").write_text(graph_yaml.read_text())
    run_cli("run", "--graph", str(cli_copy / "graph.yaml"), "--timestamp", conf["timestamp"],
            quiet=True)  # fmt: skip
    cli_config = load_config(cli_copy / "graph.yaml")
    cli_root = Path(cli_config.mesh_cloudpath[len("file://") :])
    dag_bytes = {p.relative_to(mesh_root): p.read_bytes() for p in mesh_root.glob("initial/*/*")}
    cli_bytes = {p.relative_to(cli_root): p.read_bytes() for p in cli_root.glob("initial/*/*")}
    assert dag_bytes == cli_bytes and len(dag_bytes) > 100
    assert _records_and_journal(config) == _records_and_journal(cli_config)

    # a rerun at the same timestamp finds every chunk done and rewrites nothing
    shards = {p: p.stat().st_mtime_ns for p in mesh_root.glob("initial/*/*.shard")}
    again = _python(RUN, env, "mesh_example", json.dumps(conf))
    assert again["state"] == "success", again["tasks"]
    for layer in range(2, config.n_layers + 1):
        summary = again["xcoms"][f"layer_{layer}.summary[-1]"]
        assert summary["skipped"] == summary["chunks_total"], summary
    assert {p: p.stat().st_mtime_ns for p in mesh_root.glob("initial/*/*.shard")} == shards

    # a run at a new timestamp re-meshes every chunk and records the new initial_ts
    later = _python(RUN, env, "mesh_example", json.dumps({"timestamp": "2021-03-05T00:00:00Z"}))
    assert later["state"] == "success", later["tasks"]
    for layer in range(2, config.n_layers + 1):
        assert later["xcoms"][f"layer_{layer}.summary[-1]"]["skipped"] == 0
    graph = open_graph(config)
    try:
        assert graph.custom_data()["mesh"]["initial_ts"] == 1614902400
    finally:
        graph.close()
    journal = files.read_json(config.mesh_cloudpath, "runs.json")["runs"]
    assert [(r["timestamp"], r["state"]) for r in journal] == [
        (1614816000.0, "superseded"),
        (1614902400.0, "finished"),
    ]


VALIDATE = """
import copy, json, os, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
dag = bag.dags[sys.argv[1]]
out = {}
for name, conf in json.loads(sys.argv[2]).items():
    params = copy.deepcopy(dag.params)
    try:
        params.update(conf)
        params.validate()
        out[name] = None
    except Exception as exc:
        out[name] = f"{type(exc).__name__}: {exc}"
print("JSON" + json.dumps(out))
"""


def test_trigger_params_are_validated_before_a_run(tmp_path):
    cases = {
        "good": {"timestamp": "2021-03-01T00:00:00Z", "max_layer": 3, "mode": "sqs"},
        "defaults": {},
        "bad_timestamp": {"timestamp": "yesterday"},
        "bad_mode": {"mode": "carrier-pigeon"},
        "pods_on_a_local_dag": {"mode": "kubernetes"},  # pods are a DAG of another shape
        "bad_max_layer": {"max_layer": 9},
        "bad_box": {"chunk_start": [0, 0]},
    }
    env = _airflow_env(tmp_path / "airflow", CONFIGS)
    found = _python(VALIDATE, env, "mesh_four_layers", json.dumps(cases))
    assert found["good"] is None and found["defaults"] is None
    for name, field in [
        ("bad_timestamp", "timestamp"),
        ("bad_mode", "mode"),
        ("pods_on_a_local_dag", "mode"),
        ("bad_max_layer", "max_layer"),
        ("bad_box", "chunk_start"),
    ]:
        assert found[name] is not None and field in found[name], (name, found[name])


def test_a_forced_run_retries_only_the_chunks_that_failed(example_copy, migrated_home, tmp_path):
    """Forced, one watershed chunk unreadable on the first try: the retry redoes only its chunks."""
    from meshing_core.config import load_config
    from meshing_core.run.records import RecordStore

    configs = tmp_path / "configs"
    configs.mkdir()
    graph_yaml = example_copy / "graph.yaml"
    data = yaml.safe_load(graph_yaml.read_text())
    data["layers"]["default"].update(retries=1, retry_delay_s=4)
    graph_yaml.write_text(yaml.safe_dump(data))
    (configs / "example.yaml").write_text(f"graph: {graph_yaml}\n")
    config = load_config(graph_yaml)
    mesh_root = Path(config.mesh_cloudpath[len("file://") :])
    victim = next((example_copy / "watershed").glob("*/96-128_32-64_16-32*"))
    original = victim.read_bytes()
    victim.write_bytes(b"not a segmentation chunk")
    seen: dict[str, object] = {}

    def repair_after_the_first_try() -> None:
        # the first try's end rolls its records up: then snapshot the shards and repair
        store_dir = mesh_root / "records"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            for batch in store_dir.glob("*/2/batch-*.json"):
                stored = json.loads(batch.read_text())
                if stored.get("failed"):
                    seen["failed"] = sorted(stored["failed"])
                    seen["shards"] = {
                        p.name: (p.stat().st_mtime_ns, p.read_bytes())
                        for p in (mesh_root / "initial" / "2").glob("*.shard")
                    }
                    victim.write_bytes(original)
                    return
            time.sleep(0.02)

    watcher = threading.Thread(target=repair_after_the_first_try, daemon=True)
    watcher.start()
    conf = {"timestamp": "2021-03-04T00:00:00Z", "force": True, "max_layer": 3}
    result = _python(RUN, _airflow_env(migrated_home, configs), "mesh_example", json.dumps(conf))
    watcher.join(timeout=10)
    assert result["state"] == "success", result["tasks"]
    assert "failed" in seen, "no chunk failed on the first try"
    failed = {tuple(int(v) for v in key.split("_")) for key in seen["failed"]}
    assert 1 <= len(failed) <= 27  # the chunks whose read (one voxel around) touches that file
    before = seen["shards"]
    after = {
        p.name: (p.stat().st_mtime_ns, p.read_bytes())
        for p in (mesh_root / "initial" / "2").glob("*.shard")
    }
    from meshing_core.graph import open_graph
    from meshing_core.store.layout import chunk_shard_name

    graph = open_graph(config)
    meta = graph.meta
    graph.close()
    failed_names = {chunk_shard_name(meta, 2, c) for c in failed}
    assert not failed_names & set(before)  # a failed chunk published nothing
    untouched = {name: before[name] for name in before}
    assert {name: after[name] for name in untouched} == untouched  # bytes and mtime unchanged
    assert set(after) - set(before) <= failed_names  # the retry wrote only the failed chunks
    records = RecordStore(config, 1614816000.0)
    assert len(records.done_chunks(2)) == 112 and not records.failures(2)
