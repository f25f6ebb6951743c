"""SQS chunk tasks against a real ``moto_server`` on loopback, with real worker processes.

`mesh --queue_name` enqueues, `worker` processes receive, hold, run and acknowledge; shards are
byte-identical to meshing the layer locally; a poisoned chunk ends in the dead-letter queue
with its failure record written on its last allowed receive.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_support import run_cli

from meshing_core.datasets.synthetic import (
    neurite_volume,
    write_agglomeration_csv,
    write_precomputed_segmentation,
)
from meshing_core.store.paths import to_cloudpath

TS = "2021-03-02T00:00:00Z"


def _build(root: Path, shape: tuple[int, int, int]) -> Path:
    volume, agglomeration = neurite_volume(shape, seed=5)
    seg = to_cloudpath(root / "seg")
    write_precomputed_segmentation(seg, volume, (8, 8, 8), chunk_size=(32, 32, 32))
    write_agglomeration_csv(root / "objects.csv", agglomeration)
    out = root / "ds"
    run_cli(
        "build-graph", "--segmentation", seg, "--agglomeration", str(root / "objects.csv"),
        "--chunk-size", "64", "64", "16", "--created-at", "2021-03-01T00:00:00Z",
        "--out", str(out), quiet=True,
    )  # fmt: skip
    run_cli("setup", "--graph", str(out / "graph.yaml"), quiet=True)
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset (8 layer-2 chunks), set up for meshing; not modified."""
    return _build(tmp_path_factory.mktemp("sqs-inputs"), (128, 128, 32))


