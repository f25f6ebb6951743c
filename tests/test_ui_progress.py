"""The numbers behind the Layer progress tab (and ``status``): grid, rate, ETA, notifications'
config, from records written as the executors write them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from meshing_core.config import ConfigError, load_config
from meshing_core.graph import open_graph
from meshing_core.run import progress
from meshing_core.run.records import RecordStore

T = 1614600000.0


@pytest.fixture()
def store(example_copy: Path):
    config = load_config(example_copy / "graph.yaml")
    graph = open_graph(config)
    meta = graph.meta
    graph.close()
    return RecordStore(config, T, meta=meta)


def test_ui_progress_grid_counts_done_and_failed_chunks_per_xy_cell(store, monkeypatch):
    meta = store.meta
    bx, by, bz = meta.layer_chunk_bounds(2)  # 7 x 4 x 4
    clock = [1000.0, 1060.0, 1120.0]  # one reading per record_chunks call, then the last one
    monkeypatch.setattr(
        "meshing_core.run.records.time.time", lambda: clock.pop(0) if len(clock) > 1 else clock[0]
    )
    column = [(1, 2, z) for z in range(bz)]  # a whole x-y cell done
    store.record_chunks(2, done={c: {"fragments": 1, "bytes": 10} for c in column[:2]})
    store.record_chunks(2, done={c: {"fragments": 0, "bytes": 0} for c in column[2:]})
    store.record_chunks(2, failed={(5, 3, 0): "boom"}, done={(5, 3, 1): 2})
    layer = progress.layer_progress(store, 2)
    assert (layer.total, layer.done, layer.empty, layer.failed) == (bx * by * bz, 5, 2, 1)
    assert layer.pending == bx * by * bz - 6
    assert layer.grid_block == 1 and layer.grid_total.shape == (bx, by)
    assert np.all(layer.grid_total == bz)
    done = np.zeros((bx, by), dtype=int)
    done[1, 2], done[5, 3] = bz, 1
    assert np.array_equal(layer.grid_done, done)
    failed = np.zeros((bx, by), dtype=int)
    failed[5, 3] = 1
    assert np.array_equal(layer.grid_failed, failed)
    # five completions between t=1000 and t=1120: four intervals in two minutes
    assert layer.first_done == 1000.0 and layer.last_done == 1120.0
    assert layer.chunks_per_minute == pytest.approx(2.0)
    assert layer.eta_seconds() == pytest.approx(60.0 * layer.pending / 2.0)
    shown = layer.as_dict(grid=True)
    assert shown["grid"]["done"][1][2] == bz and shown["failures"][0]["chunk"] == [5, 3, 0]
    # rolled up by the batch's owner, the same numbers come from the batch objects' summaries
    store.roll_up(2, range(store.batch_count(2)))
    again = progress.layer_progress(RecordStore(store.config, T, meta=meta), 2)
    assert (again.done, again.empty, again.failed) == (5, 2, 1)
    assert np.array_equal(again.grid_done, done) and np.array_equal(again.grid_failed, failed)


def test_ui_progress_grid_of_a_wide_layer_is_summed_into_blocks():
    from meshing_core.run.progress import MAX_GRID_SIDE, _grid

    bounds = (600, 10, 3)
    per_xy = np.ones(600 * 10, dtype=np.int64)
    block = -(-600 // MAX_GRID_SIDE)
    grid = _grid(per_xy, bounds, block)
    assert grid.shape == (-(-600 // block), -(-10 // block))
    assert grid.sum() == 600 * 10 and grid.max() == block * block


def test_ui_notifications_config_is_checked_in_one_line(example_copy: Path, tmp_path: Path):
    graph_yaml = example_copy / "graph.yaml"
    data = yaml.safe_load(graph_yaml.read_text())
    data["notifications"] = {
        "run_failure": [{"type": "email", "to": "ops@example.org"}],
        "layer_failure": [{"type": "webhook", "conn_id": "lab_hook", "endpoint": "/mesh"}],
    }
    graph_yaml.write_text(yaml.safe_dump(data))
    config = load_config(graph_yaml)
    assert config.notifications["run_failure"] == [
        {"type": "email", "to": ["ops@example.org"], "conn_id": "smtp_default", "from_email": None}
    ]
    assert config.notifications["layer_failure"][0]["conn_id"] == "lab_hook"
    assert config.notifications["run_success"] == []
    for bad, phrase in (
        ({"run_failure": [{"type": "pager"}]}, "needs type: email or type: webhook"),
        ({"run_failure": [{"type": "email"}]}, "no 'to' address"),
        ({"run_failure": [{"type": "email", "to": "nobody"}]}, "e-mail address"),
        ({"on_fire": []}, "unknown key 'notifications.on_fire'"),
    ):
        data["notifications"] = bad
        broken = tmp_path / "broken"
        shutil.rmtree(broken, ignore_errors=True)
        shutil.copytree(example_copy, broken)
        (broken / "graph.yaml").write_text(yaml.safe_dump(data))
        with pytest.raises(ConfigError, match=phrase):
            load_config(broken / "graph.yaml")


def test_ui_failed_batches_are_read_from_airflow_task_states():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
    from meshing_airflow.notifications import failed_batches

    states = {
        "start": "success",
        "layer_2.batch_0": "success",
        "layer_3.batch_4": "failed",
        "layer_3.batch_1": "failed",
        "layer_3.batch_2": "up_for_retry",
        "layer_4.batch_0": "upstream_failed",
    }
    assert failed_batches(states, 5) == {3: [1, 4]}
