"""Segment and node ids within a chunk."""

import numpy as np

from ..chunks import utils as chunk_utils


def get_segment_id_limit(meta, node_or_chunk_id) -> np.uint64:
    """Largest segment id a chunk of this id's layer can hold."""
    layer = chunk_utils.get_chunk_layer(meta, node_or_chunk_id)
    seg_bits = 64 - meta.graph_config.LAYER_ID_BITS - 3 * meta.bitmasks[layer]
    return np.uint64(2**seg_bits - 1)


def get_segment_id(meta, node_id):
    """The segment id (low bits) of a node id."""
    return node_id & get_segment_id_limit(meta, node_id)


def get_node_id(meta, segment_id, chunk_id=None, layer=None, x=None, y=None, z=None):
    """Node id from a segment id and a chunk id, or from a segment id and layer + coordinates."""
    if chunk_id is None:
        chunk_id = chunk_utils.get_chunk_id(meta, layer=layer, x=x, y=y, z=z)
    return chunk_id | segment_id
