"""The neuroglancer_uint64_sharded_v1 format: writing and reading one shard file.

A shard is ``[shard index][data][minishard indices]``. The shard index has one
``[start, end)`` pair of uint64 per minishard, pointing at that minishard's index; a minishard
index is three delta-encoded uint64 columns (key, offset, size), optionally gzip-compressed.
All offsets count from the end of the shard index. Every key is hashed (murmurhash3_x86_128,
low 64 bits) and the low ``minishard_bits`` of the hash pick its minishard.

The ChunkedGraph stores one shard per chunk (``shard_bits`` 0) keyed by node id, so the writer
here produces one whole shard from the fragments of one chunk. Output is canonical: fragments
are laid out by (minishard, key), so the same fragments always give the same bytes, whether
they come through ``encode_shard`` (all in memory) or ``ShardWriter`` (streamed to a file).

The reader fetches only the shard index, the needed minishard index and the fragment's byte
range, so a stitcher can pull single child meshes out of large shards.
"""

from __future__ import annotations

import gzip
import io
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from meshing_core.errors import MeshingError
from meshing_core.store.murmur import (
    as_uint64,
    murmurhash3_x86_128_low64,
    murmurhash3_x86_128_low64_one,
)

SHARDED_TYPE = "neuroglancer_uint64_sharded_v1"
SHARD_INDEX_ENTRY_BYTES = 16  # [start, end) uint64 per minishard
MINISHARD_ENTRY_BYTES = 24  # key, offset, size uint64 per fragment
# igneous' compute_shard_params_for_hashed sizes minishard indices to ~32 KiB (gzip aside):
# 2**15 / 24 ~= 1365 keys per minishard.
MINISHARD_INDEX_TARGET_BYTES = 2**15
_GZIP_LEVEL = 6

RangeSource = Callable[[int, int], bytes | None]
"""Returns bytes [start, stop) of a shard, fewer at end of file, or None if it does not exist."""


class ShardFormatError(MeshingError):
    """A shard file that does not decode: truncated, corrupt, or written with another spec."""


def minishard_bits_for(max_nodes_per_chunk: int) -> int:
    """Minishard bits for a one-shard-per-chunk layer whose chunks hold up to this many nodes.

    Follows igneous' ``compute_shard_params_for_hashed``: keys are uniformly hashed, and each
    minishard index should stay near 32 KiB (~1365 keys) so one small read finds a key. With
    ``shard_bits`` fixed at 0 (one shard per chunk) all capacity comes from minishards:
    the smallest ``b`` with ``nodes * 24 <= 2**15 * 2**b``.
    """
    nodes = int(max_nodes_per_chunk)
    if nodes < 0:
        raise ValueError(f"node count must be >= 0, got {nodes}")
    bits = 0
    while nodes * MINISHARD_ENTRY_BYTES > MINISHARD_INDEX_TARGET_BYTES << bits:
        bits += 1
    return bits


def mesh_shard_spec(minishard_bits: int) -> dict[str, Any]:
    """The sharding spec of one mesh layer (ChunkedGraph convention: one shard per chunk)."""
    bits = int(minishard_bits)
    if not 0 <= bits <= 32:
        raise ValueError(f"minishard_bits must be in 0..32, got {bits}")
    return {
        "@type": SHARDED_TYPE,
        "preshift_bits": 0,
        "hash": "murmurhash3_x86_128",
        "minishard_bits": bits,
        "shard_bits": 0,
        "minishard_index_encoding": "gzip",
        "data_encoding": "raw",
    }


