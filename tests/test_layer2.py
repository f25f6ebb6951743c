"""Layer-2 meshing of the example dataset (real gala crop): shards, geometry, determinism, errors."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import DracoPy
import numpy as np
import pytest

from meshing_core.config import load_config
from meshing_core.errors import MeshingError
from meshing_core.graph import open_graph
from meshing_core.mesh.layer2 import chunk_grid, mesh_chunk
from meshing_core.mesh.watershed import mip_geometry
from meshing_core.run.layer import ChunkFailuresError, LayerReport, mesh_layer
from meshing_core.run.setup import setup_meshes, static_mesh_block
from meshing_core.store import files
from meshing_core.store.layout import chunk_shard_name as shard_name
from meshing_core.store.layout import initial_dir as shard_dir
from meshing_core.store.sharding import ShardReader, bytes_source
from meshing_core.timestamps import format_timestamp


def _shard(config, meta, coords) -> ShardReader | None:
    data = files.read_file(shard_dir(config, 2), shard_name(meta, 2, coords))
    if data is None:
        return None
    spec = files.read_json(config.mesh_cloudpath, "info")["sharding"]["2"]
    return ShardReader(bytes_source(data), spec)


def _now(graph) -> float:
    return max(graph.history()) + 1.0


@pytest.fixture(scope="module")
def meshed(example_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The example meshed at layer 2 once (whole layer, serial) after both edits."""
    root = tmp_path_factory.mktemp("layer2") / "example"
    shutil.copytree(example_dir, root)
    config = load_config(root)
    setup_meshes(config)
    graph = open_graph(config)
    ts = _now(graph)
    report = mesh_layer(config, 2, timestamp=ts, workers=1, progress=False)
    return config, graph, ts, report


def test_whole_layer_report_and_shard_keys(meshed) -> None:
    config, graph, ts, report = meshed
    meta = graph.meta
    bounds = meta.layer_chunk_bounds(2)
    assert isinstance(report, LayerReport)
    assert report.chunks == int(np.prod(bounds))
    written = files.list_files(shard_dir(config, 2))
    assert len(written) == report.chunks - report.empty_chunks
    assert report.fragments > report.chunks  # several nodes per chunk on this crop
    total = 0
    for x, y, z in np.ndindex(*bounds):
        reader = _shard(config, meta, (x, y, z))
        nodes = set(graph.chunk_nodes(2, (x, y, z), ts).tolist())
        if reader is None:
            continue
        keys = set(reader.keys())
        # every fragment is a node of that chunk alive at ts; nodes without a surface may miss
        assert keys <= nodes
        assert len(keys) >= 0.9 * len(nodes)
        total += len(keys)
    assert total == report.fragments


def test_decoded_geometry_sits_in_its_chunk_on_the_grid(meshed) -> None:
    config, graph, ts, _ = meshed
    meta = graph.meta
    geometry = mip_geometry(meta, config.watershed, config.mip)
    for coords in [(0, 0, 0), (3, 2, 1), tuple(b - 1 for b in meta.layer_chunk_bounds(2))]:
        reader = _shard(config, meta, coords)
        assert reader is not None
        grid = chunk_grid(geometry, coords)
        start, _, outer = geometry.chunk_box(coords)
        # the chunk closes objects it owns in its one-voxel margin below (mesh.overlap)
        low = np.maximum(start - 1, geometry.voxel_offset) * geometry.resolution
        high = (outer - 1) * geometry.resolution
        for node, blob in reader.items():
            mesh = DracoPy.decode(blob)
            points = np.asarray(mesh.points, dtype=np.float64)
            faces = np.asarray(mesh.faces)
            assert len(faces) > 0 and faces.max() < len(points)
            steps = (points - grid.origin) / grid.bin_size
            assert np.array_equal(steps, np.round(steps)), node
            slack = grid.bin_size
            assert np.all(points >= low - slack) and np.all(points <= high + slack), node


