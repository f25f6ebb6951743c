"""The deferred ``sqs`` batch's trigger against real records and a real ``moto_server`` queue:
chunks with no record while the queue holds nothing are reported lost (SQS cannot list its
dead-letter queue), and the batch fails naming them; the trigger renews the run's lease.

Airflow runs in a subprocess (it reads its configuration once per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tools.airflow_env import airflow_env

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import airflow  # puts the plugins folder on the path
import asyncio, json, sys, time
from meshing_core.config import load_config
from meshing_core.run.lifecycle import begin_run
from meshing_core.run.lease import read_lease
from meshing_core.run.plan import plan_layer
from meshing_core.run.records import RecordStore, chunk_order
from meshing_airflow.operators import MeshBatchOperator
from meshing_airflow.triggers import BatchRecordsTrigger

graph_yaml, ts, url = sys.argv[1], float(sys.argv[2]), sys.argv[3]
config = load_config(graph_yaml)
ticket = begin_run(config, owner="airflow t/1", timestamp=ts)
batch = plan_layer(config, 2)[0]
chunks = list(chunk_order(RecordStore(config, ts).meta, 2, batch["start"], batch["stop"]))
RecordStore(config, ts).record_chunks(2, done={c: 1 for c in chunks[:-2]})
beat = read_lease(config).heartbeat
time.sleep(1.1)
trigger = BatchRecordsTrigger(graph_yaml, batch, ts, poll_s=0.2, timeout_s=60,
                              failed_since=time.time(), lease_token=ticket["token"],
                              queue_url=url, aws_conn_id="aws_sqs_test", lost_after_s=1.0)
name, kwargs = trigger.serialize()
trigger = BatchRecordsTrigger(**kwargs)  # as the triggerer rebuilds it

async def fire():
    async for event in trigger.run():
        return event.payload

started = time.monotonic()
event = asyncio.run(fire())
out = {"event": event, "waited": time.monotonic() - started,
       "renewed": read_lease(config).heartbeat > beat}
op = MeshBatchOperator(task_id="b", graph_yaml=graph_yaml, descriptor=batch, ticket=ticket)
try:
    op.execute_complete({}, event)
except Exception as exc:
    out["error"] = [type(exc).__name__, str(exc)]
out["lost"] = [list(c) for c in chunks[-2:]]
print("JSON" + json.dumps(out))
"""


def test_chunks_without_records_and_an_empty_queue_fail_their_batch_as_lost(
    example_copy, sqs, sqs_endpoint, tmp_path
):
    from meshing_core.queue.sqs import ensure_queues

    graph_yaml = example_copy / "graph.yaml"
    data = yaml.safe_load(graph_yaml.read_text())
    data["batches"]["chunks_per_batch"] = 16
    graph_yaml.write_text(yaml.safe_dump(data))
    url, dead = ensure_queues(sqs, "mesh-lost", max_receive_count=2, visibility_timeout_s=1)
    env = airflow_env(tmp_path / "airflow")
    # the trigger's client comes from this connection (its endpoint), not from the task
    env["AIRFLOW_CONN_AWS_SQS_TEST"] = json.dumps(
        {"conn_type": "aws", "login": "testing", "password": "testing",
         "extra": {"endpoint_url": sqs_endpoint, "region_name": "us-east-1"}}
    )  # fmt: skip
    env.pop("AWS_ENDPOINT_URL_SQS", None)
    assert "AWS_ENDPOINT_URL_SQS" not in env and os.environ.get("AWS_ENDPOINT_URL_SQS")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(graph_yaml), "1614816000.0", url],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("JSON")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][4:])
    event = out["event"]
    assert event["status"] == "lost", event
    assert event["pending"] == out["lost"] and event["queue"] == {"visible": 0, "in_flight": 0}
    assert out["waited"] >= 1.0  # quiet for longer than lost_after_s first
    assert out["renewed"], "the deferred batch's trigger renews the run's lease"
    kind, message = out["error"]
    assert kind == "AirflowException"
    assert "2 chunk(s) lost: " + ", ".join(str(c) for c in out["lost"]) in message
    assert "mesh-lost-dead-letter" in message and "clear this task" in message
