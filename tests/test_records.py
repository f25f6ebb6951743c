"""Completion/failure records rolled up per batch, chunk order helpers, and the run journal."""

from __future__ import annotations

import base64
import itertools
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from test_store_support import T0, T1, make_dataset

from meshing_core.errors import MeshingError
from meshing_core.graph import open_graph
from meshing_core.run import records
from meshing_core.run.records import RecordStore, RunJournal, plan_run
from meshing_core.store import files


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory):
    config = make_dataset(tmp_path_factory.mktemp("records") / "ds")
    graph = open_graph(config)
    meta = graph.meta
    graph.close()
    return config, meta


@pytest.fixture(params=["file", "mem"])
def config(request, base, tmp_path: Path):
    """The tiny dataset's config with its mesh dir on local files or on cloud-files' mem://."""
    config, _ = base
    if request.param == "file":
        watershed = "file://" + str(tmp_path / "ws")
    else:
        watershed = f"mem://records-{uuid.uuid4().hex}/ws"
    return replace(config, watershed=watershed, batches={"chunks_per_batch": 5})


@pytest.fixture()
def meta(base):
    return base[1]


def stored_names(config, columns: bool = False) -> list[str]:
    """Record objects (without the per-chunk columns objects unless ``columns``)."""
    names = files.list_files(config.mesh_cloudpath, "records/")
    return names if columns else [n for n in names if "/columns/" not in n]


def test_chunk_order_matches_iter_chunks_and_round_trips(meta):
    for layer in (2, 3, 4):
        bounds = meta.layer_chunk_bounds(layer)
        expected = list(itertools.product(*(range(b) for b in bounds)))  # x outermost
        assert list(records.chunk_order(meta, layer)) == expected
        for index, coords in enumerate(expected):
            assert records.chunk_index(meta, layer, coords) == index
            assert records.chunk_at(meta, layer, index) == coords
    assert records.chunk_total(meta, 2) == 4 * 4 * 2
    with pytest.raises(ValueError, match="outside layer 2"):
        records.chunk_index(meta, 2, (4, 0, 0))


def test_batches_partition_the_layer(meta):
    size = 5
    count = records.batch_count(meta, 2, size)
    assert count == 7  # 32 chunks
    chunks = [c for b in range(count) for c in records.batch_chunks(meta, 2, b, size)]
    assert chunks == list(records.chunk_order(meta, 2))
    assert all(
        records.batch_of(meta, 2, c, size) == b
        for b in range(count)
        for c in records.batch_chunks(meta, 2, b, size)
    )


def test_batch_size_grows_to_respect_max_map_length(base, meta):
    config = replace(base[0], batches={"chunks_per_batch": 2, "max_map_length": 4})
    assert records.default_batch_size(config, meta, 2) == 8  # 32 chunks / 4 batches
    assert records.default_batch_size(config, meta, 4) == 2


