"""ChunkedGraph node / chunk id codec.

A node id is 64 bits: the top ``LAYER_ID_BITS`` hold the layer, then x, y, z chunk coordinates
of ``bitmasks[layer]`` bits each, then the segment id in the remaining low bits. This module
reproduces that layout exactly (it is what cloud-volume, neuroglancer and the ChunkedGraph
decode), so ids written here are read correctly by all of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

LAYER_ID_BITS = 8
FANOUT = 2
DEFAULT_SPATIAL_BITS = 10
_LAYER_SHIFT = 64 - LAYER_ID_BITS
_BELOW_LAYER_MASK = (1 << _LAYER_SHIFT) - 1  # 0x00FFFFFFFFFFFFFF


def layer_count_for(layer2_chunk_bounds: Sequence[int], fanout: int = FANOUT) -> int:
    """Number of layers: ceil(log_fanout(max chunks per axis at layer 2)) + 2."""
    largest = max(int(b) for b in layer2_chunk_bounds)
    if largest < 1:
        raise ValueError(f"layer-2 chunk bounds must be positive, got {list(layer2_chunk_bounds)}")
    levels = 0
    while fanout**levels < largest:  # integer ceil(log) without float rounding surprises
        levels += 1
    return levels + 2


def compute_bitmasks(n_layers: int, spatial_bits: int = DEFAULT_SPATIAL_BITS) -> dict[int, int]:
    """Bits per chunk coordinate for each layer 1..n_layers (ChunkedGraph rule)."""
    masks: dict[int, int] = {}
    for layer in range(n_layers, 0, -1):
        bits = max(1, n_layers - layer)
        if layer in (1, 2):
            bits = max(spatial_bits, bits)
        masks[layer] = bits
    return masks


@dataclass(frozen=True)
class IdCodec:
    """Encodes and decodes node and chunk ids of one graph (its layer count and spatial bits)."""

    n_layers: int
    spatial_bits: int = DEFAULT_SPATIAL_BITS

    def __post_init__(self) -> None:
        if not 2 <= self.n_layers < (1 << LAYER_ID_BITS):
            raise ValueError(f"layer count must be in 2..255, got {self.n_layers}")
        for layer, bits in self.bitmasks.items():
            if 3 * bits >= _LAYER_SHIFT:
                raise ValueError(
                    f"layer {layer} uses {bits} bits per axis: no room for segment ids"
                )

    @cached_property
    def bitmasks(self) -> dict[int, int]:
        return compute_bitmasks(self.n_layers, self.spatial_bits)

    def check_layer(self, layer: int) -> None:
        if layer not in self.bitmasks:
            raise ValueError(f"unknown layer {layer}: this graph has layers 1..{self.n_layers}")

    def segid_bits(self, layer: int) -> int:
        self.check_layer(layer)
        return _LAYER_SHIFT - 3 * self.bitmasks[layer]

    def max_segment_id(self, layer: int) -> int:
        return (1 << self.segid_bits(layer)) - 1

    def chunk_id(self, layer: int, x: int, y: int, z: int) -> int:
        """Chunk id: a node id with segment id 0."""
        return self.node_id(layer, x, y, z, 0)

    def node_id(self, layer: int, x: int, y: int, z: int, segment_id: int) -> int:
        self.check_layer(layer)
        bits = self.bitmasks[layer]
        limit = 1 << bits
        if not (0 <= x < limit and 0 <= y < limit and 0 <= z < limit):
            raise ValueError(f"chunk ({x}, {y}, {z}) does not fit {bits} bits at layer {layer}")
        if not 0 <= segment_id <= self.max_segment_id(layer):
            raise ValueError(f"segment id {segment_id} does not fit layer {layer}")
        seg_bits = self.segid_bits(layer)
        return (
            (layer << _LAYER_SHIFT)
            | (x << (seg_bits + 2 * bits))
            | (y << (seg_bits + bits))
            | (z << seg_bits)
            | segment_id
        )


def layer_of(node_id: int) -> int:
    """Layer of a node or chunk id (top 8 bits)."""
    return int(node_id) >> _LAYER_SHIFT


def layers_of(node_ids: np.ndarray) -> np.ndarray:
    return (np.asarray(node_ids, dtype=np.uint64) >> np.uint64(_LAYER_SHIFT)).astype(np.int64)


def _bits_for(codec: IdCodec, node_id: int) -> tuple[int, int]:
    layer = layer_of(node_id)
    return codec.bitmasks[layer], codec.segid_bits(layer)


def chunk_coords(codec: IdCodec, node_id: int) -> tuple[int, int, int]:
    """Chunk x, y, z of a node id (at its own layer)."""
    bits, seg_bits = _bits_for(codec, node_id)
    mask = (1 << bits) - 1
    nid = int(node_id)
    return (
        (nid >> (seg_bits + 2 * bits)) & mask,
        (nid >> (seg_bits + bits)) & mask,
        (nid >> seg_bits) & mask,
    )


def segment_id(codec: IdCodec, node_id: int) -> int:
    _, seg_bits = _bits_for(codec, node_id)
    return int(node_id) & ((1 << seg_bits) - 1)


def chunk_id_of(codec: IdCodec, node_id: int) -> int:
    """Chunk id of a node: the node id with its segment bits zeroed."""
    _, seg_bits = _bits_for(codec, node_id)
    return (int(node_id) >> seg_bits) << seg_bits


def chunk_position_number(codec: IdCodec, node_id: int) -> int:
    """The number used in shard file names: ``(id & 0x00FF..FF) >> segid_bits(layer)``."""
    _, seg_bits = _bits_for(codec, node_id)
    return (int(node_id) & _BELOW_LAYER_MASK) >> seg_bits


def chunk_ids_of(codec: IdCodec, node_ids: np.ndarray, layer: int) -> np.ndarray:
    """Vectorised chunk ids for node ids that all live at ``layer``."""
    shift = np.uint64(codec.segid_bits(layer))
    return (np.asarray(node_ids, dtype=np.uint64) >> shift) << shift


def cross_chunk_layer(a: Sequence[int], b: Sequence[int], fanout: int = FANOUT) -> int:
    """Lowest layer whose chunk holds both layer-2 chunks ``a`` and ``b`` (2 when a == b)."""
    if fanout != 2:
        raise NotImplementedError("only fanout 2 is supported")
    levels = max((int(p) ^ int(q)).bit_length() for p, q in zip(a, b, strict=True))
    return levels + 2


def parent_chunk(coords: Sequence[int], from_layer: int, to_layer: int) -> tuple[int, int, int]:
    """Chunk coordinates at ``to_layer`` of the chunk at ``from_layer`` (fanout 2)."""
    shift = to_layer - from_layer
    if shift < 0:
        raise ValueError(f"layer {to_layer} is below layer {from_layer}")
    x, y, z = (int(c) >> shift for c in coords)
    return x, y, z


def layer_chunk_bounds(
    volume_size: Sequence[int], chunk_size: Sequence[int], layer: int, fanout: int = FANOUT
) -> tuple[int, int, int]:
    """Chunks per axis at ``layer``: ceil(voxels / (chunk_size * fanout**(layer - 2)))."""
    scale = fanout ** (layer - 2)
    x, y, z = (
        math.ceil(int(v) / (int(c) * scale)) for v, c in zip(volume_size, chunk_size, strict=True)
    )
    return x, y, z
