"""Whole objects, as a viewer assembles them, against a raw marching cubes of their voxels.

Datasets: the gala train crop (the example, meshed after its edits) and a synthetic volume of
thin tubes (8 x 8 x 40 nm voxels, tubes 2-5 voxels thick, 16 x 16 x 8 chunks: many seams).
Each object's mesh is counted as ``export-mesh`` builds it and as cloud-volume's graphene
reader reads its fragments back (``defect_support``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from defect_support import ObjectDefects, object_defects

from meshing_core.config import load_config
from meshing_core.datasets.synthetic import (
    neurite_volume,
    write_agglomeration_csv,
    write_precomputed_segmentation,
)
from meshing_core.ingest.builder import build_graph
from meshing_core.run.lifecycle import run_graph
from meshing_core.timestamps import parse_timestamp

TUBES_AT = 1700000000.0
AFTER_EDITS = parse_timestamp("2021-03-04T00:00:00Z")


@pytest.fixture(scope="module")
def gala_objects(example_from, tmp_path_factory: pytest.TempPathFactory) -> list[ObjectDefects]:
    root = example_from("gala", tmp_path_factory.mktemp("closed-gala") / "example")
    config = load_config(root)
    run_graph(config, timestamp=AFTER_EDITS, workers=1, progress=False)
    return object_defects(config, AFTER_EDITS, config.n_layers)


@pytest.fixture(scope="module")
def tube_objects(tmp_path_factory: pytest.TempPathFactory) -> list[ObjectDefects]:
    work: Path = tmp_path_factory.mktemp("closed-tubes")
    volume, agglomeration = neurite_volume((128, 128, 64), seed=3)
    source = "file://" + str(work / "source")
    write_precomputed_segmentation(source, volume, (8.0, 8.0, 40.0), chunk_size=(64, 64, 32))
    write_agglomeration_csv(work / "agglomeration.csv", agglomeration)
    build_graph(
        source, work / "agglomeration.csv", work / "out", (16, 16, 8),
        created_at=TUBES_AT - 10, progress=False,
    )  # fmt: skip
    config = load_config(work / "out" / "graph.yaml")
    run_graph(config, timestamp=TUBES_AT, workers=1, progress=False)
    return object_defects(config, TUBES_AT, config.n_layers)


def _common(objects: list[ObjectDefects]) -> None:
    assert len(objects) >= 30
    for obj in objects:
        assert obj.raw.closed, obj  # the reference: closed and manifold away from the volume
        assert obj.zero_area == 0, obj  # no stored triangle without area
        assert obj.read_back == obj.ours, obj  # cloud-volume reads what export assembles
        assert obj.off_plane == 0, obj  # whatever is left is on a seam, nowhere else


def test_gala_objects_are_closed(gala_objects) -> None:
    _common(gala_objects)
    for obj in gala_objects:
        assert obj.ours.open <= obj.raw.open, obj  # no hole, seams included
    closed = sum(obj.ours.closed for obj in gala_objects)
    assert closed >= len(gala_objects) - 2  # measured: 39 of 41 (a pinch on a seam each)


def test_thin_tube_objects_are_closed(tube_objects) -> None:
    _common(tube_objects)
    for obj in tube_objects:  # simplification flattening both sides of a seam into one plane
        assert obj.ours.nonmanifold <= obj.raw.nonmanifold, obj  # made 3 objects non-manifold
    closed = sum(obj.ours.closed for obj in tube_objects)
    assert closed >= len(tube_objects) - 2  # measured: 33 of 35 (was 30, and 3 before seams)


@pytest.mark.xfail(
    strict=True,
    reason="two seam defects left, both placed by hand (2 tube objects, 2 gala objects): a "
    "neighbour chunk's node touching two nodes of one object here is cut differently on each "
    "side of the seam (a triangular hole); and with 10 nm voxels a 6 nm draco bin stores the "
    "chunk plane and the voxel layer beside it as one plane (one non-manifold edge)",
)
def test_no_object_is_worse_than_its_raw_marching_cubes(gala_objects, tube_objects) -> None:
    for obj in gala_objects + tube_objects:
        assert obj.ours.open <= obj.raw.open and obj.ours.nonmanifold <= obj.raw.nonmanifold, obj
