"""Id codec: ids computed by hand from the bit layout (8 layer bits, then x, y, z, then segment)."""

import numpy as np
import pytest

from meshing_core import ids

# (n_layers, spatial_bits, layer, x, y, z, segment, expected id, chunk position number)
CASES = [
    # layer 2 with 10 spatial bits: segid bits = 56 - 30 = 26
    (5, 10, 2, 1, 2, 3, 5, 0x0200_4020_0C00_0005, (1 << 20) | (2 << 10) | 3),
    (5, 10, 2, 0, 0, 0, 1, 0x0200_0000_0000_0001, 0),
    (5, 10, 2, 1023, 0, 0, 0, 0x02FF_C000_0000_0000, 1023 << 20),
    # layer 1 (supervoxels) uses the layer-2 grid bits too
    (5, 10, 1, 1, 2, 3, 5, 0x0100_4020_0C00_0005, (1 << 20) | (2 << 10) | 3),
    # layer 3 of 5: max(1, 5 - 3) = 2 bits per axis, segid bits = 50
    (5, 10, 3, 3, 1, 2, 9, 0x03D8_0000_0000_0009, (3 << 4) | (1 << 2) | 2),
    # top layer of 5: 1 bit per axis, segid bits = 53
    (5, 10, 5, 0, 0, 0, 7, 0x0500_0000_0000_0007, 0),
    (5, 10, 5, 1, 1, 1, 1, 0x05E0_0000_0000_0001, 7),
    # 8 spatial bits on a 12-layer graph: layer 2 keeps max(8, 10) = 10 bits
    (12, 8, 2, 1, 0, 0, 1, 0x0200_4000_0000_0001, 1 << 20),
]


@pytest.mark.parametrize("n_layers,bits,layer,x,y,z,seg,expected,position", CASES)
def test_node_id_layout(n_layers, bits, layer, x, y, z, seg, expected, position):
    codec = ids.IdCodec(n_layers, bits)
    node = codec.node_id(layer, x, y, z, seg)
    assert node == expected
    assert ids.layer_of(node) == layer
    assert ids.chunk_coords(codec, node) == (x, y, z)
    assert ids.segment_id(codec, node) == seg
    assert ids.chunk_position_number(codec, node) == position
    assert ids.chunk_id_of(codec, node) == codec.chunk_id(layer, x, y, z)
    assert ids.chunk_ids_of(codec, np.array([node], dtype=np.uint64), layer)[0] == node - seg


def test_bitmasks_follow_the_chunkedgraph_rule():
    assert ids.compute_bitmasks(5, 10) == {5: 1, 4: 1, 3: 2, 2: 10, 1: 10}
    assert ids.compute_bitmasks(14, 10) == {
        14: 1,
        13: 1,
        12: 2,
        11: 3,
        10: 4,
        9: 5,
        8: 6,
        7: 7,
        6: 8,
        5: 9,
        4: 10,
        3: 11,
        2: 12,
        1: 13,
    }


@pytest.mark.parametrize(
    "bounds,expected",
    [((7, 4, 4), 5), ((1, 1, 1), 2), ((2, 1, 1), 3), ((1024, 1, 1), 12), ((1025, 3, 3), 13)],
)
def test_layer_count(bounds, expected):
    assert ids.layer_count_for(bounds) == expected


def test_chunk_bounds_and_cross_layer():
    assert ids.layer_chunk_bounds((200, 100, 50), (32, 32, 16), 2) == (7, 4, 4)
    assert ids.layer_chunk_bounds((200, 100, 50), (32, 32, 16), 3) == (4, 2, 2)
    assert ids.layer_chunk_bounds((200, 100, 50), (32, 32, 16), 5) == (1, 1, 1)
    assert ids.cross_chunk_layer((0, 0, 0), (0, 0, 0)) == 2
    assert ids.cross_chunk_layer((0, 0, 0), (1, 0, 0)) == 3
    assert ids.cross_chunk_layer((1, 0, 0), (2, 0, 0)) == 4
    assert ids.cross_chunk_layer((3, 5, 0), (4, 5, 0)) == 5
    assert ids.parent_chunk((5, 3, 1), 2, 4) == (1, 0, 0)


def test_out_of_range_is_refused():
    codec = ids.IdCodec(5, 10)
    with pytest.raises(ValueError, match="unknown layer 6"):
        codec.node_id(6, 0, 0, 0, 1)
    with pytest.raises(ValueError, match="does not fit 1 bits"):
        codec.node_id(5, 2, 0, 0, 1)
    with pytest.raises(ValueError, match="segment id"):
        codec.node_id(2, 0, 0, 0, 1 << 26)