@dataclass(frozen=True)
class ShardSpec:
    """A validated sharding spec."""

    preshift_bits: int
    hash: str
    minishard_bits: int
    shard_bits: int
    minishard_index_encoding: str
    data_encoding: str

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | ShardSpec) -> ShardSpec:
        if isinstance(spec, ShardSpec):
            return spec
        try:
            parsed = cls(
                preshift_bits=int(spec.get("preshift_bits", 0)),
                hash=str(spec["hash"]),
                minishard_bits=int(spec["minishard_bits"]),
                shard_bits=int(spec.get("shard_bits", 0)),
                minishard_index_encoding=str(spec.get("minishard_index_encoding", "raw")),
                data_encoding=str(spec.get("data_encoding", "raw")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ShardFormatError(f"sharding spec {dict(spec)} is incomplete ({exc})") from exc
        kind = spec.get("@type", SHARDED_TYPE)
        problem = None
        if kind != SHARDED_TYPE:
            problem = f"@type {kind!r} is not {SHARDED_TYPE!r}"
        elif parsed.hash not in ("murmurhash3_x86_128", "identity"):
            problem = f"hash {parsed.hash!r} is not murmurhash3_x86_128 or identity"
        elif not 0 <= parsed.preshift_bits < 64:
            problem = f"preshift_bits {parsed.preshift_bits} is outside 0..63"
        elif min(parsed.minishard_bits, parsed.shard_bits) < 0 or (
            parsed.minishard_bits + parsed.shard_bits > 64
        ):
            problem = "minishard_bits + shard_bits must be within 0..64"
        elif parsed.minishard_index_encoding not in ("raw", "gzip"):
            problem = f"minishard_index_encoding {parsed.minishard_index_encoding!r} is unknown"
        elif parsed.data_encoding not in ("raw", "gzip"):
            problem = f"data_encoding {parsed.data_encoding!r} is unknown"
        if problem:
            raise ShardFormatError(f"sharding spec is invalid: {problem}")
        return parsed

    @property
    def minishard_count(self) -> int:
        return 1 << self.minishard_bits

    @property
    def index_bytes(self) -> int:
        return self.minishard_count * SHARD_INDEX_ENTRY_BYTES

    def hashed(self, keys: object) -> np.ndarray:
        shifted = as_uint64(keys) >> np.uint64(self.preshift_bits)
        if self.hash == "identity":
            return shifted
        return murmurhash3_x86_128_low64(shifted)

    def hashed_one(self, key: int) -> int:
        shifted = (int(key) & 0xFFFFFFFFFFFFFFFF) >> self.preshift_bits
        if self.hash == "identity":
            return shifted
        return murmurhash3_x86_128_low64_one(shifted)

    def minishard_numbers(self, keys: object) -> np.ndarray:
        mask = np.uint64((1 << self.minishard_bits) - 1)
        return self.hashed(keys) & mask

    def shard_numbers(self, keys: object) -> np.ndarray:
        mask = np.uint64((1 << self.shard_bits) - 1)
        return (self.hashed(keys) >> np.uint64(self.minishard_bits)) & mask


def _compress(data: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(data, compresslevel=_GZIP_LEVEL, mtime=0)
    return data


def fragment_order(
    keys: Iterable[int] | np.ndarray, spec: Mapping[str, Any] | ShardSpec
) -> list[int]:
    """Keys in the canonical order of a shard's data: by minishard, then by key.

    A streaming producer (``ShardWriter``) must add fragments in this order.
    """
    parsed = ShardSpec.parse(spec)
    array = np.unique(as_uint64(list(keys) if not isinstance(keys, np.ndarray) else keys))
    if array.size == 0:
        return []
    minishards = parsed.minishard_numbers(array)
    order = np.lexsort((array, minishards))
    return [int(k) for k in array[order]]


class ShardWriter:
    """Streams one shard into a seekable binary file, fragment by fragment.

    Only the per-fragment (key, offset, size) triples are held in memory; call ``finish`` after
    the last ``add`` to write the minishard indices and the shard index.
    """

    def __init__(self, fh: BinaryIO, spec: Mapping[str, Any] | ShardSpec):
        self.spec = ShardSpec.parse(spec)
        self.fh = fh
        self._base = fh.tell()
        self._entries: list[tuple[int, int, int, int]] = []  # minishard, key, offset, size
        self._offset = 0  # bytes of data written, counted from the end of the shard index
        self._last: tuple[int, int] | None = None
        self._shard: int | None = None
        self._finished = False
        fh.write(b"\0" * self.spec.index_bytes)

    def add(self, key: int, data: bytes) -> None:
        """Append one fragment; keys must come in ``fragment_order``."""
        if self._finished:
            raise ValueError("shard already finished")
        key = int(key)
        hashed = self.spec.hashed_one(key)
        minishard = hashed & (self.spec.minishard_count - 1)
        shard = (hashed >> self.spec.minishard_bits) & ((1 << self.spec.shard_bits) - 1)
        if self._shard is None:
            self._shard = shard
        elif shard != self._shard:
            raise ValueError(f"key {key} belongs to shard {shard}, not {self._shard}")
        place = (minishard, key)
        if self._last is not None and place <= self._last:
            raise ValueError(
                f"key {key} (minishard {minishard}) added out of order or twice: use fragment_order"
            )
        self._last = place
        payload = _compress(bytes(data), self.spec.data_encoding)
        self.fh.write(payload)
        self._entries.append((minishard, key, self._offset, len(payload)))
        self._offset += len(payload)

    def finish(self) -> int:
        """Write the minishard indices and the shard index; return the shard's size in bytes."""
        if self._finished:
            raise ValueError("shard already finished")
        self._finished = True
        table = np.zeros((self.spec.minishard_count, 2), dtype="<u8")
        position = self._offset
        entries = self._entries
        start = 0
        while start < len(entries):
            minishard = entries[start][0]
            stop = start
            while stop < len(entries) and entries[stop][0] == minishard:
                stop += 1
            block = np.array([e[1:] for e in entries[start:stop]], dtype=np.uint64)
            keys, offsets, sizes = block[:, 0], block[:, 1], block[:, 2]
            columns = np.empty((3, len(keys)), dtype="<u8")
            columns[0] = np.diff(keys, prepend=np.uint64(0))
            ends = offsets + sizes
            columns[1, 0] = offsets[0]
            columns[1, 1:] = offsets[1:] - ends[:-1]  # 0 here: fragments are contiguous
            columns[2] = sizes
            encoded = _compress(columns.tobytes(), self.spec.minishard_index_encoding)
            self.fh.write(encoded)
            table[minishard] = (position, position + len(encoded))
            position += len(encoded)
            start = stop
        end = self.fh.tell()
        self.fh.seek(self._base)
        self.fh.write(table.tobytes())
        self.fh.seek(end)
        return self.spec.index_bytes + position


def encode_shard(fragments: Mapping[int, bytes], spec: Mapping[str, Any] | ShardSpec) -> bytes:
    """One whole shard holding ``fragments`` (key -> bytes); deterministic (canonical order)."""
    buffer = io.BytesIO()
    writer = ShardWriter(buffer, spec)
    by_int = {int(k): v for k, v in fragments.items()}
    if len(by_int) != len(fragments):
        raise ValueError("fragment keys collide as integers")
    for key in fragment_order(np.array(list(by_int), dtype=np.uint64), writer.spec):
        writer.add(key, by_int[key])
    writer.finish()
    return buffer.getvalue()


# -- reading ---------------------------------------------------------------------------------


def bytes_source(data: bytes | bytearray | memoryview) -> RangeSource:
    """A range source over bytes in memory."""
    view = memoryview(data)

    def read(start: int, stop: int) -> bytes:
        return bytes(view[start:stop])

    return read


def file_object_source(fh: BinaryIO) -> RangeSource:
    """A range source over a seekable binary file object."""

    def read(start: int, stop: int) -> bytes:
        fh.seek(start)
        return fh.read(stop - start)

    return read


@dataclass(frozen=True)
class MinishardIndex:
    """Decoded minishard index: absolute [start, start + size) of each key in the shard file."""

    keys: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray

    def find(self, key: int) -> tuple[int, int] | None:
        hits = np.flatnonzero(self.keys == np.uint64(key))
        if hits.size == 0:
            return None
        i = int(hits[0])
        return int(self.starts[i]), int(self.sizes[i])


class ShardReader:
    """Reads fragments out of one shard through byte-range reads, caching the indices."""

    def __init__(
        self, source: RangeSource, spec: Mapping[str, Any] | ShardSpec, name: str = "<memory>"
    ):
        self.source = source
        self.spec = ShardSpec.parse(spec)
        self.name = name
        self._index: np.ndarray | None = None
        self._exists: bool | None = None
        self._minishards: dict[int, MinishardIndex] = {}
        # one reader may serve many threads (the read-only server): indices are read once,
        # and published only when complete
        self._lock = threading.Lock()

    def _corrupt(self, problem: str) -> ShardFormatError:
        return ShardFormatError(
            f"shard {self.name}: {problem}: the file is truncated or corrupt "
            "(or was written with another sharding spec); delete it and re-mesh its chunk"
        )

    def _read(self, start: int, stop: int, what: str) -> bytes:
        data = self.source(start, stop)
        if data is None:
            raise self._corrupt(f"{what} at bytes {start}-{stop} cannot be read")
        if len(data) != stop - start:
            raise self._corrupt(
                f"{what} needs bytes {start}-{stop} but the file ends at byte {start + len(data)}"
            )
        return data

    def exists(self) -> bool:
        """False when the shard file does not exist (a missing shard is not a corrupt one)."""
        self._load_index()
        return bool(self._exists)

    def _load_index(self) -> np.ndarray | None:
        if self._exists is None:
            with self._lock:
                if self._exists is None:
                    self._index = self._read_index()
                    self._exists = self._index is not None  # set last: readers check it first
        return self._index

    def _read_index(self) -> np.ndarray | None:
        size = self.spec.index_bytes
        raw = self.source(0, size)
        if raw is None:
            return None
        if len(raw) != size:
            raise self._corrupt(
                f"the shard index needs {size} bytes (minishard_bits "
                f"{self.spec.minishard_bits}) but the file has {len(raw)}"
            )
        table = np.frombuffer(raw, dtype="<u8").reshape(-1, 2).astype(np.uint64)
        bad = np.flatnonzero(table[:, 0] > table[:, 1])
        if bad.size:
            m = int(bad[0])
            raise self._corrupt(
                f"minishard {m} index range {int(table[m, 0])}-{int(table[m, 1])} is reversed"
            )
        return table

    def minishard(self, number: int) -> MinishardIndex | None:
        """Decoded index of one minishard (None when it is empty or the shard is missing)."""
        found = self._minishards.get(number)
        if found is not None:
            return found
        table = self._load_index()
        if table is None:
            return None
        start, stop = (int(v) for v in table[number])
        if start == stop:
            return None
        base = self.spec.index_bytes
        raw = self._read(base + start, base + stop, f"minishard {number} index")
        if self.spec.minishard_index_encoding == "gzip":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error) as exc:
                raise self._corrupt(f"minishard {number} index is not valid gzip ({exc})") from exc
        if len(raw) == 0 or len(raw) % MINISHARD_ENTRY_BYTES:
            raise self._corrupt(
                f"minishard {number} index has {len(raw)} bytes, not a multiple of 24"
            )
        columns = np.frombuffer(raw, dtype="<u8").reshape(3, -1).astype(np.uint64)
        with np.errstate(over="ignore"):
            keys = np.cumsum(columns[0], dtype=np.uint64)
            sizes = columns[2]
            before = np.zeros_like(sizes)
            before[1:] = np.cumsum(sizes[:-1], dtype=np.uint64)
            starts = np.cumsum(columns[1], dtype=np.uint64) + before + np.uint64(base)
        decoded = MinishardIndex(keys=keys, starts=starts, sizes=sizes)
        self._minishards[number] = decoded
        return decoded

    def locate(self, key: int) -> tuple[int, int] | None:
        """(byte offset, size) of a key's fragment in the file, or None if absent."""
        number = self.spec.hashed_one(key) & (self.spec.minishard_count - 1)
        index = self.minishard(number)
        return None if index is None else index.find(int(key))

    def get(self, key: int) -> bytes | None:
        """The fragment stored under ``key`` (decoded), or None if it is not in the shard."""
        where = self.locate(key)
        if where is None:
            return None
        start, size = where
        data = self._read(start, start + size, f"fragment {int(key)}")
        if self.spec.data_encoding == "gzip":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as exc:
                raise self._corrupt(f"fragment {int(key)} is not valid gzip ({exc})") from exc
        return data

    def keys(self) -> list[int]:
        """Every key in the shard, sorted."""
        table = self._load_index()
        if table is None:
            return []
        found: list[np.ndarray] = []
        for number in range(self.spec.minishard_count):
            index = self.minishard(number)
            if index is not None:
                found.append(index.keys)
        if not found:
            return []
        return [int(k) for k in np.sort(np.concatenate(found))]

    def items(self) -> Iterable[tuple[int, bytes]]:
        """(key, fragment) for every key, one fragment in memory at a time."""
        for key in self.keys():
            data = self.get(key)
            assert data is not None
            yield key, data


def read_shard_fragment(
    data_or_reader: bytes | bytearray | memoryview | ShardReader | RangeSource | BinaryIO,
    node_id: int,
    spec: Mapping[str, Any] | ShardSpec,
) -> bytes | None:
    """The fragment of ``node_id`` in a shard given as bytes, a reader, a range source or file."""
    if isinstance(data_or_reader, ShardReader):
        reader = data_or_reader
    elif isinstance(data_or_reader, bytes | bytearray | memoryview):
        reader = ShardReader(bytes_source(data_or_reader), spec)
        if len(data_or_reader) == 0:
            raise reader._corrupt("the file is empty")
    elif hasattr(data_or_reader, "seek") and hasattr(data_or_reader, "read"):
        reader = ShardReader(file_object_source(data_or_reader), spec)  # type: ignore[arg-type]
    elif callable(data_or_reader):
        reader = ShardReader(data_or_reader, spec)
    else:
        raise TypeError(f"cannot read a shard from {type(data_or_reader).__name__}")
    return reader.get(int(node_id))