@pytest.fixture(scope="module")
def wide_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 layer-2 chunks (3 x 2 x 2): the last column reads nothing of the first."""
    return _build(tmp_path_factory.mktemp("sqs-wide"), (192, 128, 32))


def _copy(dataset: Path, to: Path) -> str:
    shutil.copytree(dataset, to)
    return str(to / "graph.yaml")


def _shards(graph_yaml: str, layer: int = 2) -> dict[str, bytes]:
    folder = Path(graph_yaml).parent / "watershed" / "graphene_meshes" / "initial" / str(layer)
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.shard"))}


def _worker(graph: str, url: str, *extra: str) -> str:
    proc = run_cli("worker", "--graph", graph, "--queue", url, "--exit-when-empty", *extra)
    assert proc.returncode == 0
    return proc.stderr


def test_a_layer_through_sqs_workers_matches_local_meshing(dataset, sqs, tmp_path):
    from meshing_core.queue.sqs import ensure_queues, queue_counts

    local = _copy(dataset, tmp_path / "local")
    run_cli("mesh", "--graph", local, "--layer", "2", "--timestamp", TS, "--workers", "2")
    queued = _copy(dataset, tmp_path / "queued")
    url, dead = ensure_queues(sqs, "mesh-same", max_receive_count=3, visibility_timeout_s=30)
    sent = run_cli("mesh", "--graph", queued, "--layer", "2", "--timestamp", TS,
                   "--queue_name", "mesh-same").stdout  # fmt: skip
    assert "8 chunks enqueued in 1 messages (0 already done)" in sent
    assert _shards(queued) == {}  # nothing meshed by the producer
    log = _worker(queued, url, "--workers", "2")
    assert log.count("fragment(s)") == 8  # one line per chunk
    assert _shards(queued) == _shards(local) != {}
    assert queue_counts(sqs, url) == {"visible": 0, "in_flight": 0}
    assert queue_counts(sqs, dead)["visible"] == 0
    # a redelivered (or re-sent) task whose chunks are done is acknowledged without work
    again = run_cli("mesh", "--graph", queued, "--layer", "2", "--timestamp", TS,
                    "--queue_name", url).stdout  # fmt: skip
    assert "0 chunks enqueued in 0 messages (8 already done)" in again
    from meshing_core.config import load_config
    from meshing_core.queue.messages import chunk_tasks
    from meshing_core.queue.sqs import send_tasks
    from meshing_core.timestamps import parse_timestamp

    config = load_config(queued)
    send_tasks(sqs, url, chunk_tasks(str(config.source), 2, parse_timestamp(TS), [(0, 0, 0)]))
    assert "already done" in _worker(queued, url)
    assert queue_counts(sqs, url) == {"visible": 0, "in_flight": 0}


def test_a_poisoned_chunk_goes_to_the_dead_letter_queue_with_its_failure_record(
    wide_dataset, sqs, tmp_path
):
    from meshing_core.config import load_config
    from meshing_core.queue.messages import chunk_tasks
    from meshing_core.queue.sqs import ensure_queues, queue_counts, send_tasks
    from meshing_core.run.records import RecordStore
    from meshing_core.timestamps import parse_timestamp

    graph = _copy(wide_dataset, tmp_path / "poisoned")
    config = load_config(graph)
    ts = parse_timestamp(TS)
    url, dead = ensure_queues(sqs, "mesh-poison", max_receive_count=2, visibility_timeout_s=2)
    good = [(2, 0, 0), (2, 1, 0)]  # they read no voxel of the poisoned chunk (one around)
    bad = (0, 1, 0)
    # the poisoned chunk's watershed is corrupt (every try fails), its neighbours' are not
    (Path(graph).parent / "watershed" / "8.0_8.0_8.0" / "0-64_64-128_0-16.gz").write_bytes(
        b"not gzip"
    )
    send_tasks(
        sqs,
        url,
        [
            *chunk_tasks(str(config.source), 2, ts, good),
            *chunk_tasks(str(config.source), 2, ts, [bad]),
        ],
    )
    log = _worker(graph, url, "--visibility-timeout", "2")
    assert "receive 2, last: recorded failed" in log
    records = RecordStore(config, ts)
    assert set(records.failures(2)) == {bad}
    assert set(records.done_chunks(2)) == set(good)
    assert queue_counts(sqs, dead)["visible"] == 1
    assert queue_counts(sqs, url) == {"visible": 0, "in_flight": 0}


def test_queue_name_only_sends_to_an_existing_queue(dataset, sqs, tmp_path):
    graph = _copy(dataset, tmp_path / "noqueue")
    proc = run_cli("mesh", "--graph", graph, "--layer", "2", "--timestamp", TS,
                   "--queue_name", "no-such-queue", check=False)  # fmt: skip
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: SQS GetQueueUrl on no-such-queue failed")
    assert "AWS_ENDPOINT_URL_SQS" in line
    from meshing_core.queue.sqs import queue_url

    with pytest.raises(Exception, match="no-such-queue"):
        queue_url(sqs, "no-such-queue")  # still absent: nothing was created


def test_chunk_task_messages_round_trip_and_refuse_strangers():
    from meshing_core.queue.messages import MessageError, chunk_tasks, decode

    tasks = list(chunk_tasks("s3://b/ds/graph.yaml", 3, 1.5, [(i, 0, 1) for i in range(19)],
                             batch=4, per_message=8))  # fmt: skip
    assert [len(t.chunks) for t in tasks] == [8, 8, 3]
    assert decode(tasks[2].encode()) == tasks[2]
    assert len(tasks[0].encode()) < 1024  # far below SQS's 1 MiB
    assert "secret" not in tasks[0].encode() and "key" not in tasks[0].encode()
    for body, phrase in [
        ("not json", "not JSON"),
        ('{"kind": "other"}', "not a meshing chunk task"),
        ('{"kind": "meshing_core.chunks", "v": 99}', "version 99"),
        ('{"kind": "meshing_core.chunks", "v": 1, "graph": "g", "layer": 2, '
         '"timestamp": 1, "chunks": [[1, 2]]}', "malformed"),
    ]:  # fmt: skip
        with pytest.raises(MessageError, match=phrase):
            decode(body)
    with pytest.raises(MessageError, match="chunks per message is 0"):
        list(chunk_tasks("g", 2, 1.0, [(0, 0, 0)], per_message=0))


def test_worker_refuses_bad_options_in_one_line(dataset, tmp_path):
    graph = _copy(dataset, tmp_path / "opts")
    for args, phrase in [
        (["--workers", "0"], "--workers is 0"),
        (["--visibility-timeout", "50000"], "SQS allows 1..43200 seconds"),
    ]:
        proc = run_cli("worker", "--graph", graph, "--queue", "q", *args, check=False)
        assert proc.returncode == 2
        assert phrase in proc.stderr.strip().splitlines()[-1]


def test_a_worker_killed_mid_message_is_redelivered_and_finished_by_another(dataset, sqs, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from cli_support import REPO

    from meshing_core.config import load_config
    from meshing_core.queue.messages import chunk_tasks
    from meshing_core.queue.sqs import ensure_queues, queue_counts, send_tasks
    from meshing_core.run.records import RecordStore, chunk_order
    from meshing_core.timestamps import parse_timestamp

    local = _copy(dataset, tmp_path / "local")
    run_cli("mesh", "--graph", local, "--layer", "2", "--timestamp", TS, "--workers", "1")
    graph = _copy(dataset, tmp_path / "killed")
    config = load_config(graph)
    ts = parse_timestamp(TS)
    records = RecordStore(config, ts)
    chunks = list(chunk_order(records.meta, 2, 0, 8))
    url, _ = ensure_queues(sqs, "mesh-kill", max_receive_count=5, visibility_timeout_s=3)
    # one message with every chunk: the worker is inside it for the whole layer
    send_tasks(sqs, url, chunk_tasks(str(config.source), 2, ts, chunks, per_message=8))
    first = subprocess.Popen(
        [sys.executable, "-m", "meshing_core", "worker", "--graph", graph, "--queue", url,
         "--visibility-timeout", "3"],
        cwd=REPO, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        if len(RecordStore(config, ts).done_chunks(2)) >= 2:
            break
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # no chance to release the message or finish the chunk
    first.wait(timeout=30)
    before = RecordStore(config, ts).done_chunks(2)
    assert 2 <= len(before) < 8, "kill the worker in the middle of its message"
    assert queue_counts(sqs, url)["in_flight"] == 1  # held by the dead worker until it times out
    log = _worker(graph, url, "--visibility-timeout", "3")
    assert log.count(": already done") == len(before)  # redelivered: finished chunks skipped
    assert log.count("fragment(s)") == 8 - len(before)
    assert _shards(graph) == _shards(local) != {}
    assert set(RecordStore(config, ts).done_chunks(2)) == set(chunks)
    assert queue_counts(sqs, url) == {"visible": 0, "in_flight": 0}
