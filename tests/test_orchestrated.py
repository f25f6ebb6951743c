"""A DAG run's lease and journal (meshing_core.run.orchestrated), without Airflow."""

from __future__ import annotations

import pytest

from meshing_core.config import load_config
from meshing_core.run.lease import LeaseError, acquire, read_lease
from meshing_core.run.orchestrated import begin_run, end_run, holding_lease, layer_finished
from meshing_core.run.records import RunJournal, plan_run
from meshing_core.store.setup import setup_meshes

T = 1614816000.0
OWNER = "airflow mesh_example/manual__1"


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
    layer_finished(config, ticket, 2)
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
    from meshing_core.graph.embedded import open_graph
    from meshing_core.run.orchestrated import finish_run

    first = begin_run(config, T, 2, owner=OWNER)
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
