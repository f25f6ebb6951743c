"""The synthetic neurite volume, its precomputed writers, the build progress bar and the benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cloudvolume import CloudVolume

from meshing_core.datasets.synthetic import (
    neurite_scene,
    neurite_volume,
    render,
    write_agglomeration_csv,
    write_neurite_segmentation,
    write_precomputed_segmentation,
)
from meshing_core.graph.embedded import EmbeddedGraph
from meshing_core.ingest.benchmark import measure_build
from meshing_core.ingest.builder import build_graph
from meshing_core.ingest.inputs import read_agglomeration
from meshing_core.store.paths import to_cloudpath


def test_neurite_volume_is_dense_deterministic_and_agglomerated():
    volume, agglomeration = neurite_volume((48, 40, 24), seed=3)
    assert volume.dtype == np.uint64 and volume.shape == (48, 40, 24)
    assert volume.flags.f_contiguous and volume.min() > 0
    present = set(np.unique(volume).tolist())
    assert set(agglomeration) == present
    objects = set(agglomeration.values())
    assert 1 < len(objects) < len(present)  # supervoxels are grouped into objects
    again, _ = neurite_volume((48, 40, 24), seed=3)
    np.testing.assert_array_equal(volume, again)
    other, _ = neurite_volume((48, 40, 24), seed=4)
    assert not np.array_equal(volume, other)


def test_render_of_a_box_matches_the_whole_volume():
    scene = neurite_scene((40, 32, 20), seed=1)
    whole = render(scene, (0, 0, 0), (40, 32, 20))
    part = render(scene, (8, 16, 4), (30, 32, 12))
    np.testing.assert_array_equal(part, whole[8:30, 16:32, 4:12])


def test_precomputed_writers_read_back(tmp_path: Path):
    volume, _ = neurite_volume((30, 20, 10), seed=0)
    path = to_cloudpath(tmp_path / "seg")
    write_precomputed_segmentation(
        path, volume, (4, 4, 40), voxel_offset=(5, 6, 7), chunk_size=(16, 16, 8)
    )
    cv = CloudVolume(path, progress=False)
    assert list(cv.resolution) == [4, 4, 40] and list(cv.voxel_offset) == [5, 6, 7]
    np.testing.assert_array_equal(np.asarray(cv[5:35, 6:26, 7:17][..., 0]), volume)

    streamed = to_cloudpath(tmp_path / "streamed")
    agglomeration = write_neurite_segmentation(
        streamed, (30, 20, 10), seed=0, chunk_size=(8, 8, 8), block=(16, 8, 8)
    )
    full, expected = neurite_volume((30, 20, 10), seed=0)
    np.testing.assert_array_equal(np.asarray(CloudVolume(streamed)[:, :, :][..., 0]), full)
    assert agglomeration == expected
    write_agglomeration_csv(tmp_path / "agg.csv", agglomeration)
    table = read_agglomeration(tmp_path / "agg.csv")
    assert table.supervoxels.tolist() == sorted(agglomeration)


def test_synthetic_build_has_one_root_per_object_and_shows_progress(tmp_path: Path, capsys):
    volume, agglomeration = neurite_volume((64, 48, 32), seed=2)
    seg = to_cloudpath(tmp_path / "seg")
    write_precomputed_segmentation(seg, volume, (8, 8, 8))
    write_agglomeration_csv(tmp_path / "agg.csv", agglomeration)
    build_graph(seg, tmp_path / "agg.csv", tmp_path / "out", (16, 16, 16), created_at=5.0)
    assert "build-graph chunks" in capsys.readouterr().err
    graph = EmbeddedGraph(tmp_path / "out" / "graph.sqlite")
    top = graph.meta.n_layers
    assert len(graph.chunk_nodes(top, (0, 0, 0), 5.0)) == len(set(agglomeration.values()))


def test_measure_build_reports_time_and_memory(tmp_path: Path):
    result = measure_build(tmp_path, shape=(64, 64, 32), chunk_size=(32, 32, 16))
    assert result["build_s"] > 0 and result["build_peak_rss_mib"] > 0
    assert (tmp_path / "out" / "graph.yaml").exists()