def test_done_and_failed_records_roll_up_per_batch(config, meta):
    store = RecordStore(config, T1, meta=meta)
    batch0 = store.batch_chunks(2, 0)
    assert batch0 == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (0, 2, 0)]
    store.record_batch(
        2,
        0,
        done={batch0[0]: 3, batch0[1]: 0, batch0[2]: {"fragments": 2, "bytes": 100}},
        failed={batch0[3]: RuntimeError("corrupt child shard\n initial/2/1-0.shard")},
    )
    store.record_batch(2, 1, done={(0, 2, 1): 1})

    fresh = RecordStore(config, T1, meta=meta)  # an independent reader
    assert fresh.done_chunks(2) == {(0, 0, 0): 3, (0, 0, 1): 0, (0, 1, 0): 2, (0, 2, 1): 1}
    failure = fresh.failures(2)[(0, 1, 1)]
    assert failure["error"] == "corrupt child shard initial/2/1-0.shard"
    assert failure["try"] == 1
    assert fresh.layer_summary(2) == {
        "layer": 2,
        "batches_recorded": 2,
        "chunks_done": 4,
        "chunks_empty": 1,
        "chunks_failed": 1,
        "fragments": 6,
        "bytes": 100,
    }
    # one object per batch (plus the frozen batch size), not one per chunk
    key = records.timestamp_key(T1)
    names = stored_names(config, columns=True)
    assert [n for n in names if "/columns/" not in n] == [
        f"records/{key}/2/batch-00000000.json",
        f"records/{key}/2/batch-00000001.json",
        f"records/{key}/2/batching.json",
    ]
    assert len([n for n in names if "/columns/" in n]) == 2  # one per batch: replaced ones go
    raw = files.read_json(config.mesh_cloudpath, f"records/{key}/2/batch-00000000.json")
    assert raw["timestamp"] == T1
    # the batch object sums its completions; the per-chunk columns are a binary object beside it
    summary = raw["summary"]
    size = raw["chunks_per_batch"]
    first = raw["batch"] * size
    by, bz = meta.layer_chunk_bounds(2)[1:]
    expected = {  # offset in the batch -> fragments, for the completions of batch 0
        (x * by + y) * bz + z - first: f
        for (x, y, z), f in fresh.done_chunks(2).items()
        if fresh.batch_of(2, (x, y, z)) == 0
    }
    assert summary["done"] == len(expected) and summary["fragments"] == sum(expected.values())
    assert summary["empty"] == sum(f == 0 for f in expected.values())
    bits = np.unpackbits(np.frombuffer(base64.b64decode(summary["bits"]), np.uint8),
                         bitorder="little")  # fmt: skip
    assert set(np.flatnonzero(bits).tolist()) == set(expected)
    blob = files.read_file(config.mesh_cloudpath, f"records/{key}/2/columns/{raw['columns']}")
    rows = len(blob) // 28  # offset u4, fragments u4, bytes u8, time f8, unclosed u4
    offsets = np.frombuffer(blob[: 4 * rows], "<u4")
    fragments = np.frombuffer(blob[4 * rows : 8 * rows], "<u4")
    assert dict(zip(offsets.tolist(), fragments.tolist(), strict=True)) == expected


def test_batch_objects_written_before_summaries_still_read(config, meta):
    """A batch object holding a ``done`` dict (older runs) reads and merges as before."""
    key = records.timestamp_key(T1)
    old = {"layer": 2, "batch": 0, "timestamp": T1, "chunks_per_batch": 4,
           "done": {"0_0_0": {"fragments": 2, "bytes": 7, "time": 1.0}},
           "failed": {"0_0_1": {"error": "x", "try": 1, "time": 1.0}}}  # fmt: skip
    files.write_json(
        config.mesh_cloudpath, f"records/{key}/2/batching.json", {"chunks_per_batch": 4}
    )
    files.write_json(config.mesh_cloudpath, f"records/{key}/2/batch-00000000.json", old)
    store = RecordStore(config, T1, meta=meta)
    assert store.done_chunks(2) == {(0, 0, 0): 2}
    assert store.layer_summary(2)["bytes"] == 7 and store.layer_summary(2)["chunks_failed"] == 1
    store.record_batch(2, 0, done={(0, 0, 1): {"fragments": 1, "bytes": 3}})
    assert RecordStore(config, T1, meta=meta).done_chunks(2) == {(0, 0, 0): 2, (0, 0, 1): 1}


def test_columns_objects_without_the_unclosed_column_still_read(config, meta):
    """Columns objects from before the closedness check (four columns, no layout) read as 0."""
    key = records.timestamp_key(T1)
    files.write_json(
        config.mesh_cloudpath, f"records/{key}/2/batching.json", {"chunks_per_batch": 4}
    )
    blob = b"".join(
        np.array(values, dtype=kind).tobytes()
        for values, kind in (([1], "<u4"), ([5], "<u4"), ([70], "<u8"), ([2.0], "<f8"))
    )
    files.write_atomic(config.mesh_cloudpath, f"records/{key}/2/columns/old.bin", blob)
    old = {"layer": 2, "batch": 0, "timestamp": T1, "chunks_per_batch": 4, "failed": {},
           "columns": "old.bin", "summary": {"done": 1, "empty": 0, "fragments": 5, "bytes": 70,
                                            "first": 2.0, "last": 2.0, "bits": "Ag=="}}  # fmt: skip
    files.write_json(config.mesh_cloudpath, f"records/{key}/2/batch-00000000.json", old)
    store = RecordStore(config, T1, meta=meta)
    assert store.done_chunks(2) == {(0, 0, 1): 5}
    assert store.layer_tally(2).unclosed == 0
    store.record_batch(2, 0, done={(0, 0, 0): {"fragments": 1, "bytes": 3, "unclosed": 1}})
    again = RecordStore(config, T1, meta=meta)
    assert again.done_chunks(2) == {(0, 0, 0): 1, (0, 0, 1): 5}
    assert again.layer_tally(2).unclosed == 1


