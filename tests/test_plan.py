"""Batch planning (compact index ranges, sub-boxes, 10M-chunk layers) and running one batch."""

from __future__ import annotations

import itertools
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import DracoPy
import pytest
import yaml
from cli_support import run_cli

from meshing_core.config import GraphConfig, load_config
from meshing_core.graph import open_graph
from meshing_core.graph.protocol import GraphMeta
from meshing_core.run import records
from meshing_core.run.checks import LayerRunError, select_chunks
from meshing_core.run.layer import run_batch
from meshing_core.run.plan import (
    PlanError,
    batch_command,
    batch_label,
    layer_summary,
    plan_layer,
)
from meshing_core.run.setup import setup_meshes
from meshing_core.store import layout
from meshing_core.store.sharding import ShardReader, bytes_source

SPLIT_STATE = 1614729600.0 + 3600  # after the example's split (2021-03-03)


def fake_config(**batches: int) -> GraphConfig:
    """A config that is never opened: the planner only needs its batch settings."""
    return GraphConfig(
        source=Path("graph.yaml"),
        name="big",
        backend="embedded",
        graph_path="graph.sqlite",
        watershed="file:///nowhere/ws",
        mesh_dir="graphene_meshes",
        mip=0,
        max_error=1.0,
        verify=False,
        chunk_size=(64, 64, 64),
        n_layers=10,
        spatial_bits=10,
        batches={"chunks_per_batch": 64, "max_map_length": 1024, **batches},
    )


def meta_of(bounds: tuple[int, int, int], n_layers: int = 10) -> GraphMeta:
    return GraphMeta(
        graph_id="big",
        n_layers=n_layers,
        spatial_bits=10,
        chunk_size=(64, 64, 64),
        voxel_offset=(0, 0, 0),
        volume_size=tuple(b * 64 for b in bounds),  # type: ignore[arg-type]
        resolution=(8.0, 8.0, 40.0),
    )


def expand(meta: GraphMeta, plan: list[dict]) -> list[tuple[int, int, int]]:
    """Every chunk the plan's batches mesh, in plan order (what mesh_layer would select)."""
    out: list[tuple[int, int, int]] = []
    for d in plan:
        layer = d["layer"]
        bounds = tuple(meta.layer_chunk_bounds(layer))
        box = d.get("box", [0, 0, 0, *bounds])
        start, end = tuple(box[:3]), tuple(box[3:])
        out.extend(select_chunks(meta, layer, start, end, (d["start"], d["stop"])))  # type: ignore[arg-type]
    return out


# -- planning -----------------------------------------------------------------------------------
def test_ten_million_chunk_layer_plans_compactly_within_the_map_limit():
    meta = meta_of((256, 256, 160))  # 10,485,760 layer-2 chunks
    total = records.chunk_total(meta, 2)
    assert total >= 10_000_000
    config = fake_config()
    plan = plan_layer(config, 2, meta=meta)
    assert 1 <= len(plan) <= 1024
    assert plan[0]["start"] == 0 and plan[-1]["stop"] == total
    assert all(a["stop"] == b["start"] for a, b in itertools.pairwise(plan))
    assert [d["batch"] for d in plan] == list(range(len(plan)))
    size = plan[0]["stop"] - plan[0]["start"]
    assert size % records.default_batch_size(config, meta, 2) == 0  # one writer per record
    assert all(set(d) == {"layer", "batch", "start", "stop"} for d in plan)
    assert batch_label(plan[1]) == f"L2 b1 chunks {size}-{2 * size - 1}"
    assert len(json.dumps(plan)) < 100_000

    smaller = plan_layer(config, 2, meta=meta, max_map_length=100, batch_size=5)
    assert len(smaller) <= 100 and smaller[-1]["stop"] == total
    assert len(json.dumps(smaller)) < 100_000

    # a thin sub-box across the whole layer touches every batch: the grid coarsens to fit
    slab = plan_layer(config, 2, meta=meta, chunk_start=(0, 0, 7), chunk_end=(256, 256, 8))
    assert 1 <= len(slab) <= 1024
    assert all(d["box"] == [0, 0, 7, 256, 256, 8] for d in slab)
    assert len(json.dumps(slab)) < 100_000


def test_plan_grows_batches_to_fit_the_map_and_aligns_them_to_records():
    meta = meta_of((7, 4, 4))  # 112 chunks
    config = fake_config(chunks_per_batch=8)
    plan = plan_layer(config, 2, meta=meta)
    assert [(d["start"], d["stop"]) for d in plan] == [
        (i, min(i + 8, 112)) for i in range(0, 112, 8)
    ]
    assert len(plan_layer(config, 2, meta=meta, max_map_length=3)) <= 3
    # asking for smaller batches than the records use keeps whole record batches per task
    coarse = plan_layer(config, 2, meta=meta, batch_size=3)
    assert all(d["start"] % 8 == 0 for d in coarse)
    assert expand(meta, coarse) == list(records.chunk_order(meta, 2))


