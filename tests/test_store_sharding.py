"""The sharded-format writer and reader: hashing, layout, determinism, corrupt input."""

from __future__ import annotations

import io
import random

import mmh3
import numpy as np
import pytest
from cloudvolume.datasource.precomputed.sharding import (
    ShardingSpecification,
    compute_shard_params_for_hashed,
)
from cloudvolume.datasource.precomputed.sharding import ShardReader as CloudVolumeShardReader

from meshing_core.errors import MeshingError
from meshing_core.store.murmur import murmurhash3_x86_128_low64, murmurhash3_x86_128_low64_one
from meshing_core.store.sharding import (
    ShardFormatError,
    ShardReader,
    ShardSpec,
    ShardWriter,
    bytes_source,
    encode_shard,
    fragment_order,
    mesh_shard_spec,
    minishard_bits_for,
    read_shard_fragment,
)

EDGE_KEYS = [0, 1, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1]


def random_fragments(n: int, seed: int) -> dict[int, bytes]:
    rng = np.random.default_rng(seed)
    keys = {int(k) for k in rng.integers(1, 2**63, n, dtype=np.uint64)}
    return {k: rng.bytes(int(rng.integers(0, 200))) for k in keys}


def disassemble_with_cloudvolume(shard: bytes, spec: dict) -> dict[int, bytes]:
    reader = CloudVolumeShardReader(None, None, ShardingSpecification.from_dict(spec))
    return {int(k): v for k, v in reader.disassemble_shard(shard).items()}


def test_hash_matches_mmh3_reference_for_random_and_edge_keys():
    rng = np.random.default_rng(7)
    keys = np.concatenate(
        [
            rng.integers(0, 2**64 - 1, 2000, dtype=np.uint64, endpoint=True),
            np.array(EDGE_KEYS, dtype=np.uint64),
        ]
    )
    ours = murmurhash3_x86_128_low64(keys)
    reference = [
        mmh3.hash64(int(k).to_bytes(8, "little"), seed=0, x64arch=False, signed=False)[0]
        for k in keys
    ]
    assert ours.tolist() == reference
    assert [murmurhash3_x86_128_low64_one(int(k)) for k in keys] == reference


@pytest.mark.parametrize("bits", [0, 1, 3, 6, 9, 12])
def test_minishard_numbers_agree_with_cloudvolume(bits):
    spec = mesh_shard_spec(bits)
    reference = ShardingSpecification.from_dict(spec)
    keys = list(random_fragments(500, bits)) + EDGE_KEYS
    ours = ShardSpec.parse(spec).minishard_numbers(keys).tolist()
    theirs = [int(reference.compute_shard_location(k).minishard_number) for k in keys]
    assert ours == theirs


@pytest.mark.parametrize(
    ("nodes", "bits"),
    [(0, 0), (1, 0), (1365, 0), (1366, 1), (2730, 1), (2731, 2), (10_000, 3), (1_000_000, 10)],
)
def test_minishard_bits_for_node_counts(nodes, bits):
    assert minishard_bits_for(nodes) == bits


def test_minishard_bits_match_igneous_while_one_shard_suffices():
    # igneous' rule gives shard_bits 0 below 512 minishards of ~1365 keys; there we must agree.
    for nodes in [1, 500, 1365, 1366, 5000, 40_000, 300_000, 600_000]:
        shard_bits, minishard_bits, preshift = compute_shard_params_for_hashed(nodes)
        assert (shard_bits, preshift) == (0, 0)
        assert minishard_bits_for(nodes) == minishard_bits


def test_minishard_bits_rejects_negative_counts():
    with pytest.raises(ValueError, match="node count"):
        minishard_bits_for(-1)


def test_mesh_shard_spec_is_the_chunkedgraph_convention():
    assert mesh_shard_spec(3) == {
        "@type": "neuroglancer_uint64_sharded_v1",
        "preshift_bits": 0,
        "hash": "murmurhash3_x86_128",
        "minishard_bits": 3,
        "shard_bits": 0,
        "minishard_index_encoding": "gzip",
        "data_encoding": "raw",
    }


