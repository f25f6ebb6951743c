"""Mesh export: the object at a voxel (or one node) from the stored fragments, as PLY or OBJ.

Judged by readers and meshers we did not write: libigl parses the files, cloud-volume's graphene
reader (bypass reads + its own multi-level stitching) must give the same vertices and triangles
from the same fragments, and a whole-object marching cubes (zmesh) of the object's voxels must
agree with the export both ways within ``max_error`` plus one voxel diagonal.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import DracoPy
import igl
import numpy as np
import pytest
import zmesh
from cloudvolume import CloudVolume

from meshing_core import ids
from meshing_core.config import load_config
from meshing_core.datasets.example import CREATED_AT, SPLIT_AT
from meshing_core.datasets.synthetic import (
    neurite_volume,
    write_agglomeration_csv,
    write_precomputed_segmentation,
)
from meshing_core.errors import MeshingError
from meshing_core.graph import open_graph
from meshing_core.ingest.builder import build_graph
from meshing_core.mesh.draco_grid import layer2_grid
from meshing_core.mesh.export import ExportError, export_mesh
from meshing_core.mesh.export_formats import ExportFormatError
from meshing_core.mesh.watershed import mip_geometry
from meshing_core.run.layer import mesh_layer
from meshing_core.run.setup import setup_meshes
from meshing_core.store import layout, verify
from meshing_core.store.paths import local_path, to_cloudpath
from meshing_core.store.sharding import ShardFormatError

TS = SPLIT_AT + 1.0  # after both example edits
OFFSET_TS = 1.6e9 + 1.0
OFFSET = (100, 200, 30)  # voxel offset of the small anisotropic dataset
BACKGROUND_Z = 3  # its first z slices are background (0)


# -- datasets ---------------------------------------------------------------------------------
class Dataset:
    """A meshed dataset with the object (root) label of every voxel, derived from the graph."""

    def __init__(self, folder: Path, timestamp: float):
        self.config = load_config(folder)
        self.timestamp = timestamp
        cv = CloudVolume(self.config.watershed, progress=False)
        self.resolution = np.asarray(cv.resolution, dtype=np.float64)
        self.offset = np.asarray(cv.voxel_offset, dtype=np.int64)
        supervoxels = np.asarray(cv[cv.bounds][..., 0])
        graph = open_graph(self.config)
        try:
            unique, inverse = np.unique(supervoxels, return_inverse=True)
            l2 = graph.l2_ids(unique, timestamp)
            roots = np.where(unique == 0, 0, graph.roots(l2, timestamp))
            self.l2 = l2[inverse].reshape(supervoxels.shape)
            self.roots = roots[inverse].reshape(supervoxels.shape).astype(np.uint64)
        finally:
            graph.close()

    def point_of(self, root: int) -> tuple[int, int, int]:
        """An absolute mip-0 voxel (offset included) of the object."""
        inside = np.argwhere(self.roots == np.uint64(root))
        return tuple(int(v) for v in inside[len(inside) // 2] + self.offset)  # type: ignore[return-value]

    def objects_by_size(self) -> list[int]:
        labels, counts = np.unique(self.roots[self.roots != 0], return_counts=True)
        return [int(labels[i]) for i in np.argsort(-counts, kind="stable")]

    def l2_nodes_of(self, root: int) -> list[int]:
        return sorted(int(n) for n in np.unique(self.l2[self.roots == np.uint64(root)]))


def _mesh(config, timestamp: float) -> None:
    setup_meshes(config)
    mesh_layer(config, 2, timestamp=timestamp, progress=False, workers=1)


@pytest.fixture(scope="module")
def example(example_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    folder = tmp_path_factory.mktemp("export") / "example"
    shutil.copytree(example_dir, folder)
    _mesh(load_config(folder), TS)
    return Dataset(folder, TS)


def _build_offset_dataset(out: Path) -> Path:
    """96 x 64 x 24 voxels of 8 x 8 x 40 nm at voxel offset (100, 200, 30), background below z 3."""
    volume, agglomeration = neurite_volume((96, 64, 24), seed=3)
    volume[:, :, :BACKGROUND_Z] = 0
    present = set(np.unique(volume).tolist())
    agglomeration = {k: v for k, v in agglomeration.items() if k in present}
    seg = to_cloudpath(out / "source" / "segmentation")
    write_precomputed_segmentation(
        seg, volume, (8, 8, 40), voxel_offset=OFFSET, chunk_size=(32, 32, 8)
    )
    write_agglomeration_csv(out / "agglomeration.csv", agglomeration)
    return build_graph(
        seg,
        out / "agglomeration.csv",
        out / "dataset",
        (32, 32, 8),
        created_at=OFFSET_TS - 1.0,
        max_error=12.0,
        progress=False,
    )


@pytest.fixture(scope="module")
def offset_built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small anisotropic dataset with a voxel offset, built but not meshed."""
    return _build_offset_dataset(tmp_path_factory.mktemp("offset")).parent