def test_retry_counts_up_and_success_removes_failure(config, meta):
    store = RecordStore(config, T1, meta=meta)
    chunk = (0, 0, 1)
    store.record_batch(2, 0, failed={chunk: "boom"})
    store.record_batch(2, 0, failed={chunk: ValueError("boom again")})
    assert RecordStore(config, T1, meta=meta).failures(2)[chunk]["try"] == 2
    store.record_batch(2, 0, done={chunk: 4})
    reader = RecordStore(config, T1, meta=meta)
    assert reader.failures(2) == {}
    assert reader.done_chunks(2) == {chunk: 4}
    # a forced re-run that fails leaves no completion record (its shard is gone too)
    store.record_batch(2, 0, failed={chunk: {"error": "oom", "try": 7}})
    reader = RecordStore(config, T1, meta=meta)
    assert reader.done_chunks(2) == {}
    assert reader.failures(2)[chunk]["try"] == 7


def test_records_merge_within_a_batch_and_reject_foreign_chunks(config, meta):
    store = RecordStore(config, T1, meta=meta)
    store.record_batch(2, 0, done={(0, 0, 0): 1})
    RecordStore(config, T1, meta=meta).record_batch(2, 0, done={(0, 0, 1): 2})
    assert store.done_chunks(2) == {(0, 0, 0): 1, (0, 0, 1): 2}
    with pytest.raises(ValueError, match=r"chunk \[3, 3, 1\] of layer 2 is not in batch 0"):
        store.record_batch(2, 0, done={(3, 3, 1): 1})


def test_record_chunks_groups_by_batch_and_chunk_records_reads_only_those(config, meta):
    @dataclass
    class Result:  # what a layer runner reports per chunk
        fragments: int
        bytes: int

    store = RecordStore(config, T1, meta=meta)
    written = store.record_chunks(
        3, done={(0, 0, 0): Result(2, 50), (1, 1, 0): Result(0, 0)}, failed={(1, 0, 0): "x"}
    )
    assert written == [0]  # layer 3 has 4 chunks: one batch
    reader = RecordStore(config, T1, meta=meta)
    assert reader.chunk_records(3, [(0, 0, 0), (1, 1, 0), (1, 0, 0), (0, 1, 0)]) == {
        (0, 0, 0): 2,
        (1, 1, 0): 0,
        (1, 0, 0): None,
        (0, 1, 0): None,
    }
    assert reader.is_done(3, (1, 1, 0)) and not reader.is_done(3, (1, 0, 0))
    assert reader.layer_summary(3)["bytes"] == 50


def test_batch_size_is_frozen_by_the_first_writer(config, meta):
    RecordStore(config, T1, meta=meta).record_batch(2, 1, done={(0, 2, 1): 1})
    changed = replace(config, batches={"chunks_per_batch": 3})
    store = RecordStore(changed, T1, meta=meta)
    assert store.batch_size(2) == 5
    assert store.chunk_records(2, [(0, 2, 1)]) == {(0, 2, 1): 1}
    assert RecordStore(changed, T0, meta=meta).batch_size(2) == 3  # another timestamp


def test_timestamps_are_kept_apart_and_clear_works(config, meta):
    RecordStore(config, T0, meta=meta).record_batch(2, 0, done={(0, 0, 0): 1})
    later = RecordStore(config, T1, meta=meta)
    assert later.done_chunks(2) == {}
    later.record_batch(2, 0, done={(0, 0, 0): 5})
    later.record_batch(3, 0, done={(0, 0, 0): 5})
    assert later.clear(2) >= 1
    assert later.done_chunks(2) == {}
    assert later.done_chunks(3) == {(0, 0, 0): 5}
    assert RecordStore(config, T0, meta=meta).done_chunks(2) == {(0, 0, 0): 1}


def test_corrupt_record_is_a_named_error(config, meta):
    store = RecordStore(config, T1, meta=meta)
    store.record_batch(2, 0, done={(0, 0, 0): 1})
    name = store.batch_name(2, 0)
    files.write_atomic(config.mesh_cloudpath, name, b"{not json")
    with pytest.raises(MeshingError, match=r"batch-00000000\.json is not valid JSON.*delete it"):
        RecordStore(config, T1, meta=meta).done_chunks(2)


