"""``sqs`` mode through a real DAG run (``dag.test``, triggers in-process) with real worker
processes on a real ``moto_server``: the batches defer while workers mesh their chunks, and the
shards are byte-identical to ``local`` mode's."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from cli_support import REPO, run_cli
from dag_run_support import example_dag_run, mesh_shards

TS = "2021-03-04T00:00:00Z"


def _configure(graph_yaml: Path, queue: str, **layer: object) -> None:
    data = yaml.safe_load(graph_yaml.read_text())
    data["batches"]["chunks_per_batch"] = 16  # several batches, each deferring on its own
    data["sqs"] = {"queue": queue, "poll_s": 0.5, "chunks_per_message": 4, "max_receive_count": 2}
    data["layers"]["default"].update(layer)
    graph_yaml.write_text(yaml.safe_dump(data))


def _dag_run(home: Path, graph_yaml: Path, conf: dict, tmp_path: Path) -> dict:
    return example_dag_run(home, f"graph: {graph_yaml}\n", conf, tmp_path)


def _workers(graph_yaml: Path, queue: str, count: int, log: Path) -> list[subprocess.Popen]:
    command = [sys.executable, "-m", "meshing_core", "worker", "--graph", str(graph_yaml),
               "--queue", queue]  # fmt: skip
    with log.open("w") as out:
        return [
            subprocess.Popen(command, cwd=REPO, env=dict(os.environ), stdout=out, stderr=out)
            for _ in range(count)
        ]


def _stop(workers: list[subprocess.Popen]) -> list[int]:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    return [worker.wait(timeout=60) for worker in workers]


def _layer_2_with_workers(
    home: Path, graph_yaml: Path, queue: str, tmp_path: Path
) -> tuple[dict, list[int]]:
    """A DAG run of layer 2 in sqs mode while two worker processes serve ``queue``; the run's
    result and the workers' exit codes after SIGTERM."""
    workers = _workers(graph_yaml, queue, 2, tmp_path / "workers.log")
    try:
        result = _dag_run(
            home, graph_yaml, {"timestamp": TS, "mode": "sqs", "max_layer": 2}, tmp_path
        )
    finally:
        codes = _stop(workers)
    return result, codes


def test_sqs_mode_defers_while_workers_mesh_and_matches_local_mode(
    example_dir, airflow_home, sqs, tmp_path
):
    local = tmp_path / "local"
    shutil.copytree(example_dir, local)
    run_cli("setup", "--graph", str(local / "graph.yaml"), quiet=True)
    run_cli("mesh", "--graph", str(local / "graph.yaml"), "--layer", "2", "--timestamp", TS,
            quiet=True)  # fmt: skip
    queued = tmp_path / "queued"
    shutil.copytree(example_dir, queued)
    graph_yaml = queued / "graph.yaml"
    _configure(graph_yaml, "mesh-dag", visibility_timeout_s=30)
    from meshing_core.queue.sqs import ensure_queues, queue_counts

    url, dead = ensure_queues(sqs, "mesh-dag", max_receive_count=2, visibility_timeout_s=30)
    result, codes = _layer_2_with_workers(airflow_home, graph_yaml, "mesh-dag", tmp_path)
    assert codes == [0, 0]  # SIGTERM: finish or release the chunk in hand, exit 0
    assert result["state"] == "success", result["errors"]
    batches = [k for k in result["tasks"] if k.startswith("layer_2.batch[")]
    assert len(batches) > 2 and all(result["tasks"][k] == "success" for k in batches)
    assert "deferred" in result["output"].lower() or "defer" in result["output"].lower()
    log = (tmp_path / "workers.log").read_text()
    assert "fragment(s)" in log  # the workers meshed, not the batch tasks
    assert mesh_shards(graph_yaml, 2) == mesh_shards(local / "graph.yaml", 2) != {}
    assert queue_counts(sqs, url) == {"visible": 0, "in_flight": 0}
    assert queue_counts(sqs, dead)["visible"] == 0


def test_a_poisoned_chunk_fails_its_batch_by_name_and_the_rest_is_done(
    example_dir, airflow_home, sqs, tmp_path
):
    from meshing_core.config import load_config
    from meshing_core.queue.sqs import ensure_queues, queue_counts
    from meshing_core.run.records import RecordStore
    from meshing_core.timestamps import parse_timestamp

    queued = tmp_path / "poisoned"
    shutil.copytree(example_dir, queued)
    graph_yaml = queued / "graph.yaml"
    _configure(graph_yaml, "mesh-dag-poison", visibility_timeout_s=2, retries=0)
    victim = next((queued / "watershed").glob("*/96-128_32-64_16-32*"))
    victim.write_bytes(b"not a segmentation chunk")
    url, dead = ensure_queues(sqs, "mesh-dag-poison", max_receive_count=2, visibility_timeout_s=2)
    result, codes = _layer_2_with_workers(airflow_home, graph_yaml, "mesh-dag-poison", tmp_path)
    assert codes == [0, 0]
    assert result["state"] == "failed"
    records = RecordStore(load_config(graph_yaml), parse_timestamp(TS))
    failed = sorted(records.failures(2))
    assert failed, "the poisoned chunk has a failure record"
    failed_tasks = [k for k, v in result["tasks"].items() if ".batch[" in k and v == "failed"]
    batches = [k for k in result["tasks"] if k.startswith("layer_2.batch[")]
    assert 1 <= len(failed_tasks) < len(batches)  # only the batches holding poisoned chunks
    assert "chunk(s) failed: " in result["output"]
    for chunk in failed:  # each named in its batch's error
        assert str(list(chunk)) in result["output"]
    assert result["tasks"]["layer_2.summary[-1]"] != "success"
    done = records.done_chunks(2)
    total = len(done) + len(failed)
    assert total == len(set(done) | set(failed)) and len(done) > 0
    assert queue_counts(sqs, dead)["visible"] >= 1  # the poisoned message went to the DLQ
    assert queue_counts(sqs, url) == {"visible": 0, "in_flight": 0}