@pytest.fixture(scope="module")
def offset_dataset(offset_built: Path, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    folder = tmp_path_factory.mktemp("offset-meshed") / "dataset"
    shutil.copytree(offset_built, folder)
    _mesh(load_config(folder), OFFSET_TS)
    return Dataset(folder, OFFSET_TS)


# -- independent readers and references -------------------------------------------------------
def read_back(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles as libigl parses the file."""
    vertices, faces = igl.read_triangle_mesh(str(path))
    return np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64)


def vertex_set(vertices: np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(vertices, dtype=np.float32), axis=0)


def vertex_multiset(vertices: np.ndarray) -> np.ndarray:
    """Every vertex row, duplicates kept, in sorted order: shows what de-duplication merged."""
    rows = np.asarray(vertices, dtype=np.float32)
    return rows[np.lexsort(rows.T[::-1])]


def triangle_set(vertices: np.ndarray, faces: np.ndarray) -> set[tuple]:
    """Triangles as sorted coordinate triples: independent of vertex order and numbering."""
    corners = np.asarray(vertices, dtype=np.float32)[np.asarray(faces)]
    return {tuple(sorted(map(tuple, tri.tolist()))) for tri in corners}


def graphene_volume(dataset: Dataset) -> CloudVolume:
    """cloud-volume's graphene reader, offline, with the uniform draco grid the viewers use."""
    graph = open_graph(dataset.config)
    try:
        info = graph.dataset_info()
        if "uniform_draco_grid_size" not in (info.get("mesh_metadata") or {}):
            geometry = mip_geometry(graph.meta, dataset.config.watershed, dataset.config.mip)
            grid = layer2_grid(geometry.block_shape, geometry.resolution, np.zeros(3))
            info["mesh_metadata"] = {
                "uniform_draco_grid_size": grid.bin_size,
                "unsharded_mesh_dir": "dynamic",
                "max_meshed_layer": 2,
            }
        return CloudVolume(
            verify.GRAPHENE_URL.format(graph_id=graph.meta.graph_id),
            info=info,
            secrets={"token": "x"},
            progress=False,
        )
    finally:
        graph.close()


def graphene_stitched(dataset: Dataset, fragment_ids, segid: int):
    """cloud-volume's own fetch + multi-level stitch of the given fragments."""
    source = graphene_volume(dataset).mesh
    meshes = source.get_meshes_on_bypass([int(i) for i in fragment_ids])
    assert sorted(meshes) == sorted(int(i) for i in fragment_ids)
    return source.stitch_multi_level_draco_mesh_fragments(list(meshes.values()), segid)


def whole_object_surface(dataset: Dataset, root: int) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of the whole object's voxels in one piece, in world nm."""
    mask = (dataset.roots == np.uint64(root)).astype(np.uint8)
    mesher = zmesh.Mesher(tuple(dataset.resolution.tolist()))
    mesher.mesh(mask)
    mesh = mesher.get(1, reduction_factor=0, voxel_centered=False)
    vertices = np.asarray(mesh.vertices, dtype=np.float64) + dataset.offset * dataset.resolution
    return vertices, np.asarray(mesh.faces, dtype=np.int64)


def distances(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    squared, _, _ = igl.point_mesh_squared_distance(
        np.ascontiguousarray(points, dtype=np.float64),
        np.ascontiguousarray(vertices, dtype=np.float64),
        np.ascontiguousarray(faces, dtype=np.int64),
    )
    return np.sqrt(squared)


def multi_chunk_object(dataset: Dataset) -> int:
    """The largest object spanning more than one layer-2 chunk."""
    for root in dataset.objects_by_size():
        if len(dataset.l2_nodes_of(root)) > 3:
            return root
    raise AssertionError("no object spans several chunks")


# -- tests ------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["example", "offset_dataset"])
def test_export_by_point_is_what_cloudvolume_assembles(which, request, tmp_path: Path):
    example: Dataset = request.getfixturevalue(which)
    root = multi_chunk_object(example)
    point = example.point_of(root)
    out = tmp_path / "object.ply"
    report = export_mesh(example.config, out, point=point, timestamp=example.timestamp)

    assert report.node == root and report.format == "ply" and report.max_meshed_layer == 2
    assert report.supervoxel is not None and ids.layer_of(report.supervoxel) == 1
    # The fragments are every layer-2 node of the object that has a stored mesh, asked of
    # cloud-volume directly (a node with no surface has none).
    stored = graphene_volume(example).mesh.get_meshes_on_bypass(
        example.l2_nodes_of(root), allow_missing=True
    )
    assert list(report.fragments) == sorted(stored) and len(report.fragments) > 3
    assert set(report.skipped) == set(example.l2_nodes_of(root)) - set(stored)

    vertices, faces = read_back(out)
    assert (len(vertices), len(faces)) == (report.vertices, report.faces)
    reference = graphene_stitched(example, report.fragments, root)
    assert np.array_equal(vertex_multiset(vertices), vertex_multiset(reference.vertices))
    assert len(faces) == len(reference.faces)
    assert triangle_set(vertices, faces) == triangle_set(reference.vertices, reference.faces)
    # De-duplication happened: the pieces share boundary vertices that are now one.
    pieces = sum(len(DracoPy.decode(m).points) for m in _raw_fragments(example, report))
    assert len(vertices) < pieces


def _raw_fragments(dataset: Dataset, report) -> list[bytes]:
    cv = graphene_volume(dataset)
    return [
        cv.mesh.readers[2].get_data(
            [int(n)], path=cv.mesh.meta.join(cv.mesh.meta.mesh_path, "initial", "2")
        )[int(n)]
        for n in report.fragments
    ]


@pytest.mark.parametrize("which", ["example", "offset_dataset"])
def test_export_agrees_with_whole_object_marching_cubes(which, request, tmp_path: Path):
    dataset: Dataset = request.getfixturevalue(which)
    bound = dataset.config.max_error + float(np.linalg.norm(dataset.resolution))
    objects = dataset.objects_by_size()
    for root in [*objects[:3], objects[len(objects) // 2]]:
        out = tmp_path / f"{root}.ply"
        report = export_mesh(
            dataset.config, out, point=dataset.point_of(root), timestamp=dataset.timestamp
        )
        assert report.node == root
        vertices, faces = read_back(out)
        reference_vertices, reference_faces = whole_object_surface(dataset, root)
        exported_to_reference = distances(vertices, reference_vertices, reference_faces).max()
        reference_to_exported = distances(reference_vertices, vertices, faces).max()
        assert exported_to_reference <= bound, (root, exported_to_reference, bound)
        assert reference_to_exported <= bound, (root, reference_to_exported, bound)


def test_point_is_absolute_with_the_voxel_offset(offset_dataset: Dataset, tmp_path: Path):
    root = multi_chunk_object(offset_dataset)
    point = offset_dataset.point_of(root)
    assert all(p >= o for p, o in zip(point, OFFSET, strict=True))
    report = export_mesh(
        offset_dataset.config, tmp_path / "o.ply", point=point, timestamp=OFFSET_TS
    )
    assert report.node == root
    vertices, _ = read_back(tmp_path / "o.ply")
    # nm in the segmentation's world frame: inside the volume's box (give or take the draco
    # snap of half a bin), far from the origin
    snap = offset_dataset.resolution / 2
    box_start = np.asarray(OFFSET) * offset_dataset.resolution - snap
    box_stop = (np.asarray(OFFSET) + [96, 64, 24]) * offset_dataset.resolution + snap
    assert np.all(vertices >= box_start) and np.all(vertices <= box_stop)


def test_export_by_node_as_obj(example: Dataset, tmp_path: Path):
    root = multi_chunk_object(example)
    by_point = export_mesh(
        example.config, tmp_path / "p.ply", point=example.point_of(root), timestamp=TS
    )
    by_node = export_mesh(example.config, tmp_path / "n.obj", node=root, timestamp=TS)
    assert by_node.format == "obj" and by_node.fragments == by_point.fragments
    assert by_node.supervoxel is None
    text = (tmp_path / "n.obj").read_text()
    assert text.count("\nv ") == by_node.vertices and text.count("\nf ") == by_node.faces
    obj_vertices, obj_faces = read_back(tmp_path / "n.obj")
    ply_vertices, ply_faces = read_back(tmp_path / "p.ply")
    assert np.array_equal(obj_vertices, ply_vertices)  # %.9g keeps every float32 exact
    assert np.array_equal(obj_faces, ply_faces)

    # One layer-2 node: its own fragment, nothing else.
    node = by_point.fragments[0]
    one = export_mesh(example.config, tmp_path / "l2.ply", node=node, timestamp=TS)
    assert one.fragments == (node,)
    (raw,) = _raw_fragments(example, one)
    vertices, _ = read_back(tmp_path / "l2.ply")
    assert np.array_equal(vertex_set(vertices), vertex_set(DracoPy.decode(raw).points))


def test_ply_header_is_binary_little_endian(example: Dataset, tmp_path: Path):
    root = multi_chunk_object(example)
    export_mesh(example.config, tmp_path / "m.PLY", node=root, timestamp=TS)
    head = (tmp_path / "m.PLY").read_bytes()[:400]
    assert head.startswith(b"ply\nformat binary_little_endian 1.0\n")
    assert b"property list uchar int vertex_indices\nend_header\n" in head


def test_default_timestamp_is_the_meshing_one(offset_built: Path, tmp_path: Path):
    folder = tmp_path / "dataset"
    shutil.copytree(offset_built, folder)
    config = load_config(folder)
    _mesh(config, OFFSET_TS)
    graph = open_graph(config)
    custom = graph.custom_data()
    custom["mesh"] = {**custom["mesh"], "initial_ts": OFFSET_TS, "max_layer": 2}
    graph.set_custom_data(custom)
    graph.close()
    dataset = Dataset(folder, OFFSET_TS)
    root = multi_chunk_object(dataset)
    report = export_mesh(config, tmp_path / "d.obj", point=dataset.point_of(root))
    assert report.timestamp == OFFSET_TS and report.node == root and report.max_meshed_layer == 2


# -- errors -----------------------------------------------------------------------------------
def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and isinstance(exc.value, MeshingError)
    return message


def test_unknown_suffix_is_refused_before_any_work(example: Dataset, tmp_path: Path):
    with pytest.raises(ExportFormatError) as exc:
        export_mesh(example.config, tmp_path / "m.stl", node=1, timestamp=TS)
    assert ".ply or *.obj" in _one_line(exc)
    assert not list(tmp_path.iterdir())


def test_point_outside_the_volume(offset_dataset: Dataset, tmp_path: Path):
    for point in [(0, 0, 0), (100 + 96, 200, 30), (100, 200, 29)]:
        with pytest.raises(ExportError) as exc:
            export_mesh(offset_dataset.config, tmp_path / "x.ply", point=point, timestamp=OFFSET_TS)
        assert "outside the segmentation" in _one_line(exc)
        assert "[100, 200, 30]" in str(exc.value)
    assert not (tmp_path / "x.ply").exists()


def test_point_on_background(offset_dataset: Dataset, tmp_path: Path):
    point = (120, 220, 30 + BACKGROUND_Z - 1)
    with pytest.raises(ExportError) as exc:
        export_mesh(offset_dataset.config, tmp_path / "x.ply", point=point, timestamp=OFFSET_TS)
    assert "background" in _one_line(exc)


def test_unknown_and_dead_nodes(example: Dataset, tmp_path: Path):
    graph = open_graph(example.config)
    try:
        codec = graph.meta.codec
        top = graph.meta.n_layers
        before = set(graph.chunk_nodes(top, (0, 0, 0), CREATED_AT).tolist())
        after = set(graph.chunk_nodes(top, (0, 0, 0), TS).tolist())
        dead = min(before - after)
        missing = codec.node_id(2, 0, 0, 0, codec.max_segment_id(2))
        l2 = example.l2_nodes_of(multi_chunk_object(example))[0]
        supervoxel = int(graph.children([l2])[l2][0])
    finally:
        graph.close()
    out = tmp_path / "x.ply"
    with pytest.raises(ExportError) as exc:
        export_mesh(example.config, out, node=int(dead), timestamp=TS)
    assert "not alive" in _one_line(exc) and str(dead) in str(exc.value)
    for bad in [missing, 12345, (9 << 56) | 1]:
        with pytest.raises(ExportError) as exc:
            export_mesh(example.config, out, node=bad, timestamp=TS)
        assert "unknown node" in _one_line(exc)
    assert ids.layer_of(supervoxel) == 1
    with pytest.raises(ExportError) as exc:
        export_mesh(example.config, out, node=supervoxel, timestamp=TS)
    assert "supervoxel" in _one_line(exc)
    with pytest.raises(ExportError) as exc:
        export_mesh(example.config, out, timestamp=TS)
    assert "exactly one of --point" in _one_line(exc)
    assert not out.exists()


def test_nothing_meshed(offset_built: Path, tmp_path: Path):
    folder = tmp_path / "dataset"
    shutil.copytree(offset_built, folder)
    config = load_config(folder)
    point = (120, 220, 40)
    with pytest.raises(ExportError) as exc:  # no setup at all
        export_mesh(config, tmp_path / "x.ply", point=point, timestamp=OFFSET_TS)
    assert "nothing meshed" in _one_line(exc) and "setup" in str(exc.value)
    setup_meshes(config)
    with pytest.raises(ExportError) as exc:  # set up, never meshed
        export_mesh(config, tmp_path / "x.ply", point=point, timestamp=OFFSET_TS)
    assert "nothing meshed" in _one_line(exc) and "run" in str(exc.value)
    assert not (tmp_path / "x.ply").exists()


def test_corrupt_shard_is_named(offset_built: Path, tmp_path: Path):
    folder = tmp_path / "dataset"
    shutil.copytree(offset_built, folder)
    config = load_config(folder)
    _mesh(config, OFFSET_TS)
    dataset = Dataset(folder, OFFSET_TS)
    root = multi_chunk_object(dataset)
    graph = open_graph(config)
    try:
        node = dataset.l2_nodes_of(root)[0]
        name = layout.shard_key(graph.meta.codec, ids.chunk_id_of(graph.meta.codec, node))
    finally:
        graph.close()
    shard = local_path(config.mesh_cloudpath) / name
    shard.write_bytes(shard.read_bytes()[:20])
    with pytest.raises(ShardFormatError) as exc:
        export_mesh(config, tmp_path / "x.ply", point=dataset.point_of(root), timestamp=OFFSET_TS)
    assert name in _one_line(exc)
    assert not (tmp_path / "x.ply").exists()


# -- stitched layers ----------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["example", "offset"])
def stitched_dataset(request, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """The example (at TS) or the offset dataset, meshed at every layer up to the root layer."""
    pytest.importorskip("meshing_core.mesh.stitch")
    if request.param == "example":
        source, timestamp = request.getfixturevalue("example_dir"), TS
    else:
        source, timestamp = request.getfixturevalue("offset_built"), OFFSET_TS
    folder = tmp_path_factory.mktemp("stitched") / "dataset"
    shutil.copytree(source, folder)
    config = load_config(folder)
    _mesh(config, timestamp)
    for layer in range(3, config.n_layers + 1):
        mesh_layer(config, layer, timestamp=timestamp, progress=False, workers=1)
    return Dataset(folder, timestamp)


def test_export_uses_the_highest_stitched_fragments(stitched_dataset: Dataset, tmp_path: Path):
    dataset = stitched_dataset
    bound = dataset.config.max_error + float(np.linalg.norm(dataset.resolution))
    graph = open_graph(dataset.config)
    try:
        n_layers = graph.meta.n_layers
        stitched_roots = 0
        for root in dataset.objects_by_size()[:6]:
            out = tmp_path / f"{root}.ply"
            report = export_mesh(dataset.config, out, node=root, timestamp=dataset.timestamp)
            assert report.max_meshed_layer == n_layers
            layers = {ids.layer_of(f) for f in report.fragments}
            if len(dataset.l2_nodes_of(root)) > 1:
                # no layer-2 fragment is used where a stitched ancestor exists
                assert layers != {2}, (root, report.fragments)
                stitched_roots += 1
            # the fragments cover the object: every layer-2 node with a surface sits under one
            covered: set[int] = set()
            frontier = list(report.fragments)
            while frontier:
                kids = graph.children(frontier)
                covered.update(k for k in frontier if ids.layer_of(k) == 2)
                frontier = [int(c) for v in kids.values() for c in v if ids.layer_of(int(c)) >= 2]
            assert set(dataset.l2_nodes_of(root)) - covered <= set(report.skipped)

            vertices, faces = read_back(out)
            reference = graphene_stitched(dataset, report.fragments, root)
            assert np.array_equal(vertex_multiset(vertices), vertex_multiset(reference.vertices))
            assert triangle_set(vertices, faces) == triangle_set(
                reference.vertices, reference.faces
            )
            mc_vertices, mc_faces = whole_object_surface(dataset, root)
            assert distances(vertices, mc_vertices, mc_faces).max() <= bound
            assert distances(mc_vertices, vertices, faces).max() <= bound
        assert stitched_roots >= 3
    finally:
        graph.close()


def test_recorded_max_layer_is_honoured(stitched_dataset: Dataset, tmp_path: Path):
    folder = tmp_path / "dataset"
    shutil.copytree(stitched_dataset.config.source.parent, folder)
    config = load_config(folder)
    graph = open_graph(config)
    custom = graph.custom_data()
    custom["mesh"] = {**custom["mesh"], "max_layer": 2, "initial_ts": stitched_dataset.timestamp}
    graph.set_custom_data(custom)
    graph.close()
    root = multi_chunk_object(stitched_dataset)
    report = export_mesh(config, tmp_path / "two.ply", node=root)
    assert report.max_meshed_layer == 2
    assert report.fragments == tuple(
        n for n in stitched_dataset.l2_nodes_of(root) if n not in report.skipped
    )