def test_journal_start_finish_and_resume_plan(config, meta):
    journal = RunJournal(config)
    assert journal.runs() == [] and journal.last() is None
    assert plan_run(journal, None, False, now=T1).action == "new"

    RecordStore(config, T0, meta=meta).record_batch(2, 0, done={(0, 0, 0): 1})
    journal.start(T0, 4)
    journal.layer_done(T0, 2)
    plan = plan_run(journal, None, False, now=T1 + 99)
    assert (plan.action, plan.timestamp) == ("resume", T0)  # killed run: resume at its timestamp
    assert RecordStore(config, T0, meta=meta).done_chunks(2) == {(0, 0, 0): 1}

    journal.finish(T0)
    plan = plan_run(journal, None, False, now=T1)
    assert plan.action == "nothing" and "is finished" in plan.message and "--force" in plan.message
    assert (plan_run(journal, None, True, now=T1).action, journal.last().timestamp) == ("rerun", T0)
    assert plan_run(journal, T0, False, now=T1).action == "resume"
    assert plan_run(journal, T1, False, now=T1).action == "new"

    # a run at another timestamp supersedes the old one and drops its records
    entry = journal.start(T1, 3)
    assert entry.state == "running" and entry.max_layer == 3
    assert [(r.timestamp, r.state) for r in journal.runs()] == [(T0, "superseded"), (T1, "running")]
    assert RecordStore(config, T0, meta=meta).done_chunks(2) == {}
    assert plan_run(journal, T0, False, now=T1).action == "new"
    journal.fail(T1, RuntimeError("layer 3 failed:\n 2 chunks"))
    last = journal.last()
    assert last.state == "failed" and last.error == "layer 3 failed: 2 chunks"
    assert last.layers_done == []
    assert plan_run(journal, None, False, now=T1 + 5).timestamp == T1


def test_journal_is_plain_json(config):
    RunJournal(config).start(T1, 4)
    raw = files.read_file(config.mesh_cloudpath, "runs.json")
    entry = json.loads(raw)["runs"][0]
    assert entry["timestamp"] == T1 and entry["state"] == "running" and entry["finished"] is None
    with pytest.raises(MeshingError, match="no run at"):
        RunJournal(config).finish(T0)


def test_status_reports_per_layer_from_batch_records(config, meta):
    from meshing_core.run.status import format_status, status

    with pytest.raises(MeshingError, match="no meshing run recorded .* run --graph"):
        status(config)
    RunJournal(config).start(T1, 4)
    store = RecordStore(config, T1, meta=meta)
    store.record_batch(2, 0, done={(0, 0, 0): 3, (0, 0, 1): 0}, failed={(0, 1, 0): "bad shard"})
    store.record_batch(3, 0, done={(0, 0, 0): {"fragments": 2, "bytes": 2048, "unclosed": 1}})

    report = status(config)
    assert json.loads(json.dumps(report)) == report  # `status --json`
    assert report["timestamp"] == T1 and report["run"]["state"] == "running"
    layer2, layer3, layer4 = report["layers"]
    graph = open_graph(config)
    counts = graph.node_counts(T1)
    graph.close()
    recorded_at = layer2["first_done"]
    assert abs(recorded_at - time.time()) < 60 and layer2["last_done"] == recorded_at
    assert layer2 == {
        "layer": 2,
        "chunks_total": 32,
        "chunks_done": 2,
        "chunks_empty": 1,
        "chunks_failed": 1,
        "chunks_pending": 29,
        "nodes": counts[2],
        "fragments": 3,
        "unclosed": 0,
        "bytes": 0,
        "batches_recorded": 1,
        "first_done": recorded_at,
        "last_done": recorded_at,
        "chunks_per_minute": None,  # two completions at one instant: no rate yet
        "eta_seconds": None,
        "failures": [
            {"chunk": [0, 1, 0], "error": "bad shard", "try": 1, "time": pytest.approx(0, abs=1e12)}
        ],
    }
    assert (layer3["chunks_done"], layer3["bytes"], layer3["chunks_total"]) == (1, 2048, 4)
    assert layer3["unclosed"] == 1  # fragments failing the closedness check, kept through roll-up
    assert RecordStore(config, T1, meta=meta).done_chunks(3) == {(0, 0, 0): 2}
    assert layer4["chunks_done"] == 0 and layer4["chunks_total"] == 1
    assert status(config, T0)["layers"][0]["chunks_done"] == 0  # another timestamp

    text = format_status(report)
    assert "run at 2020-09-13T13:26:40Z: running, max layer 4" in text
    assert "failed: layer 2 chunk [0, 1, 0] (try 1): bad shard" in text
    assert "2.0 KiB" in text
    lines = text.splitlines()
    assert lines[2].split() == [
        "layer", "done", "failed", "pending", "total", "empty", "nodes", "fragments", "unclosed",
        "bytes", "chunks/min", "eta",
    ]  # fmt: skip
    assert lines[3].split()[:6] == ["2", "2", "1", "29", "32", "1"]
    assert lines[3].split()[-2:] == ["-", "-"]  # no rate yet: no ETA


