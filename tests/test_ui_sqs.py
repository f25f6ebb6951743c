"""``sqs`` mode through the real scheduler and triggerer (``make airflow``'s server on a free
loopback port), watched in a real browser: a batch task is ``deferred`` while no worker runs (the
UI lists it by its readable label; the Layer progress tab shows the chunks queued), then real
SQS workers (moto_server) mesh its chunks and it succeeds, and so does the run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import yaml
from ui_support import logged_in_page, progress_tab, run_url

from tests.cli_support import REPO
from tools.airflow_env import free_port
from tools.airflow_serve import standalone
from tools.moto_sqs import sqs_environment

DAG_ID = "mesh_example"
TIMESTAMP = "2021-03-04T00:00:00Z"


def test_ui_a_deferred_sqs_batch_is_labelled_and_its_queue_shown_then_it_succeeds(
    example_dir, sqs, sqs_endpoint, tmp_path, browser
):
    from meshing_core.queue.sqs import ensure_queues

    dataset = tmp_path / "example"
    shutil.copytree(example_dir, dataset)
    graph_yaml = dataset / "graph.yaml"
    data = yaml.safe_load(graph_yaml.read_text())
    data["sqs"] = {"queue": "mesh-server", "poll_s": 1, "aws_conn_id": "aws_none"}
    data["batches"]["chunks_per_batch"] = 32
    graph_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "example.yaml").write_text("graph: ../example/graph.yaml\nmode: sqs\n")
    ensure_queues(sqs, "mesh-server", max_receive_count=3, visibility_timeout_s=60)
    aws = sqs_environment(sqs_endpoint)
    with standalone(tmp_path / "home", configs, free_port(), extra_env=aws) as server:
        server.wait_for_dag(DAG_ID, timeout=120)
        response = server.api(
            "POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
            {"logical_date": None, "conf": {"timestamp": TIMESTAMP, "max_layer": 2}},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        run_id = response.json()["dag_run_id"]
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances"
        deferred = None
        deadline = time.monotonic() + 180
        while deferred is None and time.monotonic() < deadline:  # no worker yet: it waits
            tis = server.get(path, limit=100)["task_instances"]
            deferred = next(
                (t for t in tis if t["task_id"] == "layer_2.batch" and t["state"] == "deferred"),
                None,
            )
            time.sleep(0.5)
        assert deferred is not None, "a layer-2 batch is deferred while its chunks wait"
        page = logged_in_page(browser, server)
        label = deferred["rendered_map_index"]
        assert label.startswith(f"L2 b{deferred['map_index']} chunks "), label
        page.goto(run_url(server, DAG_ID, run_id, "/tasks/layer_2.batch/mapped"))
        page.get_by_text(label, exact=True).wait_for()  # the grid's readable batch label
        frame = progress_tab(page, server, DAG_ID, run_id)
        assert frame.locator("[data-field=mode]").inner_text() == "mode sqs"
        queued = frame.locator("[data-field=sqs]").inner_text()
        assert "queue mesh-server: " in queued and "in flight" in queued, queued
        assert (
            frame.locator("td[data-layer='2'][data-field='chunks_done']").get_attribute(
                "data-value"
            )
            == "0"
        )
        command = [sys.executable, "-m", "meshing_core", "worker", "--graph", str(graph_yaml),
                   "--queue", "mesh-server"]  # fmt: skip
        workers = [
            subprocess.Popen(command, cwd=REPO, env={**os.environ, **aws},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(2)
        ]  # fmt: skip
        try:
            run = server.wait_for_run(DAG_ID, run_id, timeout=300)
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            codes = [worker.wait(timeout=60) for worker in workers]
        assert run["state"] == "success", run
        assert codes == [0, 0]
        tis = server.get(path, limit=100)["task_instances"]
        batches = [t for t in tis if t["task_id"] == "layer_2.batch"]
        assert batches and {t["state"] for t in batches} == {"success"}
        frame = progress_tab(page, server, DAG_ID, run_id)
        done = frame.locator("td[data-layer='2'][data-field='chunks_done']")
        assert done.get_attribute("data-value") == "112"
        page.context.close()
    shards = list((dataset / "watershed" / "graphene_meshes" / "initial" / "2").glob("*.shard"))
    assert shards