@pytest.mark.parametrize(
    ("start", "end", "batch_size", "max_map"),
    [
        ((0, 0, 0), (7, 4, 4), 8, 1024),
        ((1, 1, 1), (5, 3, 3), 1, 1024),
        ((2, 0, 3), (3, 4, 4), 8, 1024),
        ((0, 0, 0), (7, 4, 1), 1, 5),
        ((6, 3, 3), (7, 4, 4), 4, 1024),
    ],
)
def test_sub_box_plans_cover_exactly_the_box(start, end, batch_size, max_map):
    meta = meta_of((7, 4, 4))
    config = fake_config(chunks_per_batch=batch_size, max_map_length=max_map)
    plan = plan_layer(config, 2, meta=meta, chunk_start=start, chunk_end=end)
    assert 1 <= len(plan) <= max_map
    chunks = expand(meta, plan)
    box = list(itertools.product(*(range(s, e) for s, e in zip(start, end, strict=True))))
    assert len(chunks) == len(set(chunks))  # no chunk in two batches
    assert set(chunks) == set(box)
    assert all(expand(meta, [d]) for d in plan)  # no batch without a chunk of the box
    size = plan[0]["stop"] - plan[0]["start"]
    assert all(d["start"] == d["batch"] * size for d in plan)


def test_plan_refuses_bad_layer_box_and_sizes():
    meta = meta_of((7, 4, 4), n_layers=5)
    config = fake_config()
    with pytest.raises(PlanError, match="unknown layer 6"):
        plan_layer(config, 6, meta=meta)
    with pytest.raises(PlanError, match="outside layer 2's bounds"):
        plan_layer(config, 2, meta=meta, chunk_start=(0, 0, 0), chunk_end=(8, 4, 4))
    with pytest.raises(PlanError, match="batch size"):
        plan_layer(config, 2, meta=meta, batch_size=0)
    with pytest.raises(LayerRunError, match="chunk index range 100..113"):
        select_chunks(meta, 2, (0, 0, 0), (7, 4, 4), (100, 113))


def test_batch_command_is_the_mesh_cli():
    argv = batch_command(
        {"layer": 3, "batch": 2, "start": 8, "stop": 12, "box": [0, 0, 0, 2, 1, 1]},
        "g/graph.yaml", "2021-03-03T01:00:00Z",
    )  # fmt: skip
    assert argv == [
        "mesh", "--graph", "g/graph.yaml", "--layer", "3", "--timestamp", "2021-03-03T01:00:00Z",
        "--chunk-index-range", "8", "12", "--chunk-start", "0", "0", "0",
        "--chunk-end", "2", "1", "1",
    ]  # fmt: skip


# -- running batches on the example ---------------------------------------------------------------
def shard_path(config: GraphConfig, meta: GraphMeta, layer: int, coords) -> Path:
    root = Path(config.mesh_cloudpath[len("file://") :]) / "initial" / str(layer)
    return root / layout.shard_name(meta.codec, meta.chunk_id(layer, coords))


def layer_shards(config: GraphConfig, layer: int) -> set[str]:
    root = Path(config.mesh_cloudpath[len("file://") :]) / "initial" / str(layer)
    return {p.name for p in root.glob("*.shard")} if root.exists() else set()


def test_run_batch_meshes_exactly_its_chunks_then_skips_them(example_copy: Path):
    config = load_config(example_copy / "graph.yaml")
    config = replace(config, batches={**config.batches, "chunks_per_batch": 16})
    setup_meshes(config)
    graph = open_graph(config)
    meta = graph.meta
    graph.close()
    plan = plan_layer(config, 2)
    assert len(plan) == 7  # 112 chunks / 16
    batch = plan[3]
    chunks = list(records.chunk_order(meta, 2, batch["start"], batch["stop"]))

    summary = run_batch(config, batch, timestamp=SPLIT_STATE, workers=1)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["layer"] == 2 and summary["batch"] == 3
    assert summary["chunks"] == 16 and summary["skipped"] == 0
    written = {shard_path(config, meta, 2, c).name for c in chunks}
    shards = layer_shards(config, 2)
    assert shards and shards <= written  # only this batch's chunks have shards
    assert len(shards) == 16 - summary["empty"]
    spec = json.loads((Path(config.mesh_cloudpath[len("file://") :]) / "info").read_text())
    fragments = 0
    for name in shards:
        path = Path(config.mesh_cloudpath[len("file://") :]) / "initial" / "2" / name
        reader = ShardReader(bytes_source(path.read_bytes()), spec["sharding"]["2"])
        for _, data in reader.items():
            mesh = DracoPy.decode(data)
            assert len(mesh.faces) > 0
            fragments += 1
    assert fragments == summary["fragments"]
    done = layer_summary(config, 2, SPLIT_STATE)
    assert done["chunks_done"] == 16 and done["chunks_total"] == 112
    assert done["chunks_failed"] == 0 and done["fragments"] == fragments

    for name in shards:  # a rerun must not touch finished chunks ...
        (shard_path(config, meta, 2, (0, 0, 0)).parent / name).unlink()
    again = run_batch(config, batch, timestamp=SPLIT_STATE, workers=1)
    assert again["skipped"] == 16 and again["fragments"] == 0
    assert layer_shards(config, 2) == set()
    records.RecordStore(config, SPLIT_STATE).clear()  # ... what a forced run does at its start
    forced = run_batch(config, batch, timestamp=SPLIT_STATE, workers=1)
    assert forced["skipped"] == 0 and forced["fragments"] == fragments
    assert layer_shards(config, 2) == shards


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, check=check, quiet=True)