def test_status_names_the_lease_holder(config):
    from meshing_core.run.lease import acquire
    from meshing_core.run.status import format_status, status

    RunJournal(config).start(T1, 4)
    lease = acquire(config, T1, heartbeat=False)
    try:
        report = status(config)
        assert report["lease"]["pid"] == os.getpid() and report["lease"]["stale"] is None
        assert f"lease held by run 2020-09-13T13:26:40Z on {socket.gethostname()}" in format_status(
            report
        )
    finally:
        lease.release()
    assert status(config)["lease"] is None


def test_reading_records_writes_nothing(config, meta):
    store = RecordStore(config, T1, meta=meta)
    assert store.chunk_records(2, [(0, 0, 0)]) == {(0, 0, 0): None}
    assert store.done_chunks(2) == {} and store.layer_summary(2)["batches_recorded"] == 0
    assert stored_names(config) == []


def test_first_unrecorded_reads_only_the_batches_under_the_box(config, meta):
    store = RecordStore(config, T0, meta=meta)
    everything = list(records.chunk_order(meta, 2))  # 4x4x2 chunks, batches of 5
    store.record_chunks(2, {c: 1 for c in everything if c != (3, 2, 1)})
    reader = RecordStore(config, T0, meta=meta)
    # an x-y quarter with every chunk recorded: no missing child
    assert reader.first_unrecorded(2, (0, 0, 0), (2, 2, 2)) is None
    touched = {reader.batch_of(2, c) for c in itertools.product(range(2), range(2), range(2))}
    assert set(b for _, b in reader._completion) == touched  # nothing else was read
    assert all(v is None for v in reader._completion.values())  # complete: no index sets kept
    # the box holding the unrecorded chunk names it; boxes past the bounds are clipped
    assert reader.first_unrecorded(2, (2, 2, 0), (4, 4, 2)) == (3, 2, 1)
    assert reader.first_unrecorded(2, (2, 2, 0), (8, 8, 4)) == (3, 2, 1)
    assert reader.first_unrecorded(2, (3, 3, 0), (8, 8, 4)) is None
    # recording it later is seen by the same store (its summary of that batch is dropped)
    reader.record_chunks(2, {(3, 2, 1): 0})
    assert reader.first_unrecorded(2, (0, 0, 0), (4, 4, 2)) is None


