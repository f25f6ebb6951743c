"""Chunk ids: the layer in the top ``LAYER_ID_BITS`` bits, then x, y, z of ``bitmasks[layer]`` bits.

A chunk id is the id of the chunk's segment 0; a node id adds its segment id in the low bits.
"""

from collections.abc import Iterable, Sequence

import numpy as np


def _layer_shift(meta) -> int:
    return 64 - meta.graph_config.LAYER_ID_BITS


def _axis_shifts(meta, layer: int) -> tuple[int, int, int, int]:
    """(bits per axis, x shift, y shift, z shift) of ``layer``."""
    bits = meta.bitmasks[layer]
    x_shift = _layer_shift(meta) - bits
    return bits, x_shift, x_shift - bits, x_shift - 2 * bits


def get_chunks_boundary(voxel_boundary, chunk_size) -> np.ndarray:
    """Chunks per axis needed to cover ``voxel_boundary`` voxels."""
    return np.ceil(voxel_boundary / chunk_size).astype(int)


def get_chunk_layer(meta, node_or_chunk_id) -> int:
    """Layer of a node or chunk id."""
    return int(int(node_or_chunk_id) >> _layer_shift(meta))


def get_chunk_layers(meta, node_or_chunk_ids: Sequence) -> np.ndarray:
    """Layers of many node or chunk ids (an int array)."""
    if len(node_or_chunk_ids) == 0:
        return np.array([], dtype=int)
    return np.array(node_or_chunk_ids, dtype=int) >> _layer_shift(meta)


def get_chunk_coordinates(meta, node_or_chunk_id) -> np.ndarray:
    """x, y, z chunk coordinates of a node or chunk id (at its own layer)."""
    bits, *shifts = _axis_shifts(meta, get_chunk_layer(meta, node_or_chunk_id))
    value = int(node_or_chunk_id)
    mask = (1 << bits) - 1
    return np.array([(value >> shift) & mask for shift in shifts])


def get_chunk_coordinates_multiple(meta, ids: np.ndarray) -> np.ndarray:
    """Coordinates of many ids of one layer, as an (n, 3) array."""
    if not len(ids):
        return np.array([])
    bits, *shifts = _axis_shifts(meta, get_chunk_layer(meta, ids[0]))
    values = np.array(ids, dtype=int)
    mask = (1 << bits) - 1
    return np.column_stack([(values >> shift) & mask for shift in shifts])


def get_chunk_id(
    meta,
    node_id=None,
    layer: int | None = None,
    x: int | None = None,
    y: int | None = None,
    z: int | None = None,
) -> np.uint64:
    """The chunk id of ``node_id``, or of chunk (x, y, z) at ``layer``."""
    assert node_id is not None or all(v is not None for v in (layer, x, y, z))
    if node_id is not None:
        layer = get_chunk_layer(meta, node_id)
        seg_bits = _layer_shift(meta) - 3 * meta.bitmasks[layer]
        return np.uint64((int(node_id) >> seg_bits) << seg_bits)
    return _compute_chunk_id(meta, layer, x, y, z)


def _compute_chunk_id(meta, layer: int, x: int, y: int, z: int) -> np.uint64:
    bits, x_shift, y_shift, z_shift = _axis_shifts(meta, layer)
    limit = 2**bits
    if not (x < limit and y < limit and z < limit):
        raise ValueError(
            f"Coordinate is out of range layer: {layer} bits/dim {bits}. "
            f"[{x}, {y}, {z}]; max = {limit}."
        )
    value = (
        (int(layer) << _layer_shift(meta))
        | (int(x) << x_shift)
        | (int(y) << y_shift)
        | (int(z) << z_shift)
    )
    return np.uint64(value)


def get_chunk_ids_from_coords(meta, layer: int, coords: np.ndarray) -> np.ndarray:
    """Chunk ids of many (x, y, z) coordinates at ``layer``."""
    coords = np.array(coords, dtype=np.uint64).reshape(-1, 3)
    _, x_shift, y_shift, z_shift = _axis_shifts(meta, layer)
    result = np.full(len(coords), np.uint64(layer) << np.uint64(_layer_shift(meta)), np.uint64)
    for column, shift in zip(range(3), (x_shift, y_shift, z_shift), strict=True):
        result |= coords[:, column] << np.uint64(shift)
    return result


def get_chunk_ids_from_node_ids(meta, ids: Iterable) -> np.ndarray:
    """Chunk ids of many node ids (any layers)."""
    if len(ids) == 0:
        return np.array([], dtype=np.uint64)
    layers = get_chunk_layers(meta, ids)
    seg_bits = _layer_shift(meta) - 3 * np.array([meta.bitmasks[int(layer)] for layer in layers])
    values = np.array(ids, dtype=int)
    return np.array((values >> seg_bits) << seg_bits, dtype=np.uint64)
