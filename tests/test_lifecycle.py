"""The run lifecycle (meshing_core.run.lifecycle) as a DAG run walks it, without Airflow."""

from __future__ import annotations

import pytest

from meshing_core.config import load_config
from meshing_core.run import lifecycle
from meshing_core.run.lease import LeaseError, acquire, read_lease
from meshing_core.run.lifecycle import (
    SupersededRunError,
    end_run,
    finish_layer,
    finish_run,
    holding_lease,
)
from meshing_core.run.records import RecordStore, RunJournal, chunk_order, plan_run
from meshing_core.run.setup import setup_meshes

T = 1614816000.0
OWNER = "airflow mesh_example/manual__1"
BREAK = "break_lease=true in the trigger form"


def begin_run(config, timestamp, max_layer, *, owner, **kwargs):
    """A DAG run's start: a holder spanning processes, the trigger form's hint."""
    return lifecycle.begin_run(
        config, owner=owner, timestamp=timestamp, max_layer=max_layer, break_hint=BREAK, **kwargs
    )


def _record_layer_done(config, layer: int, timestamp: float) -> None:
    store = RecordStore(config, timestamp)
    store.record_chunks(layer, {c: 0 for c in chunk_order(store.meta, layer)})


@pytest.fixture()
def config(example_copy):
    config = load_config(example_copy / "graph.yaml")
    setup_meshes(config)
    return config


def test_begin_run_leases_the_mesh_dir_for_the_dag_run(config):
    ticket = begin_run(config, T, 3, owner=OWNER)
    holder = read_lease(config)
    assert holder.owner == OWNER and holder.pid == 0 and holder.token == ticket["token"]
    assert ticket["action"] == "new"
    entry = RunJournal(config).last()
    assert (entry.timestamp, entry.max_layer, entry.state) == (T, 3, "running")
    # a command-line run of the same mesh dir is refused, naming the DAG run
    with pytest.raises(LeaseError, match=f"leased by run 2021-03-04T00:00:00Z by {OWNER}"):
        acquire(config, T, heartbeat=False)
    # the same DAG run (a retried start task) takes its own lease back; another one cannot
    assert begin_run(config, T, 3, owner=OWNER)["token"] == ticket["token"]
    with pytest.raises(LeaseError, match=OWNER):
        begin_run(config, T, 3, owner="airflow mesh_example/manual__2")


def test_end_run_marks_an_unfinished_run_failed_and_frees_the_lease(config):
    ticket = begin_run(config, T, 5, owner=OWNER)
    _record_layer_done(config, 2, T)
    assert finish_layer(config, ticket, 2)["chunks_done"] == 112
    state = end_run(config, ticket, why="DAG run manual__1 stopped before mesh_metadata")
    assert state == "failed" and read_lease(config) is None
    entry = RunJournal(config).get(T)
    assert entry.layers_done == [2] and "stopped before mesh_metadata" in entry.error
    # the command line resumes it, at its timestamp
    plan = plan_run(RunJournal(config), None, False, now=T + 10)
    assert (plan.action, plan.timestamp) == ("resume", T)


def test_a_cleared_batch_takes_the_released_lease_back(config):
    ticket = begin_run(config, T, 5, owner=OWNER)
    end_run(config, ticket, why="failed")
    with holding_lease(config, ticket) as lease:
        assert read_lease(config).token == ticket["token"]
        assert lease.holder.owner == OWNER
    assert read_lease(config).token == ticket["token"]  # kept for the next task


def test_a_batch_refuses_to_work_under_another_runs_lease(config):
    ticket = begin_run(config, T, 5, owner=OWNER)
    end_run(config, ticket, why="failed")
    other = acquire(config, T + 1, heartbeat=False)  # e.g. `run` on the command line
    try:
        with pytest.raises(LeaseError, match="pid"), holding_lease(config, ticket):
            pytest.fail("the batch must not start")
        # the teardown of the stopped DAG run leaves the other run's lease and journal alone
        assert end_run(config, ticket, why="again") == "failed"
        assert read_lease(config).token == other.holder.token
    finally:
        other.release()


def test_a_run_at_a_new_timestamp_drops_the_previous_run_metadata(config):
    from meshing_core.graph import open_graph

    first = begin_run(config, T, 2, owner=OWNER)
    _record_layer_done(config, 2, T)
    finish_run(config, first)
    assert read_lease(config) is None  # freed even when a cleared run never reruns its teardown
    assert end_run(config, first, why="-") == "finished"
    graph = open_graph(config)
    try:
        assert graph.custom_data()["mesh"]["initial_ts"] == int(T)
        second = begin_run(config, T + 86400, 2, owner="airflow mesh_example/manual__2")
        assert second["action"] == "new"
        assert "initial_ts" not in graph.custom_data()["mesh"]
    finally:
        graph.close()


def test_a_cleared_task_of_a_superseded_run_is_refused(config):
    old = begin_run(config, T, 5, owner=OWNER)
    end_run(config, old, why="failed")
    newer = begin_run(config, T + 86400, 5, owner="airflow mesh_example/manual__2")
    end_run(config, newer, why="failed")
    # the old run's start task (clear with downstream) and its batches (clear only failed)
    with pytest.raises(SupersededRunError, match="superseded by the run at 2021-03-05"):
        begin_run(config, T, 5, owner=OWNER)
    with pytest.raises(SupersededRunError, match="start a new run"), holding_lease(config, old):
        pytest.fail("the old batch must not write")
    assert read_lease(config) is None and RunJournal(config).last().timestamp == T + 86400
    # a new DAG run may still choose the old timestamp on purpose
    assert begin_run(config, T, 5, owner="airflow mesh_example/manual__3")["action"] == "new"


