"""Read our meshes back through readers we did not write: the judges of compatibility.

* tensorstore's ``neuroglancer_uint64_sharded`` kvstore (an independent C++ implementation of
  the sharded format) must return each fragment byte for byte;
* cloud-volume's graphene mesh source, built offline the way the ChunkedGraph builds it, must
  find and decode every mesh;
* cloud-volume's ``ShardingSpecification`` must put each key in the minishard we chose.

Used by the compatibility tests and by the bench / end-to-end checks.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from meshing_core.store.murmur import as_uint64
from meshing_core.store.paths import local_path
from meshing_core.store.sharding import ShardSpec

GRAPHENE_URL = "graphene://https://localhost/segmentation/table/{graph_id}"


def _local(path: str | Path) -> Path:
    found = local_path(str(path))
    if found is None:
        raise ValueError(f"{path} is not a local path: tensorstore read-back needs a local shard")
    return found


def _tensorstore_store(folder: Path, spec: Mapping[str, Any]) -> Any:
    import tensorstore as ts

    metadata = {"@type": "neuroglancer_uint64_sharded_v1", **dict(spec)}
    return ts.KvStore.open(
        {
            "driver": "neuroglancer_uint64_sharded",
            "base": "file://" + str(folder.resolve()) + "/",
            "metadata": metadata,
        }
    ).result()


def _with_standard_name(shard: Path, spec: Mapping[str, Any], work: Path) -> Path:
    """A folder where the shard carries the name tensorstore expects (``0.shard``)."""
    if ShardSpec.parse(spec).shard_bits != 0:
        raise ValueError("tensorstore read-back supports one-shard specs (shard_bits 0) only")
    if shard.is_dir():
        return shard
    os.symlink(shard.resolve(), work / "0.shard")
    return work


def read_back_tensorstore(
    shard_path_dir: str | Path, spec: Mapping[str, Any], keys: Iterable[int]
) -> dict[int, bytes]:
    """Fragments of ``keys`` read by tensorstore; keys it does not find are left out.

    ``shard_path_dir`` is a shard file (any name) or a folder already holding ``0.shard``.
    """
    with tempfile.TemporaryDirectory(prefix="ts-shard-") as tmp:
        folder = _with_standard_name(_local(shard_path_dir), spec, Path(tmp))
        store = _tensorstore_store(folder, spec)
        wanted = [int(k) for k in as_uint64(list(keys))]
        futures = {key: store.read(key.to_bytes(8, "big")) for key in wanted}
        out: dict[int, bytes] = {}
        for key, future in futures.items():
            result = future.result()
            if result.state == "value":
                out[key] = bytes(result.value)
        return out


def tensorstore_keys(shard_path_dir: str | Path, spec: Mapping[str, Any]) -> list[int]:
    """Every key tensorstore lists in the shard, sorted."""
    with tempfile.TemporaryDirectory(prefix="ts-shard-") as tmp:
        folder = _with_standard_name(_local(shard_path_dir), spec, Path(tmp))
        store = _tensorstore_store(folder, spec)
        return sorted(int.from_bytes(bytes(k), "big") for k in store.list().result())


def graphene_reader(config: Any, graph: Any) -> Any:
    """cloud-volume's graphene volume for ``graph``, offline (bypass reads need no server).

    ``config`` is accepted so callers need not know which parts are used; the graph's
    ``dataset_info`` already names the watershed and its ``mesh`` dir.
    """
    from cloudvolume import CloudVolume

    del config  # the dataset info carries the watershed path and mesh dir
    return CloudVolume(
        GRAPHENE_URL.format(graph_id=graph.meta.graph_id),
        info=graph.dataset_info(),
        secrets={"token": "x"},
        progress=False,
    )


def read_back_graphene(config: Any, graph: Any, node_ids: Iterable[int]) -> dict[int, Any]:
    """Meshes (cloud-volume ``Mesh``) of ``node_ids`` through ``get_meshes_on_bypass``."""
    cv = graphene_reader(config, graph)
    ids = [int(n) for n in node_ids]
    return {int(k): v for k, v in cv.mesh.get_meshes_on_bypass(ids).items()}


def cloudvolume_minishards(spec: Mapping[str, Any], keys: Iterable[int]) -> np.ndarray:
    """Minishard number cloud-volume computes for each key."""
    from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

    reference = ShardingSpecification.from_dict(
        {"@type": "neuroglancer_uint64_sharded_v1", **dict(spec)}
    )
    return np.array(
        [int(reference.compute_shard_location(int(k)).minishard_number) for k in keys],
        dtype=np.uint64,
    )


def minishard_disagreements(spec: Mapping[str, Any], keys: Iterable[int]) -> list[int]:
    """Keys for which our minishard number differs from cloud-volume's (empty when compatible)."""
    array = as_uint64(list(keys))
    ours = ShardSpec.parse(spec).minishard_numbers(array)
    theirs = cloudvolume_minishards(spec, array)
    return [int(k) for k in array[ours != theirs]]
