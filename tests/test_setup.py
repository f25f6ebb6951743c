"""`setup`: the three things it writes, idempotence, refusal to change settings under shards."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from test_store_support import CHUNK, T1, make_dataset

from meshing_core.errors import MeshingError
from meshing_core.graph import open_graph
from meshing_core.mesh.watershed import mip_geometry
from meshing_core.run.setup import SetupError, setup_meshes
from meshing_core.store import files
from meshing_core.store.sharding import encode_shard, mesh_shard_spec


def watershed_info(config) -> dict:
    return json.loads((Path(config.watershed[len("file://") :]) / "info").read_text())


def mesh_info(config) -> dict:
    return json.loads((Path(config.mesh_cloudpath[len("file://") :]) / "info").read_text())


def custom_mesh(config) -> dict:
    graph = open_graph(config)
    try:
        return graph.custom_data().get("mesh", {})
    finally:
        graph.close()


def put_shard(config, name: str = "initial/2/0-0.shard") -> None:
    files.write_atomic(config.mesh_cloudpath, name, encode_shard({5: b"m"}, mesh_shard_spec(0)))


@pytest.fixture()
def dataset(tmp_path: Path):
    return make_dataset(tmp_path / "ds", big_chunk_nodes=3000)


def test_setup_writes_watershed_mesh_key_mesh_info_and_custom_data(dataset):
    result = setup_meshes(dataset)
    assert result["watershed_info"] == result["mesh_info"] == result["custom_data"] == "written"
    assert result["deleted_files"] == 0

    ws = watershed_info(dataset)
    assert ws["mesh"] == "graphene_meshes"
    assert ws["scales"][0]["resolution"] == [8, 8, 40]  # the rest of the info is kept

    spec2 = mesh_shard_spec(2)  # chunk 0,0,0 holds 3001 nodes: 3001 * 24 B > 2 * 32 KiB
    assert mesh_info(dataset) == {
        "@type": "neuroglancer_legacy_mesh",
        "mip": 0,
        "chunk_size": list(CHUNK),
        "spatial_index": None,
        "sharding": {"2": spec2, "3": mesh_shard_spec(0), "4": mesh_shard_spec(0)},
    }
    assert result["minishard_bits"] == {2: 2, 3: 0, 4: 0}
    assert custom_mesh(dataset) == {
        "dir": "graphene_meshes",
        "mip": 0,
        "max_error": 40,
        "verify": False,
    }


def test_mesh_chunk_size_follows_the_mesh_mip(tmp_path):
    config = make_dataset(tmp_path / "ds", mip=1)
    setup_meshes(config)
    info = mesh_info(config)
    assert info["mip"] == 1
    assert info["chunk_size"] == [16, 16, 16]  # mip 1 is 16 x 16 x 40 nm over base 8 x 8 x 40
    assert custom_mesh(config)["mip"] == 1


def test_mesh_chunk_size_agrees_with_meshing_for_uneven_resolutions(tmp_path):
    # 17 nm over 8 nm is not a whole factor: meshing (like the ChunkedGraph) downsamples by
    # 17 // 8 = 2, so setup must write 32 // 2 = 16, not 32 // 2.125 = 15
    config = make_dataset(tmp_path / "ds", mip=1)
    ws = watershed_info(config)
    ws["scales"][1]["resolution"] = [17, 17, 40]
    files.write_json(config.watershed, "info", ws)
    setup_meshes(config)
    graph = open_graph(config)
    try:
        block = mip_geometry(graph.meta, config.watershed, 1).block_shape.tolist()
    finally:
        graph.close()
    assert mesh_info(config)["chunk_size"] == block == [16, 16, 16]


def test_minishard_bits_use_the_largest_count_over_history(tmp_path):
    # chunk 0,0,0 holds 1366 nodes at T0 (just over one minishard's ~1365); a later edit
    # retires most of them, but its shard from T0 must still be addressable with the same spec
    config = make_dataset(tmp_path / "ds", big_chunk_nodes=1365)
    later = T1 + 60.0
    graph = open_graph(config)
    try:
        nodes = graph.chunk_nodes(2, (0, 0, 0), T1)
        assert len(nodes) == 1366
        graph.expire_nodes(nodes[:1000].tolist(), later)
        graph.write_meta(graph.meta, history=[*graph.history(), later])
        assert len(graph.chunk_nodes(2, (0, 0, 0), later)) == 366
    finally:
        graph.close()
    assert setup_meshes(config)["minishard_bits"] == {2: 1, 3: 0, 4: 0}
    assert mesh_info(config)["sharding"]["2"] == mesh_shard_spec(1)


def test_second_call_changes_nothing(dataset):
    setup_meshes(dataset)
    before = {
        p: p.stat().st_mtime_ns for p in Path(dataset.watershed[len("file://") :]).rglob("info")
    }
    result = setup_meshes(dataset)
    assert (result["watershed_info"], result["mesh_info"], result["custom_data"]) == (
        "unchanged",
        "unchanged",
        "unchanged",
    )
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before


def test_run_written_fields_survive_a_repeated_setup(dataset):
    setup_meshes(dataset)
    graph = open_graph(dataset)
    try:
        custom = graph.custom_data()
        custom["mesh"].update(max_layer=4, initial_ts=1_600_000_100)
        custom["other"] = {"kept": True}
        graph.set_custom_data(custom)
    finally:
        graph.close()
    assert setup_meshes(dataset)["custom_data"] == "unchanged"
    assert custom_mesh(dataset)["max_layer"] == 4


def test_changed_max_error_is_refused_while_shards_exist(dataset):
    setup_meshes(dataset)
    put_shard(dataset)
    changed = replace(dataset, max_error=20.0)
    with pytest.raises(SetupError) as exc:
        setup_meshes(changed)
    text = str(exc.value)
    assert "\n" not in text
    assert dataset.mesh_cloudpath in text
    assert "max_error 40 -> 20" in text
    assert "--reset" in text
    assert isinstance(exc.value, MeshingError)
    assert custom_mesh(dataset)["max_error"] == 40  # nothing was written


def test_changed_mip_is_refused_while_shards_exist(tmp_path):
    config = make_dataset(tmp_path / "ds", mip=0)
    setup_meshes(config)
    put_shard(config, "initial/3/1-0.shard")
    with pytest.raises(SetupError, match=r"other settings \(mip 0 -> 1\): pass --reset"):
        setup_meshes(replace(config, mip=1))
    assert mesh_info(config)["mip"] == 0


def test_changed_sharding_is_refused_while_shards_exist(tmp_path):
    config = make_dataset(tmp_path / "ds")
    setup_meshes(config)
    info = mesh_info(config)
    info["sharding"]["3"]["minishard_bits"] = 5
    files.write_json(config.mesh_cloudpath, "info", info)
    put_shard(config)
    with pytest.raises(SetupError, match=r"sharding of layer 3 \(minishard_bits 5 -> 0\)"):
        setup_meshes(config)


def test_settings_may_change_freely_before_any_shard_exists(dataset):
    setup_meshes(dataset)
    result = setup_meshes(replace(dataset, max_error=20.0))
    assert result["custom_data"] == "written"
    assert custom_mesh(dataset)["max_error"] == 20


def test_reset_deletes_shards_and_records_then_writes(dataset):
    setup_meshes(dataset)
    graph = open_graph(dataset)
    try:
        custom = graph.custom_data()
        custom["mesh"].update(max_layer=4, initial_ts=1_600_000_100)
        graph.set_custom_data(custom)
    finally:
        graph.close()
    put_shard(dataset)
    put_shard(dataset, "initial/3/1-0.shard")
    files.write_atomic(dataset.mesh_cloudpath, "records/2/batch-0.json", b"{}")
    files.write_atomic(dataset.mesh_cloudpath, "dynamic/5:0:0-1_0-1_0-1", b"edit mesh")

    result = setup_meshes(replace(dataset, max_error=20.0), reset=True)

    assert result["reset"] is True
    assert result["deleted_files"] == 4  # two shards, one record, the old mesh info
    assert files.list_files(dataset.mesh_cloudpath) == ["dynamic/5:0:0-1_0-1_0-1", "info"]
    assert custom_mesh(dataset) == {
        "dir": "graphene_meshes",
        "mip": 0,
        "max_error": 20,
        "verify": False,
    }
    assert setup_meshes(replace(dataset, max_error=20.0))["mesh_info"] == "unchanged"


def test_missing_watershed_info_names_the_path_and_build_graph(dataset):
    (Path(dataset.watershed[len("file://") :]) / "info").unlink()
    with pytest.raises(SetupError) as exc:
        setup_meshes(dataset)
    text = str(exc.value)
    assert dataset.watershed in text and "build-graph" in text and "\n" not in text


def test_mip_beyond_the_watershed_scales_is_refused(dataset):
    with pytest.raises(SetupError, match=r"mesh.mip 5 is not a scale .*scales 0..1"):
        setup_meshes(replace(dataset, mip=5))


def test_config_that_disagrees_with_the_graph_is_refused(dataset):
    with pytest.raises(SetupError, match=r"chunk_size \[64, 64, 16\] differs"):
        setup_meshes(replace(dataset, chunk_size=(64, 64, 16)))


def test_shards_without_mesh_info_are_not_adopted_silently(dataset):
    put_shard(dataset)
    with pytest.raises(SetupError, match=r"holds shards but no mesh info .*--reset"):
        setup_meshes(dataset)
    assert setup_meshes(dataset, reset=True)["deleted_files"] == 1