def test_mesh_chunk_matches_stored_shard_and_is_deterministic(meshed) -> None:
    config, graph, ts, _ = meshed
    coords = (2, 1, 1)
    first = mesh_chunk(graph, config, coords, ts)
    second = mesh_chunk(graph, config, coords, ts)
    assert first == second
    assert list(first) == sorted(first)
    reader = _shard(config, graph.meta, coords)
    assert dict(reader.items()) == first


def test_rerun_in_a_process_pool_gives_identical_bytes(meshed) -> None:
    config, graph, ts, _ = meshed
    meta = graph.meta
    chunks = [(x, y, 0) for x in range(2) for y in range(2)]
    before = {c: files.read_file(shard_dir(config, 2), shard_name(meta, 2, c)) for c in chunks}
    report = mesh_layer(
        config, 2, chunk_start=(0, 0, 0), chunk_end=(2, 2, 1), timestamp=ts, workers=2,
        progress=False,
    )  # fmt: skip
    assert report.chunks == 4
    after = {c: files.read_file(shard_dir(config, 2), shard_name(meta, 2, c)) for c in chunks}
    assert after == before


def test_readers_outside_this_code_read_the_shards(meshed) -> None:
    """tensorstore's sharded kvstore reads the same bytes for every key."""
    ts_mod = pytest.importorskip("tensorstore")
    config, graph, _, _ = meshed
    meta = graph.meta
    coords = (1, 1, 1)
    name = shard_name(meta, 2, coords)
    reader = _shard(config, meta, coords)
    folder = Path(config.mesh_cloudpath[len("file://") :]) / "ts-view"
    folder.mkdir(exist_ok=True)
    shutil.copy(Path(shard_dir(config, 2)[len("file://") :]) / name, folder / "0.shard")
    spec = files.read_json(config.mesh_cloudpath, "info")["sharding"]["2"]
    store = ts_mod.KvStore.open(
        {
            "driver": "neuroglancer_uint64_sharded",
            "base": f"file://{folder}/",
            "metadata": spec,
        }
    ).result()
    for key in list(reader.keys()):  # noqa: SIM118 - ShardReader is not a dict
        got = store.read(int(key).to_bytes(8, "big")).result()
        assert bytes(got.value) == reader.get(key)


def test_empty_chunk_writes_no_shard_and_removes_a_stale_one(example_copy: Path, caplog) -> None:
    from cloudvolume import CloudVolume

    config = load_config(example_copy)
    setup_meshes(config)
    graph = open_graph(config)
    meta = graph.meta
    coords = (1, 1, 1)
    geometry = mip_geometry(meta, config.watershed, config.mip)
    start, inner, _ = geometry.chunk_box(coords)
    cv = CloudVolume(config.watershed, mip=config.mip, progress=False)
    cv[start[0] : inner[0], start[1] : inner[1], start[2] : inner[2]] = np.zeros(
        tuple(int(v) for v in inner - start), dtype=cv.dtype
    )
    files.write_atomic(shard_dir(config, 2), shard_name(meta, 2, coords), b"stale")
    with caplog.at_level(logging.INFO, logger="meshing_core.run.layer"):
        report = mesh_layer(
            config, 2, chunk_start=coords, chunk_end=(2, 2, 2), timestamp=_now(graph),
            workers=1, progress=False,
        )  # fmt: skip
    assert (report.chunks, report.empty_chunks, report.fragments, report.bytes) == (1, 1, 0, 0)
    assert not files.exists(shard_dir(config, 2), shard_name(meta, 2, coords))
    assert "[1, 1, 1] is empty" in caplog.text and "stale shard" in caplog.text


