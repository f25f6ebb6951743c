"""Checks a layer's work must pass before any chunk is touched, each a one-line error.

The layer and chunk range must exist, the config must match the graph and the mesh dir's info
and custom data (written by ``setup``), and the timestamp must not precede the graph. The driver
of a batch runs them once, and so does every process preparing its chunk context, so a worker
on another machine refuses bad input as the local pool does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

from meshing_core.config import GraphConfig
from meshing_core.errors import MeshingError
from meshing_core.graph.protocol import GraphMeta
from meshing_core.run.records import chunk_index, chunk_order, chunk_total
from meshing_core.run.setup import static_mesh_block
from meshing_core.store import files, layout
from meshing_core.store.sharding import ShardFormatError, ShardSpec
from meshing_core.timestamps import format_timestamp

MESH_INFO = layout.MESH_INFO
Coords = tuple[int, int, int]


class LayerRunError(MeshingError):
    """A layer run that cannot start: bad layer, chunk range, config or mesh info."""


def check_layer(meta: GraphMeta, layer: int) -> None:
    if not 2 <= int(layer) <= meta.n_layers:
        raise LayerRunError(
            f"unknown layer {layer}: this graph has mesh layers 2..{meta.n_layers}; pick one of them"
        )


def chunk_range(
    meta: GraphMeta,
    layer: int,
    chunk_start: Sequence[int] | None = None,
    chunk_end: Sequence[int] | None = None,
) -> tuple[Coords, Coords]:
    """[start, end) chunk coordinates, defaulting to the whole layer; checked against its bounds."""
    bounds = tuple(int(b) for b in meta.layer_chunk_bounds(layer))
    start = (0, 0, 0) if chunk_start is None else tuple(int(c) for c in chunk_start)
    end = bounds if chunk_end is None else tuple(int(c) for c in chunk_end)
    if len(start) != 3 or len(end) != 3:
        raise LayerRunError(f"chunk start and end need three coordinates, got {start} and {end}")
    inside = all(0 <= s < e <= b for s, e, b in zip(start, end, bounds, strict=True))
    if not inside:
        raise LayerRunError(
            f"chunk range {list(start)}..{list(end)} is outside layer {layer}'s bounds "
            f"[0, 0, 0]..{list(bounds)} (end exclusive): pick start < end within them"
        )
    return start, end  # type: ignore[return-value]


def iter_chunks(start: Coords, end: Coords) -> Iterator[Coords]:
    """Chunks of a range in a fixed order (x outermost)."""
    yield from itertools.product(*(range(s, e) for s, e in zip(start, end, strict=True)))


def select_chunks(
    meta: GraphMeta,
    layer: int,
    start: Coords,
    end: Coords,
    chunk_indices: Sequence[int] | None = None,
) -> list[Coords]:
    """Chunks of the box [start, end), limited to an index range of the layer's chunk order."""
    if chunk_indices is None:
        return list(iter_chunks(start, end))
    total = chunk_total(meta, layer)
    first, stop = (int(i) for i in chunk_indices)
    if not 0 <= first < stop <= total:
        raise LayerRunError(
            f"chunk index range {first}..{stop} is outside layer {layer}'s chunks 0..{total} "
            "(stop exclusive): pick 0 <= start < stop <= the layer's chunk count"
        )
    whole = start == (0, 0, 0) and end == tuple(int(b) for b in meta.layer_chunk_bounds(layer))
    if whole:
        return list(chunk_order(meta, layer, first, stop))
    # walk the box's (x, y) lines clipped to the range: O(box lines), not O(range)
    chunks: list[Coords] = []
    for x in range(start[0], end[0]):
        for y in range(start[1], end[1]):
            line = chunk_index(meta, layer, (x, y, 0))
            z0, z1 = max(start[2], first - line), min(end[2], stop - line)
            chunks.extend((x, y, z) for z in range(z0, z1))
    return chunks


