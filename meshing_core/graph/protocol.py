"""What a mesher needs from a ChunkedGraph: a few queries, every one taking a timestamp.

Backends (the embedded SQLite file, a PyChunkedGraph adapter) implement ``ChunkedGraphReader``;
meshing code depends on nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import numpy as np

from meshing_core import ids


@dataclass(frozen=True)
class GraphMeta:
    """Geometry and id layout of a graph. Voxel quantities are at the graph's base mip (0)."""

    graph_id: str
    n_layers: int
    spatial_bits: int
    chunk_size: tuple[int, int, int]
    voxel_offset: tuple[int, int, int]
    volume_size: tuple[int, int, int]
    resolution: tuple[float, float, float]

    @cached_property
    def codec(self) -> ids.IdCodec:
        return ids.IdCodec(self.n_layers, self.spatial_bits)

    @property
    def root_layer(self) -> int:
        return self.n_layers

    def check_layer(self, layer: int, lowest: int = 2) -> None:
        if not lowest <= layer <= self.n_layers:
            raise ValueError(
                f"unknown layer {layer}: this graph has layers {lowest}..{self.n_layers}"
            )

    def layer_chunk_bounds(self, layer: int) -> tuple[int, int, int]:
        """Chunks per axis at ``layer`` (layer 1 has the layer-2 grid)."""
        return ids.layer_chunk_bounds(self.volume_size, self.chunk_size, max(layer, 2))

    def chunk_voxel_box(self, layer: int, coords: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Absolute [start, stop) voxels of a chunk at base mip, clipped to the volume."""
        span = np.asarray(self.chunk_size, dtype=np.int64) * ids.FANOUT ** (max(layer, 2) - 2)
        offset = np.asarray(self.voxel_offset, dtype=np.int64)
        start = offset + np.asarray(coords, dtype=np.int64) * span
        stop = np.minimum(start + span, offset + np.asarray(self.volume_size, dtype=np.int64))
        return start, stop

    def chunk_id(self, layer: int, coords: Sequence[int]) -> int:
        return self.codec.chunk_id(layer, *(int(c) for c in coords))


class ChunkedGraphReader(Protocol):
    """The queries a mesher makes. Timestamps are float Unix seconds (UTC)."""

    meta: GraphMeta

    def l2_ids(self, supervoxels: np.ndarray, timestamp: float) -> np.ndarray:
        """Layer-2 parent of each supervoxel at ``timestamp`` (same shape; 0 stays 0)."""
        ...

    def chunk_nodes(self, layer: int, coords: Sequence[int], timestamp: float) -> np.ndarray:
        """Sorted ids of the nodes of one chunk alive at ``timestamp``."""
        ...

    def children(self, node_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Children of each node (a node's children never change; edits make new nodes)."""
        ...

    def ancestors(self, node_ids: np.ndarray, layer: int, timestamp: float) -> np.ndarray:
        """Per node, its highest ancestor at a layer <= ``layer`` at ``timestamp`` (or itself).

        Parents may skip layers, so this is the node that stands for the connected component
        of ``node`` inside its layer-``layer`` chunk.
        """
        ...

    def roots(self, node_ids: np.ndarray, timestamp: float) -> np.ndarray:
        """Root (top-layer ancestor) of each node at ``timestamp``."""
        ...

    def max_chunk_node_count(self, layer: int) -> int:
        """Largest number of nodes any chunk of ``layer`` holds over the graph's whole history."""
        ...

    def node_counts(self, timestamp: float) -> dict[int, int]:
        """Nodes alive at ``timestamp`` per layer."""
        ...

    def history(self) -> list[float]:
        """Timestamps at which the graph changed: the base build, then each edit."""
        ...

    def custom_data(self) -> dict[str, Any]:
        """The graph's custom data (holds the ``mesh`` block the viewers read)."""
        ...

    def set_custom_data(self, data: dict[str, Any]) -> None: ...

    def dataset_info(self) -> dict[str, Any]:
        """The ``info`` cloud-volume's graphene reader takes (segmentation info + graph block)."""
        ...

    def close(self) -> None:
        """Release the backend's connections; the reader is unusable afterwards."""
        ...