# -- errors --------------------------------------------------------------------------------------
def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_unknown_layer_and_stitching_needs_setup(example_copy: Path) -> None:
    config = load_config(example_copy)
    for layer in (0, 1, 6):
        with pytest.raises(MeshingError) as exc:
            mesh_layer(config, layer, timestamp=1e12, progress=False)
        assert f"unknown layer {layer}" in _one_line(exc) and "2..5" in str(exc.value)
    with pytest.raises(MeshingError) as exc:  # layer 3 is stitched now; it checks its inputs
        mesh_layer(config, 3, timestamp=1e12, progress=False)
    assert "not found: run `python -m meshing_core setup" in _one_line(exc)


@pytest.mark.parametrize(
    ("start", "end"),
    [((0, 0, 0), (8, 4, 4)), ((-1, 0, 0), (1, 1, 1)), ((2, 0, 0), (2, 1, 1)), ((0, 0), (1, 1))],
)
def test_chunk_range_outside_bounds(example_copy: Path, start, end) -> None:
    config = load_config(example_copy)
    graph = open_graph(config)
    bounds = list(graph.meta.layer_chunk_bounds(2))
    graph.close()
    with pytest.raises(MeshingError) as exc:
        mesh_layer(config, 2, chunk_start=start, chunk_end=end, timestamp=1e12, progress=False)
    text = _one_line(exc)
    assert "outside layer 2's bounds" in text or "three coordinates" in text
    if len(start) == 3:
        assert str(bounds) in text


def test_missing_mesh_info_says_run_setup(example_copy: Path) -> None:
    config = load_config(example_copy)
    with pytest.raises(MeshingError) as exc:
        mesh_layer(config, 2, chunk_end=(1, 1, 1), timestamp=1e12, progress=False)
    text = _one_line(exc)
    assert "mesh info" in text and "not found" in text and "setup" in text


