"""The chunk-task message: what a producer sends and a worker runs (a leaf: no SQS, no I/O).

A message names the graph config's location, the layer, the meshing timestamp, the batch it
belongs to (or none, for tasks enqueued outside a run) and a few chunks of that batch. It never
carries credentials: a worker reaches the dataset with its own environment.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from meshing_core.errors import MeshingError

KIND = "meshing_core.chunks"
VERSION = 1
# far below SQS's 1 MiB: a message of 64 chunks is about 2 KiB
MAX_MESSAGE_BYTES = 256 * 1024
DEFAULT_CHUNKS_PER_MESSAGE = 8

Coords = tuple[int, int, int]


class MessageError(MeshingError):
    """A queue message that is not a chunk task of this version."""


@dataclass(frozen=True)
class ChunkTask:
    """Some chunks of one layer to mesh (or stitch) at one timestamp."""

    graph: str
    layer: int
    timestamp: float
    chunks: tuple[Coords, ...]
    batch: int | None = None

    def encode(self) -> str:
        body = json.dumps(
            {
                "kind": KIND,
                "v": VERSION,
                "graph": self.graph,
                "layer": self.layer,
                "timestamp": self.timestamp,
                "batch": self.batch,
                "chunks": [list(c) for c in self.chunks],
            },
            separators=(",", ":"),
        )
        if len(body.encode()) > MAX_MESSAGE_BYTES:
            raise MessageError(
                f"a message of {len(self.chunks)} chunks is {len(body.encode())} bytes, over "
                f"{MAX_MESSAGE_BYTES}: send fewer chunks per message"
            )
        return body

    def describe(self) -> str:
        where = "" if self.batch is None else f" b{self.batch}"
        return f"L{self.layer}{where} {len(self.chunks)} chunk(s) at t={self.timestamp}"


def decode(body: str) -> ChunkTask:
    """The task in a message body; a one-line ``MessageError`` naming what is wrong."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise MessageError(f"message is not JSON ({exc}): not a meshing chunk task") from exc
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise MessageError(f"message is not a meshing chunk task (kind {KIND!r} expected)")
    if data.get("v") != VERSION:
        raise MessageError(
            f"chunk task version {data.get('v')!r}, this worker reads {VERSION}: run workers "
            "of the producer's version"
        )
    try:
        chunks = tuple(_coords(c) for c in data["chunks"])
        batch = data.get("batch")
        return ChunkTask(
            graph=str(data["graph"]),
            layer=int(data["layer"]),
            timestamp=float(data["timestamp"]),
            chunks=chunks,
            batch=None if batch is None else int(batch),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MessageError(f"chunk task malformed ({type(exc).__name__}: {exc})") from exc


def _coords(value: Sequence[int]) -> Coords:
    if len(value) != 3:
        raise ValueError(f"chunk coordinates {value!r} are not x, y, z")
    x, y, z = (int(v) for v in value)
    return (x, y, z)


def chunk_tasks(
    graph: str,
    layer: int,
    timestamp: float,
    chunks: Iterable[Iterable[int]],
    *,
    batch: int | None = None,
    per_message: int = DEFAULT_CHUNKS_PER_MESSAGE,
) -> Iterator[ChunkTask]:
    """The chunks in messages of at most ``per_message`` chunks, in order."""
    if int(per_message) < 1:
        raise MessageError(f"chunks per message is {per_message}: give 1 or more")
    group: list[Coords] = []
    for c in chunks:
        group.append(_coords(tuple(c)))
        if len(group) == int(per_message):
            yield ChunkTask(graph, int(layer), float(timestamp), tuple(group), batch)
            group = []
    if group:
        yield ChunkTask(graph, int(layer), float(timestamp), tuple(group), batch)