def test_cli_chunk_index_range_runs_one_recorded_batch(example_copy: Path):
    graph = str(example_copy / "graph.yaml")
    data = yaml.safe_load(Path(graph).read_text())
    data["batches"]["chunks_per_batch"] = 64  # the example is small: default is one batch
    Path(graph).write_text(yaml.safe_dump(data))
    config = load_config(graph)
    setup_meshes(config)
    g = open_graph(config)
    meta = g.meta
    g.close()
    ts = "2021-03-03T01:00:00Z"
    first = cli("mesh", "--graph", graph, "--layer", "2", "--timestamp", ts,
                "--chunk-index-range", "100", "112", "--workers", "1")  # fmt: skip
    assert "12 chunks" in first.stdout
    expected = {shard_path(config, meta, 2, c).name for c in records.chunk_order(meta, 2, 100, 112)}
    shards = layer_shards(config, 2)
    assert shards and shards <= expected
    assert layer_summary(config, 2, SPLIT_STATE)["chunks_done"] == 12
    # records at this timestamp froze batches of 64: a plan for it keeps whole record batches
    finer = replace(config, batches={**config.batches, "chunks_per_batch": 16})
    assert [d["start"] for d in plan_layer(finer, 2, timestamp=SPLIT_STATE)] == [0, 64]
    assert len(plan_layer(finer, 2)) == 7

    again = cli("mesh", "--graph", graph, "--layer", "2", "--timestamp", ts,
                "--chunk-index-range", "100", "112")  # fmt: skip
    assert "12 already done" in again.stdout
    forced = cli("mesh", "--graph", graph, "--layer", "2", "--timestamp", ts,
                 "--chunk-index-range", "100", "112", "--force", check=False)  # fmt: skip
    assert forced.returncode == 2 and "--force" in forced.stderr  # only a run forces, at its start

    no_ts = cli("mesh", "--graph", graph, "--layer", "2", "--chunk-index-range", "0", "4",
                check=False)  # fmt: skip
    assert no_ts.returncode == 2 and "--chunk-index-range needs --timestamp" in no_ts.stderr
    outside = cli("mesh", "--graph", graph, "--layer", "2", "--timestamp", ts,
                  "--chunk-index-range", "100", "200", check=False)  # fmt: skip
    assert outside.returncode == 2 and "chunk index range 100..200" in outside.stderr
    assert "Traceback" not in outside.stderr


def test_a_batch_from_the_shell_renews_its_runs_lease_and_refuses_another_run(
    example_copy: Path,
):
    """A pod's batch (`mesh --chunk-index-range`) attaches to the run at its timestamp."""
    from meshing_core.run.lease import read_lease
    from meshing_core.run.lifecycle import begin_run

    graph = str(example_copy / "graph.yaml")
    config = load_config(graph)
    setup_meshes(config)
    ticket = begin_run(config, owner="airflow mesh_example/manual__1", timestamp=SPLIT_STATE)
    before = read_lease(config)
    ts = "2021-03-03T01:00:00Z"
    ok = cli("mesh", "--graph", graph, "--layer", "2", "--timestamp", ts,
             "--chunk-index-range", "0", "112", "--workers", "1")  # fmt: skip
    assert "112 chunks" in ok.stdout
    after = read_lease(config)
    assert after.token == ticket["token"] == before.token  # the run's lease, renewed, kept
    assert after.heartbeat > before.heartbeat
    other = cli("mesh", "--graph", graph, "--layer", "2", "--timestamp", "2021-03-04T00:00:00Z",
                "--chunk-index-range", "0", "16", check=False)  # fmt: skip
    assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1
    assert "not by the run at 2021-03-04T00:00:00Z" in other.stderr
