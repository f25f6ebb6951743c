"""The example dataset: the gala FIB-SEM train crop as a ChunkedGraph with two edits.

Inputs written under ``out/source/``: the supervoxels (train-ws) as a precomputed layer, the
agglomeration (each supervoxel's majority proofread train-gt object, ignoring gt 0 when another
label exists; supervoxels with only 0 stay their own object) and two edits: at T1 a merge of the
two supervoxels of different objects with the largest contact across a layer-2 chunk face, at T2
the split of the same pair, which undoes it with new ids. The crop's voxel size is not
recorded; 10 x 10 x 10 nm is assumed. Without the gala files (they live beside the repository,
in ``../shared/data/gala``) a synthetic volume of the same size is used, with a warning.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from meshing_core.datasets.synthetic import (
    neurite_volume,
    write_agglomeration_csv,
    write_precomputed_segmentation,
)
from meshing_core.ingest.builder import _check_out, build_graph
from meshing_core.store.paths import to_cloudpath
from meshing_core.timestamps import format_timestamp, parse_timestamp

log = logging.getLogger(__name__)

GALA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gala"
RESOLUTION = (10.0, 10.0, 10.0)  # assumed: the crop's files carry no voxel size
CHUNK_SIZE = (32, 32, 16)
EXAMPLE_NAME = "example"  # the same graph name (hence DAG id mesh_example) from either source
CREATED_AT = parse_timestamp("2021-03-01T00:00:00Z")
MERGE_AT = parse_timestamp("2021-03-02T00:00:00Z")
SPLIT_AT = parse_timestamp("2021-03-03T00:00:00Z")


def _load(name: str) -> np.ndarray:
    import h5py

    with h5py.File(GALA / name, "r") as handle:
        stack = handle["stack"][()]
    return np.asfortranarray(stack.transpose(2, 1, 0))  # files are (z, y, x)


def majority_objects(supervoxels: np.ndarray, truth: np.ndarray) -> dict[int, int]:
    """Each supervoxel's most frequent nonzero truth label (ties: the smallest label)."""
    sv = supervoxels.ravel().astype(np.uint64)
    gt = truth.ravel().astype(np.uint64)
    keep = (gt != 0) & (sv != 0)
    pairs, counts = np.unique(np.stack([sv[keep], gt[keep]], axis=1), axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))
    pairs = pairs[order]
    first = np.concatenate([[True], pairs[1:, 0] != pairs[:-1, 0]])
    return dict(zip(pairs[first, 0].tolist(), pairs[first, 1].tolist(), strict=True))


def _object_of(agglomeration: dict[int, int], supervoxels: np.ndarray) -> np.ndarray:
    keys = np.array(sorted(agglomeration), dtype=np.uint64)
    values = np.array([agglomeration[k] for k in keys.tolist()], dtype=np.uint64)
    pos = np.searchsorted(keys, supervoxels).clip(0, max(keys.size - 1, 0))
    listed = keys[pos] == supervoxels
    # unlisted supervoxels are their own object: keep them apart from listed ids
    return np.where(listed, values[pos], supervoxels + np.uint64(1 << 62))


def pick_merge_pair(
    volume: np.ndarray, agglomeration: dict[int, int], chunk_size=CHUNK_SIZE
) -> tuple[int, int]:
    """The two supervoxels of different (listed) objects with the largest contact on a chunk face."""
    best: dict[tuple[int, int], int] = {}
    for axis in range(3):
        for face in range(chunk_size[axis], volume.shape[axis], chunk_size[axis]):
            a = volume.take(face - 1, axis=axis).ravel()
            b = volume.take(face, axis=axis).ravel()
            oa, ob = _object_of(agglomeration, a), _object_of(agglomeration, b)
            keep = (oa != ob) & (oa < np.uint64(1 << 62)) & (ob < np.uint64(1 << 62))
            lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
            pairs, counts = np.unique(np.stack([lo, hi], axis=1), axis=0, return_counts=True)
            for (p, q), c in zip(pairs.tolist(), counts.tolist(), strict=True):
                best[(p, q)] = best.get((p, q), 0) + c
    if not best:
        raise ValueError("no two objects touch across a chunk face")
    (a, b), _ = min(best.items(), key=lambda item: (-item[1], item[0]))
    return a, b


def build_example(out: Path, progress: bool = True) -> Path:
    """Build the example dataset under ``out``; return ``out/graph.yaml``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source = out / "source"
    seg_path = to_cloudpath(source / "segmentation")
    _check_out(out.resolve(), seg_path)  # before touching anything under out
    if (GALA / "train-ws.lzf.h5").exists():
        volume = _load("train-ws.lzf.h5").astype(np.uint64)
        agglomeration = majority_objects(volume, _load("train-gt.lzf.h5"))
        source_name = "gala train crop"
    else:
        log.warning(
            "gala data not found at %s: building the example from a synthetic volume instead", GALA
        )
        volume, agglomeration = neurite_volume((200, 100, 50), seed=0)
        source_name = "synthetic neurites (gala crop not found)"
    log.info("example source: %s", source_name)
    source.mkdir(parents=True, exist_ok=True)
    write_precomputed_segmentation(seg_path, volume, RESOLUTION, chunk_size=(64, 64, 64))
    write_agglomeration_csv(source / "agglomeration.csv", agglomeration)
    a, b = pick_merge_pair(volume, agglomeration)
    edits = [
        {"timestamp": format_timestamp(MERGE_AT), "op": "merge", "supervoxels": [a, b]},
        {"timestamp": format_timestamp(SPLIT_AT), "op": "split", "supervoxels": [a, b]},
    ]
    (source / "edits.jsonl").write_text("".join(json.dumps(e) + "\n" for e in edits))
    del volume
    return build_graph(
        seg_path,
        source / "agglomeration.csv",
        out,
        CHUNK_SIZE,
        edits=source / "edits.jsonl",
        created_at=CREATED_AT,
        name=EXAMPLE_NAME,
        progress=progress,
    )