def test_a_sub_box_run_writes_no_metadata_and_stays_resumable(config):
    ticket = begin_run(config, T, 3, owner=OWNER)
    _record_layer_done(config, 2, T)
    store = RecordStore(config, T)
    store.record_chunks(3, {next(iter(chunk_order(store.meta, 3))): 0})  # one chunk of layer 3
    result = finish_run(config, ticket)
    assert result["complete"] is False and result["incomplete_layers"] == {3: "1 of 16"}
    entry = RunJournal(config).get(T)
    assert entry.state == "failed" and "partial run (layer 3: 1 of 16 chunks done)" in entry.error
    assert read_lease(config) is None
    from meshing_core.graph import open_graph

    graph = open_graph(config)
    try:
        assert "initial_ts" not in (graph.custom_data().get("mesh") or {})
    finally:
        graph.close()


def test_break_lease_takes_over_only_a_stale_lease(config):
    from meshing_core.run.lease import LeaseHolder, _write

    stale = LeaseHolder(T, "other-host", 0, T, T, "old-token", owner="airflow mesh_example/x")
    _write(config, stale)  # silent since 2021: expired
    with pytest.raises(LeaseError, match="break_lease=true in the trigger form"):
        begin_run(config, T, 5, owner=OWNER)
    ticket = begin_run(config, T, 5, owner=OWNER, break_lease=True)
    assert read_lease(config).token == ticket["token"]


def test_a_forced_run_clears_its_records_once_at_its_start(config):
    first = begin_run(config, T, 5, owner=OWNER)
    _record_layer_done(config, 2, T)
    end_run(config, first, why="stopped")
    forced = begin_run(config, T, 5, owner="airflow mesh_example/manual__2", force=True)
    assert forced["action"] == "rerun"
    assert RecordStore(config, T).layer_summary(2)["chunks_done"] == 0
    _record_layer_done(config, 2, T)  # the forced run meshes layer 2 ...
    # ... then its start task is retried (or cleared): the records it made are kept
    again = begin_run(config, T, 5, owner="airflow mesh_example/manual__2", force=True)
    assert again["action"] == "resume" and again["token"] == forced["token"]
    assert RecordStore(config, T).layer_summary(2)["chunks_done"] == 112


def test_every_step_writes_only_under_the_runs_lease(config):
    from meshing_core.run.lease import Lease

    ticket = begin_run(config, T, 5, owner=OWNER)
    Lease.attach(config, ticket["token"]).release()  # e.g. the teardown ran
    taken = acquire(config, T + 5, heartbeat=False)  # ... and another run took the mesh dir
    try:
        for step in (
            lambda: lifecycle.setup_run(config, ticket),
            lambda: finish_layer(config, ticket, 2),
            lambda: finish_run(config, ticket),
        ):
            before = RunJournal(config).get(T)
            with pytest.raises(LeaseError, match="leased by"):
                step()
            assert RunJournal(config).get(T) == before
    finally:
        taken.release()


def test_a_run_taken_over_by_another_owner_is_never_forced_twice(config):
    forced = begin_run(config, T, 5, owner=OWNER, force=True)
    _record_layer_done(config, 2, T)
    end_run(config, forced, why="stopped")
    # `run --timestamp T` on the command line resumes it, and stops again
    cli = lifecycle.begin_run(config, owner="run host pid 1", timestamp=T, max_layer=5)
    assert cli["action"] == "resume"
    end_run(config, cli, why="stopped again")
    # a step of the first DAG run, retried now, is refused: the run is someone else's
    taken = pytest.raises(SupersededRunError, match="taken over by run host pid 1")
    with taken, holding_lease(config, forced):
        pytest.fail("the old step must not write")
    assert read_lease(config) is None
    # clearing its start task (force still in its form) resumes the run without clearing records
    again = begin_run(config, T, 5, owner=OWNER, force=True)
    assert again["action"] == "resume"
    assert RecordStore(config, T).layer_summary(2)["chunks_done"] == 112


def test_a_trigger_without_timestamp_resumes_the_unfinished_run_else_starts_anew(config):
    first = lifecycle.begin_run(config, owner=OWNER, timestamp=None, default_timestamp=T)
    assert (first["action"], first["timestamp"]) == ("new", T)
    end_run(config, first, why="stopped")
    later = T + 3600
    resumed = lifecycle.begin_run(
        config, owner="airflow mesh_example/manual__2", timestamp=None, default_timestamp=later,
        max_layer=2,
    )  # fmt: skip
    assert (resumed["action"], resumed["timestamp"]) == ("resume", T)  # as `run` would
    _record_layer_done(config, 2, T)
    assert finish_run(config, resumed)["complete"] is True
    # the last run finished: `run` without a timestamp does nothing, a trigger starts anew
    assert lifecycle.begin_run(config, owner="run h pid 2", timestamp=None)["action"] == "nothing"
    fresh = lifecycle.begin_run(
        config, owner="airflow mesh_example/manual__3", timestamp=None, default_timestamp=later
    )
    assert (fresh["action"], fresh["timestamp"]) == ("new", later)