def test_mesh_info_that_does_not_match_the_config(example_copy: Path) -> None:
    config = load_config(example_copy)
    setup_meshes(config)
    info = files.read_json(config.mesh_cloudpath, "info")
    info["chunk_size"] = [c * 2 for c in info["chunk_size"]]
    files.write_atomic(config.mesh_cloudpath, "info", __import__("json").dumps(info).encode())
    with pytest.raises(MeshingError) as exc:
        mesh_layer(config, 2, chunk_end=(1, 1, 1), timestamp=1e12, progress=False)
    assert "chunk_size" in _one_line(exc) and "re-run setup" in str(exc.value)
    info["chunk_size"] = [c // 2 for c in info["chunk_size"]]
    info["mip"] = config.mip + 1
    files.write_atomic(config.mesh_cloudpath, "info", __import__("json").dumps(info).encode())
    with pytest.raises(MeshingError) as exc:
        mesh_layer(config, 2, chunk_end=(1, 1, 1), timestamp=1e12, progress=False)
    assert f"mip {config.mip + 1}" in _one_line(exc)


def test_missing_segmentation_chunk_fails_and_keeps_old_shards(example_copy: Path) -> None:
    config = load_config(example_copy)
    setup_meshes(config)
    graph = open_graph(config)
    meta = graph.meta
    ts = _now(graph)
    coords = (0, 0, 0)
    mesh_layer(config, 2, chunk_end=(1, 1, 1), timestamp=ts, workers=1, progress=False)
    name = shard_name(meta, 2, coords)
    before = files.read_file(shard_dir(config, 2), name)
    assert before
    # delete the watershed chunk file holding the chunk's first voxel
    ws_dir = Path(config.watershed[len("file://") :])
    scale = files.read_json(config.watershed, "info")["scales"][config.mip]
    victims = sorted(
        p for p in (ws_dir / scale["key"]).iterdir() if p.name.split("_")[0].startswith("0-")
    )
    victim = next(p for p in victims if all(part.startswith("0-") for part in p.name.split("_")))
    victim.unlink()
    with pytest.raises(ChunkFailuresError) as exc:  # a chunk's failure: its batch is retried
        mesh_layer(config, 2, chunk_end=(1, 1, 1), timestamp=ts, workers=1, progress=False)
    assert isinstance(exc.value.__cause__, MeshingError)
    text = _one_line(exc)
    assert "(0, 0, 0)" in text and config.watershed in text and "missing" in text
    assert files.read_file(shard_dir(config, 2), name) == before


def _stale_shards(config, meta) -> dict[str, bytes]:
    """A placeholder shard in every chunk of a 2x2x2 corner, to prove none is touched."""
    names = {shard_name(meta, 2, c): b"old" for c in np.ndindex(2, 2, 2)}
    for name, data in names.items():
        files.write_atomic(shard_dir(config, 2), name, data)
    return names


def _untouched(config, names: dict[str, bytes]) -> bool:
    return all(files.read_file(shard_dir(config, 2), n) == d for n, d in names.items())


def test_timestamp_before_the_graph_exists_is_refused_before_any_chunk(example_copy: Path) -> None:
    config = load_config(example_copy)
    setup_meshes(config)
    graph = open_graph(config)
    created = graph.history()[0]
    names = _stale_shards(config, graph.meta)
    graph.close()
    early = created - 86400.0
    with pytest.raises(MeshingError) as exc:
        mesh_layer(config, 2, chunk_end=(2, 2, 2), timestamp=early, workers=1, progress=False)
    text = _one_line(exc)
    assert format_timestamp(early) in text and format_timestamp(created) in text
    assert "before the graph was created" in text
    assert _untouched(config, names)


def test_invalid_sharding_spec_is_refused_before_any_chunk(example_copy: Path) -> None:
    config = load_config(example_copy)
    setup_meshes(config)
    graph = open_graph(config)
    names = _stale_shards(config, graph.meta)
    graph.close()
    info = files.read_json(config.mesh_cloudpath, "info")
    info["sharding"]["2"]["hash"] = "md5"
    files.write_json(config.mesh_cloudpath, "info", info)
    with pytest.raises(MeshingError) as exc:
        mesh_layer(config, 2, chunk_end=(2, 2, 2), timestamp=1e12, workers=1, progress=False)
    text = _one_line(exc)
    assert "sharding spec is invalid" in text and "'md5'" in text
    assert f"setup --graph {config.source}" in text
    assert _untouched(config, names)


@pytest.mark.parametrize(("field", "change"), [("max_error", 5.0), ("mip", 1)])
def test_config_that_differs_from_the_custom_data_mesh_block(
    example_copy: Path, field: str, change
) -> None:
    config = load_config(example_copy)
    setup_meshes(config)
    other = replace(config, **{field: getattr(config, field) + change})
    with pytest.raises(MeshingError) as exc:
        mesh_layer(other, 2, chunk_end=(1, 1, 1), timestamp=1e12, workers=1, progress=False)
    text = _one_line(exc)
    old, new = static_mesh_block(config)[field], static_mesh_block(other)[field]
    assert f"custom data has mesh.{field} {old} but {config.source} says {new}:" in text
    assert f"setup --graph {config.source}" in text and "--reset" in text


def test_missing_custom_data_mesh_block_says_run_setup(example_copy: Path) -> None:
    config = load_config(example_copy)
    setup_meshes(config)
    graph = open_graph(config)
    custom = graph.custom_data()
    custom.pop("mesh")
    graph.set_custom_data(custom)
    graph.close()
    with pytest.raises(MeshingError) as exc:
        mesh_layer(config, 2, chunk_end=(1, 1, 1), timestamp=1e12, workers=1, progress=False)
    text = _one_line(exc)
    assert "no mesh block" in text and f"setup --graph {config.source}" in text


@pytest.mark.parametrize("workers", [0, -2])
def test_workers_below_one_is_an_error(example_copy: Path, workers: int) -> None:
    config = load_config(example_copy)
    setup_meshes(config)
    with pytest.raises(MeshingError) as exc:
        mesh_layer(config, 2, chunk_end=(1, 1, 1), timestamp=1e12, workers=workers, progress=False)
    assert _one_line(exc).startswith("--workers must be >= 1")