def read_mesh_info(config: GraphConfig) -> dict[str, Any]:
    """The mesh info written by ``setup``; a one-line error if it is missing or broken."""
    where = f"{config.mesh_cloudpath.rstrip('/')}/{MESH_INFO}"
    setup_cmd = f"`python -m meshing_core setup --graph {config.source}`"
    try:
        info = files.read_json(config.mesh_cloudpath, MESH_INFO)
    except ValueError as exc:
        raise LayerRunError(f"mesh info {where} is not JSON: re-run {setup_cmd}") from exc
    except Exception as exc:  # noqa: BLE001 - unreachable storage is reported, not crashed on
        raise LayerRunError(f"cannot read mesh info {where} ({type(exc).__name__})") from exc
    if info is None:
        raise LayerRunError(f"mesh info {where} not found: run {setup_cmd} first")
    if not isinstance(info, dict):
        raise LayerRunError(f"mesh info {where} is not a JSON object: re-run setup")
    return info


def check_mesh_info(
    info: dict[str, Any], config: GraphConfig, block_shape: Sequence[int], layer: int
) -> dict[str, Any]:
    """The layer's sharding spec, after checking the mesh info matches the config."""
    where = f"{config.mesh_cloudpath.rstrip('/')}/{MESH_INFO}"
    if info.get("mip") is not None and int(info["mip"]) != int(config.mip):
        raise LayerRunError(
            f"mesh info {where} says mip {info['mip']} but {config.source} says mesh.mip "
            f"{config.mip}: fix graph.yaml or re-run setup into an empty mesh dir"
        )
    want = [int(v) for v in block_shape]
    have = info.get("chunk_size")
    if have is not None and [int(v) for v in have] != want:
        raise LayerRunError(
            f"mesh info {where} has chunk_size {list(have)} but {config.source} gives {want} at "
            f"mip {config.mip}: the mesh dir belongs to another config; re-run setup"
        )
    spec = (info.get("sharding") or {}).get(str(layer))
    if not isinstance(spec, dict):
        raise LayerRunError(
            f"mesh info {where} has no sharding spec for layer {layer}: re-run setup"
        )
    try:
        ShardSpec.parse(spec)
    except ShardFormatError as exc:
        raise LayerRunError(
            f"mesh info {where}: layer {layer}'s {exc}: re-run "
            f"`python -m meshing_core setup --graph {config.source}` (with --reset if shards exist)"
        ) from exc
    return spec


def check_timestamp(history: Sequence[float], timestamp: float) -> None:
    """Refuse a time before the graph existed: every chunk would be empty and lose its shard."""
    if history and float(timestamp) < min(float(t) for t in history):
        created = format_timestamp(min(float(t) for t in history))
        raise LayerRunError(
            f"timestamp {format_timestamp(float(timestamp))} is before the graph was created "
            f"({created}): give a timestamp at or after {created}"
        )


def check_custom_data(custom: dict[str, Any], config: GraphConfig) -> None:
    """The graph's ``mesh`` custom data (written by setup) must describe this config's meshes.

    Viewers find and read the meshes through it, so meshing with other settings than it names
    would publish meshes nobody can locate or trust.
    """
    setup_cmd = f"`python -m meshing_core setup --graph {config.source}`"
    stored = custom.get("mesh")
    if not isinstance(stored, dict) or not stored:
        raise LayerRunError(f"the graph's custom data has no mesh block: run {setup_cmd} first")
    want = static_mesh_block(config)
    for field in ("dir", "mip", "max_error"):
        have = stored.get(field)
        try:
            same = have is not None and (
                float(have) == float(want[field]) if field != "dir" else have == want[field]
            )
        except (TypeError, ValueError):
            same = False
        if not same:
            raise LayerRunError(
                f"the graph's custom data has mesh.{field} {have!r} but {config.source} says "
                f"{want[field]!r}: re-run {setup_cmd} (with --reset if shards exist)"
            )


def check_workers(workers: int | None) -> None:
    if workers is not None and int(workers) < 1:
        raise LayerRunError(f"--workers must be >= 1 (got {workers})")


def check_config(config: GraphConfig, meta: GraphMeta) -> None:
    if tuple(int(c) for c in config.chunk_size) != tuple(meta.chunk_size):
        raise LayerRunError(
            f"{config.source} says chunk_size {list(config.chunk_size)} but the graph has "
            f"{list(meta.chunk_size)}: fix graph.yaml"
        )