def test_batch_size_comes_from_a_voxel_budget_unless_set(base):
    config = replace(base[0], batches={"voxels_per_batch": 2**20, "max_map_length": 1024})
    chunk_voxels = config.chunk_size[0] * config.chunk_size[1] * config.chunk_size[2]
    assert records.chunks_per_batch(config) == -(-(2**20) // chunk_voxels)
    at_mip1 = replace(config, mip=1)  # a quarter of the voxels per chunk: four times the chunks
    assert records.chunks_per_batch(at_mip1) == -(-(2**20) // (chunk_voxels // 4))
    explicit = replace(config, batches={**config.batches, "chunks_per_batch": 3})
    assert records.chunks_per_batch(explicit) == 3
    for bad in ({"chunks_per_batch": "lots"}, {"voxels_per_batch": 0}, {"max_map_length": 2.5}):
        broken = replace(config, batches={**config.batches, **bad})
        with pytest.raises(MeshingError, match=f"batches.{next(iter(bad))} is") as err:
            records.default_batch_size(broken, base[1], 2)
        assert "\n" not in str(err.value) and "whole number >= 1" in str(err.value)


def _record_in_turn(config, meta, chunks, barrier, rounds: int) -> None:
    """One writer process: in each round, record its chunk of the round at the barrier."""
    store = RecordStore(config, T1, meta=meta)
    for round_chunks in chunks:
        barrier.wait(timeout=60)
        store.record_chunks(2, {round_chunks: {"fragments": 1, "bytes": 10}})


def test_concurrent_writers_of_one_record_batch_lose_no_record(base, tmp_path: Path):
    """Four processes record different chunks of the same record batch at the same moment."""
    import multiprocessing

    config, meta = base
    config = replace(
        config, watershed="file://" + str(tmp_path / "ws"), batches={"chunks_per_batch": 32}
    )
    everything = list(records.chunk_order(meta, 2))  # 32 chunks: one record batch
    writers, rounds = 4, len(everything) // 4
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(writers)
    plans = [[everything[r * writers + w] for r in range(rounds)] for w in range(writers)]
    procs = [
        context.Process(target=_record_in_turn, args=(config, meta, plan, barrier, rounds))
        for plan in plans
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    store = RecordStore(config, T1, meta=meta)
    assert set(store.done_chunks(2)) == set(everything)  # before the roll-up ...
    assert store.roll_up(2, [0]) == len(everything)
    assert set(RecordStore(config, T1, meta=meta).done_chunks(2)) == set(everything)  # ... after
    assert stored_names(config) == [
        f"records/{records.timestamp_key(T1)}/2/batch-00000000.json",
        f"records/{records.timestamp_key(T1)}/2/batching.json",
    ]


def test_a_reader_merges_chunk_records_not_yet_rolled_up(config, meta):
    store = RecordStore(config, T0, meta=meta)
    store.record_batch(2, 0, done={(0, 0, 0): 1}, failed={(0, 0, 1): "boom"})
    store.record_chunks(2, done={(0, 0, 1): 2}, failed={(0, 1, 0): "oom"})  # newer, per chunk
    reader = RecordStore(config, T0, meta=meta)
    assert reader.done_chunks(2) == {(0, 0, 0): 1, (0, 0, 1): 2}
    assert set(reader.failures(2)) == {(0, 1, 0)}
    assert reader.layer_summary(2)["chunks_failed"] == 1
    store.record_chunks(2, failed={(0, 1, 0): "oom again"})
    assert RecordStore(config, T0, meta=meta).failures(2)[(0, 1, 0)]["try"] == 2
    store.roll_up(2, [0])
    rolled = RecordStore(config, T0, meta=meta)
    assert rolled.done_chunks(2) == reader.done_chunks(2)
    assert rolled.failures(2)[(0, 1, 0)]["error"] == "oom again"


def test_a_reader_sees_every_record_when_a_roll_up_runs_between_its_reads(
    base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The worst moment: a roll-up lands right after the reader listed the chunk records."""
    config, meta = base
    config = replace(
        config, watershed="file://" + str(tmp_path / "ws"), batches={"chunks_per_batch": 32}
    )
    everything = set(records.chunk_order(meta, 2))
    RecordStore(config, T1, meta=meta).record_chunks(2, {c: 1 for c in everything})
    listed, walked = files.list_files, files.iter_files
    rolling = []

    def roll_up_once() -> None:
        if not rolling:
            rolling.append(1)
            try:
                RecordStore(config, T1, meta=meta).roll_up(2, [0])  # the batch's owner, meanwhile
            finally:
                rolling.clear()

    def list_then_roll_up(cloudpath: str, prefix: str = "") -> list[str]:
        names = listed(cloudpath, prefix)
        roll_up_once()
        return names

    def walk_then_roll_up(cloudpath: str, prefix: str = ""):
        names = list(walked(cloudpath, prefix))
        roll_up_once()
        return iter(names)

    monkeypatch.setattr(files, "list_files", list_then_roll_up)
    found = RecordStore(config, T1, meta=meta).chunk_records(2, everything)
    assert all(v == 1 for v in found.values())
    RecordStore(config, T1, meta=meta).record_chunks(2, {c: 2 for c in everything})
    monkeypatch.setattr(files, "iter_files", walk_then_roll_up)
    assert set(RecordStore(config, T1, meta=meta).done_chunks(2).values()) == {2}
