"""The deferred batch's trigger and completion, against real records (in a subprocess: Airflow
reads its configuration once per process, so it stays out of the pytest process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tools.airflow_env import airflow_env

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import airflow  # puts the plugins folder on the path, as in every Airflow component
import asyncio, json, sys, threading, time
from meshing_core.config import load_config
from meshing_core.run.plan import plan_layer
from meshing_core.run.records import RecordStore, chunk_order
from meshing_airflow.operators import MeshBatchOperator
from meshing_airflow.triggers import BatchRecordsTrigger

graph_yaml, ts = sys.argv[1], float(sys.argv[2])
config = load_config(graph_yaml)
batch = plan_layer(config, 2)[1]
chunks = list(chunk_order(RecordStore(config, ts).meta, 2, batch["start"], batch["stop"]))
out = {}

async def fire(trigger):
    async for event in trigger.run():
        return event.payload

def record_later(done, failed):
    time.sleep(0.5)  # the trigger has polled at least once by now
    RecordStore(config, ts).record_chunks(2, done={c: 1 for c in done},
                                          failed={c: "boom" for c in failed})

# every chunk done, some of them only after the first poll
RecordStore(config, ts).record_chunks(2, done={c: 1 for c in chunks[:10]})
threading.Thread(target=record_later, args=(chunks[10:], [])).start()
trigger = BatchRecordsTrigger(graph_yaml, batch, ts, poll_s=0.1, timeout_s=30)
started = time.monotonic()
out["done"] = asyncio.run(fire(trigger))
out["waited"] = time.monotonic() - started
name, kwargs = trigger.serialize()
out["serialized"] = [name, kwargs]
again = BatchRecordsTrigger(**kwargs)  # the triggerer rebuilds it from its serialised form

# two chunks of the next batch fail for good, the others are done
other = plan_layer(config, 2)[2]
rest = list(chunk_order(RecordStore(config, ts).meta, 2, other["start"], other["stop"]))
record_later(rest[2:], rest[:2])
out["failed"] = asyncio.run(fire(BatchRecordsTrigger(graph_yaml, other, ts, poll_s=0.1)))
from meshing_core.run.lifecycle import begin_run
ticket = begin_run(config, owner="airflow t/1", timestamp=ts)
op = MeshBatchOperator(task_id="b", graph_yaml=graph_yaml, descriptor=other, ticket=ticket)
try:
    op.execute_complete({}, out["failed"])
except Exception as exc:
    out["error"] = [type(exc).__name__, str(exc)]
op.descriptor = batch
out["complete"] = op.execute_complete({}, out["done"])
root = __import__("pathlib").Path(config.mesh_cloudpath[len("file://"):]) / "records"
out["rolled"] = sorted(str(p.relative_to(root)) for p in root.rglob("*.json"))
print("JSON" + json.dumps(out))
"""


def test_batch_records_trigger_fires_when_every_chunk_is_done_or_failed(example_copy, tmp_path):
    env = airflow_env(tmp_path / "airflow")
    graph_yaml = str(example_copy / "graph.yaml")
    data = yaml.safe_load(Path(graph_yaml).read_text())
    data["batches"]["chunks_per_batch"] = 16
    Path(graph_yaml).write_text(yaml.safe_dump(data))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, graph_yaml, "1614816000.0"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("JSON")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][4:])
    assert out["done"]["status"] == "done" and out["done"]["done"] == 16
    assert out["waited"] >= 0.4  # it waited for the late chunks instead of firing early
    assert out["serialized"][0] == "meshing_airflow.triggers.BatchRecordsTrigger"
    assert out["failed"]["status"] == "failed" and out["failed"]["label"] == "L2 b2 chunks 32-47"
    assert len(out["failed"]["failed"]) == 2 and out["failed"]["pending"] == []
    kind, message = out["error"]
    assert kind == "AirflowException" and "L2 b2 chunks 32-47: 2 chunk(s) failed" in message
    assert str(out["failed"]["failed"][0]) in message
    assert out["complete"]["chunks"] == out["complete"]["done"] == 16
    assert out["complete"]["failed"] == 0
    # the batch's chunk records were rolled up into its record batch object
    assert "1614816000.0/2/batch-00000001.json" in out["rolled"]
    assert not [name for name in out["rolled"] if "/chunks/00000001/" in name]
    assert "1614816000.0/2/batch-00000002.json" in out["rolled"]  # a failed batch is collected too
    assert not [name for name in out["rolled"] if "/chunks/" in name]
