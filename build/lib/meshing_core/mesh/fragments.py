"""Reading single child fragments out of lower-layer shards with byte-range reads.

A stitching task never loads a whole child shard: per shard it reads the shard index, the
minishard indices it needs and the byte range of each fragment it needs. Readers (with their
small cached indices) are kept for a bounded number of recently used shards, so memory does not
grow with the number of child chunks a high-layer chunk covers.

A layer-2 chunk whose nodes all lack a surface (a thin slab at the volume's edge) has no shard;
a missing layer-2 shard is therefore checked with ``layer2_is_empty`` (re-meshing that one chunk
in memory) before it counts as missing work.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import DracoPy
import numpy as np

from meshing_core import ids
from meshing_core.errors import MeshingError
from meshing_core.store import files, layout
from meshing_core.store.sharding import ShardFormatError, ShardReader

READER_CACHE = 32


class StitchInputError(MeshingError):
    """A child shard or fragment a stitching task needs is missing or unreadable."""


class FragmentSource:
    """Fragments of nodes of any layer, read from ``<mesh dir>/initial/<layer>/<cpn>-0.shard``."""

    def __init__(
        self,
        mesh_cloudpath: str,
        codec: ids.IdCodec,
        sharding: Mapping[str, Any],
        cache_size: int = READER_CACHE,
        layer2_is_empty: Callable[[tuple[int, int, int]], bool] | None = None,
    ):
        self.mesh_cloudpath = mesh_cloudpath.rstrip("/")
        self.codec = codec
        self.sharding = sharding
        self.cache_size = int(cache_size)
        self.layer2_is_empty = layer2_is_empty
        self._readers: OrderedDict[int, ShardReader | None] = OrderedDict()
        self.fragments_read = 0
        self.bytes_read = 0

    def shard_path(self, node_id: int) -> str:
        """Full path of the shard holding a node's fragment."""
        chunk = ids.chunk_id_of(self.codec, int(node_id))
        return f"{self.mesh_cloudpath}/{layout.shard_key(self.codec, chunk)}"

    def _reader(self, node_id: int) -> ShardReader | None:
        """The shard reader of a node's chunk; None for a layer-2 chunk verified empty."""
        chunk = ids.chunk_id_of(self.codec, int(node_id))
        if chunk in self._readers:
            self._readers.move_to_end(chunk)
            return self._readers[chunk]
        layer = ids.layer_of(chunk)
        spec = self.sharding.get(str(layer))
        if spec is None:
            raise StitchInputError(
                f"the mesh info has no sharding spec for layer {layer}: re-run setup"
            )
        folder = f"{self.mesh_cloudpath}/{layout.initial_prefix(layer)}"
        name = layout.shard_name(self.codec, chunk)
        reader = ShardReader(files.range_source(folder, name), spec, name=f"{folder}/{name}")
        if not reader.exists():
            coords = ids.chunk_coords(self.codec, chunk)
            if layer == 2 and self.layer2_is_empty is not None and self.layer2_is_empty(coords):
                reader = None
            else:
                raise StitchInputError(
                    f"child shard {folder}/{name} (layer-{layer} chunk {list(coords)}) is "
                    f"missing: mesh layer {layer} at this timestamp first"
                )
        self._readers[chunk] = reader
        while len(self._readers) > self.cache_size:
            self._readers.popitem(last=False)
        return reader

    def get(self, node_id: int) -> bytes | None:
        """A node's fragment, or None when its (existing) shard has no entry for it.

        Raises ``StitchInputError`` for a missing shard and ``ShardFormatError`` for a corrupt one.
        """
        reader = self._reader(node_id)
        data = None if reader is None else reader.get(int(node_id))
        if data is not None:
            self.fragments_read += 1
            self.bytes_read += len(data)
        return data

    def decoded(self, node_id: int) -> tuple[np.ndarray, np.ndarray] | None:
        """A node's fragment as (vertices nm float64, faces uint32), or None if it has none."""
        data = self.get(node_id)
        if data is None:
            return None
        try:
            mesh = DracoPy.decode(data)
            vertices = np.asarray(mesh.points, dtype=np.float64).reshape(-1, 3)
            faces = np.asarray(mesh.faces, dtype=np.uint32).reshape(-1, 3)
        except Exception as exc:  # noqa: BLE001 - any decoder failure means a corrupt fragment
            raise ShardFormatError(
                f"fragment of node {int(node_id)} in {self.shard_path(node_id)} is not a draco "
                f"mesh ({type(exc).__name__}): delete the shard and re-mesh its chunk"
            ) from exc
        return vertices, faces