@pytest.mark.parametrize("bits", [0, 1, 3, 6])
def test_encode_round_trips_through_our_reader_and_cloudvolume(bits):
    spec = mesh_shard_spec(bits)
    fragments = random_fragments(400, seed=bits)
    shard = encode_shard(fragments, spec)
    assert disassemble_with_cloudvolume(shard, spec) == fragments
    reader = ShardReader(bytes_source(shard), spec)
    assert reader.keys() == sorted(fragments)
    for key, data in fragments.items():
        assert read_shard_fragment(shard, key, spec) == data
    absent = max(fragments) + 1
    assert read_shard_fragment(shard, absent, spec) is None


def test_encoding_is_deterministic_and_independent_of_insertion_order():
    spec = mesh_shard_spec(3)
    fragments = random_fragments(300, seed=11)
    items = list(fragments.items())
    random.Random(3).shuffle(items)
    assert encode_shard(fragments, spec) == encode_shard(dict(items), spec)


def test_streaming_writer_gives_the_same_bytes(tmp_path):
    spec = mesh_shard_spec(2)
    fragments = random_fragments(200, seed=5)
    path = tmp_path / "x.shard"
    with open(path, "wb") as fh:
        writer = ShardWriter(fh, spec)
        for key in fragment_order(list(fragments), spec):
            writer.add(key, fragments[key])
        size = writer.finish()
    assert path.read_bytes() == encode_shard(fragments, spec)
    assert size == path.stat().st_size


def test_streaming_writer_refuses_keys_out_of_order():
    spec = mesh_shard_spec(2)
    order = fragment_order(list(random_fragments(50, seed=1)), spec)
    writer = ShardWriter(io.BytesIO(), spec)
    writer.add(order[1], b"a")
    with pytest.raises(ValueError, match="out of order"):
        writer.add(order[0], b"b")
    with pytest.raises(ValueError, match="out of order"):
        writer.add(order[1], b"c")


def test_empty_shard_has_only_an_index():
    spec = mesh_shard_spec(3)
    shard = encode_shard({}, spec)
    assert shard == b"\0" * 16 * 8
    assert read_shard_fragment(shard, 12345, spec) is None
    assert ShardReader(bytes_source(shard), spec).keys() == []


def test_gzip_data_and_raw_index_variants_round_trip():
    spec = {**mesh_shard_spec(2), "data_encoding": "gzip", "minishard_index_encoding": "raw"}
    fragments = random_fragments(100, seed=9)
    shard = encode_shard(fragments, spec)
    assert disassemble_with_cloudvolume(shard, spec) == fragments
    assert all(read_shard_fragment(shard, k, spec) == v for k, v in fragments.items())


def test_identity_hash_with_preshift_places_keys_like_cloudvolume():
    spec = {**mesh_shard_spec(4), "hash": "identity", "preshift_bits": 3}
    keys = list(random_fragments(300, seed=2))
    reference = ShardingSpecification.from_dict(spec)
    ours = ShardSpec.parse(spec).minishard_numbers(keys).tolist()
    assert ours == [int(reference.compute_shard_location(k).minishard_number) for k in keys]


def test_reader_takes_file_objects_callables_and_readers():
    spec = mesh_shard_spec(1)
    fragments = random_fragments(30, seed=4)
    shard = encode_shard(fragments, spec)
    key = sorted(fragments)[7]
    assert read_shard_fragment(io.BytesIO(shard), key, spec) == fragments[key]
    assert read_shard_fragment(lambda a, b: shard[a:b], key, spec) == fragments[key]
    reader = ShardReader(bytes_source(shard), spec)
    assert read_shard_fragment(reader, key, spec) == fragments[key]
    assert reader.locate(key) is not None
    assert dict(reader.items()) == fragments


def test_reader_reads_only_what_it_needs():
    spec = mesh_shard_spec(4)
    fragments = random_fragments(300, seed=8)
    shard = encode_shard(fragments, spec)
    reads: list[tuple[int, int]] = []

    def source(start: int, stop: int) -> bytes:
        reads.append((start, stop))
        return shard[start:stop]

    key = sorted(fragments)[0]
    assert read_shard_fragment(source, key, spec) == fragments[key]
    assert len(reads) == 3  # shard index, one minishard index, the fragment
    assert sum(b - a for a, b in reads) < len(shard) // 4


