"""Run metadata: custom data ``mesh`` and the watershed's ``mesh_metadata``, as readers see them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_store_support import T1, make_dataset

from meshing_core.errors import MeshingError
from meshing_core.graph import open_graph
from meshing_core.mesh.layer2 import chunk_grid
from meshing_core.mesh.watershed import mip_geometry
from meshing_core.run.metadata import clear_run_metadata, write_run_metadata
from meshing_core.run.setup import setup_meshes
from meshing_core.store.verify import graphene_reader


def ws_info(config) -> dict:
    return json.loads((Path(config.watershed[len("file://") :]) / "info").read_text())


@pytest.fixture(params=[0, 1], ids=["mip0", "mip1"])
def dataset(request, tmp_path: Path):
    config = make_dataset(tmp_path / "ds", mip=request.param)
    setup_meshes(config)
    return config


def test_fields_are_written_as_the_procedure_lists_them(dataset):
    timestamp = T1 + 0.75
    graph = open_graph(dataset)
    try:
        result = write_run_metadata(dataset, graph, 3, timestamp)
        custom = graph.custom_data()["mesh"]
    finally:
        graph.close()
    assert result["custom_data"] == result["watershed_info"] == "written"
    assert custom == {
        "max_layer": 3,
        "mip": dataset.mip,
        "max_error": 40,
        "dir": "graphene_meshes",
        "initial_ts": int(T1),  # whole seconds, never after the meshing timestamp
        "verify": False,
    }
    meta = ws_info(dataset)["mesh_metadata"]
    assert set(meta) == {"uniform_draco_grid_size", "unsharded_mesh_dir", "max_meshed_layer"}
    assert meta["unsharded_mesh_dir"] == "dynamic"
    assert meta["max_meshed_layer"] == 3
    assert ws_info(dataset)["mesh"] == "graphene_meshes"


def test_grid_size_is_the_bin_layer2_meshing_encodes_with(dataset):
    graph = open_graph(dataset)
    try:
        write_run_metadata(dataset, graph, 4, T1)
        geometry = mip_geometry(graph.meta, dataset.watershed, dataset.mip)
    finally:
        graph.close()
    size = ws_info(dataset)["mesh_metadata"]["uniform_draco_grid_size"]
    for coords in [(0, 0, 0), (3, 2, 1)]:
        assert size == chunk_grid(geometry, coords).bin_size
    assert isinstance(size, int)


def test_cloudvolume_graphene_reader_sees_the_metadata(dataset):
    graph = open_graph(dataset)
    try:
        write_run_metadata(dataset, graph, 3, T1)
        cv = graphene_reader(dataset, graph)
        geometry = mip_geometry(graph.meta, dataset.watershed, dataset.mip)
    finally:
        graph.close()
    assert cv.meta.max_meshed_layer == 3
    assert cv.meta.unsharded_mesh_dir == "dynamic"
    assert cv.meta.get_draco_grid_size(2) == chunk_grid(geometry, (0, 0, 0)).bin_size
    assert cv.meta.get_draco_grid_size(3) == cv.meta.get_draco_grid_size(2)  # uniform


def test_second_write_changes_nothing_and_other_keys_survive(dataset):
    graph = open_graph(dataset)
    try:
        custom = graph.custom_data()
        custom["other"] = {"keep": True}
        graph.set_custom_data(custom)
        write_run_metadata(dataset, graph, 4, T1)
        before = ws_info(dataset)
        again = write_run_metadata(dataset, graph, 4, T1)
        assert graph.custom_data()["other"] == {"keep": True}
    finally:
        graph.close()
    assert again["custom_data"] == again["watershed_info"] == "unchanged"
    assert ws_info(dataset) == before
    assert before["scales"][0]["resolution"] == [8, 8, 40]
    # setup after a run keeps the run-written fields
    assert setup_meshes(dataset)["custom_data"] == "unchanged"


def test_clear_drops_only_run_fields(dataset):
    graph = open_graph(dataset)
    try:
        write_run_metadata(dataset, graph, 4, T1)
        assert clear_run_metadata(dataset, graph) == {
            "custom_data": "cleared",
            "watershed_info": "cleared",
        }
        assert set(graph.custom_data()["mesh"]) == {"dir", "mip", "max_error", "verify"}
        assert clear_run_metadata(dataset, graph)["custom_data"] == "unchanged"
    finally:
        graph.close()
    meta = ws_info(dataset)["mesh_metadata"]
    assert "max_meshed_layer" not in meta and meta["unsharded_mesh_dir"] == "dynamic"


def test_layer_outside_the_graph_is_refused(dataset):
    graph = open_graph(dataset)
    try:
        with pytest.raises(MeshingError, match=r"max_layer 5 is not a mesh layer .*2\.\.4"):
            write_run_metadata(dataset, graph, 5, T1)
    finally:
        graph.close()
