"""Cloud-path file operations (file:// and cloud-files' in-memory remote) and the shard layout."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from cloudfiles import CloudFiles

from meshing_core import ids
from meshing_core.store import files, layout
from meshing_core.store.sharding import ShardReader, encode_shard, mesh_shard_spec


@pytest.fixture(params=["file", "mem"])
def cloudpath(request, tmp_path: Path) -> str:
    """A local folder, or cloud-files' in-memory store (the remote, single-PUT code path)."""
    if request.param == "file":
        return "file://" + str(tmp_path / "store")
    return f"mem://bucket-{uuid.uuid4().hex}/store"


def test_write_read_list_delete(cloudpath):
    files.write_atomic(cloudpath, "initial/2/17-0.shard", b"abc")
    files.write_atomic(cloudpath, "initial/3/2-0.shard", b"de")
    files.write_atomic(cloudpath, "info", b"{}")
    assert files.read_file(cloudpath, "initial/2/17-0.shard") == b"abc"
    assert files.list_files(cloudpath) == ["info", "initial/2/17-0.shard", "initial/3/2-0.shard"]
    assert files.list_files(cloudpath, "initial/2/") == ["initial/2/17-0.shard"]
    assert files.list_files(cloudpath, "initial/3/2") == ["initial/3/2-0.shard"]
    assert files.list_files(cloudpath, "nothing/") == []
    assert files.exists(cloudpath, "info")
    files.delete_file(cloudpath, "initial/2/17-0.shard")
    files.delete_file(cloudpath, "initial/2/17-0.shard")  # already gone: no error
    assert files.read_file(cloudpath, "initial/2/17-0.shard") is None
    assert not files.exists(cloudpath, "initial/2/17-0.shard")
    assert files.list_files(cloudpath) == ["info", "initial/3/2-0.shard"]


def test_overwrite_replaces_the_whole_file(cloudpath):
    files.write_atomic(cloudpath, "a/b", b"x" * 100)
    files.write_atomic(cloudpath, "a/b", b"short")
    assert files.read_file(cloudpath, "a/b") == b"short"


def test_json_round_trip(cloudpath):
    files.write_json(cloudpath, "info", {"b": [1, 2], "a": None})
    assert files.read_json(cloudpath, "info") == {"a": None, "b": [1, 2]}
    assert files.read_json(cloudpath, "missing") is None


def test_range_source_reads_byte_ranges_and_missing_files(cloudpath):
    spec = mesh_shard_spec(1)
    fragments = {k: bytes([k % 256]) * k for k in range(1, 60)}
    files.write_atomic(cloudpath, "initial/2/5-0.shard", encode_shard(fragments, spec))
    reader = ShardReader(files.range_source(cloudpath, "initial/2/5-0.shard"), spec)
    assert reader.get(33) == fragments[33]
    assert reader.keys() == sorted(fragments)
    assert files.range_source(cloudpath, "initial/2/6-0.shard")(0, 16) is None


def test_failed_streamed_write_publishes_nothing(cloudpath):
    files.write_atomic(cloudpath, "x.shard", b"old")
    with pytest.raises(RuntimeError), files.atomic_writer(cloudpath, "x.shard") as fh:
        fh.write(b"partial new content")
        raise RuntimeError("mesher crashed")
    assert files.read_file(cloudpath, "x.shard") == b"old"
    assert files.list_files(cloudpath) == ["x.shard"]


def test_local_writes_leave_no_temporary_files(tmp_path):
    cloudpath = "file://" + str(tmp_path)
    files.write_atomic(cloudpath, "d/e/f.shard", b"1")
    assert sorted(p.name for p in (tmp_path / "d" / "e").iterdir()) == ["f.shard"]


def test_listing_skips_leftovers_of_interrupted_writes_and_delete_prefix_removes_them(tmp_path):
    cloudpath = "file://" + str(tmp_path)
    files.write_atomic(cloudpath, "initial/2/1-0.shard", b"1")
    leftover = tmp_path / "initial" / "2" / ".2-0.shard.tmp-0123"
    leftover.write_bytes(b"half")
    files.write_atomic(cloudpath, "dynamic/5:0:0-1_0-1_0-1", b"m")
    assert files.list_files(cloudpath, "initial/") == ["initial/2/1-0.shard"]
    assert files.delete_prefix(cloudpath, "", keep=("dynamic/",)) == 2
    assert not leftover.exists()
    assert files.list_files(cloudpath) == ["dynamic/5:0:0-1_0-1_0-1"]


def test_plain_local_paths_work_like_file_urls(tmp_path):
    files.write_atomic(str(tmp_path / "plain"), "a", b"z")
    assert (tmp_path / "plain" / "a").read_bytes() == b"z"
    assert files.list_files("file://" + str(tmp_path / "plain")) == ["a"]


def test_remote_write_is_one_uncompressed_object():
    cloudpath = f"mem://bucket-{uuid.uuid4().hex}/m"
    files.write_atomic(cloudpath, "initial/2/3-0.shard", b"\x00\x01payload")
    assert CloudFiles(cloudpath).get("initial/2/3-0.shard", raw=True) == b"\x00\x01payload"


def test_shard_names_follow_the_chunk_position_number():
    codec = ids.IdCodec(n_layers=5, spatial_bits=10)
    chunk = codec.chunk_id(2, 1, 2, 3)
    assert layout.shard_name(codec, chunk) == f"{(1 << 20) | (2 << 10) | 3}-0.shard"
    node = codec.node_id(4, 1, 0, 1, 77)  # layer 4 uses 1 bit per axis
    assert layout.shard_name(codec, ids.chunk_id_of(codec, node)) == "5-0.shard"
    assert layout.shard_key(codec, ids.chunk_id_of(codec, node)) == "initial/4/5-0.shard"


def test_mesh_directories(tmp_path):
    class Config:
        mesh_cloudpath = "gs://bucket/ws/graphene_meshes"

    assert layout.initial_dir(Config, 3) == "gs://bucket/ws/graphene_meshes/initial/3"
    assert layout.dynamic_dir(Config) == "gs://bucket/ws/graphene_meshes/dynamic"
    assert layout.dynamic_name(9, (0, 0, 0), (64, 64, 40)) == "9:0:0-64_0-64_0-40"