def test_missing_shard_reads_as_absent_not_corrupt():
    reader = ShardReader(lambda a, b: None, mesh_shard_spec(2), name="gone.shard")
    assert not reader.exists()
    assert reader.get(5) is None
    assert reader.keys() == []


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_truncated_shard_index_is_a_clear_error():
    spec = mesh_shard_spec(3)
    shard = encode_shard(random_fragments(20, seed=3), spec)
    with pytest.raises(ShardFormatError) as exc:
        read_shard_fragment(shard[:100], 1, spec)
    text = _one_line(exc)
    assert "shard index needs 128 bytes" in text and "truncated or corrupt" in text
    assert isinstance(exc.value, MeshingError)


def test_empty_file_is_a_clear_error():
    with pytest.raises(ShardFormatError, match="empty"):
        read_shard_fragment(b"", 1, mesh_shard_spec(0))


@pytest.mark.parametrize("cut", [1, 7, 40, 200])
def test_truncated_tail_fails_loudly_never_silently(cut):
    spec = mesh_shard_spec(2)
    fragments = random_fragments(60, seed=cut)
    shard = encode_shard(fragments, spec)
    truncated = shard[:-cut]
    failures = 0
    for key, data in fragments.items():
        try:
            got = read_shard_fragment(truncated, key, spec)
        except ShardFormatError as exc:
            assert "truncated or corrupt" in str(exc) and "\n" not in str(exc)
            failures += 1
        else:
            assert got == data
    assert failures > 0


def test_damaged_minishard_index_is_a_clear_error():
    spec = mesh_shard_spec(0)
    fragments = random_fragments(20, seed=12)
    shard = bytearray(encode_shard(fragments, spec))
    table = np.frombuffer(bytes(shard[:16]), dtype="<u8")
    start = 16 + int(table[0])
    shard[start + 12 : start + 20] = b"\xff" * 8  # inside the gzip stream of the minishard index
    reader = ShardReader(bytes_source(bytes(shard)), spec, name="file:///x/initial/2/5-0.shard")
    with pytest.raises(ShardFormatError) as exc:
        reader.get(next(iter(fragments)))
    text = _one_line(exc)
    assert text.startswith("shard file:///x/initial/2/5-0.shard: minishard 0 index")


def test_fragment_past_end_of_file_is_a_clear_error():
    spec = {**mesh_shard_spec(0), "minishard_index_encoding": "raw"}
    shard = bytearray(encode_shard({5: b"hello"}, spec))
    # raw index: [key delta, offset delta, size] after the data; make the size huge
    shard[-8:] = (10_000).to_bytes(8, "little")
    with pytest.raises(ShardFormatError, match="fragment 5 needs bytes"):
        read_shard_fragment(bytes(shard), 5, spec)


def test_invalid_specs_are_rejected():
    with pytest.raises(ShardFormatError, match="hash"):
        ShardSpec.parse({**mesh_shard_spec(1), "hash": "md5"})
    with pytest.raises(ShardFormatError, match="incomplete"):
        ShardSpec.parse({"@type": "neuroglancer_uint64_sharded_v1"})
    with pytest.raises(ValueError):
        mesh_shard_spec(40)


def test_one_reader_shared_by_threads_finds_every_fragment():
    """A reader shared by threads (the read-only server's cache) never reports a stored
    fragment missing while another thread is still loading the shard's index."""
    import threading
    import time

    rng = random.Random(5)
    fragments = {rng.getrandbits(60) + 1: bytes([k % 251]) * 7 for k in range(2000)}
    spec = mesh_shard_spec(3)
    data = encode_shard(fragments, spec)
    keys = sorted(fragments)

    class Slow(bytes):
        """Bytes that take a while to measure: threads interleave inside the index's checks."""

        def __len__(self) -> int:
            time.sleep(0.002)
            return super().__len__()

    def slow(start: int, stop: int) -> bytes:
        return Slow(data[start:stop])

    misses: list[int] = []
    for _ in range(10):
        reader = ShardReader(slow, spec)
        start = threading.Barrier(8)

        def work(offset: int, reader: ShardReader = reader, start=start) -> None:
            start.wait()
            misses.extend(k for k in keys[offset::97] if reader.locate(k) is None)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert misses == []
